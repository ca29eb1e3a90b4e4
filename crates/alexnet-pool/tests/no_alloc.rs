//! Steady-state calls allocate nothing: after a warm-up (rayon's threads, each thread's
//! scratch), every op runs with the heap untouched. One worker thread, so that the warm-up
//! reaches every thread that later works (with more, a thread that got no work during the
//! warm-up sizes its scratch on its first task). Only that worker's allocations count: the test
//! harness's own threads may allocate at any time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use alexnet_core::{LrnParams, PoolGeom, PoolKind, Rounding, Shape4};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations count.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.get() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_calls_do_not_allocate() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        COUNTED.set(true);
        check_steady_state();
    });
}

fn check_steady_state() {
    let input = Shape4::new(4, 16, 27, 27).unwrap();
    let len = input.numel();
    let x: Vec<f32> = (0..len as u64).map(|i| alexnet_core::rng::uniform(1, i)).collect();
    let (mut y, mut scale, mut dx) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    let geom = PoolGeom::square(3, 2, 1, Rounding::Ceil).unwrap();
    let pooled = geom.output_shape(input).unwrap().numel();
    let (mut p, dp) = (vec![0.0; pooled], vec![1.0; pooled]);
    let lrn = LrnParams::paper();

    let mut run_all = || {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            alexnet_pool::pool_forward(kind, &geom, input, &x, &mut p).unwrap();
            alexnet_pool::pool_backward(kind, &geom, input, &x, &p, &dp, &mut dx).unwrap();
        }
        alexnet_pool::lrn_forward(&lrn, input, &x, &mut y, &mut scale).unwrap();
        alexnet_pool::lrn_backward(&lrn, input, &x, &y, &scale, &x, &mut dx).unwrap();
    };
    for _ in 0..5 {
        run_all();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..5 {
        run_all();
    }
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0, "allocations in steady state");
}
