//! Lists the OpenCL platforms and devices, in the order that `ALEX_OPENCL_DEVICE=<index>`
//! counts, and says which one the backend would pick.
//!
//! `cargo run -p alexnet-opencl --example devices`

fn main() {
    match alexnet_opencl::list_devices() {
        Ok(devices) => {
            for device in &devices {
                println!("{device}");
            }
            match alexnet_opencl::OpenClBackend::from_env() {
                Ok(backend) => println!("selected: {}", backend.device_info().index),
                Err(e) => println!("no device selected: {e}"),
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
