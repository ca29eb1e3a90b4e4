//! Backend-generic conformance tests: every op's forward against a direct f64 formula,
//! forward and backward against [`CpuBackend`], and f64 gradient checks, all through the
//! backend under test.
//!
//! The bodies are generic functions over [`Backend`]; [`crate::backend_conformance_tests!`]
//! instantiates one `#[test]` per family for a backend:
//!
//! ```
//! // In a test file of the backend's crate (here: the CPU backend itself).
//! alexnet_autograd::backend_conformance_tests!(alexnet_autograd::CpuBackend::new());
//! # fn main() {}
//! ```
//!
//! Nothing here assumes the CPU: values travel through `upload`/`download` only.

pub mod reference;

use std::sync::Arc;

use alexnet_core::rng::{mix64, uniform};
use alexnet_core::{
    Activation, AlphaConvention, Backend, BatchNormParams, Conv2dGeom, LrnParams, MaskWindow, PoolGeom, PoolKind,
    Rounding, Shape4,
};

use crate::CpuBackend;
use crate::error::{AutogradError, Result};
use crate::gradcheck::{GradcheckConfig, gradcheck};
use crate::params::ParamStore;
use crate::tape::{Mode, Tape};
use crate::tensor::{HostTensor, Tensor};

/// Relative tolerance between two backends, and between a backend and the f64 formulas.
pub const RTOL: f64 = 1e-4;

/// The batch-norm constants used by the cases.
pub const BN_PARAMS: BatchNormParams = BatchNormParams { eps: 1e-5, momentum: 0.1 };

/// Groups of ops, one test each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Convolution with groups, stride, padding.
    Conv2d,
    /// Max and average pooling.
    Pool,
    /// Local response normalisation.
    Lrn,
    /// Dense layer.
    Linear,
    /// ReLU, sigmoid, tanh.
    Activation,
    /// Flatten / reshape.
    Reshape,
    /// Inverted dropout.
    Dropout,
    /// Batch normalisation, dense and convolutional.
    BatchNorm,
    /// Fused softmax cross-entropy.
    SoftmaxXent,
    /// Add, scale, mean, and tensors used more than once.
    Arithmetic,
    /// conv -> LRN -> max pool -> linear -> softmax cross-entropy, end to end.
    Network,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 11] = [
        Family::Conv2d,
        Family::Pool,
        Family::Lrn,
        Family::Linear,
        Family::Activation,
        Family::Reshape,
        Family::Dropout,
        Family::BatchNorm,
        Family::SoftmaxXent,
        Family::Arithmetic,
        Family::Network,
    ];
}

/// The graph a case builds. Parameters are named `w`, `b`, `w2`, `b2`; batch norm uses `bn`.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseOp {
    /// `conv2d(x, w, b?)`.
    Conv2d {
        /// Geometry.
        geom: Conv2dGeom,
        /// Whether `b` exists.
        bias: bool,
    },
    /// `pool(x)`.
    Pool {
        /// Max or average.
        kind: PoolKind,
        /// Geometry.
        geom: PoolGeom,
    },
    /// `lrn_grouped(x, params, groups)`.
    Lrn {
        /// The constants.
        params: LrnParams,
        /// Channel groups normalised apart (1: across all channels).
        groups: usize,
    },
    /// `linear(x, w, b?)`.
    Linear {
        /// Whether `b` exists.
        bias: bool,
    },
    /// `f(x)`.
    Activation(Activation),
    /// `flatten(x)`.
    Flatten,
    /// `dropout_at(x, p, seed, window)`.
    Dropout {
        /// Drop probability.
        p: f32,
        /// Mask seed.
        seed: u64,
        /// Where `x` sits in the whole tensor.
        window: MaskWindow,
    },
    /// `batch_norm(x, "bn")`.
    BatchNorm,
    /// `softmax_cross_entropy(x, labels)`.
    SoftmaxXent {
        /// One label per row.
        labels: Vec<usize>,
    },
    /// `add(x0, x1)`.
    Add,
    /// `scale(x, alpha)`.
    Scale(f32),
    /// `mean(x)`.
    Mean,
    /// `y = tanh(x); add(y, scale(add(y, y), 1.5))`: one tensor feeding three uses.
    Diamond,
    /// `softmax_xent(linear(flatten(max_pool(lrn(conv2d(x, w, b)))), w2, b2), labels)`.
    Network {
        /// Convolution geometry.
        conv: Conv2dGeom,
        /// LRN constants.
        lrn: LrnParams,
        /// Pooling geometry.
        pool: PoolGeom,
        /// Labels.
        labels: Vec<usize>,
    },
}

/// One test case: a graph, its inputs and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// For messages.
    pub name: String,
    /// The family it belongs to.
    pub family: Family,
    /// The graph.
    pub op: CaseOp,
    /// Host inputs.
    pub inputs: Vec<HostTensor>,
    /// Trainable parameters.
    pub params: Vec<(String, HostTensor)>,
    /// Gradient-check settings for this case.
    pub gradcheck: GradcheckConfig,
}

/// Deterministic "random" draws for case shapes and data.
struct Draw {
    seed: u64,
    counter: u64,
}

impl Draw {
    fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// An integer in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        self.counter += 1;
        lo + (mix64(self.seed, self.counter) % (hi - lo + 1) as u64) as usize
    }
}

/// `len` values uniform in `[lo, hi)` from stream `seed`.
pub fn uniform_data(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    (0..len as u64).map(|i| lo + (hi - lo) * uniform(seed, i)).collect()
}

/// `len` values in `[-1, 1]` whose magnitudes are at least `gap` and which differ pairwise
/// by at least `gap` (a shuffled grid): no ReLU kink or max-pool tie within `gap / 2`.
pub fn separated_data(len: usize, seed: u64, gap: f32) -> Vec<f32> {
    let mut order: Vec<(u64, usize)> = (0..len).map(|i| (mix64(seed, i as u64), i)).collect();
    order.sort_unstable();
    let mut data = vec![0.0; len];
    let half = len as f32 / 2.0;
    for (rank, &(_, i)) in order.iter().enumerate() {
        // Ranks below and above the middle map to negative and positive values, skipping 0.
        let r = rank as f32 - half + 0.5;
        data[i] = r * gap + r.signum() * gap / 2.0;
    }
    data
}

fn host(dims: &[usize], data: Vec<f32>) -> HostTensor {
    HostTensor::new(dims, data).expect("case dims match their data")
}

fn case(name: String, family: Family, op: CaseOp, inputs: Vec<HostTensor>, params: Vec<(String, HostTensor)>) -> Case {
    Case { name, family, op, inputs, params, gradcheck: GradcheckConfig::default() }
}

fn conv_cases(seed: u64) -> Vec<Case> {
    let mut draw = Draw::new(seed);
    (0..4)
        .map(|k| {
            let groups = [1, 2, 2, 3][k];
            let (kernel_h, kernel_w) = (draw.range(1, 3), draw.range(1, 3));
            let geom = Conv2dGeom {
                in_channels: groups * draw.range(1, 2),
                out_channels: groups * draw.range(1, 3),
                kernel_h,
                kernel_w,
                stride_h: draw.range(1, 2),
                stride_w: draw.range(1, 2),
                pad_h: draw.range(0, kernel_h - 1),
                pad_w: draw.range(0, kernel_w - 1),
                groups,
                rounding: Rounding::Floor,
            };
            let input = [draw.range(1, 2), geom.in_channels, kernel_h + draw.range(0, 4), kernel_w + draw.range(0, 4)];
            let bias = k != 1;
            let numel: usize = input.iter().product();
            let mut params = vec![(
                "w".to_owned(),
                host(&geom.weight_dims(), uniform_data(geom.weight_len(), seed + 10 + k as u64, -0.5, 0.5)),
            )];
            if bias {
                params.push((
                    "b".to_owned(),
                    host(&[geom.out_channels], uniform_data(geom.out_channels, seed + 20 + k as u64, -0.5, 0.5)),
                ));
            }
            let x = host(&input, uniform_data(numel, seed + 30 + k as u64, -1.0, 1.0));
            case(
                format!("conv2d {geom:?} on {input:?}"),
                Family::Conv2d,
                CaseOp::Conv2d { geom, bias },
                vec![x],
                params,
            )
        })
        .collect()
}

fn pool_cases(seed: u64) -> Vec<Case> {
    let geoms = [
        (PoolKind::Max, PoolGeom::square(3, 2, 0, Rounding::Floor), [2, 3, 7, 7]),
        (PoolKind::Max, PoolGeom::square(2, 2, 1, Rounding::Ceil), [1, 2, 5, 6]),
        (PoolKind::Avg, PoolGeom::square(3, 2, 1, Rounding::Ceil), [2, 2, 6, 5]),
        (PoolKind::Avg, PoolGeom::square(2, 1, 0, Rounding::Floor), [1, 3, 4, 4]),
    ];
    geoms
        .into_iter()
        .enumerate()
        .map(|(k, (kind, geom, dims))| {
            let geom = geom.expect("valid pool geometry");
            let numel = dims.iter().product();
            // Max pooling has no derivative at ties: keep every pair of values 0.05 apart.
            let x = host(&dims, separated_data(numel, seed + k as u64, 0.05));
            case(
                format!("{kind:?} pool {geom:?} on {dims:?}"),
                Family::Pool,
                CaseOp::Pool { kind, geom },
                vec![x],
                vec![],
            )
        })
        .collect()
}

fn lrn_cases(seed: u64) -> Vec<Case> {
    let pytorch = LrnParams { size: 3, alpha: 0.5, beta: 0.75, k: 1.0, convention: AlphaConvention::PyTorchCaffe };
    let strong = LrnParams { size: 5, alpha: 0.2, beta: 0.6, k: 2.0, convention: AlphaConvention::Paper };
    // Grouped cases: windows clipped at every group edge, groups narrower than the window.
    let params = [
        (LrnParams::paper(), 1, [2, 7, 2, 3]),
        (pytorch, 1, [1, 4, 3, 3]),
        (strong, 1, [2, 3, 2, 2]),
        (strong, 2, [2, 8, 2, 3]),
        (pytorch, 3, [1, 6, 3, 2]),
        (strong, 4, [2, 8, 1, 2]),
    ];
    params
        .into_iter()
        .enumerate()
        .map(|(k, (params, groups, dims))| {
            let x = host(&dims, uniform_data(dims.iter().product(), seed + k as u64, -2.0, 2.0));
            let name = format!("lrn {params:?} in {groups} group(s) on {dims:?}");
            case(name, Family::Lrn, CaseOp::Lrn { params, groups }, vec![x], vec![])
        })
        .collect()
}

fn linear_case(name: &str, rows: usize, inputs: usize, outputs: usize, bias: bool, seed: u64) -> Case {
    let bound = 1.0 / (inputs as f32).sqrt();
    let mut params =
        vec![("w".to_owned(), host(&[outputs, inputs], uniform_data(outputs * inputs, seed, -bound, bound)))];
    if bias {
        params.push(("b".to_owned(), host(&[outputs], uniform_data(outputs, seed + 1, -bound, bound))));
    }
    let x = host(&[rows, inputs], uniform_data(rows * inputs, seed + 2, -1.0, 1.0));
    case(format!("{name} [{rows}, {inputs}] -> {outputs}"), Family::Linear, CaseOp::Linear { bias }, vec![x], params)
}

fn batch_norm_case(dims: &[usize], seed: u64) -> Case {
    let channels = dims[1];
    let params = vec![
        ("bn.weight".to_owned(), host(&[channels], uniform_data(channels, seed, 0.5, 1.5))),
        ("bn.bias".to_owned(), host(&[channels], uniform_data(channels, seed + 1, -0.5, 0.5))),
    ];
    let x = host(dims, uniform_data(dims.iter().product(), seed + 2, -1.0, 3.0));
    case(format!("batch_norm on {dims:?}"), Family::BatchNorm, CaseOp::BatchNorm, vec![x], params)
}

fn network_case(seed: u64) -> Case {
    let conv = Conv2dGeom::square(2, 4, 3, 1, 1, 2).expect("valid conv");
    let pool = PoolGeom::square(3, 2, 0, Rounding::Floor).expect("valid pool");
    let lrn = LrnParams { size: 3, alpha: 0.1, beta: 0.75, k: 1.0, convention: AlphaConvention::Paper };
    let input = [2, 2, 7, 7];
    let features = 4 * 3 * 3;
    let params = vec![
        ("w".to_owned(), host(&conv.weight_dims(), uniform_data(conv.weight_len(), seed, -0.4, 0.4))),
        ("b".to_owned(), host(&[4], uniform_data(4, seed + 1, -0.1, 0.1))),
        ("w2".to_owned(), host(&[5, features], uniform_data(5 * features, seed + 2, -0.3, 0.3))),
        ("b2".to_owned(), host(&[5], uniform_data(5, seed + 3, -0.1, 0.1))),
    ];
    let x = host(&input, uniform_data(input.iter().product(), seed + 4, -1.0, 1.0));
    let op = CaseOp::Network { conv, lrn, pool, labels: vec![1, 3] };
    let mut c = case("conv -> LRN -> pool -> linear -> softmax-xent".into(), Family::Network, op, vec![x], params);
    // The loss is one number: a smaller step keeps max-pool switches away, and the f32
    // rounding of a loss near 2 over 2 eps = 4e-3 stays near 1e-4.
    c.gradcheck = GradcheckConfig { eps: 2e-3, atol: 5e-4, max_points: 16, ..GradcheckConfig::default() };
    c
}

/// Small randomised cases of `family` (fixed seeds), sized for gradient checks.
pub fn cases(family: Family) -> Vec<Case> {
    let seed = 1000 * (family as u64 + 1);
    match family {
        Family::Conv2d => conv_cases(seed),
        Family::Pool => pool_cases(seed),
        Family::Lrn => lrn_cases(seed),
        Family::Linear => {
            vec![linear_case("linear", 3, 5, 4, true, seed), linear_case("linear", 2, 7, 3, false, seed + 5)]
        }
        Family::Activation => [Activation::Relu, Activation::Sigmoid, Activation::Tanh]
            .into_iter()
            .map(|f| {
                let dims = [2, 3, 2, 5];
                // ReLU has no derivative at 0: keep inputs 0.03 away from it.
                let x = host(&dims, separated_data(60, seed + f as u64, 0.06));
                case(format!("{f:?}"), Family::Activation, CaseOp::Activation(f), vec![x], vec![])
            })
            .collect(),
        Family::Reshape => {
            let x = host(&[2, 3, 2, 2], uniform_data(24, seed, -1.0, 1.0));
            vec![case("flatten [2, 3, 2, 2]".into(), Family::Reshape, CaseOp::Flatten, vec![x], vec![])]
        }
        Family::Dropout => {
            // Features 10..40 of rows of 50, from sample 3: a device's share of a replica's share.
            let part = MaskWindow { first_row: 3, first_col: 10, row_len: 30, total_row_len: 50 };
            [
                (0.5, 7, MaskWindow::whole(30)),
                (0.0, 8, MaskWindow::whole(30)),
                (0.8, 9, MaskWindow::whole(30)),
                (0.5, 10, part),
            ]
            .into_iter()
            .map(|(p, s, window)| {
                let x = host(&[4, 30], uniform_data(120, seed + s, -1.0, 1.0));
                let name = format!("dropout p={p} {window:?}");
                case(name, Family::Dropout, CaseOp::Dropout { p, seed: s, window }, vec![x], vec![])
            })
            .collect()
        }
        Family::BatchNorm => vec![batch_norm_case(&[6, 4], seed), batch_norm_case(&[3, 5, 3, 2], seed + 10)],
        Family::SoftmaxXent => {
            let logits = host(&[4, 6], uniform_data(24, seed, -3.0, 3.0));
            let op = CaseOp::SoftmaxXent { labels: vec![0, 5, 2, 2] };
            vec![case("softmax_cross_entropy [4, 6]".into(), Family::SoftmaxXent, op, vec![logits], vec![])]
        }
        Family::Arithmetic => {
            let a = || host(&[3, 4], uniform_data(12, seed, -1.0, 1.0));
            let b = host(&[3, 4], uniform_data(12, seed + 1, -1.0, 1.0));
            vec![
                case("add".into(), Family::Arithmetic, CaseOp::Add, vec![a(), b], vec![]),
                case("scale".into(), Family::Arithmetic, CaseOp::Scale(-2.5), vec![a()], vec![]),
                case("mean".into(), Family::Arithmetic, CaseOp::Mean, vec![a()], vec![]),
                case("diamond".into(), Family::Arithmetic, CaseOp::Diamond, vec![a()], vec![]),
            ]
        }
        Family::Network => vec![network_case(seed)],
    }
}

/// AlexNet's layer shapes at batch 2 (conv1-5, its pools and LRNs, fc7, fc8): forward
/// against the direct formulas and forward/backward against the CPU backend. (fc6,
/// 9216 -> 4096, is left out to keep memory small; fc7 has the same kernel.)
pub fn alexnet_layer_cases() -> Vec<Case> {
    let conv = |name: &str, cin, cout, k, s, p, g, hw: usize, seed: u64| {
        let geom = Conv2dGeom::square(cin, cout, k, s, p, g).expect("AlexNet conv").with_rounding(Rounding::Exact);
        let dims = [2, cin, hw, hw];
        let bound = 1.0 / ((cin / g * k * k) as f32).sqrt();
        let params = vec![
            ("w".to_owned(), host(&geom.weight_dims(), uniform_data(geom.weight_len(), seed, -bound, bound))),
            ("b".to_owned(), host(&[cout], uniform_data(cout, seed + 1, -0.1, 0.1))),
        ];
        let x = host(&dims, uniform_data(dims.iter().product(), seed + 2, -1.0, 1.0));
        case(format!("AlexNet {name}"), Family::Conv2d, CaseOp::Conv2d { geom, bias: true }, vec![x], params)
    };
    let pool_geom = PoolGeom::square(3, 2, 0, Rounding::Floor).expect("AlexNet pool");
    let pool = |name: &str, dims: [usize; 4], seed: u64| {
        let x = host(&dims, uniform_data(dims.iter().product(), seed, -1.0, 1.0));
        case(
            format!("AlexNet {name}"),
            Family::Pool,
            CaseOp::Pool { kind: PoolKind::Max, geom: pool_geom },
            vec![x],
            vec![],
        )
    };
    let lrn = |name: &str, dims: [usize; 4], seed: u64| {
        let x = host(&dims, uniform_data(dims.iter().product(), seed, -8.0, 8.0));
        let op = CaseOp::Lrn { params: LrnParams::paper(), groups: 1 };
        case(format!("AlexNet {name}"), Family::Lrn, op, vec![x], vec![])
    };
    vec![
        conv("conv1", 3, 96, 11, 4, 0, 1, 227, 1),
        lrn("lrn1", [2, 96, 55, 55], 2),
        pool("pool1", [2, 96, 55, 55], 3),
        conv("conv2", 96, 256, 5, 1, 2, 2, 27, 4),
        lrn("lrn2", [2, 256, 27, 27], 5),
        pool("pool2", [2, 256, 27, 27], 6),
        conv("conv3", 256, 384, 3, 1, 1, 1, 13, 7),
        conv("conv4", 384, 384, 3, 1, 1, 2, 13, 8),
        conv("conv5", 384, 256, 3, 1, 1, 2, 13, 9),
        pool("pool5", [2, 256, 13, 13], 10),
        linear_case("AlexNet fc7", 2, 4096, 4096, true, 11),
        linear_case("AlexNet fc8", 2, 4096, 1000, true, 12),
    ]
}

/// A store holding `case`'s parameters (and batch-norm running statistics) on `backend`.
pub fn case_store<B: Backend>(backend: &Arc<B>, case: &Case) -> Result<ParamStore<B>> {
    let mut store = ParamStore::new(Arc::clone(backend));
    for (name, t) in &case.params {
        store.insert(name, &t.dims, &t.data)?;
    }
    if case.op == CaseOp::BatchNorm {
        let channels = case.inputs[0].dims[1];
        store.insert_state("bn.running_mean", &[channels], &vec![0.0; channels])?;
        store.insert_state("bn.running_var", &[channels], &vec![1.0; channels])?;
    }
    Ok(store)
}

/// Builds `op`'s graph on `tape` from input tensors.
pub fn build<B: Backend>(op: &CaseOp, tape: &mut Tape<B>, store: &mut ParamStore<B>, xs: &[Tensor]) -> Result<Tensor> {
    let x = xs[0];
    let param = |tape: &mut Tape<B>, name: &str| tape.param(store, name);
    match op {
        CaseOp::Conv2d { geom, bias } => {
            let w = param(tape, "w")?;
            let b = if *bias { Some(param(tape, "b")?) } else { None };
            tape.conv2d(x, w, b, geom)
        }
        CaseOp::Pool { kind, geom } => tape.pool(*kind, x, geom),
        CaseOp::Lrn { params, groups } => tape.lrn_grouped(x, params, *groups),
        CaseOp::Linear { bias } => {
            let w = param(tape, "w")?;
            let b = if *bias { Some(param(tape, "b")?) } else { None };
            tape.linear(x, w, b)
        }
        CaseOp::Activation(f) => tape.activation(*f, x),
        CaseOp::Flatten => tape.flatten(x),
        CaseOp::Dropout { p, seed, window } => tape.dropout_at(x, *p, *seed, *window),
        CaseOp::BatchNorm => tape.batch_norm(x, store, "bn", &BN_PARAMS),
        CaseOp::SoftmaxXent { labels } => tape.softmax_cross_entropy(x, labels),
        CaseOp::Add => tape.add(x, xs[1]),
        CaseOp::Scale(alpha) => tape.scale(x, *alpha),
        CaseOp::Mean => tape.mean(x),
        CaseOp::Diamond => {
            let y = tape.tanh(x)?;
            let twice = tape.add(y, y)?;
            let scaled = tape.scale(twice, 1.5)?;
            tape.add(y, scaled)
        }
        CaseOp::Network { conv, lrn, pool, labels } => {
            let (w, b) = (param(tape, "w")?, param(tape, "b")?);
            let h = tape.conv2d(x, w, Some(b), conv)?;
            let h = tape.lrn(h, lrn)?;
            let h = tape.max_pool(h, pool)?;
            let h = tape.flatten(h)?;
            let (w2, b2) = (param(tape, "w2")?, param(tape, "b2")?);
            let logits = tape.linear(h, w2, Some(b2))?;
            tape.softmax_cross_entropy(logits, labels)
        }
    }
}

/// The f64 direct-formula output of `case` (training-mode semantics).
pub fn reference_output(case: &Case) -> Vec<f64> {
    let x = &case.inputs[0];
    let param = |name: &str| case.params.iter().find(|(n, _)| n == name).map(|(_, t)| t.data.as_slice());
    let shape = |d: &[usize]| Shape4::new(d[0], d[1], d[2], d[3]).expect("rank-4 case input");
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    match &case.op {
        CaseOp::Conv2d { geom, .. } => {
            reference::conv2d(geom, shape(&x.dims), &x.data, param("w").expect("w"), param("b"))
        }
        CaseOp::Pool { kind, geom } => reference::pool(*kind, geom, shape(&x.dims), &x.data),
        CaseOp::Lrn { params, groups } => reference::lrn(params, *groups, shape(&x.dims), &x.data),
        CaseOp::Linear { .. } => {
            let w = case.params[0].1.dims[0];
            reference::linear(x.dims[0], &x.data, param("w").expect("w"), w, param("b"))
        }
        CaseOp::Activation(f) => reference::activation(*f, &x.data),
        CaseOp::Flatten => x.data.iter().map(|&v| f64::from(v)).collect(),
        CaseOp::Dropout { p, seed, window } => reference::dropout(*p, *seed, window, &x.data),
        CaseOp::BatchNorm => {
            let (outer, channels) = (x.dims[0], x.dims[1]);
            let inner = x.data.len() / (outer * channels);
            let (g, b) = (param("bn.weight").expect("gamma"), param("bn.bias").expect("beta"));
            reference::batch_norm(outer, channels, inner, &x.data, g, b, BN_PARAMS.eps, None)
        }
        CaseOp::SoftmaxXent { labels } => vec![reference::softmax_cross_entropy(x.dims[0], &x.data, labels)],
        CaseOp::Add => x.data.iter().zip(&case.inputs[1].data).map(|(&a, &b)| f64::from(a) + f64::from(b)).collect(),
        CaseOp::Scale(alpha) => x.data.iter().map(|&v| f64::from(*alpha) * f64::from(v)).collect(),
        CaseOp::Mean => vec![x.data.iter().map(|&v| f64::from(v)).sum::<f64>() / x.data.len() as f64],
        CaseOp::Diamond => x.data.iter().map(|&v| 4.0 * f64::from(v).tanh()).collect(),
        CaseOp::Network { conv, lrn, pool, labels } => {
            let input = shape(&x.dims);
            let h = to_f32(reference::conv2d(conv, input, &x.data, param("w").expect("w"), param("b")));
            let conv_out = conv.output_shape(input).expect("valid");
            let h = to_f32(reference::lrn(lrn, 1, conv_out, &h));
            let h = to_f32(reference::pool(PoolKind::Max, pool, conv_out, &h));
            let w2 = &case.params[2].1;
            let logits = to_f32(reference::linear(input.n, &h, &w2.data, w2.dims[0], param("b2")));
            vec![reference::softmax_cross_entropy(input.n, &logits, labels)]
        }
    }
}

/// What one forward and backward of a case produced, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Forward output.
    pub output: Vec<f32>,
    /// Gradient of each input for the seed of [`run_case`].
    pub input_grads: Vec<Vec<f32>>,
    /// Gradient of each parameter, in the case's order.
    pub param_grads: Vec<Vec<f32>>,
}

/// Forward on a training tape, then backward with a fixed random seed gradient.
pub fn run_case<B: Backend>(backend: &Arc<B>, case: &Case) -> Result<Outcome> {
    let mut store = case_store(backend, case)?;
    let mut tape = Tape::train(Arc::clone(backend));
    let xs = case.inputs.iter().map(|h| tape.variable(&h.data, &h.dims)).collect::<Result<Vec<_>>>()?;
    let y = build(&case.op, &mut tape, &mut store, &xs)?;
    let output = tape.to_host(y)?;
    let seed = uniform_data(y.numel(), 77, -1.0, 1.0);
    tape.backward_with(y, &seed, &mut store)?;
    let mut input_grads = Vec::new();
    for x in &xs {
        input_grads.push(tape.grad_to_host(*x)?.unwrap_or_else(|| vec![0.0; x.numel()]));
    }
    let param_grads = case.params.iter().map(|(name, _)| store.grad_to_host(name)).collect::<Result<Vec<_>>>()?;
    Ok(Outcome { output, input_grads, param_grads })
}

/// Asserts `|got - want| <= rtol * max(|want|, rms(want))` element-wise (the RMS floor keeps
/// near-zero results of long sums from demanding impossible relative precision).
#[track_caller]
pub fn assert_close<T: Copy + Into<f64>>(what: &str, got: &[f32], want: &[T], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|&w| w.into().powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), w.into());
        let tolerance = rtol * w.abs().max(rms).max(f64::MIN_POSITIVE);
        assert!((g - w).abs() <= tolerance, "{what}: element {i}: got {g}, want {w} (tolerance {tolerance:.3e})");
    }
}

/// Forward of every case of `family` on `backend` against the direct f64 formulas.
pub fn check_forward_against_reference<B: Backend>(backend: &Arc<B>, family: Family) {
    for case in cases(family) {
        let got = run_case(backend, &case).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_close(
            &format!("{} on {}: forward", case.name, backend.name()),
            &got.output,
            &reference_output(&case),
            RTOL,
        );
    }
}

/// Forward and backward of every case in `cases` on `backend` against [`CpuBackend`].
pub fn check_against_cpu<B: Backend>(backend: &Arc<B>, cases: &[Case]) {
    let cpu = Arc::new(CpuBackend::new());
    for case in cases {
        let got = run_case(backend, case).unwrap_or_else(|e| panic!("{} on {}: {e}", case.name, backend.name()));
        let want = run_case(&cpu, case).unwrap_or_else(|e| panic!("{} on cpu: {e}", case.name));
        let what = |part: &str| format!("{} on {} vs cpu: {part}", case.name, backend.name());
        assert_close(&what("forward"), &got.output, &want.output, RTOL);
        for (k, (g, w)) in got.input_grads.iter().zip(&want.input_grads).enumerate() {
            assert_close(&what(&format!("d input[{k}]")), g, w, RTOL);
        }
        for ((name, _), (g, w)) in case.params.iter().zip(got.param_grads.iter().zip(&want.param_grads)) {
            assert_close(&what(&format!("d {name}")), g, w, RTOL);
        }
    }
}

/// Gradient checks of every case of `family` through `backend`'s backward.
pub fn check_gradients<B: Backend>(backend: &Arc<B>, family: Family) {
    for case in cases(family) {
        let mut store = case_store(backend, &case).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let report = gradcheck(backend, &mut store, &case.inputs, &case.gradcheck, |tape, store, xs| {
            build(&case.op, tape, store, xs)
        })
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        report.assert_passed(&format!("{} on {}", case.name, backend.name()));
    }
}

/// Softmax cross-entropy stays finite and exact for logits of +-1e4, forward and backward.
pub fn check_softmax_large_logits<B: Backend>(backend: &Arc<B>) {
    let (rows, classes) = (3, 4);
    let logits = [1e4, -1e4, 0.0, 5e3, -1e4, -1e4, -1e4, -1e4, 1e4, 1e4 - 1.0, -1e4, 1e4];
    let labels = [1, 0, 3];
    let mut tape = Tape::train(Arc::clone(backend));
    let mut store = ParamStore::new(Arc::clone(backend));
    let z = tape.variable(&logits, &[rows, classes]).expect("input");
    let loss = tape.softmax_cross_entropy(z, &labels).expect("forward");
    let value = tape.scalar(loss).expect("loss");
    let want = reference::softmax_cross_entropy(rows, &logits, &labels);
    assert!(value.is_finite() && (f64::from(value) - want).abs() <= RTOL * want.abs(), "loss {value}, want {want}");
    tape.backward(loss, &mut store).expect("backward");
    let grad = tape.grad_to_host(z).expect("grad").expect("logits need a gradient");
    let probs = reference::softmax(rows, &logits);
    let want: Vec<f64> = (0..rows * classes)
        .map(|i| (probs[i] - if labels[i / classes] == i % classes { 1.0 } else { 0.0 }) / rows as f64)
        .collect();
    assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    assert_close("softmax-xent gradient at +-1e4", &grad, &want, RTOL);
}

/// The loss summary (mean loss, top-1/top-5 counts, as ranked by `alexnet`'s metrics) against
/// host formulas, and an invalid label on the device side: an error either from the forward or
/// from decoding the summary, never a silent NaN.
pub fn check_xent_summary<B: Backend>(backend: &Arc<B>) {
    let (rows, classes) = (7, 9);
    let mut logits = uniform_data(rows * classes, 77, -3.0, 3.0);
    // Row 0: a tie between the label (4) and a lower class (2) counts against the label.
    logits[2] = logits[4];
    let labels: Vec<usize> = (0..rows).map(|r| (r * 4) % classes).collect();
    let rank = |r: usize| {
        let z = &logits[r * classes..][..classes];
        let t = z[labels[r]];
        z.iter().enumerate().filter(|&(j, &s)| s > t || (s == t && j < labels[r])).count()
    };
    let mut tape = Tape::train(Arc::clone(backend));
    let z = tape.input(&logits, &[rows, classes]).expect("logits");
    let loss = tape.softmax_cross_entropy(z, &labels).expect("forward");
    let summary = tape.xent_summary(loss).expect("summary");
    let want = reference::softmax_cross_entropy(rows, &logits, &labels);
    assert!((f64::from(summary.mean_loss) - want).abs() <= RTOL * want, "loss {summary:?}, want {want}");
    assert_eq!(summary.top1_correct, (0..rows).filter(|&r| rank(r) == 0).count(), "{summary:?}");
    assert_eq!(summary.top5_correct, (0..rows).filter(|&r| rank(r) < 5).count(), "{summary:?}");
    assert!(summary.top5_correct > summary.top1_correct, "the case must tell top-1 from top-5: {summary:?}");
    assert_eq!(tape.scalar(loss).expect("loss"), summary.mean_loss);

    // Labels already on the device bypass the tape's host check: the backend must catch 7.
    let upload = |v: &[f32]| backend.upload(v).expect("upload");
    let (z, bad) = (upload(&logits[..2 * classes]), upload(&[1.0, 9.0]));
    let (mut probs, mut loss, mut summary) =
        (upload(&[0.0; 18]), upload(&[0.0]), upload(&[0.0; alexnet_core::XENT_SUMMARY_LEN]));
    let reported =
        backend.softmax_xent_forward(2, classes, &z, &bad, &mut probs, &mut loss, &mut summary).and_then(|()| {
            let mut host = [0.0; alexnet_core::XENT_SUMMARY_LEN];
            backend.download(&summary, &mut host)?;
            alexnet_core::XentSummary::from_values(&host)
        });
    assert!(
        matches!(reported, Err(alexnet_core::Error::InvalidParameter { what: "label", value, .. }) if value == 9.0),
        "{reported:?}"
    );
}

/// Inference tapes record nothing: dropout is the identity, batch norm uses the running
/// averages that training updated, and backward is an error.
pub fn check_inference_mode<B: Backend>(backend: &Arc<B>) {
    let case = cases(Family::BatchNorm).remove(0);
    let x = &case.inputs[0];
    let mut store = case_store(backend, &case).expect("store");
    let (outer, channels) = (x.dims[0], x.dims[1]);

    // One training step moves the running averages from (0, 1) towards the batch statistics.
    let mut tape = Tape::train(Arc::clone(backend));
    let t = tape.input(&x.data, &x.dims).expect("input");
    tape.batch_norm(t, &mut store, "bn", &BN_PARAMS).expect("train forward");
    tape.reset();
    let m = f64::from(BN_PARAMS.momentum);
    let stats = reference::channel_stats(outer, channels, 1, &x.data);
    let unbias = outer as f64 / (outer as f64 - 1.0);
    let want_mean: Vec<f64> = stats.iter().map(|&(mean, _)| m * mean).collect();
    let want_var: Vec<f64> = stats.iter().map(|&(_, var)| (1.0 - m) + m * var * unbias).collect();
    let running_mean = store.value_to_host("bn.running_mean").expect("mean");
    let running_var = store.value_to_host("bn.running_var").expect("var");
    assert_close("running mean", &running_mean, &want_mean, RTOL);
    assert_close("running var", &running_var, &want_var, RTOL);

    let mut tape = Tape::inference(Arc::clone(backend));
    let t = tape.input(&x.data, &x.dims).expect("input");
    let y = tape.batch_norm(t, &mut store, "bn", &BN_PARAMS).expect("eval forward");
    let y = tape.dropout(y, 0.5, 3).expect("dropout");
    let param = |name: &str| case.params.iter().find(|(n, _)| n == name).map(|(_, t)| t.data.clone()).expect("param");
    let want = reference::batch_norm(
        outer,
        channels,
        1,
        &x.data,
        &param("bn.weight"),
        &param("bn.bias"),
        BN_PARAMS.eps,
        Some((&running_mean, &running_var)),
    );
    assert_close("inference batch norm + dropout", &tape.to_host(y).expect("y"), &want, RTOL);
    let loss = tape.mean(y).expect("mean");
    assert!(matches!(tape.backward(loss, &mut store), Err(AutogradError::NotRecording { .. })));
    // The running statistics did not move in inference.
    assert_eq!(store.value_to_host("bn.running_mean").expect("mean"), running_mean);
}

/// Wrong shapes are `Err` naming the op and both shapes, for every op that checks shapes.
pub fn check_shape_errors<B: Backend>(backend: &Arc<B>) {
    let mut tape = Tape::train(Arc::clone(backend));
    let mut store = ParamStore::new(Arc::clone(backend));
    let geom = Conv2dGeom::square(3, 4, 3, 1, 1, 1).expect("geom");
    store.insert("w", &geom.weight_dims(), &vec![0.0; geom.weight_len()]).expect("w");
    store.insert("fc", &[5, 12], &[0.0; 60]).expect("fc");
    let x = tape.input(&[0.0; 2 * 2 * 4 * 4], &[2, 2, 4, 4]).expect("x");
    let w = tape.param(&store, "w").expect("w");
    let shape_err = |r: Result<Tensor>, op: &str, expected: &[usize], got: &[usize]| match r {
        Err(AutogradError::Shape { op: o, expected: e, got: g }) => {
            assert_eq!((o, e.as_slice(), g.as_slice()), (op, expected, got));
        }
        other => panic!("{op}: expected a shape error, got {other:?}"),
    };
    shape_err(tape.conv2d(x, w, None, &geom), "conv2d", &[2, 3, 4, 4], &[2, 2, 4, 4]);
    let fc = tape.param(&store, "fc").expect("fc");
    let flat = tape.flatten(x).expect("flatten");
    shape_err(tape.linear(flat, fc, None), "linear", &[2, 12], &[2, 32]);
    let other = tape.input(&[0.0; 8], &[2, 4]).expect("other");
    shape_err(tape.add(flat, other), "add", &[2, 32], &[2, 4]);
    shape_err(tape.reshape(x, &[3, 5]), "reshape", &[2, 2, 4, 4], &[3, 5]);
    shape_err(tape.softmax_cross_entropy(other, &[0]), "softmax_cross_entropy", &[2], &[1]);
    assert!(matches!(
        tape.softmax_cross_entropy(other, &[0, 4]),
        Err(AutogradError::Label { row: 1, label: 4, classes: 4, .. })
    ));
    assert!(matches!(
        tape.max_pool(flat, &PoolGeom::square(2, 2, 0, Rounding::Floor).expect("pool")),
        Err(AutogradError::InvalidDims { .. })
    ));
    assert!(matches!(tape.dropout(x, 1.0, 0), Err(AutogradError::InvalidArgument { what: "p", .. })));
    for groups in [0, 3] {
        let lrn = tape.lrn_grouped(x, &LrnParams::paper(), groups);
        assert!(matches!(lrn, Err(AutogradError::InvalidArgument { what: "groups", .. })), "{groups} groups");
    }
    assert!(matches!(tape.backward(x, &mut store), Err(AutogradError::NotScalar { .. })));
    // A tensor of an earlier pass is refused after reset.
    tape.reset();
    assert!(matches!(tape.relu(x), Err(AutogradError::ForeignTensor { .. })));
}

/// A training loop that keeps one tape stops allocating after its first step.
pub fn check_buffers_are_reused<B: Backend>(backend: &Arc<B>) {
    let case = cases(Family::Network).remove(0);
    let mut store = case_store(backend, &case).expect("store");
    let mut tape = Tape::train(Arc::clone(backend));
    let step = alexnet_core::SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    let mut allocations = Vec::new();
    for _ in 0..4 {
        tape.reset();
        let x = tape.input(&case.inputs[0].data, &case.inputs[0].dims).expect("x");
        let loss = build(&case.op, &mut tape, &mut store, &[x]).expect("forward");
        tape.backward(loss, &mut store).expect("backward");
        store.sgd_step(&step).expect("sgd");
        allocations.push(tape.pool_stats().allocations);
    }
    assert!(allocations[0] > 0);
    assert_eq!(allocations[1..], [allocations[1]; 3], "allocations per step: {allocations:?}");
    // Switching to inference reuses the same buffers.
    tape.set_mode(Mode::Inference);
    assert_eq!(tape.mode(), Mode::Inference);
}

/// Instantiates the conformance tests for a backend: `backend_conformance_tests!(expr)`,
/// where `expr` makes the backend, or `backend_conformance_tests!(optional: expr)` where
/// `expr` is an `Option` of one and `None` makes every test return early (a device that is
/// absent; the maker prints why). Either is evaluated once per test.
#[macro_export]
macro_rules! backend_conformance_tests {
    (optional: $make_backend:expr) => {
        fn conformance_backend() -> ::std::option::Option<::std::sync::Arc<impl ::alexnet_core::Backend>> {
            $make_backend.map(::std::sync::Arc::new)
        }
        $crate::backend_conformance_tests!(@tests);
    };
    (@tests) => {
        $crate::backend_conformance_tests!(@family conformance_conv2d, Conv2d);
        $crate::backend_conformance_tests!(@family conformance_pool, Pool);
        $crate::backend_conformance_tests!(@family conformance_lrn, Lrn);
        $crate::backend_conformance_tests!(@family conformance_linear, Linear);
        $crate::backend_conformance_tests!(@family conformance_activation, Activation);
        $crate::backend_conformance_tests!(@family conformance_reshape, Reshape);
        $crate::backend_conformance_tests!(@family conformance_dropout, Dropout);
        $crate::backend_conformance_tests!(@family conformance_batch_norm, BatchNorm);
        $crate::backend_conformance_tests!(@family conformance_softmax_xent, SoftmaxXent);
        $crate::backend_conformance_tests!(@family conformance_arithmetic, Arithmetic);
        $crate::backend_conformance_tests!(@family conformance_network, Network);

        #[test]
        fn conformance_alexnet_layers() {
            let ::std::option::Option::Some(backend) = conformance_backend() else { return };
            let cases = $crate::conformance::alexnet_layer_cases();
            for case in &cases {
                let got = $crate::conformance::run_case(&backend, case).expect("AlexNet layer");
                let want = $crate::conformance::reference_output(case);
                $crate::conformance::assert_close(&case.name, &got.output, &want, $crate::conformance::RTOL);
            }
            $crate::conformance::check_against_cpu(&backend, &cases);
        }

        #[test]
        fn conformance_softmax_large_logits() {
            if let ::std::option::Option::Some(backend) = conformance_backend() {
                $crate::conformance::check_softmax_large_logits(&backend);
            }
        }

        #[test]
        fn conformance_xent_summary() {
            if let ::std::option::Option::Some(backend) = conformance_backend() {
                $crate::conformance::check_xent_summary(&backend);
            }
        }

        #[test]
        fn conformance_inference_mode() {
            if let ::std::option::Option::Some(backend) = conformance_backend() {
                $crate::conformance::check_inference_mode(&backend);
            }
        }

        #[test]
        fn conformance_shape_errors() {
            if let ::std::option::Option::Some(backend) = conformance_backend() {
                $crate::conformance::check_shape_errors(&backend);
            }
        }

        #[test]
        fn conformance_buffers_are_reused() {
            if let ::std::option::Option::Some(backend) = conformance_backend() {
                $crate::conformance::check_buffers_are_reused(&backend);
            }
        }
    };
    (@family $name:ident, $family:ident) => {
        #[test]
        fn $name() {
            let ::std::option::Option::Some(backend) = conformance_backend() else { return };
            let family = $crate::conformance::Family::$family;
            $crate::conformance::check_forward_against_reference(&backend, family);
            $crate::conformance::check_against_cpu(&backend, &$crate::conformance::cases(family));
            $crate::conformance::check_gradients(&backend, family);
        }
    };
    ($make_backend:expr) => {
        $crate::backend_conformance_tests!(optional: ::std::option::Option::Some($make_backend));
    };
}
