//! # alexnet-autograd
//!
//! A tape-based reverse-mode autograd over any [`alexnet_core::Backend`], the CPU backend
//! ([`CpuBackend`]), a parameter store with stable names ([`ParamStore`]), and a public f64
//! gradient checker ([`gradcheck()`]).
//!
//! - [`Tape`] owns the values of one forward pass. Ops are methods returning a [`Tensor`]
//!   handle: `conv2d`, `max_pool`/`avg_pool`, `lrn` (also per channel group), `linear`, `relu`/`sigmoid`/`tanh`,
//!   `reshape`/`flatten`, `dropout`, `batch_norm`, `softmax_cross_entropy`, `add`, `scale`,
//!   `mean`. Each op records what its backward needs (a closed enum; every gradient is in
//!   one file); [`Tape::backward`] walks the record in reverse, summing the gradients of
//!   tensors used more than once, and writes parameter gradients into the [`ParamStore`].
//!   An inference tape ([`Tape::inference`]) records nothing.
//! - Buffers come from a [`BufferPool`] inside the tape and return to it on
//!   [`Tape::reset`]: a loop that keeps one tape allocates no new buffers after warm-up.
//! - Shape errors are `Err(AutogradError::Shape { op, expected, got })`, never panics.
//! - [`softmax_cross_entropy()`]: the mean loss and its gradient on host slices, without a
//!   tape, for training loops of your own.
//! - [`Backend`] and the geometry the ops take are re-exported from `alexnet-core`, so this
//!   crate is usable alone.
//! - [`conformance`] holds backend-generic test bodies and the
//!   [`backend_conformance_tests!`] macro that instantiates them for a backend.
//!
//! ```
//! use std::sync::Arc;
//! use alexnet_autograd::{AutogradError, Conv2dGeom, CpuBackend, ParamStore, SgdStep, Tape};
//!
//! let backend = Arc::new(CpuBackend::new());
//! let mut store = ParamStore::new(backend.clone());
//! let geom = Conv2dGeom::square(1, 2, 3, 1, 1, 1)?;
//! store.insert("conv1.weight", &geom.weight_dims(), &[0.1; 18])?;
//! store.insert("conv1.bias", &[2], &[0.0, 0.5])?;
//! store.insert("fc.weight", &[3, 2 * 4 * 4], &[0.01; 96])?;
//!
//! let mut tape = Tape::train(backend.clone());
//! for _step in 0..3 {
//!     tape.reset();
//!     let x = tape.input(&[1.0; 2 * 16], &[2, 1, 4, 4])?;
//!     let (w, b) = (tape.param(&store, "conv1.weight")?, tape.param(&store, "conv1.bias")?);
//!     let h = tape.conv2d(x, w, Some(b), &geom)?;
//!     let h = tape.relu(h)?;
//!     let h = tape.flatten(h)?;
//!     let fc = tape.param(&store, "fc.weight")?;
//!     let logits = tape.linear(h, fc, None)?;
//!     let loss = tape.softmax_cross_entropy(logits, &[0, 2])?;
//!     tape.backward(loss, &mut store)?;
//!     store.sgd_step(&SgdStep { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 })?;
//! }
//!
//! // Mismatched shapes are errors naming the op and both shapes.
//! let x = tape.input(&[0.0; 10], &[2, 5])?;
//! let fc = tape.param(&store, "fc.weight")?;
//! let err = tape.linear(x, fc, None).unwrap_err();
//! assert_eq!(err, AutogradError::Shape { op: "linear", expected: vec![2, 32], got: vec![2, 5] });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buffer_pool;
pub mod conformance;
mod cpu;
mod error;
mod grad;
pub mod gradcheck;
mod loss;
mod ops;
mod params;
pub mod small_net;
mod tape;
mod tensor;

pub use alexnet_core::{Backend, Conv2dGeom, LrnParams, PoolGeom, Rounding, SgdStep, Shape4};
pub use buffer_pool::{BufferPool, PoolStats};
pub use cpu::CpuBackend;
pub use error::{AutogradError, Result};
pub use gradcheck::{GradcheckConfig, GradcheckReport, gradcheck};
pub use loss::softmax_cross_entropy;
pub use params::{ParamId, ParamKind, ParamStore};
pub use tape::{Mode, NodeTimes, Tape};
pub use tensor::{Dims, HostTensor, Tensor};

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
