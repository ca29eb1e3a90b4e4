//! Integration tests across the alexnet-rs crates live in `tests/`.
