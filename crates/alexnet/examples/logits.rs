//! Runs a weights file on raw input and writes the logits, for comparing with another
//! framework (`tests/fixtures/torchvision_alexnet.py verify` compares with PyTorch):
//!
//! ```text
//! cargo run -p alexnet --example logits -- PRESET WEIGHTS INPUT OUTPUT
//! ```
//!
//! `WEIGHTS` is an alexnet-rs checkpoint or a PyTorch `state_dict` in safetensors (e.g.
//! torchvision's AlexNet for `torchvision`); `INPUT` holds little-endian `f32` images,
//! `N x C x H x W` at the preset's input size, already normalised; `OUTPUT` receives the
//! `N x classes` logits in the same encoding.

use std::path::PathBuf;
use std::sync::Arc;

use alexnet::interop::{foreign_model_info, read_weights};
use alexnet::{Model, Preset};
use alexnet_autograd::{CpuBackend, Tape};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, weights, input, output] = args.as_slice() else {
        return Err("usage: logits PRESET WEIGHTS.safetensors INPUT.f32 OUTPUT.f32".into());
    };
    let preset: Preset = preset.parse()?;
    let file = read_weights(&PathBuf::from(weights))?;
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
