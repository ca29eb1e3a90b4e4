//! Integration tests across the alexnet-rs crates live in `tests/`; this library holds what
//! they (and the runner's CLI tests) share: generated fixtures, including hostile ones
//! ([`fixtures`]), an allocation-counting allocator that turns "never allocates beyond a
//! bound" into a test ([`alloc`]), and a seeded byte-mutation loop for property tests on
//! stable Rust ([`mutate`]).

pub mod alloc;
pub mod fixtures;
pub mod mutate;
