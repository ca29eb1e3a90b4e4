//! AlexNet model presets, the paper's training recipe, checkpoints and metrics.
//!
//! Under construction.
