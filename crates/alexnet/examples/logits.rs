//! Runs a weights file on raw input and writes the logits, for comparing with another
//! framework (`tests/fixtures/torchvision_alexnet.py verify` compares with PyTorch and
//! onnxruntime):
//!
//! ```text
//! cargo run -p alexnet --example logits -- run PRESET WEIGHTS INPUT OUTPUT
//! cargo run -p alexnet --example logits -- init PRESET SEED WEIGHTS
//! ```
//!
//! `run`: `WEIGHTS` is an alexnet-rs checkpoint or a PyTorch `state_dict` in safetensors
//! (e.g. torchvision's AlexNet for `torchvision`); `INPUT` holds little-endian `f32`
//! images, `N x C x H x W` at the preset's input size, already normalised; `OUTPUT`
//! receives the `N x classes` logits in the same encoding. `init` writes an alexnet-rs
//! weights file of the preset at its default size, He-initialised from `SEED`.

use std::path::Path;
use std::sync::Arc;

use alexnet::checkpoint::save_tensors;
use alexnet::init::init_params;
use alexnet::interop::{foreign_model_info, read_weights};
use alexnet::{Architecture, InitScheme, Model, ModelInfo, Preset};
use alexnet_autograd::{CpuBackend, Tape};

type AnyResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() -> AnyResult {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["run", preset, weights, input, output] => run(preset.parse()?, weights, input, output),
        ["init", preset, seed, weights] => init(preset.parse()?, seed.parse()?, weights),
        _ => Err("usage: logits run PRESET WEIGHTS INPUT OUTPUT | logits init PRESET SEED WEIGHTS".into()),
    }
}

fn run(preset: Preset, weights: &str, input: &str, output: &str) -> AnyResult {
    let file = read_weights(Path::new(weights))?;
    let info = match file.info {
        Some(info) => info,
        None => foreign_model_info(preset, &file.tensors)?,
    };
    let backend = Arc::new(CpuBackend::new());
    let mut model = Model::from_params(info.architecture()?, backend.clone(), &file.tensors)?;
    let bytes = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let pixels: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let [c, h, w] = info.input;
    if pixels.is_empty() || !bytes.len().is_multiple_of(4) || !pixels.len().is_multiple_of(c * h * w) {
        return Err(format!("{input}: {} bytes are not whole {c}x{h}x{w} f32 images", bytes.len()).into());
    }
    let mut tape = Tape::inference(backend);
    let x = tape.input(&pixels, &[pixels.len() / (c * h * w), c, h, w])?;
    let logits = model.forward(&mut tape, x, 0)?;
    let out: Vec<u8> = tape.to_host(logits)?.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))?;
    Ok(())
}

fn init(preset: Preset, seed: u64, weights: &str) -> AnyResult {
    let arch = Architecture::default_for(preset)?;
    let c = arch.input[0];
    let info = ModelInfo {
        preset,
        input: arch.input,
        class_names: (0..arch.classes).map(|k| k.to_string()).collect(),
        init: InitScheme::He,
        resize: None,
        mean: vec![0.0; c],
        std: vec![1.0; c],
        lrn_groups: preset.default_lrn_groups(),
        layers: None,
    };
    save_tensors(Path::new(weights), &init_params(&arch, InitScheme::He, seed), info.to_metadata())?;
    Ok(())
}
