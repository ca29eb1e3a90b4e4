//! A streaming, deterministic image augmentation pipeline on crossbeam channels.
//!
//! Under construction.
