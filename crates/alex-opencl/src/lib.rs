//! An OpenCL backend for alexnet-rs: every AlexNet kernel on the device.
//!
//! Under construction.
