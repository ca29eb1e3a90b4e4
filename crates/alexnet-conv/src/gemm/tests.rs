use alexnet_core::{Error, rng};

use super::{Transpose, sgemm};
use crate::ConvError;

fn random(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64).map(|i| 2.0 * rng::uniform(seed, i) - 1.0).collect()
}

/// Element `(r, c)` of `op(M)` where `M` is stored row-major (as `rows x cols` of `op(M)` when
/// not transposed, `cols x rows` when transposed).
fn at(m: &[f32], t: Transpose, rows: usize, cols: usize, r: usize, c: usize) -> f64 {
    f64::from(match t {
        Transpose::No => m[r * cols + c],
        Transpose::Yes => m[c * rows + r],
    })
}

#[test]
fn all_transpose_combinations_match_f64_loops() {
    // The first four include products of up to four rows (the matrix-vector path when
    // op(B)'s columns are contiguous), one large enough to be split across threads.
    let sizes = [(1, 1, 1), (1, 300, 257), (4, 37, 1000), (3, 5, 7), (17, 9, 33), (64, 70, 130), (96, 301, 363)];
    for (case, &(m, n, k)) in sizes.iter().enumerate() {
        for ta in [Transpose::No, Transpose::Yes] {
            for tb in [Transpose::No, Transpose::Yes] {
                for (alpha, beta, threads) in [(1.0, 0.0, 1), (0.5, 1.0, 2), (-2.0, 0.25, 3)] {
                    let seed = 100 * case as u64;
                    let (a, b, c0) = (random(seed, m * k), random(seed + 1, k * n), random(seed + 2, m * n));
                    // With beta = 0, C starts as NaN: it must not be read.
                    let mut c = if beta == 0.0 { vec![f32::NAN; m * n] } else { c0.clone() };
                    sgemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut c, threads).unwrap();
                    for r in 0..m {
                        for col in 0..n {
                            let dot: f64 = (0..k).map(|p| at(&a, ta, m, k, r, p) * at(&b, tb, k, n, p, col)).sum();
                            let want = f64::from(alpha) * dot + f64::from(beta) * f64::from(c0[r * n + col]);
                            let got = f64::from(c[r * n + col]);
                            assert!(
                                (got - want).abs() <= 1e-5 * k as f64 + 1e-6,
                                "{m}x{n}x{k} {ta:?} {tb:?} alpha {alpha} beta {beta}: ({r}, {col}) got {got} want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn empty_inner_dimension_scales_c_by_beta() {
    let mut c = vec![2.0, -4.0];
    sgemm(Transpose::No, Transpose::No, 1, 2, 0, 1.0, &[], &[], 0.5, &mut c, 1).unwrap();
    assert_eq!(c, [1.0, -2.0]);
    let mut c = vec![f32::NAN; 2];
    sgemm(Transpose::No, Transpose::No, 2, 1, 0, 1.0, &[], &[], 0.0, &mut c, 1).unwrap();
    assert_eq!(c, [0.0, 0.0]);
    sgemm(Transpose::No, Transpose::No, 0, 3, 2, 1.0, &[], &[0.0; 6], 0.0, &mut [], 1).unwrap();
}

#[test]
fn wrong_lengths_are_errors_naming_the_buffer() {
    let err = |buffer, expected, got| ConvError::Core(Error::BufferSize { op: "sgemm", buffer, expected, got });
    let (a, b, mut c) = (vec![0.0; 6], vec![0.0; 12], vec![0.0; 8]);
    let run = |a: &[f32], b: &[f32], c: &mut [f32]| sgemm(Transpose::No, Transpose::Yes, 2, 4, 3, 1.0, a, b, 0.0, c, 1);
    assert_eq!(run(&a[1..], &b, &mut c), Err(err("a", 6, 5)));
    assert_eq!(run(&a, &b[..11], &mut c), Err(err("b", 12, 11)));
    assert_eq!(run(&a, &b, &mut c[..7]), Err(err("c", 8, 7)));
    assert!(run(&a, &b, &mut c).is_ok());
    let overflow = sgemm(Transpose::No, Transpose::No, usize::MAX, 2, 2, 1.0, &a, &b, 0.0, &mut c, 1);
    assert_eq!(overflow, Err(ConvError::SizeOverflow { op: "sgemm", what: "a = m x k" }));
}
