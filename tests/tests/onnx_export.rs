//! ONNX export of every preset, run by tract (an ONNX runtime written independently of
//! this project): the exported graph must give this project's logits within 1e-4, so
//! grouped convolutions, LRN's alpha convention, overlapping and (adaptive) average
//! pooling, batch normalisation with running statistics, and dropout's removal all agree.

use std::sync::Arc;

use alexnet::checkpoint::TensorMap;
use alexnet::export::onnx_model_bytes;
use alexnet::init::init_params;
use alexnet::interop::head_name;
use alexnet::{Architecture, Model, ModelInfo, ParamRole, Preset};
use alexnet_autograd::{CpuBackend, Tape};
use alexnet_core::rng::uniform;
use tract_onnx::prelude::*;

/// `len` values uniform in `[lo, hi)` from stream `seed`.
fn draws(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len as u64).map(|i| lo + (hi - lo) * uniform(seed, i)).collect()
}

/// He-initialised parameters with batch-norm statistics and affine terms moved away from
/// their identity start, so that exporting them wrongly would show. The last layer is
/// scaled down to keep the logits near 1-5, where `f32` sums leave 1e-4 of room.
fn parameters(arch: &Architecture) -> TensorMap {
    let mut params = init_params(arch, alexnet::InitScheme::He, 3);
    let head = format!("{}.weight", head_name(arch));
    for (k, ((name, t), spec)) in params.iter_mut().zip(arch.params()).enumerate() {
        if *name == head {
            t.data.iter_mut().for_each(|v| *v *= 0.2);
        }
        let n = t.data.len();
        let seed = 100 + k as u64;
        match spec.role {
            ParamRole::RunningMean | ParamRole::BnShift => t.data = draws(seed, n, -0.5, 0.5),
            ParamRole::RunningVar | ParamRole::BnScale => t.data = draws(seed, n, 0.5, 2.0),
            ParamRole::Bias { .. } => t.data = draws(seed, n, -0.1, 0.1),
            ParamRole::Weight { .. } => {}
        }
    }
    params
}

/// Exports `preset` at `input` with `classes` and compares tract's logits with ours on a
/// batch of two inputs of amplitude `amplitude` (large enough that LRN's sum matters).
fn exported_logits_match(preset: Preset, input: [usize; 3], classes: usize, amplitude: f32) {
    let arch = Architecture::new(preset, input, classes).unwrap();
    let params = parameters(&arch);
    let info = ModelInfo {
        preset,
        input,
        class_names: (0..classes).map(|k| format!("class {k}")).collect(),
        init: preset.default_init(),
        resize: None,
        mean: vec![0.0; input[0]],
        std: vec![1.0; input[0]],
        lrn_groups: preset.default_lrn_groups(),
        layers: None,
    };
    let bytes = onnx_model_bytes(&info, &params).unwrap();

    let [c, h, w] = input;
    let dims = [2, c, h, w];
    let x = draws(7, dims.iter().product(), -amplitude, amplitude);
    let backend = Arc::new(CpuBackend::with_threads(2).unwrap());
    let mut model = Model::from_params(arch, backend.clone(), &params).unwrap();
    let mut tape = Tape::inference(backend);
    let xt = tape.input(&x, &dims).unwrap();
    let logits = model.forward(&mut tape, xt, 0).unwrap();
    let ours = tape.to_host(logits).unwrap();
    drop((model, tape));

    let runnable = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .with_input_fact(0, f32::fact(dims).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = runnable.run(tvec!(Tensor::from_shape(&dims, &x).unwrap().into_tvalue())).unwrap();
    assert_eq!(out[0].shape(), [2, classes]);
    let theirs: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
    let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let spread = ours.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("{preset} {input:?}: max |ours - tract| = {max_diff:.3e}, logits up to {spread:.3}");
    assert!(spread > 0.1, "logits too small to compare: {spread}");
    assert!(max_diff <= 1e-4, "{preset}: max |ours - tract| = {max_diff}");
}

#[test]
fn paper_with_groups_and_lrn_before_pooling() {
    exported_logits_match(Preset::Paper, [3, 227, 227], 10, 8.0);
}

#[test]
fn caffenet_with_lrn_after_pooling() {
    exported_logits_match(Preset::Caffenet, [3, 227, 227], 10, 8.0);
}

#[test]
fn keras_bn_with_running_statistics() {
    exported_logits_match(Preset::KerasBn, [3, 64, 64], 10, 1.0);
}

#[test]
fn mini_on_grey_images() {
    exported_logits_match(Preset::Mini, [1, 28, 28], 10, 8.0);
}

#[test]
fn torchvision_at_224_and_with_a_real_average_pool_at_416() {
    exported_logits_match(Preset::Torchvision, [3, 224, 224], 1000, 1.0);
    exported_logits_match(Preset::Torchvision, [3, 416, 416], 5, 1.0);
}
