//! A small AlexNet-shaped network for examples, benchmarks and memory tests.

use alexnet_core::{Backend, BatchNormParams, Conv2dGeom, LrnParams, PoolGeom, Rounding, SgdStep};

use crate::conformance::uniform_data;
use crate::error::Result;
use crate::params::ParamStore;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// `3x32x32 -> conv 5x5 (32) -> ReLU -> LRN -> max pool 3/2 -> conv 3x3 (64, 2 groups) ->
/// ReLU -> max pool 3/2 -> fc 3136 -> 128 -> batch norm -> ReLU -> dropout 0.5 -> fc 10 ->
/// softmax cross-entropy`: every op family of AlexNet on CIFAR-sized images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmallConvNet {
    /// Images per batch.
    pub batch: usize,
    conv1: Conv2dGeom,
    conv2: Conv2dGeom,
    pool: PoolGeom,
    lrn: LrnParams,
}

/// Input channels, height, width.
pub const IMAGE: [usize; 3] = [3, 32, 32];
/// Output classes.
pub const CLASSES: usize = 10;
const HIDDEN: usize = 128;
const FLAT: usize = 64 * 7 * 7;
const BN: BatchNormParams = BatchNormParams { eps: 1e-5, momentum: 0.1 };

impl SmallConvNet {
    /// The network for batches of `batch` images.
    pub fn new(batch: usize) -> Result<Self> {
        Ok(Self {
            batch,
            conv1: Conv2dGeom::square(3, 32, 5, 1, 2, 1)?,
            conv2: Conv2dGeom::square(32, 64, 3, 1, 1, 2)?,
            pool: PoolGeom::square(3, 2, 0, Rounding::Floor)?,
            lrn: LrnParams::paper(),
        })
    }

    /// Inserts the parameters (`conv1.weight`, ..., `fc2.bias`, `bn1.*`) with uniform
    /// fan-in-scaled values.
    pub fn init<B: Backend>(&self, store: &mut ParamStore<B>, seed: u64) -> Result<()> {
        let layers: [(&str, Vec<usize>, usize); 4] = [
            ("conv1", self.conv1.weight_dims().to_vec(), 3 * 25),
            ("conv2", self.conv2.weight_dims().to_vec(), 16 * 9),
            ("fc1", vec![HIDDEN, FLAT], FLAT),
            ("fc2", vec![CLASSES, HIDDEN], HIDDEN),
        ];
        for (k, (name, dims, fan_in)) in layers.into_iter().enumerate() {
            let bound = (1.0 / fan_in as f32).sqrt();
            let len = dims.iter().product();
            store.insert(&format!("{name}.weight"), &dims, &uniform_data(len, seed + 2 * k as u64, -bound, bound))?;
            store.insert(&format!("{name}.bias"), &[dims[0]], &vec![0.0; dims[0]])?;
            if name == "fc1" {
                store.insert_batch_norm("bn1", HIDDEN)?;
            }
        }
        Ok(())
    }

    /// The mean loss of a batch (`images` is `batch x 3 x 32 x 32`, one label per image).
    pub fn loss<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        store: &mut ParamStore<B>,
        images: &[f32],
        labels: &[usize],
        dropout_seed: u64,
    ) -> Result<Tensor> {
        let logits = self.logits(tape, store, images, dropout_seed)?;
        tape.softmax_cross_entropy(logits, labels)
    }

    /// One SGD training step on a batch (the tape is reset first): forward, backward, update.
    /// Returns the batch's mean loss, read back once (with the summary) after the backward is queued.
    pub fn train_step<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        store: &mut ParamStore<B>,
        images: &[f32],
        labels: &[usize],
        dropout_seed: u64,
        step: &SgdStep,
    ) -> Result<f32> {
        tape.reset();
        let loss = self.loss(tape, store, images, labels, dropout_seed)?;
        tape.backward(loss, store)?;
        let value = tape.xent_summary(loss)?.mean_loss;
        store.sgd_step(step)?;
        Ok(value)
    }

    /// The class scores of a batch.
    pub fn logits<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        store: &mut ParamStore<B>,
        images: &[f32],
        dropout_seed: u64,
    ) -> Result<Tensor> {
        let x = tape.input(images, &[self.batch, IMAGE[0], IMAGE[1], IMAGE[2]])?;
        let h = self.conv(tape, store, x, "conv1", &self.conv1)?;
        let h = tape.lrn(h, &self.lrn)?;
        let h = tape.max_pool(h, &self.pool)?;
        let h = self.conv(tape, store, h, "conv2", &self.conv2)?;
        let h = tape.max_pool(h, &self.pool)?;
        let h = tape.flatten(h)?;
        let (w, b) = (tape.param(store, "fc1.weight")?, tape.param(store, "fc1.bias")?);
        let h = tape.linear(h, w, Some(b))?;
        let h = tape.batch_norm(h, store, "bn1", &BN)?;
        let h = tape.relu(h)?;
        let h = tape.dropout(h, 0.5, dropout_seed)?;
        let (w, b) = (tape.param(store, "fc2.weight")?, tape.param(store, "fc2.bias")?);
        tape.linear(h, w, Some(b))
    }

    fn conv<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        store: &ParamStore<B>,
        x: Tensor,
        name: &str,
        geom: &Conv2dGeom,
    ) -> Result<Tensor> {
        let (w, b) = (tape.param(store, &format!("{name}.weight"))?, tape.param(store, &format!("{name}.bias"))?);
        let h = tape.conv2d(x, w, Some(b), geom)?;
        tape.relu(h)
    }

    /// A synthetic, learnable batch: each class is a fixed pattern plus noise.
    pub fn synthetic_batch(&self, step: u64) -> (Vec<f32>, Vec<usize>) {
        let image_len: usize = IMAGE.iter().product();
        let labels: Vec<usize> =
            (0..self.batch).map(|i| (alexnet_core::rng::mix64(step, i as u64) % CLASSES as u64) as usize).collect();
        let mut images = uniform_data(self.batch * image_len, step.wrapping_mul(31) + 1, -0.5, 0.5);
        for (i, &label) in labels.iter().enumerate() {
            let pattern = uniform_data(image_len, 10_000 + label as u64, -1.0, 1.0);
            for (v, p) in images[i * image_len..][..image_len].iter_mut().zip(pattern) {
                *v += p;
            }
        }
        (images, labels)
    }
}
