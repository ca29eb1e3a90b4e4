//! Model presets as data: a list of layer specifications per preset, resolved against an
//! input size and a class count into shapes and parameter counts.
//!
//! Every shape comes from `alexnet-core`'s geometry ([`Conv2dGeom`], [`PoolGeom`]), so a size
//! that does not work is an error naming the values (the `paper` preset rejects 224 and
//! names 227).

use std::fmt;

use alexnet_core::{Activation, Conv2dGeom, LrnParams, PoolGeom, Rounding, Shape4};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The model presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The paper's network (spec section 1): ReLU -> LRN -> max-pool in layers 1 and 2.
    Paper,
    /// The same with Caffe's order in layers 1 and 2: ReLU -> max-pool -> LRN.
    Caffenet,
    /// The Keras variant (spec section 6): same padding, batch norm, dropout 0.25, no LRN,
    /// no groups.
    KerasBn,
    /// An AlexNet-shaped network for 28x28 images (the embedded Fashion-MNIST).
    Mini,
    /// torchvision's `alexnet`: convolutions 64-192-384-256-256 without groups or LRN,
    /// average pooling to 6x6, dropout before fc6 and fc7; parameters named and laid out as
    /// its `state_dict` (`features.0.weight`, ..., `classifier.6.bias`).
    Torchvision,
}

impl Preset {
    /// Every preset, in documentation order.
    pub const ALL: [Preset; 5] = [Preset::Paper, Preset::Caffenet, Preset::KerasBn, Preset::Mini, Preset::Torchvision];

    /// The preset's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Caffenet => "caffenet",
            Preset::KerasBn => "keras-bn",
            Preset::Mini => "mini",
            Preset::Torchvision => "torchvision",
        }
    }

    /// The input `[channels, height, width]` the preset is designed for.
    pub fn default_input(self) -> [usize; 3] {
        match self {
            Preset::Paper | Preset::Caffenet => [3, 227, 227],
            Preset::KerasBn | Preset::Torchvision => [3, 224, 224],
            Preset::Mini => [1, 28, 28],
        }
    }

    /// The class count the preset is designed for (ImageNet: 1000; Fashion-MNIST: 10).
    pub fn default_classes(self) -> usize {
        match self {
            Preset::Mini => 10,
            _ => 1000,
        }
    }

    /// The weight initialisation the preset trains with by default. The paper's N(0, 0.01^2)
    /// is kept for the 1000-class presets; the small `mini` network needs He scaling to
    /// train (with std 0.01 its signal shrinks ~100x per layer).
    pub fn default_init(self) -> InitScheme {
        match self {
            Preset::Paper | Preset::Caffenet => InitScheme::Paper,
            Preset::KerasBn | Preset::Mini | Preset::Torchvision => InitScheme::He,
        }
    }

    /// How many channel groups the preset's LRN layers normalise apart. `paper`: 2, as the
    /// paper's network ran: each GPU held half of conv1's and conv2's maps and normalised
    /// only those, so the two channels beside the halves' boundary see a clipped window.
    /// `caffenet`: 1, as Caffe's one-GPU reference model normalises across all channels.
    /// `mini`: 1 (its trained figures predate the option). `keras-bn` and `torchvision` have no LRN.
    pub fn default_lrn_groups(self) -> usize {
        match self {
            Preset::Paper => 2,
            Preset::Caffenet | Preset::KerasBn | Preset::Mini | Preset::Torchvision => 1,
        }
    }

    /// The fixed per-channel `(mean, std)` of `[0, 1]` pixels that the preset's published
    /// weights expect, or `None` when the statistics come from the training data.
    /// torchvision's ImageNet models all use the same values.
    pub fn fixed_normalization(self) -> Option<([f32; 3], [f32; 3])> {
        match self {
            Preset::Torchvision => Some(([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])),
            _ => None,
        }
    }

    /// The square size folder images are resized to before cropping `crop` pixels: the
    /// paper's 256 for 227 (scaled for other crops), torchvision's 256 for 224.
    pub fn resize_for_crop(self, crop: usize) -> usize {
        let reference = if self == Preset::Torchvision { 224 } else { 227 };
        (crop * 256).div_ceil(reference)
    }

    /// The layer list for `classes` outputs (the first convolution takes whatever channel
    /// count the input has).
    pub fn layers(self, classes: usize) -> Vec<LayerSpec> {
        let mut layers = match self {
            Preset::Paper => alexnet_layers(LrnOrder::BeforePool, classes),
            Preset::Caffenet => alexnet_layers(LrnOrder::AfterPool, classes),
            Preset::KerasBn => keras_bn_layers(classes),
            Preset::Mini => mini_layers(classes),
            Preset::Torchvision => torchvision_layers(classes),
        };
        set_lrn_groups(&mut layers, self.default_lrn_groups());
        layers
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| Error::UnknownPreset { name: s.to_string() })
    }
}

/// How weights are drawn at initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitScheme {
    /// The paper: weights from N(0, 0.01^2); biases as each layer's `bias_init` (1 in conv2,
    /// conv4, conv5 and the hidden dense layers, 0 elsewhere).
    Paper,
    /// He/Kaiming normal: weights from N(0, 2 / fan_in); biases 0.
    He,
}

impl std::str::FromStr for InitScheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paper" => Ok(InitScheme::Paper),
            "he" => Ok(InitScheme::He),
            other => Err(Error::config(format!("unknown initialisation `{other}`; choose paper or he"))),
        }
    }
}

/// Padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// This many zeros on every side.
    Explicit(usize),
    /// Keras' `padding = "same"` for odd kernels: `(kernel - 1) / 2` on every side, which
    /// gives Keras' output size `ceil(input / stride)`. (TensorFlow pads asymmetrically when
    /// the total is odd; the output sizes agree, the pixel alignment may differ by one.)
    Same,
}

/// One layer of a preset. Weighted layers carry the name their parameters are stored under
/// (`conv1` gives `conv1.weight` and `conv1.bias`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum LayerSpec {
    /// 2-D convolution with bias; weight `[out, in / groups, kernel, kernel]`.
    Conv {
        /// Parameter name prefix.
        name: String,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: Padding,
        /// Groups (the paper's two-GPU split).
        groups: usize,
        /// Output-size rule ([`Rounding::Exact`] for the paper's conv1).
        rounding: Rounding,
        /// Bias value under [`InitScheme::Paper`].
        bias_init: f32,
    },
    /// Point-wise activation.
    Activation {
        /// Which function.
        function: Activation,
    },
    /// Local response normalisation across channels.
    Lrn {
        /// Its constants.
        params: LrnParams,
        /// Runs of channels normalised apart (a window never crosses a group's edge): 2 is
        /// the paper's two-GPU net, where each GPU normalised only its own maps; 1 is one
        /// window over all channels.
        #[serde(default = "one")]
        groups: usize,
    },
    /// Max pooling (window 3, stride 2 is the paper's overlapping pooling).
    MaxPool {
        /// Window.
        window: usize,
        /// Stride.
        stride: usize,
    },
    /// Average pooling to `size x size` (PyTorch's `AdaptiveAvgPool2d`). Only feature maps
    /// whose sides are whole multiples of `size` are accepted: there the adaptive windows
    /// are the plain average pooling with window = stride = side / `size` (an identity at
    /// `size`), which both backends implement and ONNX's `AveragePool` expresses. Uneven
    /// windows have no ONNX operator (PyTorch's exporter refuses them too), so a preset
    /// would train models that cannot be exported; the error names the inputs that work.
    AdaptiveAvgPool {
        /// Output height and width.
        size: usize,
    },
    /// Batch normalisation over channels (or features after flatten).
    BatchNorm {
        /// Parameter name prefix (`.weight`, `.bias`, `.running_mean`, `.running_var`).
        name: String,
        /// Added to the variance.
        eps: f32,
        /// Running-average weight of the batch statistics.
        momentum: f32,
    },
    /// Inverted dropout with drop probability `p` (training only).
    Dropout {
        /// Drop probability.
        p: f32,
    },
    /// NCHW -> (N, C*H*W).
    Flatten,
    /// Fully connected layer, weight `[out, in]` (PyTorch's `Linear` layout).
    Dense {
        /// Parameter name prefix.
        name: String,
        /// Output features.
        out_features: usize,
        /// Bias value under [`InitScheme::Paper`].
        bias_init: f32,
    },
}

impl LayerSpec {
    /// A short label for summaries, e.g. `conv1 (Conv 11x11/4, g1)`.
    pub fn label(&self) -> String {
        match self {
            LayerSpec::Conv { name, kernel, stride, groups, .. } => {
                format!("{name} (Conv {kernel}x{kernel}/{stride}, g{groups})")
            }
            LayerSpec::Activation { function } => format!("{function:?}"),
            LayerSpec::Lrn { params, groups: 1 } => format!("LRN n={}", params.size),
            LayerSpec::Lrn { params, groups } => format!("LRN n={}, g{groups}", params.size),
            LayerSpec::MaxPool { window, stride } => format!("MaxPool {window}/{stride}"),
            LayerSpec::AdaptiveAvgPool { size } => format!("AdaptiveAvgPool {size}x{size}"),
            LayerSpec::BatchNorm { name, .. } => format!("{name} (BatchNorm)"),
            LayerSpec::Dropout { p } => format!("Dropout {p}"),
            LayerSpec::Flatten => "Flatten".to_string(),
            LayerSpec::Dense { name, .. } => format!("{name} (Dense)"),
        }
    }
}

/// Which order layers 1 and 2 apply LRN and pooling in.
#[derive(Clone, Copy)]
enum LrnOrder {
    BeforePool,
    AfterPool,
}

fn conv(name: &str, out: usize, kernel: usize, stride: usize, pad: usize, groups: usize, bias: f32) -> LayerSpec {
    LayerSpec::Conv {
        name: name.to_string(),
        out_channels: out,
        kernel,
        stride,
        padding: Padding::Explicit(pad),
        groups,
        rounding: Rounding::Exact,
        bias_init: bias,
    }
}

fn relu() -> LayerSpec {
    LayerSpec::Activation { function: Activation::Relu }
}

fn pool() -> LayerSpec {
    LayerSpec::MaxPool { window: 3, stride: 2 }
}

fn dense(name: &str, out: usize, bias: f32) -> LayerSpec {
    LayerSpec::Dense { name: name.to_string(), out_features: out, bias_init: bias }
}

fn dropout(p: f32) -> LayerSpec {
    LayerSpec::Dropout { p }
}

fn lrn() -> LayerSpec {
    LayerSpec::Lrn { params: LrnParams::paper(), groups: 1 }
}

fn one() -> usize {
    1
}

/// Sets the channel groups of every LRN layer.
fn set_lrn_groups(layers: &mut [LayerSpec], lrn_groups: usize) {
    for layer in layers {
        if let LayerSpec::Lrn { groups, .. } = layer {
            *groups = lrn_groups;
        }
    }
}

/// ReLU, then LRN and pooling in the given order.
fn relu_norm_pool(order: LrnOrder) -> [LayerSpec; 3] {
    match order {
        LrnOrder::BeforePool => [relu(), lrn(), pool()],
        LrnOrder::AfterPool => [relu(), pool(), lrn()],
    }
}

/// Spec section 1; `order` picks the paper's or Caffe's LRN/pool order.
fn alexnet_layers(order: LrnOrder, classes: usize) -> Vec<LayerSpec> {
    let mut layers = vec![conv("conv1", 96, 11, 4, 0, 1, 0.0)];
    layers.extend(relu_norm_pool(order));
    layers.push(conv("conv2", 256, 5, 1, 2, 2, 1.0));
    layers.extend(relu_norm_pool(order));
    layers.extend([
        conv("conv3", 384, 3, 1, 1, 1, 0.0),
        relu(),
        conv("conv4", 384, 3, 1, 1, 2, 1.0),
        relu(),
        conv("conv5", 256, 3, 1, 1, 2, 1.0),
        relu(),
        pool(),
        LayerSpec::Flatten,
        dense("fc6", 4096, 1.0),
        relu(),
        dropout(0.5),
        dense("fc7", 4096, 1.0),
        relu(),
        dropout(0.5),
        // The paper sets biases to 1 in the *hidden* dense layers; the classifier's is 0.
        dense("fc8", classes, 0.0),
    ]);
    layers
}

/// Spec section 6 (Keras defaults: batch-norm epsilon 1e-3, momentum 0.99, i.e. 0.01 of
/// each batch enters the running averages).
fn keras_bn_layers(classes: usize) -> Vec<LayerSpec> {
    let conv = |name: &str, out: usize, kernel: usize, stride: usize| LayerSpec::Conv {
        name: name.to_string(),
        out_channels: out,
        kernel,
        stride,
        padding: Padding::Same,
        groups: 1,
        rounding: Rounding::Floor,
        bias_init: 0.0,
    };
    let bn = |name: &str| LayerSpec::BatchNorm { name: format!("{name}_bn"), eps: 1e-3, momentum: 0.01 };
    vec![
        conv("conv1", 96, 11, 4),
        relu(),
        bn("conv1"),
        pool(),
        dropout(0.25),
        conv("conv2", 256, 5, 1),
        relu(),
        bn("conv2"),
        pool(),
        dropout(0.25),
        conv("conv3", 384, 3, 1),
        relu(),
        bn("conv3"),
        conv("conv4", 384, 3, 1),
        relu(),
        bn("conv4"),
        // As written in the source: no activation after the fifth convolution.
        conv("conv5", 256, 3, 1),
        pool(),
        dropout(0.25),
        LayerSpec::Flatten,
        dense("fc6", 4096, 0.0),
        relu(),
        bn("fc6"),
        dropout(0.25),
        dense("fc7", 4096, 0.0),
        relu(),
        bn("fc7"),
        dropout(0.25),
        dense("fc8", classes, 0.0),
    ]
}

/// The widths of `mini`: conv1..conv5 channels and the two hidden dense layers.
const MINI_CONV: [usize; 5] = [32, 64, 96, 96, 64];
const MINI_DENSE: usize = 256;
/// Dropout of `mini`'s hidden dense layers: at 0.5 the 256-wide layers underfit within
/// ten epochs (train error = test error = ~10%), so half the paper's rate.
const MINI_DROPOUT: f32 = 0.25;

/// AlexNet's shape at 28x28: five 3x3 convolutions (groups 2 on conv2/4/5), ReLU -> LRN ->
/// overlapping 3/2 pooling after conv1 and conv2, pooling after conv5 (28 -> 13 -> 6 -> 2),
/// and three dense layers with dropout on the two hidden ones.
fn mini_layers(classes: usize) -> Vec<LayerSpec> {
    let [c1, c2, c3, c4, c5] = MINI_CONV;
    let conv = |name: &str, out: usize, groups: usize, bias: f32| LayerSpec::Conv {
        name: name.to_string(),
        out_channels: out,
        kernel: 3,
        stride: 1,
        padding: Padding::Explicit(1),
        groups,
        rounding: Rounding::Floor,
        bias_init: bias,
    };
    let mut layers = vec![conv("conv1", c1, 1, 0.0)];
    layers.extend(relu_norm_pool(LrnOrder::BeforePool));
    layers.push(conv("conv2", c2, 2, 1.0));
    layers.extend(relu_norm_pool(LrnOrder::BeforePool));
    layers.extend([
        conv("conv3", c3, 1, 0.0),
        relu(),
        conv("conv4", c4, 2, 1.0),
        relu(),
        conv("conv5", c5, 2, 1.0),
        relu(),
        pool(),
        LayerSpec::Flatten,
        dense("fc6", MINI_DENSE, 1.0),
        relu(),
        dropout(MINI_DROPOUT),
        dense("fc7", MINI_DENSE, 1.0),
        relu(),
        dropout(MINI_DROPOUT),
        dense("fc8", classes, 0.0),
    ]);
    layers
}

/// torchvision's `alexnet` (the "one weird trick" variant): the layers of its `features`
/// and `classifier` sequences under their `state_dict` indices, so its saved weights load
/// by name.
fn torchvision_layers(classes: usize) -> Vec<LayerSpec> {
    let conv = |index: usize, out: usize, kernel: usize, stride: usize, pad: usize| LayerSpec::Conv {
        name: format!("features.{index}"),
        out_channels: out,
        kernel,
        stride,
        padding: Padding::Explicit(pad),
        groups: 1,
        rounding: Rounding::Floor,
        bias_init: 0.0,
    };
    let fc = |index: usize, out: usize| dense(&format!("classifier.{index}"), out, 0.0);
    vec![
        conv(0, 64, 11, 4, 2),
        relu(),
        pool(),
        conv(3, 192, 5, 1, 2),
        relu(),
        pool(),
        conv(6, 384, 3, 1, 1),
        relu(),
        conv(8, 256, 3, 1, 1),
        relu(),
        conv(10, 256, 3, 1, 1),
        relu(),
        pool(),
        LayerSpec::AdaptiveAvgPool { size: 6 },
        LayerSpec::Flatten,
        dropout(0.5),
        fc(1, 4096),
        relu(),
        dropout(0.5),
        fc(4, 4096),
        relu(),
        fc(6, classes),
    ]
}

/// What a parameter tensor is, for initialisation and for the optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamRole {
    /// Convolution or dense weight with this fan-in (inputs seen by one output).
    Weight {
        /// Inputs per output.
        fan_in: usize,
    },
    /// A bias, set to this value under [`InitScheme::Paper`].
    Bias {
        /// Paper-scheme value.
        paper_value: f32,
    },
    /// Batch-norm scale (starts at 1).
    BnScale,
    /// Batch-norm shift (starts at 0).
    BnShift,
    /// Batch-norm running mean (not trained; starts at 0).
    RunningMean,
    /// Batch-norm running variance (not trained; starts at 1).
    RunningVar,
}

impl ParamRole {
    /// Whether SGD updates this tensor (running statistics are not).
    pub fn trainable(self) -> bool {
        !matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// One named parameter tensor of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Stable name, e.g. `conv1.weight` (also its safetensors key).
    pub name: String,
    /// Dimensions (`[out, in/groups, k, k]` for convolutions, `[out, in]` for dense).
    pub dims: Vec<usize>,
    /// What it is.
    pub role: ParamRole,
}

impl ParamSpec {
    /// Element count.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A layer with its shapes resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedLayer {
    /// The specification.
    pub spec: LayerSpec,
    /// Input shape (batch 1); dense activations are `(1, features, 1, 1)`.
    pub input: Shape4,
    /// Output shape (batch 1).
    pub output: Shape4,
    /// The convolution geometry, for convolutions.
    pub conv: Option<Conv2dGeom>,
    /// The pooling geometry, for pooling layers.
    pub pool: Option<PoolGeom>,
    /// The layer's parameter tensors.
    pub params: Vec<ParamSpec>,
}

impl ResolvedLayer {
    /// Trainable parameter count of this layer.
    pub fn trainable_params(&self) -> usize {
        self.params.iter().filter(|p| p.role.trainable()).map(ParamSpec::numel).sum()
    }

    /// All parameter elements, running statistics included.
    pub fn total_params(&self) -> usize {
        self.params.iter().map(ParamSpec::numel).sum()
    }

    /// Multiply-adds x 2 of one forward pass of one image through the weighted part of the
    /// layer (convolution or dense); 0 for other layers.
    pub fn forward_flops(&self) -> u64 {
        match (&self.spec, self.conv) {
            (_, Some(geom)) => geom.forward_flops(self.input).unwrap_or(0),
            (LayerSpec::Dense { out_features, .. }, None) => 2 * (self.input.c * out_features) as u64,
            _ => 0,
        }
    }
}

/// A preset resolved for one input size and class count: every layer's shapes and
/// parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// The preset.
    pub preset: Preset,
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// The layers in order.
    pub layers: Vec<ResolvedLayer>,
}

impl Architecture {
    /// Resolves `preset` for `input` (`[c, h, w]`) and `classes`.
    ///
    /// ```
    /// use alexnet::{Architecture, Preset};
    /// let net = Architecture::new(Preset::Paper, [3, 227, 227], 1000)?;
    /// assert_eq!(net.trainable_params(), 60_965_224);
    /// // The nominal 224 does not close at conv1; the error names 227.
    /// let err = Architecture::new(Preset::Paper, [3, 224, 224], 1000).unwrap_err();
    /// assert!(err.to_string().contains("227"));
    /// # Ok::<(), alexnet::Error>(())
    /// ```
    pub fn new(preset: Preset, input: [usize; 3], classes: usize) -> Result<Self> {
        Self::from_layers(preset, preset.layers(classes), input, classes).map_err(|e| match e {
            Error::AdaptivePool { size, height, width, .. } => {
                let [c, h, _] = input;
                let works = |side: &usize| {
                    Self::from_layers(preset, preset.layers(classes), [c, *side, *side], classes).is_ok()
                };
                let below = (1..h).rev().find(works);
                let above = (h + 1..=4 * h + 64).find(works);
                Error::AdaptivePool { size, height, width, nearest_inputs: below.into_iter().chain(above).collect() }
            }
            other => other,
        })
    }

    /// The same network with every LRN layer normalising `groups` channel groups apart (see
    /// [`Preset::default_lrn_groups`]); an error when a group count does not divide an LRN
    /// layer's channels. Networks without LRN are returned unchanged.
    ///
    /// ```
    /// use alexnet::{Architecture, Preset};
    /// let caffenet = Architecture::default_for(Preset::Caffenet)?.with_lrn_groups(2)?;
    /// assert!(caffenet.summary().contains("LRN n=5, g2"));
    /// assert!(Architecture::default_for(Preset::Paper)?.with_lrn_groups(5).is_err());
    /// # Ok::<(), alexnet::Error>(())
    /// ```
    pub fn with_lrn_groups(self, groups: usize) -> Result<Self> {
        let mut specs: Vec<LayerSpec> = self.layers.into_iter().map(|l| l.spec).collect();
        set_lrn_groups(&mut specs, groups);
        Self::from_layers(self.preset, specs, self.input, self.classes)
    }

    /// Resolves the preset at its default input size and class count.
    pub fn default_for(preset: Preset) -> Result<Self> {
        Self::new(preset, preset.default_input(), preset.default_classes())
    }

    /// Resolves an explicit layer list.
    pub fn from_layers(preset: Preset, specs: Vec<LayerSpec>, input: [usize; 3], classes: usize) -> Result<Self> {
        if classes < 2 {
            return Err(Error::Config { message: format!("need at least 2 classes, got {classes}") });
        }
        let [c, h, w] = input;
        let mut shape = Shape4::new(1, c, h, w)?;
        let mut layers = Vec::with_capacity(specs.len());
        for spec in specs {
            let at = |e: alexnet_core::Error| Error::Layer { layer: spec.label(), input: shape, source: e };
            let (output, conv, pool, params) = match &spec {
                LayerSpec::Conv { name, out_channels, kernel, stride, padding, groups, rounding, bias_init } => {
                    let pad = match padding {
                        Padding::Explicit(p) => *p,
                        Padding::Same => (kernel - 1) / 2,
                    };
                    let geom = Conv2dGeom::square(shape.c, *out_channels, *kernel, *stride, pad, *groups)
                        .map_err(at)?
                        .with_rounding(*rounding);
                    let out = geom.output_shape(shape).map_err(at)?;
                    let fan_in = geom.in_per_group() * kernel * kernel;
                    let params = vec![
                        ParamSpec {
                            name: format!("{name}.weight"),
                            dims: geom.weight_dims().to_vec(),
                            role: ParamRole::Weight { fan_in },
                        },
                        ParamSpec {
                            name: format!("{name}.bias"),
                            dims: vec![*out_channels],
                            role: ParamRole::Bias { paper_value: *bias_init },
                        },
                    ];
                    (out, Some(geom), None, params)
                }
                LayerSpec::MaxPool { window, stride } => {
                    let geom = PoolGeom::square(*window, *stride, 0, Rounding::Floor).map_err(at)?;
                    (geom.output_shape(shape).map_err(at)?, None, Some(geom), vec![])
                }
                LayerSpec::AdaptiveAvgPool { size } => {
                    let geom = adaptive_pool_geom(*size, shape)?;
                    (geom.output_shape(shape).map_err(at)?, None, Some(geom), vec![])
                }
                LayerSpec::Lrn { params, groups } => {
                    params.validate().map_err(at)?;
                    if *groups == 0 || !shape.c.is_multiple_of(*groups) {
                        return Err(Error::config(format!(
                            "{}: {groups} LRN groups do not divide {} channels",
                            spec.label(),
                            shape.c
                        )));
                    }
                    (shape, None, None, vec![])
                }
                LayerSpec::BatchNorm { name, .. } => {
                    let param =
                        |suffix: &str, role| ParamSpec { name: format!("{name}.{suffix}"), dims: vec![shape.c], role };
                    let params = vec![
                        param("weight", ParamRole::BnScale),
                        param("bias", ParamRole::BnShift),
                        param("running_mean", ParamRole::RunningMean),
                        param("running_var", ParamRole::RunningVar),
                    ];
                    (shape, None, None, params)
                }
                LayerSpec::Dropout { p } => {
                    if !(0.0..1.0).contains(p) {
                        return Err(Error::Config { message: format!("dropout p = {p} must be in [0, 1)") });
                    }
                    (shape, None, None, vec![])
                }
                LayerSpec::Activation { .. } => (shape, None, None, vec![]),
                LayerSpec::Flatten => (Shape4::new(1, shape.image_len(), 1, 1)?, None, None, vec![]),
                LayerSpec::Dense { name, out_features, bias_init } => {
                    if shape.h != 1 || shape.w != 1 {
                        return Err(Error::Config {
                            message: format!("{name}: dense layer needs a flattened input, got {shape}"),
                        });
                    }
                    let params = vec![
                        ParamSpec {
                            name: format!("{name}.weight"),
                            dims: vec![*out_features, shape.c],
                            role: ParamRole::Weight { fan_in: shape.c },
                        },
                        ParamSpec {
                            name: format!("{name}.bias"),
                            dims: vec![*out_features],
                            role: ParamRole::Bias { paper_value: *bias_init },
                        },
                    ];
                    (Shape4::new(1, *out_features, 1, 1)?, None, None, params)
                }
            };
            layers.push(ResolvedLayer { spec, input: shape, output, conv, pool, params });
            shape = output;
        }
        if shape.image_len() != classes || shape.h != 1 {
            return Err(Error::Config {
                message: format!("the network ends in {shape}, expected {classes} class scores"),
            });
        }
        Ok(Self { preset, input, classes, layers })
    }

    /// Every parameter tensor in layer order.
    pub fn params(&self) -> impl Iterator<Item = &ParamSpec> {
        self.layers.iter().flat_map(|l| l.params.iter())
    }

    /// Trainable parameter count (the paper's 60,965,224 for `paper`).
    pub fn trainable_params(&self) -> usize {
        self.layers.iter().map(ResolvedLayer::trainable_params).sum()
    }

    /// All parameter elements, batch-norm running statistics included.
    pub fn total_params(&self) -> usize {
        self.layers.iter().map(ResolvedLayer::total_params).sum()
    }

    /// Forward FLOPs of one image (convolutions and dense layers).
    pub fn forward_flops(&self) -> u64 {
        self.layers.iter().map(ResolvedLayer::forward_flops).sum()
    }

    /// The per-layer parameter count of each weighted layer, by name, in order.
    pub fn layer_param_counts(&self) -> Vec<(String, usize)> {
        self.layers
            .iter()
            .filter_map(|l| match &l.spec {
                LayerSpec::Conv { name, .. } | LayerSpec::Dense { name, .. } | LayerSpec::BatchNorm { name, .. } => {
                    Some((name.clone(), l.total_params()))
                }
                _ => None,
            })
            .collect()
    }

    /// A Keras-style table: layer, output shape, parameters, and totals.
    pub fn summary(&self) -> String {
        let rows: Vec<[String; 3]> = self
            .layers
            .iter()
            .map(|l| {
                let o = l.output;
                let shape = if o.h == 1 && o.w == 1 && !matches!(l.spec, LayerSpec::Conv { .. }) {
                    format!("(None, {})", o.c)
                } else {
                    format!("(None, {}, {}, {})", o.c, o.h, o.w)
                };
                [l.spec.label(), shape, group_thousands(l.total_params())]
            })
            .collect();
        let head = ["Layer (type)".to_string(), "Output Shape".to_string(), "Param #".to_string()];
        let widths: Vec<usize> =
            (0..3).map(|i| rows.iter().chain([&head]).map(|r| r[i].len()).max().unwrap_or(0) + 2).collect();
        let line_len = widths.iter().sum::<usize>();
        let mut out = format!(
            "Model: \"{}\" (input {}x{}x{}, {} classes)\n",
            self.preset, self.input[0], self.input[1], self.input[2], self.classes
        );
        let rule = |c: char| c.to_string().repeat(line_len) + "\n";
        out += &rule('_');
        let fmt_row = |r: &[String; 3]| {
            format!("{:<w0$}{:<w1$}{:>w2$}\n", r[0], r[1], r[2], w0 = widths[0], w1 = widths[1], w2 = widths[2])
        };
        out += &fmt_row(&head);
        out += &rule('=');
        for r in &rows {
            out += &fmt_row(r);
        }
        out += &rule('=');
        let total = self.total_params();
        let trainable = self.trainable_params();
        out += &format!("Total params: {}\n", group_thousands(total));
        out += &format!("Trainable params: {}\n", group_thousands(trainable));
        out += &format!("Non-trainable params: {}\n", group_thousands(total - trainable));
        out += &format!("Forward pass: {:.1} MFLOP per image\n", self.forward_flops() as f64 / 1e6);
        out += &rule('_');
        out
    }
}

/// The plain average pooling that adaptive pooling to `size x size` is on `input`: window
/// = stride = side / `size`. PyTorch's window `i` spans `floor(i * side / size)` to
/// `ceil((i + 1) * side / size)`, which is exactly that when `size` divides the side.
fn adaptive_pool_geom(size: usize, input: Shape4) -> Result<PoolGeom> {
    let fits = |side: usize| size > 0 && side >= size && side.is_multiple_of(size);
    if !(fits(input.h) && fits(input.w)) {
        return Err(Error::AdaptivePool { size, height: input.h, width: input.w, nearest_inputs: Vec::new() });
    }
    let geom = PoolGeom {
        window_h: input.h / size,
        window_w: input.w / size,
        stride_h: input.h / size,
        stride_w: input.w / size,
        pad_h: 0,
        pad_w: 0,
        rounding: Rounding::Floor,
    };
    geom.validate()?;
    Ok(geom)
}

/// `60965224` -> `60,965,224`.
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_parameter_counts_match_the_table() {
        let net = Architecture::default_for(Preset::Paper).unwrap();
        let expected = [
            ("conv1", 34_944),
            ("conv2", 307_456),
            ("conv3", 885_120),
            ("conv4", 663_936),
            ("conv5", 442_624),
            ("fc6", 37_752_832),
            ("fc7", 16_781_312),
            ("fc8", 4_097_000),
        ];
        let got = net.layer_param_counts();
        let expected: Vec<(String, usize)> = expected.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        assert_eq!(got, expected);
        assert_eq!(net.trainable_params(), 60_965_224);
        assert_eq!(net.total_params(), 60_965_224);
    }

    #[test]
    fn paper_shapes_follow_the_table() {
        let net = Architecture::default_for(Preset::Paper).unwrap();
        let conv_outputs: Vec<[usize; 4]> = net
            .layers
            .iter()
            .filter(|l| matches!(l.spec, LayerSpec::Conv { .. } | LayerSpec::MaxPool { .. }))
            .map(|l| l.output.dims())
            .collect();
        assert_eq!(
            conv_outputs,
            vec![
                [1, 96, 55, 55],
                [1, 96, 27, 27],
                [1, 256, 27, 27],
                [1, 256, 13, 13],
                [1, 384, 13, 13],
                [1, 384, 13, 13],
                [1, 256, 13, 13],
                [1, 256, 6, 6],
            ]
        );
        // ReLU -> LRN -> pool in the paper; ReLU -> pool -> LRN in CaffeNet.
        let order = |p: Preset| -> Vec<String> {
            Architecture::default_for(p).unwrap().layers[1..4].iter().map(|l| l.spec.label()).collect()
        };
        assert_eq!(order(Preset::Paper), ["Relu", "LRN n=5, g2", "MaxPool 3/2"]);
        assert_eq!(order(Preset::Caffenet), ["Relu", "MaxPool 3/2", "LRN n=5"]);
    }

    #[test]
    fn caffenet_has_the_paper_counts() {
        let net = Architecture::default_for(Preset::Caffenet).unwrap();
        assert_eq!(net.trainable_params(), 60_965_224);
    }

    #[test]
    fn lrn_groups_per_preset_and_on_request() {
        let groups = |arch: &Architecture| -> Vec<usize> {
            arch.layers
                .iter()
                .filter_map(|l| match l.spec {
                    LayerSpec::Lrn { groups, .. } => Some(groups),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(groups(&Architecture::default_for(Preset::Paper).unwrap()), [2, 2]);
        assert_eq!(groups(&Architecture::default_for(Preset::Caffenet).unwrap()), [1, 1]);
        let mini = Architecture::default_for(Preset::Mini).unwrap();
        assert_eq!(groups(&mini), [1, 1]);
        let regrouped = mini.clone().with_lrn_groups(4).unwrap();
        assert_eq!(groups(&regrouped), [4, 4]);
        assert_eq!(regrouped.params().collect::<Vec<_>>(), mini.params().collect::<Vec<_>>());
        // conv1 of mini has 32 channels: 3 groups do not divide them.
        let err = mini.with_lrn_groups(3).unwrap_err().to_string();
        assert!(err.contains("3 LRN groups") && err.contains("32 channels"), "{err}");
        let keras = Architecture::default_for(Preset::KerasBn).unwrap();
        assert_eq!(keras.clone().with_lrn_groups(2).unwrap(), keras, "no LRN layer to regroup");
    }

    #[test]
    fn paper_rejects_224_naming_227() {
        let err = Architecture::new(Preset::Paper, [3, 224, 224], 1000).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("227") && msg.contains("conv1"), "{msg}");
    }

    #[test]
    fn keras_bn_counts() {
        // Hand-computed from spec section 6 at 224x224 (same padding: 224 -> 56 -> 27 -> 27
        // -> 13 -> 13 -> 6), 1000 classes.
        let net = Architecture::default_for(Preset::KerasBn).unwrap();
        let conv = |k: usize, cin: usize, cout: usize| k * k * cin * cout + cout;
        let dense = |i: usize, o: usize| i * o + o;
        let bn = |c: usize| 4 * c;
        let expected = [
            ("conv1", conv(11, 3, 96)),
            ("conv1_bn", bn(96)),
            ("conv2", conv(5, 96, 256)),
            ("conv2_bn", bn(256)),
            ("conv3", conv(3, 256, 384)),
            ("conv3_bn", bn(384)),
            ("conv4", conv(3, 384, 384)),
            ("conv4_bn", bn(384)),
            ("conv5", conv(3, 384, 256)),
            ("fc6", dense(256 * 6 * 6, 4096)),
            ("fc6_bn", bn(4096)),
            ("fc7", dense(4096, 4096)),
            ("fc7_bn", bn(4096)),
            ("fc8", dense(4096, 1000)),
        ];
        let expected: Vec<(String, usize)> = expected.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        assert_eq!(net.layer_param_counts(), expected);
        let running = 2 * (96 + 256 + 384 + 384 + 4096 + 4096);
        assert_eq!(net.total_params() - net.trainable_params(), running);
        // Any class count and an input that closes: 10 classes at 64x64 (64 -> 16 -> 7 -> 3 -> 1).
        let small = Architecture::new(Preset::KerasBn, [3, 64, 64], 10).unwrap();
        assert_eq!(small.layers.last().unwrap().output.dims(), [1, 10, 1, 1]);
        // Too small to close: 32x32 -> 8 -> 3 -> 1 -> conv5 pool fails.
        assert!(Architecture::new(Preset::KerasBn, [3, 32, 32], 10).is_err());
    }

    #[test]
    fn mini_counts_and_shapes() {
        let net = Architecture::default_for(Preset::Mini).unwrap();
        let [c1, c2, c3, c4, c5] = MINI_CONV;
        let d = MINI_DENSE;
        let expected = [
            ("conv1", 9 * c1 + c1),
            ("conv2", 9 * (c1 / 2) * c2 + c2),
            ("conv3", 9 * c2 * c3 + c3),
            ("conv4", 9 * (c3 / 2) * c4 + c4),
            ("conv5", 9 * (c4 / 2) * c5 + c5),
            ("fc6", c5 * 2 * 2 * d + d),
            ("fc7", d * d + d),
            ("fc8", d * 10 + 10),
        ];
        let expected: Vec<(String, usize)> = expected.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        assert_eq!(net.layer_param_counts(), expected);
        let pools: Vec<usize> =
            net.layers.iter().filter(|l| matches!(l.spec, LayerSpec::MaxPool { .. })).map(|l| l.output.h).collect();
        assert_eq!(pools, [13, 6, 2]);
    }

    #[test]
    fn torchvision_names_shapes_and_count_match_its_state_dict() {
        let net = Architecture::default_for(Preset::Torchvision).unwrap();
        // torchvision.models.alexnet().state_dict(), in order.
        let expected: [(&str, &[usize]); 16] = [
            ("features.0.weight", &[64, 3, 11, 11]),
            ("features.0.bias", &[64]),
            ("features.3.weight", &[192, 64, 5, 5]),
            ("features.3.bias", &[192]),
            ("features.6.weight", &[384, 192, 3, 3]),
            ("features.6.bias", &[384]),
            ("features.8.weight", &[256, 384, 3, 3]),
            ("features.8.bias", &[256]),
            ("features.10.weight", &[256, 256, 3, 3]),
            ("features.10.bias", &[256]),
            ("classifier.1.weight", &[4096, 9216]),
            ("classifier.1.bias", &[4096]),
            ("classifier.4.weight", &[4096, 4096]),
            ("classifier.4.bias", &[4096]),
            ("classifier.6.weight", &[1000, 4096]),
            ("classifier.6.bias", &[1000]),
        ];
        let got: Vec<(&str, &[usize])> = net.params().map(|p| (p.name.as_str(), p.dims.as_slice())).collect();
        assert_eq!(got, expected);
        assert_eq!(net.trainable_params(), 61_100_840);
        assert_eq!(net.total_params(), 61_100_840);
        let pooled = net.layers.iter().find(|l| matches!(l.spec, LayerSpec::AdaptiveAvgPool { .. })).unwrap();
        assert_eq!((pooled.input.dims(), pooled.output.dims()), ([1, 256, 6, 6], [1, 256, 6, 6]));
    }

    /// PyTorch's adaptive windows, `floor(i * side / size)..ceil((i + 1) * side / size)`,
    /// against the plain pooling geometry the layer resolves to, for every side that
    /// divides; other sides are refused.
    #[test]
    fn adaptive_pooling_is_plain_pooling_where_it_divides() {
        for size in 1..=7 {
            for side in 1..=45 {
                let input = Shape4::new(1, 2, side, side).unwrap();
                match adaptive_pool_geom(size, input) {
                    Ok(geom) => {
                        assert_eq!(geom.output_shape(input).unwrap().dims(), [1, 2, size, size]);
                        for i in 0..size {
                            let (start, end) = (i * side / size, ((i + 1) * side).div_ceil(size));
                            assert_eq!((i * geom.stride_h, i * geom.stride_h + geom.window_h), (start, end));
                        }
                    }
                    Err(Error::AdaptivePool { .. }) => assert!(side < size || side % size != 0, "{side} -> {size}"),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    #[test]
    fn torchvision_takes_inputs_that_pool_evenly_and_names_the_nearest_otherwise() {
        for (side, pooled_from) in [(223, 6), (224, 6), (254, 6), (416, 12)] {
            let net = Architecture::new(Preset::Torchvision, [3, side, side], 10).unwrap();
            let pooled = net.layers.iter().find(|l| matches!(l.spec, LayerSpec::AdaptiveAvgPool { .. })).unwrap();
            assert_eq!((pooled.input.h, pooled.output.h), (pooled_from, 6), "input {side}");
            assert_eq!(net.trainable_params(), 61_100_840 - 990 * 4097, "10 classes, fc6 still 9216 wide");
        }
        let msg = Architecture::new(Preset::Torchvision, [3, 300, 300], 1000).unwrap_err().to_string();
        assert!(msg.contains("multiples of 6") && msg.contains("254x254") && msg.contains("415x415"), "{msg}");
        let msg = Architecture::new(Preset::Torchvision, [3, 128, 128], 1000).unwrap_err().to_string();
        assert!(msg.contains("got 3x3") && msg.contains("223x223"), "{msg}");
    }

    #[test]
    fn summary_table_lists_totals() {
        let s = Architecture::default_for(Preset::Paper).unwrap().summary();
        assert!(s.contains("Total params: 60,965,224"), "{s}");
        assert!(s.contains("(None, 96, 55, 55)"), "{s}");
        assert!(s.contains("4,097,000"), "{s}");
    }

    #[test]
    fn preset_names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert!(matches!("vgg".parse::<Preset>(), Err(Error::UnknownPreset { .. })));
        assert_eq!(group_thousands(60_965_224), "60,965,224");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }
}
