//! Tensor handles, dims and host tensors.

use alexnet_core::Shape4;

use crate::error::{AutogradError, Result};

/// Tensor extents, rank 1 to 4, row-major, every extent positive.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    extents: [usize; 4],
    rank: u8,
}

impl Dims {
    /// Dims from a slice of 1 to 4 positive extents.
    pub fn new(extents: &[usize]) -> Result<Self> {
        let invalid = |reason| AutogradError::InvalidDims { dims: extents.to_vec(), reason };
        if extents.is_empty() || extents.len() > 4 {
            return Err(invalid("rank must be 1 to 4"));
        }
        if extents.contains(&0) {
            return Err(invalid("every extent must be positive"));
        }
        let mut padded = [1; 4];
        padded[..extents.len()].copy_from_slice(extents);
        Ok(Self { extents: padded, rank: extents.len() as u8 })
    }

    /// The extents.
    pub fn as_slice(&self) -> &[usize] {
        &self.extents[..usize::from(self.rank)]
    }

    /// Number of extents.
    pub fn rank(&self) -> usize {
        usize::from(self.rank)
    }

    /// Product of the extents.
    pub fn numel(&self) -> usize {
        self.as_slice().iter().product()
    }

    /// The NCHW shape of a rank-4 tensor.
    pub fn shape4(&self, op: &'static str) -> Result<Shape4> {
        if self.rank != 4 {
            return Err(AutogradError::InvalidDims { dims: self.to_vec(), reason: rank4_reason(op) });
        }
        let [n, c, h, w] = self.extents;
        Ok(Shape4::new(n, c, h, w)?)
    }

    /// `(first extent, product of the rest)`: batch rows and features per row.
    pub fn rows_cols(&self) -> (usize, usize) {
        (self.extents[0], self.numel() / self.extents[0])
    }

    /// The extents as a vector (for error messages).
    pub fn to_vec(&self) -> Vec<usize> {
        self.as_slice().to_vec()
    }
}

fn rank4_reason(op: &'static str) -> &'static str {
    match op {
        "conv2d" => "conv2d needs a rank-4 NCHW tensor",
        "pool" => "pooling needs a rank-4 NCHW tensor",
        "lrn" => "LRN needs a rank-4 NCHW tensor",
        _ => "a rank-4 NCHW tensor is needed",
    }
}

impl From<Shape4> for Dims {
    fn from(s: Shape4) -> Self {
        Self { extents: s.dims(), rank: 4 }
    }
}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

impl std::fmt::Display for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.as_slice().iter().map(usize::to_string).collect();
        f.write_str(&parts.join("x"))
    }
}

/// A handle to a value on a [`crate::Tape`]: an index, the tape pass it belongs to, and
/// its dims. Cheap to copy; valid until the tape is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tensor {
    pub(crate) id: usize,
    pub(crate) pass: u64,
    pub(crate) dims: Dims,
}

impl Tensor {
    /// The tensor's dims.
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        self.dims.numel()
    }

    /// The position of the tensor on its tape (the order of recording).
    pub fn index(&self) -> usize {
        self.id
    }
}

/// A tensor in host memory: dims and row-major data. The unit of parameter import/export.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Extents, row-major.
    pub dims: Vec<usize>,
    /// `product(dims)` elements.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A host tensor, checking that `data` fills `dims`.
    pub fn new(dims: &[usize], data: Vec<f32>) -> Result<Self> {
        let checked = Dims::new(dims)?;
        if checked.numel() != data.len() {
            return Err(AutogradError::HostLength {
                op: "HostTensor::new",
                dims: dims.to_vec(),
                expected: checked.numel(),
                got: data.len(),
            });
        }
        Ok(Self { dims: dims.to_vec(), data })
    }

    /// A zero-filled host tensor.
    pub fn zeros(dims: &[usize]) -> Result<Self> {
        let n = Dims::new(dims)?.numel();
        Self::new(dims, vec![0.0; n])
    }
}
