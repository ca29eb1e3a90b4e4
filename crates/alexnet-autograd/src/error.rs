//! The crate's error enum.

use thiserror::Error;

/// Everything that can go wrong while building or differentiating a tape.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum AutogradError {
    /// An op got a tensor of the wrong shape.
    #[error("{op}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// The op that rejected the shape.
        op: &'static str,
        /// The shape the op needed (derived from its other operands).
        expected: Vec<usize>,
        /// The shape it got.
        got: Vec<usize>,
    },
    /// Dimensions that do not describe a tensor (rank 0 or above 4, a zero extent).
    #[error("invalid dims {dims:?}: {reason}")]
    InvalidDims {
        /// The rejected extents.
        dims: Vec<usize>,
        /// Why.
        reason: &'static str,
    },
    /// Host data whose length disagrees with its dims.
    #[error("{op}: dims {dims:?} need {expected} elements, host data has {got}")]
    HostLength {
        /// Where the data was given.
        op: &'static str,
        /// The dims the data should fill.
        dims: Vec<usize>,
        /// `product(dims)`.
        expected: usize,
        /// Length of the host slice.
        got: usize,
    },
    /// A tensor from an earlier pass (before [`crate::Tape::reset`]) or another tape.
    #[error("tensor #{id} is not on this tape (pass {tensor_pass}, tape at pass {tape_pass} holding {len} tensors)")]
    ForeignTensor {
        /// The tensor's index.
        id: usize,
        /// The pass the tensor was created in.
        tensor_pass: u64,
        /// The tape's current pass.
        tape_pass: u64,
        /// Tensors on the tape.
        len: usize,
    },
    /// A parameter name that the store does not hold.
    #[error("no parameter named `{name}`")]
    UnknownParam {
        /// The name asked for.
        name: String,
    },
    /// A parameter name inserted twice.
    #[error("parameter `{name}` already exists")]
    DuplicateParam {
        /// The name.
        name: String,
    },
    /// A checkpoint or host map lacks a parameter the store holds.
    #[error("host map lacks parameter `{name}`")]
    MissingParam {
        /// The name.
        name: String,
    },
    /// A state buffer (running statistics) used where a trainable parameter is needed, or
    /// the reverse.
    #[error("parameter `{name}` is {actual}, expected {expected}")]
    ParamKind {
        /// The name.
        name: String,
        /// What the caller needed.
        expected: &'static str,
        /// What it is.
        actual: &'static str,
    },
    /// A parameter's value cannot be changed while a tape still reads it.
    #[error("parameter `{name}` is still referenced by a tape; call Tape::backward or Tape::reset first")]
    ParamInUse {
        /// The name.
        name: String,
    },
    /// Tensors of one tape refer to parameters of two different stores.
    #[error("{op}: the tape's parameters come from another ParamStore")]
    ForeignStore {
        /// The op that noticed.
        op: &'static str,
    },
    /// A class label outside `0..classes`.
    #[error("{op}: label {label} at row {row} is out of range for {classes} classes")]
    Label {
        /// The op.
        op: &'static str,
        /// Row of the batch.
        row: usize,
        /// The label.
        label: usize,
        /// Number of classes.
        classes: usize,
    },
    /// A scalar argument out of range (dropout probability, ...).
    #[error("{op}: {what} = {value} is invalid: {reason}")]
    InvalidArgument {
        /// The op.
        op: &'static str,
        /// The argument.
        what: &'static str,
        /// Its value.
        value: f64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Backward was asked of a tape in inference mode.
    #[error("{op} needs a training tape; this tape is in inference mode and records nothing")]
    NotRecording {
        /// The operation asked for.
        op: &'static str,
    },
    /// `backward` from a tensor that is not a single element.
    #[error("backward: the loss must have one element, got dims {dims:?} (use backward_with and a seed)")]
    NotScalar {
        /// The tensor's dims.
        dims: Vec<usize>,
    },
    /// A parameter's value was handed back to the store by `backward`/`reset`.
    #[error("tensor #{id} refers to a parameter released by backward; read it from the ParamStore")]
    Released {
        /// The tensor's index.
        id: usize,
    },
    /// A backend or geometry error (shape mismatches found by `alexnet-core` become
    /// [`AutogradError::Shape`]).
    #[error(transparent)]
    Core(alexnet_core::Error),
}

impl From<alexnet_core::Error> for AutogradError {
    fn from(e: alexnet_core::Error) -> Self {
        match e {
            alexnet_core::Error::ShapeMismatch { op, expected, got } => AutogradError::Shape { op, expected, got },
            other => AutogradError::Core(other),
        }
    }
}

/// `Result` with [`AutogradError`].
pub type Result<T, E = AutogradError> = std::result::Result<T, E>;
