//! The `torchvision` preset against PyTorch: `fixtures/torchvision_alexnet.py` filled
//! torchvision's own AlexNet with pattern weights (recomputed here bit for bit), ran it on a
//! pattern input and saved the logits; this model must give the same within 1e-4. The
//! weights go through a safetensors file laid out as `safetensors.torch.save_file` writes
//! a `state_dict` (no alexnet-rs metadata), so the loading path is the one real files take.

use std::path::Path;
use std::sync::Arc;

use alexnet::checkpoint::TensorMap;
use alexnet::interop::{foreign_model_info, read_weights};
use alexnet::{Architecture, Model, ParamRole, Preset};
use alexnet_autograd::{CpuBackend, HostTensor, Tape};
use alexnet_core::rng::uniform;
use serde::Deserialize;

mod common;
use common::save_like_pytorch;

#[derive(Deserialize)]
struct Fixture {
    parameters: usize,
    state_dict: Vec<(String, Vec<usize>)>,
    input: Vec<usize>,
    logits: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision_alexnet_logits.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The fixture script's `pattern`: `(uniform(fnv1a64(name), i) - 0.5) * scale`.
fn pattern(name: &str, len: usize, scale: f32) -> Vec<f32> {
    let seed = fnv1a64(name);
    (0..len as u64).map(|i| (uniform(seed, i) - 0.5) * scale).collect()
}

fn pattern_params(arch: &Architecture) -> TensorMap {
    arch.params()
        .map(|p| {
            let scale = match p.role {
                ParamRole::Weight { fan_in } => (24.0 / fan_in as f64).sqrt() as f32,
                _ => 0.2,
            };
            (p.name.clone(), HostTensor { dims: p.dims.clone(), data: pattern(&p.name, p.numel(), scale) })
        })
        .collect()
}

#[test]
fn parameter_names_and_shapes_are_torchvisions() {
    let fixture = fixture();
    let arch = Architecture::default_for(Preset::Torchvision).unwrap();
    let ours: Vec<(String, Vec<usize>)> = arch.params().map(|p| (p.name.clone(), p.dims.clone())).collect();
    assert_eq!(ours, fixture.state_dict);
    assert_eq!(arch.trainable_params(), fixture.parameters);
    assert_eq!(fixture.parameters, 61_100_840);
}

#[test]
fn a_state_dict_file_loads_and_gives_pytorchs_logits() {
    let fixture = fixture();
    let arch = Architecture::default_for(Preset::Torchvision).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alexnet.safetensors");
    let params = pattern_params(&arch);
    save_like_pytorch(&params, &file);

    let loaded = read_weights(&file).unwrap();
    assert!(loaded.info.is_none(), "a PyTorch file has no alexnet-rs description");
    let info = foreign_model_info(Preset::Torchvision, &loaded.tensors).unwrap();
    assert_eq!((info.input, info.class_names.len(), info.resize), ([3, 224, 224], 1000, Some(256)));
    let backend = Arc::new(CpuBackend::with_threads(2).unwrap());
    let mut model = Model::from_params(info.architecture().unwrap(), backend.clone(), &loaded.tensors).unwrap();

    let dims = fixture.input.clone();
    let input = pattern("input", dims.iter().product(), 4.0);
    let mut tape = Tape::inference(backend);
    let x = tape.input(&input, &dims).unwrap();
    let logits = model.forward(&mut tape, x, 0).unwrap();
    let ours = tape.to_host(logits).unwrap();
    let want: Vec<f32> = fixture.logits.concat();
    assert_eq!(ours.len(), want.len());
    let max_diff = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let spread = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("max |logit - PyTorch's| = {max_diff:.3e} (logits up to {spread:.2} in magnitude)");
    assert!(spread > 1.0, "the fixture's logits should not be trivially small: {spread}");
    assert!(max_diff <= 1e-4, "max |logit - PyTorch's| = {max_diff}");
}
