//! Overlapping max/average pooling and local response normalisation, forward and backward.
//!
//! Under construction.
