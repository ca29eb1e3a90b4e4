//! The alexnet-rs runner. Placeholder until the trainer lands.
fn main() {}
