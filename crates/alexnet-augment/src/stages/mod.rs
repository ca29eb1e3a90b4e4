//! The stages, each a small type: decode, resize, crops and flip, PCA noise, normalisation,
//! and the fused pass that applies the last four at once.

pub mod crop;
pub mod decode;
pub(crate) mod fused;
pub mod normalize;
pub mod pca;
pub mod resize;
