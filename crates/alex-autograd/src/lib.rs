//! A tape-based autograd over a Backend, with the CPU backend and a gradient checker.
//!
//! Under construction.
