//! Inverted dropout with the core counter RNG, bit-identical to the CPU masks.

use alexnet_core::rng::MaskWindow;
use alexnet_core::{Error, Result};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

pub(crate) fn forward(
    be: &OpenClBackend,
    p: f32,
    seed: u64,
    window: &MaskWindow,
    x: &ClBuffer,
    mask: &mut ClBuffer,
    y: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "dropout_forward";
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidParameter { what: "dropout p", value: p.into(), reason: "must be in [0, 1)" });
    }
    let n = x.len();
    be.check(OP, "x", x, n)?;
    be.check(OP, "mask", mask, n)?;
    be.check(OP, "y", y, n)?;
    window.check(n)?;
    let keep_scale = 1.0 / (1.0 - p);
    be.launch_1d(
        Kern::DropoutForward,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::F32(p),
            Arg::F32(keep_scale),
            Arg::U64(seed),
            Arg::U64(window.first_row),
            Arg::U64(window.first_col),
            Arg::U64(window.row_len),
            Arg::U64(window.total_row_len),
            Arg::Buf(x),
            Arg::Buf(mask),
            Arg::Buf(y),
        ],
    )
}

#[cfg(test)]
mod tests {
    use alexnet_core::rng::MaskWindow;
    use alexnet_core::{Backend, rng};

    use crate::testing::{backend, down, random, up};

    #[test]
    fn masks_match_the_core_rng_bit_for_bit() {
        let Some(be) = backend() else { return };
        let n = 10_007;
        let x = random(n, 1);
        let xb = up(&be, &x);
        for (p, seed) in [(0.5f32, 0u64), (0.1, 42), (0.9, u64::MAX), (0.0, 7)] {
            let (mut mask, mut y) = (be.zeros(n).unwrap(), be.zeros(n).unwrap());
            be.dropout_forward(p, seed, &MaskWindow::whole(n), &xb, &mut mask, &mut y).unwrap();
            let (mask, y) = (down(&be, &mask), down(&be, &y));
            let keep_scale = 1.0 / (1.0 - p);
            for i in 0..n {
                let want = if rng::dropout_keep(seed, i as u64, p) { keep_scale } else { 0.0 };
                assert_eq!(mask[i].to_bits(), want.to_bits(), "p {p} seed {seed} index {i}");
                assert_eq!(y[i].to_bits(), (x[i] * want).to_bits(), "p {p} seed {seed} index {i}");
            }
        }
    }

    #[test]
    fn windowed_masks_use_global_indices() {
        let Some(be) = backend() else { return };
        // Features 4..7 of rows of 10, from sample 5.
        let window = MaskWindow { first_row: 5, first_col: 4, row_len: 3, total_row_len: 10 };
        let (n, p, seed) = (12, 0.5f32, 99u64);
        let xb = up(&be, &vec![1.0; n]);
        let (mut mask, mut y) = (be.zeros(n).unwrap(), be.zeros(n).unwrap());
        be.dropout_forward(p, seed, &window, &xb, &mut mask, &mut y).unwrap();
        let mask = down(&be, &mask);
        for (i, &m) in mask.iter().enumerate() {
            let global = (5 + i as u64 / 3) * 10 + 4 + i as u64 % 3;
            assert_eq!(m > 0.0, rng::dropout_keep(seed, global, p), "local {i} global {global}");
        }
        let bad = MaskWindow { first_row: 0, first_col: 8, row_len: 3, total_row_len: 10 };
        assert!(be.dropout_forward(p, seed, &bad, &xb, &mut be.zeros(n).unwrap(), &mut be.zeros(n).unwrap()).is_err());
    }

    #[test]
    fn probability_out_of_range_is_an_error() {
        let Some(be) = backend() else { return };
        let x = be.zeros(3).unwrap();
        let (mut m, mut y) = (be.zeros(3).unwrap(), be.zeros(3).unwrap());
        for p in [1.0, -0.1, f32::NAN] {
            let err = be.dropout_forward(p, 0, &MaskWindow::whole(3), &x, &mut m, &mut y).unwrap_err();
            assert!(matches!(err, alexnet_core::Error::InvalidParameter { what: "dropout p", .. }), "{err}");
        }
    }
}
