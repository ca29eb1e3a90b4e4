//! Fused softmax cross-entropy: forward (probabilities, mean loss and the batch summary, all on
//! the device) and backward (scaled by the upstream gradient read on the device).

use alexnet_core::{Result, XENT_SUMMARY_LEN};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    be: &OpenClBackend,
    batch: usize,
    classes: usize,
    logits: &ClBuffer,
    labels: &ClBuffer,
    probs: &mut ClBuffer,
    loss: &mut ClBuffer,
    summary: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "softmax_xent_forward";
    be.check(OP, "logits", logits, batch * classes)?;
    be.check(OP, "labels", labels, batch)?;
    be.check(OP, "probs", probs, batch * classes)?;
    be.check(OP, "loss", loss, 1)?;
    be.check(OP, "summary", summary, XENT_SUMMARY_LEN)?;
    if classes == 0 {
        return Err(alexnet_core::Error::ZeroSize { what: "classes" });
    }
    let row_stats = be.scratch(3 * batch)?;
    be.launch_groups(
        Kern::SoftmaxXentForward,
        batch,
        &[Arg::U32(u("classes", classes)?), Arg::Buf(logits), Arg::Buf(labels), Arg::Buf(probs), Arg::Buf(&row_stats)],
    )?;
    be.launch_groups(
        Kern::SoftmaxXentSummary,
        1,
        &[Arg::U32(u("batch", batch)?), Arg::Buf(&row_stats), Arg::Buf(labels), Arg::Buf(loss), Arg::Buf(summary)],
    )
}

pub(crate) fn backward(
    be: &OpenClBackend,
    batch: usize,
    classes: usize,
    probs: &ClBuffer,
    labels: &ClBuffer,
    dloss: &ClBuffer,
    dlogits: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "softmax_xent_backward";
    be.check(OP, "probs", probs, batch * classes)?;
    be.check(OP, "labels", labels, batch)?;
    be.check(OP, "dloss", dloss, 1)?;
    be.check(OP, "dlogits", dlogits, batch * classes)?;
    let n = batch * classes;
    be.launch_1d(
        Kern::SoftmaxXentBackward,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::U32(u("classes", classes)?),
            Arg::F32(1.0 / batch.max(1) as f32),
            Arg::Buf(dloss),
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
            let (mut probs, mut loss) = (be.zeros(batch * classes).unwrap(), be.zeros(1).unwrap());
            let mut summary = be.zeros(alexnet_core::XENT_SUMMARY_LEN).unwrap();
            be.softmax_xent_forward(batch, classes, &zb, &lb, &mut probs, &mut loss, &mut summary).unwrap();
            let mean = ref_loss(classes, &zd, &labels).iter().sum::<f64>() / batch as f64;
            assert_close("mean loss", &down(&be, &loss), &[mean], 1e-5);
            let rprobs: Vec<f64> = zd
                .chunks(classes)
                .flat_map(|row| {
                    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                    row.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
                })
                .collect();
            assert_close("probs", &down(&be, &probs), &rprobs, 1e-5);
            // An upstream gradient of 3 on the mean loss.
            let scale = 3.0 / batch as f32;
            let mut dz = be.zeros(batch * classes).unwrap();
            be.softmax_xent_backward(batch, classes, &probs, &lb, &up(&be, &[3.0]), &mut dz).unwrap();
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
    fn invalid_label_is_flagged_with_a_nan_loss() {
        let Some(be) = backend() else { return };
        let (z, labels) = (up(&be, &[0.0; 6]), up(&be, &[1.0, 3.0]));
        let (mut p, mut loss) = (be.zeros(6).unwrap(), be.zeros(1).unwrap());
        let mut summary = be.zeros(alexnet_core::XENT_SUMMARY_LEN).unwrap();
        be.softmax_xent_forward(2, 3, &z, &labels, &mut p, &mut loss, &mut summary).unwrap();
        assert!(down(&be, &loss)[0].is_nan());
        // One invalid label, in row 1, valued 3.
        assert_eq!(down(&be, &summary)[3..], [1.0, 1.0, 3.0]);
    }
}
