//! Host side of each op family: argument checks and kernel launches, with tests beside them
//! comparing against direct f64 formulas (themselves gradient-checked by central differences).

pub(crate) mod batchnorm;
pub(crate) mod conv;
pub(crate) mod dropout;
pub(crate) mod elementwise;
pub(crate) mod gemm;
pub(crate) mod lrn;
pub(crate) mod pool;
pub(crate) mod sgd;
pub(crate) mod softmax;
