//! One backend shared by several threads (the `Backend` trait is `Sync`): kernel arguments
//! are set under a per-kernel lock, so concurrent launches of the same kernel stay correct.

use std::sync::Arc;

use alexnet_core::Backend;

#[test]
fn concurrent_gemms_on_one_backend() {
    let Some(be) = alexnet_opencl::test_backend() else { return };
    let be = Arc::new(be);
    let (m, n, k) = (33, 47, 29);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let be = Arc::clone(&be);
            std::thread::spawn(move || {
                // Thread t multiplies by t * identity: the result is t * a, exactly.
                let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 - 6.0).collect();
                let scaled_identity: Vec<f32> =
                    (0..k * n).map(|i| if i / n == i % n { t as f32 } else { 0.0 }).collect();
                let (da, db) = (be.upload(&a).unwrap(), be.upload(&scaled_identity).unwrap());
                let mut c = be.zeros(m * n).unwrap();
                for _ in 0..20 {
                    be.gemm(false, false, m, n, k, 1.0, &da, &db, 0.0, &mut c).unwrap();
                }
                let mut host = vec![0.0; m * n];
                be.download(&c, &mut host).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want = if j < k { t as f32 * a[i * k + j] } else { 0.0 };
                        assert_eq!(host[i * n + j], want, "thread {t} at ({i}, {j})");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
