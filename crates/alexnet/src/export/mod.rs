//! ONNX export: any preset's model as an ONNX graph (opset 13, IR version 7) that
//! onnxruntime, tract and other ONNX runtimes run with the same logits.
//!
//! One node per layer, in inference form:
//!
//! - convolutions as `Conv` with their `group` (the paper's two-GPU split), dense layers as
//!   `Gemm` with `transB = 1` (the weights stay in PyTorch's `[out, in]` layout);
//! - LRN as `LRN` with `alpha` in ONNX's convention: ONNX (like Caffe and PyTorch) divides
//!   `alpha` by `size`, so a paper-convention `alpha` (times the plain sum) is written as
//!   `alpha * size`;
//! - pooling as `MaxPool` / `AveragePool` with its window, stride and padding (`ceil_mode`
//!   for Caffe-rounded pools), adaptive average pooling as the plain `AveragePool` it is;
//! - batch normalisation as `BatchNormalization` with the running statistics;
//! - dropout removed (the identity at inference).
//!
//! The input `input` is `[batch, channels, height, width]` `f32` with a symbolic batch,
//! normalised as the model was trained: `(pixel / 255 - mean) / std` per channel, the
//! values in the model's `alexnet-rs.model` metadata (also stored in the ONNX file's
//! `metadata_props`). The output `logits` is `[batch, classes]` (no softmax).
//!
//! The protobuf is encoded by `prost` from types generated from ONNX's own `onnx.proto`
//! (`crates/alexnet/proto/`, see `regenerate.sh` there).
//!
//! ```no_run
//! use std::path::Path;
//! alexnet::export::export_checkpoint(Path::new("runs/mini-1"), None, Path::new("mini.onnx"))?;
//! # Ok::<(), alexnet::Error>(())
//! ```

#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
mod onnx_pb;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alexnet_core::{Activation, PoolGeom, Rounding};
use prost::Message;

use crate::checkpoint::TensorMap;
use crate::error::{Error, Result};
use crate::interop::{foreign_model_info, read_weights};
use crate::model::{MODEL_KEY, ModelInfo};
use crate::preset::{Architecture, LayerSpec, Preset, ResolvedLayer};
use onnx_pb::attribute_proto::AttributeType;
use onnx_pb::tensor_proto::DataType;
use onnx_pb::tensor_shape_proto::{Dimension, dimension};
use onnx_pb::type_proto;
use onnx_pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The ONNX operator set the graph uses (every operator here is unchanged since 13 or
/// earlier, so runtimes from 2021 on read it).
pub const OPSET: i64 = 13;
/// The ONNX IR version matching [`OPSET`].
pub const IR_VERSION: i64 = 7;
/// The graph's input name.
pub const INPUT_NAME: &str = "input";
/// The graph's output name.
pub const OUTPUT_NAME: &str = "logits";

/// What [`export_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The weights file read.
    pub weights: PathBuf,
    /// The model exported.
    pub info: ModelInfo,
    /// The ONNX file written.
    pub onnx: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Graph nodes (one per layer but dropout).
    pub nodes: usize,
}

/// Exports a weights file to ONNX at `onnx`: a run folder (its best weights), a
/// checkpoint's `.safetensors` or `.state.json`, or a PyTorch `state_dict` file, which needs
/// `preset` (its description is not in the file; the class count comes from its last
/// layer).
pub fn export_checkpoint(checkpoint: &Path, preset: Option<Preset>, onnx: &Path) -> Result<ExportReport> {
    let weights = crate::trainer::resolve_weights_path(checkpoint)?;
    let file = read_weights(&weights)?;
    let info = match (file.info, preset) {
        (Some(info), Some(p)) if info.preset != p => {
            return Err(Error::Checkpoint {
                path: weights,
                reason: format!(
                    "it holds a {} model, not {p}; drop --preset or pass --preset {}",
                    info.preset, info.preset
                ),
            });
        }
        (Some(info), _) => info,
        (None, Some(p)) => foreign_model_info(p, &file.tensors)?,
        (None, None) => {
            return Err(Error::Checkpoint {
                path: weights,
                reason: "it has no alexnet-rs model description (a PyTorch state_dict?); pass --preset".into(),
            });
        }
    };
    let bytes = onnx_model_bytes(&info, &file.tensors)
        .map_err(|e| Error::Checkpoint { path: weights.clone(), reason: e.to_string() })?;
    crate::atomic::write_atomic(onnx, &bytes)?;
    let nodes = info.architecture()?.layers.iter().filter(|l| !matches!(l.spec, LayerSpec::Dropout { .. })).count();
    Ok(ExportReport { weights, info, onnx: onnx.to_path_buf(), bytes: bytes.len() as u64, nodes })
}

/// The serialised ONNX model of the model `info` describes with parameters `params` (every
/// tensor of the architecture with its dims; extras are an error).
pub fn onnx_model_bytes(info: &ModelInfo, params: &TensorMap) -> Result<Vec<u8>> {
    Ok(onnx_model(info, params)?.encode_to_vec())
}

fn onnx_model(info: &ModelInfo, params: &TensorMap) -> Result<ModelProto> {
    let arch = info.architecture()?;
    let mut by_name: HashMap<&str, &alexnet_autograd::HostTensor> =
        params.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut initializer = Vec::new();
    for spec in arch.params() {
        let t = by_name
            .remove(spec.name.as_str())
            .ok_or_else(|| Error::config(format!("parameter {} is missing", spec.name)))?;
        if t.dims != spec.dims {
            return Err(Error::config(format!(
                "parameter {} has dims {:?}, expected {:?}",
                spec.name, t.dims, spec.dims
            )));
        }
        initializer.push(TensorProto {
            name: Some(spec.name.clone()),
            dims: t.dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(t.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(Error::config(format!("unexpected parameter {extra} for the {} model", arch.preset)));
    }
    let graph = GraphProto {
        name: Some(format!("alexnet-rs {}", arch.preset)),
        node: nodes(&arch),
        initializer,
        input: vec![value_info(INPUT_NAME, &input_dims(&arch))],
        output: vec![value_info(OUTPUT_NAME, &[Dim::Batch, Dim::Fixed(arch.classes)])],
        ..Default::default()
    };
    let [_, h, w] = arch.input;
    let doc = format!(
        "AlexNet ({} preset) exported by alexnet-rs. Input `{INPUT_NAME}`: [batch, {}, {h}, {w}] float, \
         (pixel / 255 - mean) / std per channel with mean {:?}, std {:?}. Output `{OUTPUT_NAME}`: [batch, {}] \
         class scores before softmax; class names in the `{MODEL_KEY}` metadata.",
        arch.preset, arch.input[0], info.mean, info.std, arch.classes
    );
    let description = serde_json::to_string(info).expect("ModelInfo serialises");
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("alexnet-rs".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc),
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto { key: Some(MODEL_KEY.into()), value: Some(description) }],
        ..Default::default()
    })
}

/// One dimension of a graph input or output.
enum Dim {
    /// The symbolic batch size.
    Batch,
    /// A fixed extent.
    Fixed(usize),
}

fn input_dims(arch: &Architecture) -> [Dim; 4] {
    let [c, h, w] = arch.input;
    [Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)]
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => dimension::Value::DimParam("batch".into()),
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

/// `kernel_shape`, `strides`, `pads` (and `ceil_mode` when it rounds up) of a pool.
fn pool_attributes(geom: &PoolGeom) -> Vec<AttributeProto> {
    let mut attributes = vec![
        ints("kernel_shape", &[geom.window_h, geom.window_w]),
        ints("strides", &[geom.stride_h, geom.stride_w]),
        ints("pads", &[geom.pad_h, geom.pad_w, geom.pad_h, geom.pad_w]),
    ];
    if geom.rounding == Rounding::Ceil {
        attributes.push(int("ceil_mode", 1));
    }
    attributes
}

/// One layer as an ONNX node, before it is wired into the graph.
struct Operator {
    /// The ONNX operator.
    op: &'static str,
    /// Its attributes.
    attributes: Vec<AttributeProto>,
    /// The parameter inputs after the activation.
    params: Vec<String>,
    /// Channel groups the operator runs on apart (an LRN of the paper's two GPUs): more
    /// than one becomes Split, the operator on each part, Concat.
    channel_groups: usize,
}

/// The ONNX operator of one layer; `None` for layers that inference skips (dropout).
fn operator(layer: &ResolvedLayer) -> Option<Operator> {
    let params = |name: &str, suffixes: &[&str]| suffixes.iter().map(|s| format!("{name}.{s}")).collect::<Vec<_>>();
    let mut channel_groups = 1;
    let (op, attributes, params) = match &layer.spec {
        LayerSpec::Conv { name, .. } => {
            let g = layer.conv.as_ref().expect("resolved convolutions carry their geometry");
            let attributes = vec![
                ints("kernel_shape", &[g.kernel_h, g.kernel_w]),
                ints("strides", &[g.stride_h, g.stride_w]),
                ints("pads", &[g.pad_h, g.pad_w, g.pad_h, g.pad_w]),
                ints("dilations", &[1, 1]),
                int("group", g.groups as i64),
            ];
            ("Conv", attributes, params(name, &["weight", "bias"]))
        }
        LayerSpec::Activation { function } => {
            let op = match function {
                Activation::Relu => "Relu",
                Activation::Sigmoid => "Sigmoid",
                Activation::Tanh => "Tanh",
            };
            (op, vec![], vec![])
        }
        LayerSpec::Lrn { params: p, groups } => {
            channel_groups = *groups;
            // ONNX: x / (bias + alpha / size * sum)^beta, so alpha = (coefficient of the sum) * size.
            let attributes = vec![
                float("alpha", p.sum_coefficient() * p.size as f32),
                float("beta", p.beta),
                float("bias", p.k),
                int("size", p.size as i64),
            ];
            ("LRN", attributes, vec![])
        }
        LayerSpec::MaxPool { .. } => {
            ("MaxPool", pool_attributes(layer.pool.as_ref().expect("resolved pools carry their geometry")), vec![])
        }
        LayerSpec::AdaptiveAvgPool { .. } => {
            ("AveragePool", pool_attributes(layer.pool.as_ref().expect("resolved pools carry their geometry")), vec![])
        }
        LayerSpec::BatchNorm { name, eps, .. } => (
            "BatchNormalization",
            vec![float("epsilon", *eps)],
            params(name, &["weight", "bias", "running_mean", "running_var"]),
        ),
        LayerSpec::Dropout { .. } => return None,
        LayerSpec::Flatten => ("Flatten", vec![int("axis", 1)], vec![]),
        LayerSpec::Dense { name, .. } => ("Gemm", vec![int("transB", 1)], params(name, &["weight", "bias"])),
    };
    Some(Operator { op, attributes, params, channel_groups })
}

/// The graph's nodes: one per layer but dropout (three and more for an operator on channel
/// groups), chained from [`INPUT_NAME`] to [`OUTPUT_NAME`].
fn nodes(arch: &Architecture) -> Vec<NodeProto> {
    let layers: Vec<(usize, Operator)> =
        arch.layers.iter().enumerate().filter_map(|(i, l)| operator(l).map(|op| (i, op))).collect();
    let node = |name: String, op: &str, input: Vec<String>, output: Vec<String>, attribute: Vec<AttributeProto>| {
        NodeProto { name: Some(name), op_type: Some(op.into()), input, output, attribute, ..Default::default() }
    };
    let mut current = INPUT_NAME.to_string();
    let last = layers.len() - 1;
    let mut graph = Vec::with_capacity(layers.len());
    for (k, (i, Operator { op, attributes, params, channel_groups })) in layers.into_iter().enumerate() {
        let name = format!("{i:02}_{op}");
        let output = if k == last { OUTPUT_NAME.to_string() } else { name.clone() };
        let input = std::mem::replace(&mut current, output.clone());
        if channel_groups == 1 {
            graph.push(node(name, op, std::iter::once(input).chain(params).collect(), vec![output], attributes));
            continue;
        }
        // Split into equal channel parts (no `split` input), the operator on each, Concat.
        let parts: Vec<String> = (0..channel_groups).map(|g| format!("{name}_part{g}")).collect();
        graph.push(node(format!("{name}_split"), "Split", vec![input], parts.clone(), vec![int("axis", 1)]));
        let results: Vec<String> = parts.iter().map(|p| format!("{p}_{op}")).collect();
        for (part, result) in parts.iter().zip(&results) {
            let input = std::iter::once(part.clone()).chain(params.iter().cloned()).collect();
            graph.push(node(result.clone(), op, input, vec![result.clone()], attributes.clone()));
        }
        graph.push(node(format!("{name}_concat"), "Concat", results, vec![output], vec![int("axis", 1)]));
    }
    graph
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::init_params;

    fn model_for(preset: Preset) -> ModelProto {
        let arch = Architecture::default_for(preset).unwrap();
        let info = ModelInfo {
            preset,
            input: arch.input,
            class_names: (0..arch.classes).map(|k| k.to_string()).collect(),
            init: preset.default_init(),
            resize: None,
            mean: vec![0.0; arch.input[0]],
            std: vec![1.0; arch.input[0]],
            lrn_groups: preset.default_lrn_groups(),
            layers: None,
        };
        let params = init_params(&arch, crate::InitScheme::He, 1);
        onnx_model(&info, &params).unwrap()
    }

    fn attribute<'a>(node: &'a NodeProto, name: &str) -> &'a AttributeProto {
        node.attribute.iter().find(|a| a.name.as_deref() == Some(name)).unwrap()
    }

    #[test]
    fn caffenet_graph_groups_lrn_alpha_and_no_dropout() {
        let model = model_for(Preset::Caffenet);
        let bytes = model.encode_to_vec();
        assert_eq!(ModelProto::decode(bytes.as_slice()).unwrap(), model, "the encoding round-trips");
        let graph = model.graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect();
        assert_eq!(
            ops,
            [
                "Conv", "Relu", "MaxPool", "LRN", "Conv", "Relu", "MaxPool", "LRN", "Conv", "Relu", "Conv", "Relu",
                "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"
            ]
        );
        let groups: Vec<i64> = graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Conv"))
            .map(|n| attribute(n, "group").i.unwrap())
            .collect();
        assert_eq!(groups, [1, 2, 1, 2, 2]);
        // The paper's 1e-4 times the plain sum of 5 squares is ONNX's alpha / size with alpha 5e-4.
        let lrn = graph.node.iter().find(|n| n.op_type.as_deref() == Some("LRN")).unwrap();
        assert!((attribute(lrn, "alpha").f.unwrap() - 5e-4).abs() < 1e-10);
        assert_eq!(
            (attribute(lrn, "size").i, attribute(lrn, "bias").f, attribute(lrn, "beta").f),
            (Some(5), Some(2.0), Some(0.75))
        );
        // Each node reads the previous one's output; the last writes the logits.
        assert_eq!(graph.node[0].input[0], INPUT_NAME);
        for pair in graph.node.windows(2) {
            assert_eq!(pair[1].input[0], pair[0].output[0]);
        }
        assert_eq!(graph.node.last().unwrap().output[0], OUTPUT_NAME);
        assert_eq!(graph.initializer.len(), 16);
        let pool = graph.node.iter().find(|n| n.op_type.as_deref() == Some("MaxPool")).unwrap();
        assert_eq!(
            (attribute(pool, "kernel_shape").ints.clone(), attribute(pool, "strides").ints.clone()),
            (vec![3, 3], vec![2, 2])
        );
    }

    /// The paper's LRN normalises each GPU's half of the channels apart: Split, an LRN per
    /// half, Concat, wired in that order.
    #[test]
    fn paper_graph_normalises_each_half_apart() {
        let graph = model_for(Preset::Paper).graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect();
        assert_eq!(ops[..8], ["Conv", "Relu", "Split", "LRN", "LRN", "Concat", "MaxPool", "Conv"]);
        assert_eq!(ops.iter().filter(|&&o| o == "LRN").count(), 4);
        let split = &graph.node[2];
        assert_eq!((split.input[0].as_str(), split.output.len()), (graph.node[1].output[0].as_str(), 2));
        assert_eq!(graph.node[3].input[0], split.output[0]);
        assert_eq!(graph.node[4].input[0], split.output[1]);
        assert_eq!(graph.node[5].input, [graph.node[3].output[0].clone(), graph.node[4].output[0].clone()]);
        assert_eq!(graph.node[6].input[0], graph.node[5].output[0]);
        assert_eq!(attribute(&graph.node[5], "axis").i, Some(1));
    }

    #[test]
    fn keras_bn_exports_batch_norm_and_torchvision_its_average_pool() {
        let graph = model_for(Preset::KerasBn).graph.unwrap();
        let bn: Vec<&NodeProto> =
            graph.node.iter().filter(|n| n.op_type.as_deref() == Some("BatchNormalization")).collect();
        assert_eq!(bn.len(), 6);
        assert_eq!(
            bn[0].input[1..],
            ["conv1_bn.weight", "conv1_bn.bias", "conv1_bn.running_mean", "conv1_bn.running_var"]
        );
        assert_eq!(attribute(bn[0], "epsilon").f, Some(1e-3));
        let graph = model_for(Preset::Torchvision).graph.unwrap();
        let avg = graph.node.iter().find(|n| n.op_type.as_deref() == Some("AveragePool")).unwrap();
        assert_eq!(attribute(avg, "kernel_shape").ints, [1, 1], "6x6 pooled to 6x6");
        assert!(graph.node.iter().all(|n| n.op_type.as_deref() != Some("Dropout")));
    }
}
