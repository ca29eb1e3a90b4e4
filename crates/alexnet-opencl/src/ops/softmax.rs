//! Fused softmax cross-entropy, forward (probabilities and per-row loss) and backward.

use alexnet_core::Result;

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

pub(crate) fn forward(
    be: &OpenClBackend,
    batch: usize,
    classes: usize,
    logits: &ClBuffer,
    labels: &ClBuffer,
    probs: &mut ClBuffer,
    row_loss: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "softmax_xent_forward";
    be.check(OP, "logits", logits, batch * classes)?;
    be.check(OP, "labels", labels, batch)?;
    be.check(OP, "probs", probs, batch * classes)?;
    be.check(OP, "row_loss", row_loss, batch)?;
    if classes == 0 {
        return Err(alexnet_core::Error::ZeroSize { what: "classes" });
    }
    be.launch_groups(
        Kern::SoftmaxXentForward,
        batch,
        &[Arg::U32(u("classes", classes)?), Arg::Buf(logits), Arg::Buf(labels), Arg::Buf(probs), Arg::Buf(row_loss)],
    )
}

pub(crate) fn backward(
    be: &OpenClBackend,
    batch: usize,
    classes: usize,
    probs: &ClBuffer,
    labels: &ClBuffer,
    scale: f32,
    dlogits: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "softmax_xent_backward";
    be.check(OP, "probs", probs, batch * classes)?;
    be.check(OP, "labels", labels, batch)?;
    be.check(OP, "dlogits", dlogits, batch * classes)?;
    let n = batch * classes;
    be.launch_1d(
        Kern::SoftmaxXentBackward,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::U32(u("classes", classes)?),
            Arg::F32(scale),
            Arg::Buf(probs),
            Arg::Buf(labels),
            Arg::Buf(dlogits),
        ],
    )
}

#[cfg(test)]
mod tests {
    use alexnet_core::Backend;

    use crate::testing::{assert_close, backend, check_vjp, down, random, to_f64, up};

    /// Row losses `-log softmax(z)[label]` in f64.
    fn ref_loss(classes: usize, z: &[f64], labels: &[usize]) -> Vec<f64> {
        z.chunks(classes)
            .zip(labels)
            .map(|(row, &l)| {
                let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lse - row[l]
            })
            .collect()
    }

    #[test]
    fn forward_backward_match_reference() {
        let Some(be) = backend() else { return };
        // 1000 classes exceeds the 256-wide work-group: strided loops must cover the row.
        for (batch, classes) in [(3, 10), (2, 1000), (5, 1)] {
            // Large logits: the max subtraction must keep exp finite.
            let z: Vec<f32> = random(batch * classes, 1).iter().map(|v| 60.0 * v).collect();
            let labels: Vec<usize> = (0..batch).map(|r| (r * 7) % classes).collect();
            let labels_f: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let zd = to_f64(&z);
            let (zb, lb) = (up(&be, &z), up(&be, &labels_f));
            let (mut probs, mut loss) = (be.zeros(batch * classes).unwrap(), be.zeros(batch).unwrap());
            be.softmax_xent_forward(batch, classes, &zb, &lb, &mut probs, &mut loss).unwrap();
            assert_close("row loss", &down(&be, &loss), &ref_loss(classes, &zd, &labels), 1e-5);
            let rprobs: Vec<f64> = zd
                .chunks(classes)
                .flat_map(|row| {
                    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                    row.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
                })
                .collect();
            assert_close("probs", &down(&be, &probs), &rprobs, 1e-5);
            let scale = 1.0 / batch as f32;
            let mut dz = be.zeros(batch * classes).unwrap();
            be.softmax_xent_backward(batch, classes, &probs, &lb, scale, &mut dz).unwrap();
            let rdz: Vec<f64> = (0..batch * classes)
                .map(|i| f64::from(scale) * (rprobs[i] - f64::from(u8::from(labels[i / classes] == i % classes))))
                .collect();
            assert_close("dlogits", &down(&be, &dz), &rdz, 1e-4);
            if batch * classes <= 30 {
                // The reference gradient of the mean loss, by central differences (unscaled logits).
                let z1: Vec<f64> = zd.iter().map(|v| v / 60.0).collect();
                let p1: Vec<f64> = z1
                    .chunks(classes)
                    .flat_map(|row| {
                        let s: f64 = row.iter().map(|v| v.exp()).sum();
                        row.iter().map(move |v| v.exp() / s).collect::<Vec<_>>()
                    })
                    .collect();
                let g: Vec<f64> = (0..batch * classes)
                    .map(|i| (p1[i] - f64::from(u8::from(labels[i / classes] == i % classes))) / batch as f64)
                    .collect();
                check_vjp(
                    "softmax reference",
                    |z| vec![ref_loss(classes, z, &labels).iter().sum::<f64>() / batch as f64],
                    &z1,
                    &[1.0],
                    &g,
                );
            }
        }
    }

    #[test]
    fn invalid_label_gives_nan_loss() {
        let Some(be) = backend() else { return };
        let (z, labels) = (up(&be, &[0.0; 6]), up(&be, &[1.0, 3.0]));
        let (mut p, mut loss) = (be.zeros(6).unwrap(), be.zeros(2).unwrap());
        be.softmax_xent_forward(2, 3, &z, &labels, &mut p, &mut loss).unwrap();
        let loss = down(&be, &loss);
        assert!((loss[0] - 3f32.ln()).abs() < 1e-6 && loss[1].is_nan(), "{loss:?}");
    }
}
