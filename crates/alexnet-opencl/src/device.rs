//! Finding OpenCL devices: one serial initialisation, listing, and selection by index or name.
//!
//! PoCL's device initialisation races when several threads touch OpenCL first at once (pocl
//! issue 935: contexts with a zero max-allocation size, `CL_INVALID_BUFFER_SIZE`). So the
//! platforms are enumerated and the first context is created exactly once, behind a
//! [`OnceLock`], before anything else; later contexts are created under a mutex.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use opencl3::context::Context;
use opencl3::device::{CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_GPU, Device};
use opencl3::error_codes::CL_PLATFORM_NOT_FOUND_KHR;
use opencl3::platform::get_platforms;

use crate::context::DeviceContext;
use crate::error::{ClResultExt, OpenClError};

/// The environment variable that selects a device: an index from [`list_devices`], or a
/// case-insensitive fragment of the device's or platform's name.
pub const DEVICE_ENV: &str = "ALEX_OPENCL_DEVICE";

/// A description of one OpenCL device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Position in [`list_devices`] (all platforms' devices in platform order).
    pub index: usize,
    /// Platform name (e.g. `"Portable Computing Language"`).
    pub platform: String,
    /// Device name.
    pub name: String,
    /// Whether the device reports itself as a GPU.
    pub is_gpu: bool,
    /// Compute units.
    pub compute_units: u32,
    /// Global memory in bytes.
    pub global_mem_bytes: u64,
    /// Largest single allocation in bytes.
    pub max_alloc_bytes: u64,
    /// Local (work-group shared) memory in bytes.
    pub local_mem_bytes: u64,
    /// Largest work-group size.
    pub max_work_group_size: usize,
    /// The OpenCL C version string (e.g. `"OpenCL C 1.2 PoCL"`).
    pub opencl_c_version: String,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} / {} ({}, {} compute units, {} MiB global, {} MiB max alloc, {} KiB local, work-group {}, {})",
            self.index,
            self.platform,
            self.name,
            if self.is_gpu { "GPU" } else { "non-GPU" },
            self.compute_units,
            self.global_mem_bytes >> 20,
            self.max_alloc_bytes >> 20,
            self.local_mem_bytes >> 10,
            self.max_work_group_size,
            self.opencl_c_version,
        )
    }
}

/// Which device a backend runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSelector {
    /// The first GPU, or the first device when there is no GPU.
    #[default]
    Default,
    /// The device at this position in [`list_devices`].
    Index(usize),
    /// The first device whose `"platform / name"` contains this text (case-insensitive).
    Name(String),
}

impl DeviceSelector {
    /// Parses a selector: a number is an index, anything else a name fragment, and an empty
    /// string the default.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.is_empty() {
            Self::Default
        } else if let Ok(index) = text.parse() {
            Self::Index(index)
        } else {
            Self::Name(text.to_string())
        }
    }

    /// The selector from [`DEVICE_ENV`], or the default when it is unset.
    pub fn from_env() -> Self {
        std::env::var(DEVICE_ENV).map(|v| Self::parse(&v)).unwrap_or_default()
    }
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Index(i) => write!(f, "{i}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// Process-wide OpenCL state: the devices, the first context, and one shared
/// [`DeviceContext`] (context + built kernels) per device.
struct Runtime {
    devices: Vec<(DeviceInfo, Device)>,
    /// The context created during initialisation, handed to the first [`DeviceContext`] of its device.
    first_context: Mutex<Option<(usize, Context)>>,
    contexts: Mutex<HashMap<usize, Arc<DeviceContext>>>,
}

static RUNTIME: OnceLock<Result<Runtime, OpenClError>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime, OpenClError> {
    RUNTIME.get_or_init(Runtime::init).as_ref().map_err(Clone::clone)
}

impl Runtime {
    fn init() -> Result<Self, OpenClError> {
        // A missing libOpenCL.so.1 surfaces here as DLOPEN_RUNTIME_LOAD_FAILED -> NoRuntime.
        let platforms = match get_platforms() {
            Ok(platforms) => platforms,
            // The ICD loader found no driver at all.
            Err(e) if e.0 == CL_PLATFORM_NOT_FOUND_KHR => return Err(OpenClError::NoDevice { platforms: 0 }),
            Err(e) => return Err(OpenClError::api("clGetPlatformIDs", e)),
        };
        let mut devices = Vec::new();
        for platform in &platforms {
            let platform_name = platform.name().cl("clGetPlatformInfo")?;
            // A platform with no device answers CL_DEVICE_NOT_FOUND: that is not an error here.
            let ids = platform.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default();
            for id in ids {
                let device = Device::new(id);
                let info = describe(devices.len(), &platform_name, &device)?;
                devices.push((info, device));
            }
        }
        if devices.is_empty() {
            return Err(OpenClError::NoDevice { platforms: platforms.len() });
        }
        let first = default_index(&devices);
        let context = Context::from_device(&devices[first].1).cl("clCreateContext")?;
        Ok(Self { devices, first_context: Mutex::new(Some((first, context))), contexts: Mutex::new(HashMap::new()) })
    }

    fn resolve(&self, selector: &DeviceSelector) -> Result<usize, OpenClError> {
        let found = match selector {
            DeviceSelector::Default => Some(default_index(&self.devices)),
            DeviceSelector::Index(i) => (*i < self.devices.len()).then_some(*i),
            DeviceSelector::Name(fragment) => {
                let fragment = fragment.to_lowercase();
                self.devices.iter().position(|(info, _)| {
                    format!("{} / {}", info.platform, info.name).to_lowercase().contains(&fragment)
                })
            }
        };
        found.ok_or_else(|| OpenClError::DeviceNotFound {
            selector: selector.to_string(),
            available: self
                .devices
                .iter()
                .map(|(info, _)| format!("{}: {} / {}", info.index, info.platform, info.name))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

fn default_index(devices: &[(DeviceInfo, Device)]) -> usize {
    devices.iter().position(|(info, _)| info.is_gpu).unwrap_or(0)
}

fn describe(index: usize, platform: &str, device: &Device) -> Result<DeviceInfo, OpenClError> {
    Ok(DeviceInfo {
        index,
        platform: platform.trim().to_string(),
        name: device.name().cl("clGetDeviceInfo(NAME)")?.trim().to_string(),
        is_gpu: device.dev_type().cl("clGetDeviceInfo(TYPE)")? & CL_DEVICE_TYPE_GPU != 0,
        compute_units: device.max_compute_units().cl("clGetDeviceInfo(MAX_COMPUTE_UNITS)")?,
        global_mem_bytes: device.global_mem_size().cl("clGetDeviceInfo(GLOBAL_MEM_SIZE)")?,
        max_alloc_bytes: device.max_mem_alloc_size().cl("clGetDeviceInfo(MAX_MEM_ALLOC_SIZE)")?,
        local_mem_bytes: device.local_mem_size().cl("clGetDeviceInfo(LOCAL_MEM_SIZE)")?,
        max_work_group_size: device.max_work_group_size().cl("clGetDeviceInfo(MAX_WORK_GROUP_SIZE)")?,
        opencl_c_version: device.opencl_c_version().cl("clGetDeviceInfo(OPENCL_C_VERSION)")?.trim().to_string(),
    })
}

/// All OpenCL devices on all platforms, in the order that [`DeviceSelector::Index`] counts.
///
/// Errors with [`OpenClError::NoRuntime`] when `libOpenCL.so.1` is missing and
/// [`OpenClError::NoDevice`] when no platform has a device.
pub fn list_devices() -> Result<Vec<DeviceInfo>, OpenClError> {
    Ok(runtime()?.devices.iter().map(|(info, _)| info.clone()).collect())
}

/// The shared context (with its built kernels) of the selected device, created on first use.
pub(crate) fn device_context(selector: &DeviceSelector) -> Result<Arc<DeviceContext>, OpenClError> {
    let rt = runtime()?;
    let index = rt.resolve(selector)?;
    let mut contexts = rt.contexts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = contexts.get(&index) {
        return Ok(Arc::clone(ctx));
    }
    let (info, device) = &rt.devices[index];
    let first = rt.first_context.lock().unwrap_or_else(|e| e.into_inner()).take_if(|(i, _)| *i == index);
    let context = match first {
        Some((_, context)) => context,
        None => Context::from_device(device).cl("clCreateContext")?,
    };
    let ctx = Arc::new(DeviceContext::new(info.clone(), Device::new(device.id()), context)?);
    contexts.insert(index, Arc::clone(&ctx));
    Ok(ctx)
}

impl From<usize> for DeviceSelector {
    fn from(index: usize) -> Self {
        Self::Index(index)
    }
}
