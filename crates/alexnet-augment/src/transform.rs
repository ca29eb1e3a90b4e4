//! A full per-sample transform: decode, resize, the augmentation plan drawn from the
//! sample's seed, and the fused write (with its plain stage-by-stage reference).

use crate::fused::{Affine, write_view};
use crate::source::RawSample;
use crate::{
    CentreCrop, Channels, ChwAffine, Decode, Error, Flip, Image, Normalize, PcaNoise, RandomCrop, Region,
    ResizeBuffers, ResizeCentreCrop, Result, TenCrop, Window,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How views are cut from the (resized) image.
#[derive(Debug, Clone, PartialEq)]
pub enum Augment {
    /// Training: a random crop, a random flip and optional PCA colour noise.
    Train {
        /// The random crop (with optional zero padding).
        crop: RandomCrop,
        /// The random horizontal flip.
        flip: Flip,
        /// The PCA colour noise, if enabled.
        pca: Option<PcaNoise>,
    },
    /// Evaluation on the centre crop.
    Centre(CentreCrop),
    /// Evaluation on ten crops per sample.
    TenCrop(TenCrop),
}

/// The random choices for one use of one sample: its views and each view's colour offset
/// (`[0, 1]` units, one per channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The windows, one per view.
    pub windows: Vec<Window>,
    /// The PCA offsets, one per channel (zeros without PCA noise).
    pub offset: Vec<f32>,
}

impl Plan {
    /// The smallest rectangle of a `size` x `size` image holding every pixel the windows
    /// read (empty when they lie wholly in the padding).
    pub fn covered(&self, size: usize) -> Region {
        let clip = |v: isize| v.clamp(0, size as isize) as usize;
        let (mut left, mut top, mut right, mut bottom) = (size, size, 0, 0);
        for w in &self.windows {
            let (l, r) = (clip(w.left), clip(w.left + w.width as isize));
            let (t, b) = (clip(w.top), clip(w.top + w.height as isize));
            if l < r && t < b {
                (left, top, right, bottom) = (left.min(l), top.min(t), right.max(r), bottom.max(b));
            }
        }
        if left >= right {
            return Region { left: 0, top: 0, width: 0, height: 0 };
        }
        Region { left, top, width: right - left, height: bottom - top }
    }
}

/// Reusable per-worker buffers: the resizer's, the decoded image and the resized region
/// (no per-image allocation once they have grown).
pub struct Scratch {
    resize: ResizeBuffers,
    decoded: Image,
    resized: Image,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

impl Scratch {
    /// Fresh buffers.
    pub fn new() -> Self {
        Scratch { resize: ResizeBuffers::default(), decoded: Image::empty(3), resized: Image::empty(3) }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// The random-number generator of one use of one sample: ChaCha8 seeded from
/// `(seed, epoch, index)` through SplitMix64, so results do not depend on which worker
/// handles the sample or in what order.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix64(mix64(mix64(seed, 0x5A4D_504C), epoch), index))
}

/// SplitMix64's finaliser applied to `seed + (index + 1) * golden` (as `alexnet_core::rng`;
/// repeated here so the crate stands alone).
pub(crate) fn mix64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything done to one sample, from its raw bytes to CHW `f32` views.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Decoding and channel count.
    pub decode: Decode,
    /// The paper's resize-and-centre-crop preprocessing, if any.
    pub resize: Option<ResizeCentreCrop>,
    /// How views are cut.
    pub augment: Augment,
    /// The normalisation.
    pub normalize: Normalize,
}

impl Transform {
    /// The paper's training transform: RGB, resize to 256, random 227 crop, flip, optional
    /// PCA noise, ImageNet mean/std.
    pub fn imagenet_train(pca: Option<PcaNoise>) -> Self {
        Transform {
            decode: Decode::new(Channels::Rgb),
            resize: Some(ResizeCentreCrop { size: 256 }),
            augment: Augment::Train { crop: RandomCrop { size: 227, padding: 0 }, flip: Flip::default(), pca },
            normalize: Normalize::imagenet(),
        }
    }

    /// The paper's evaluation transform: resize to 256, then the centre 227 crop or ten crops.
    pub fn imagenet_eval(ten_crop: bool) -> Self {
        let augment =
            if ten_crop { Augment::TenCrop(TenCrop { size: 227 }) } else { Augment::Centre(CentreCrop { size: 227 }) };
        Transform { augment, ..Self::imagenet_train(None) }
    }

    /// Training on small raw images (Fashion-MNIST, CIFAR): zero-pad by `padding`, random
    /// `size` crop, flip, normalise; no resize.
    pub fn small_train(channels: Channels, size: usize, padding: usize, normalize: Normalize) -> Self {
        Transform {
            decode: Decode::new(channels),
            resize: None,
            augment: Augment::Train { crop: RandomCrop { size, padding }, flip: Flip::default(), pca: None },
            normalize,
        }
    }

    /// Evaluation on small raw images: the centre `size` crop (the whole image when `size`
    /// is the image size).
    pub fn small_eval(channels: Channels, size: usize, normalize: Normalize) -> Self {
        Transform {
            decode: Decode::new(channels),
            resize: None,
            augment: Augment::Centre(CentreCrop { size }),
            normalize,
        }
    }

    /// Checks that the parts agree (channel counts, positive standard deviations, a mean
    /// image matching the resize, no padding with a mean image).
    pub fn validate(&self) -> Result<()> {
        let c = self.decode.channels.count();
        let n = &self.normalize;
        if n.mean.len() != c || n.std.len() != c {
            return Err(Error::Config(format!(
                "normalisation has {} means and {} stds for {c} channels",
                n.mean.len(),
                n.std.len()
            )));
        }
        if let Some(bad) = n.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Config(format!("standard deviation {bad} must be positive")));
        }
        let size = self.crop_size();
        if size == 0 {
            return Err(Error::Config("crop size 0".into()));
        }
        if let Some(m) = &n.mean_image {
            if m.channels != c || m.data.len() != m.width * m.height * c {
                return Err(Error::Config(format!(
                    "mean image is {}x{}x{}, samples have {c} channels",
                    m.width, m.height, m.channels
                )));
            }
            if let Augment::Train { crop, .. } = &self.augment
                && crop.padding > 0
            {
                return Err(Error::Config("a per-pixel mean image cannot be combined with crop padding".into()));
            }
        }
        if let Augment::Train { pca: Some(p), .. } = &self.augment {
            if p.eigenvectors.len() != p.eigenvalues.len() || p.eigenvectors.iter().any(|v| v.len() != c) {
                return Err(Error::Config(format!(
                    "PCA noise has {} eigenvalues for {c} channels",
                    p.eigenvalues.len()
                )));
            }
            if !(p.sigma.is_finite() && p.sigma >= 0.0) {
                return Err(Error::Config(format!("PCA sigma {} must be finite and >= 0", p.sigma)));
            }
        }
        Ok(())
    }

    fn crop_size(&self) -> usize {
        match &self.augment {
            Augment::Train { crop, .. } => crop.size,
            Augment::Centre(c) => c.size,
            Augment::TenCrop(t) => t.size,
        }
    }

    /// Views per sample (10 for ten-crop, else 1).
    pub fn views(&self) -> usize {
        if matches!(self.augment, Augment::TenCrop(_)) { 10 } else { 1 }
    }

    /// The shape of one view: `[channels, height, width]`.
    pub fn view_shape(&self) -> [usize; 3] {
        let s = self.crop_size();
        [self.decode.channels.count(), s, s]
    }

    /// `f32` values per sample (all views).
    pub fn sample_len(&self) -> usize {
        self.views() * self.view_shape().iter().product::<usize>()
    }

    /// Decode (or channel-convert) and resize a raw sample: the whole prepared image, as
    /// the reference path and the colour statistics see it. The pipeline itself resizes
    /// only what the views cover ([`Transform::prepare_views`]).
    pub fn prepare(&self, raw: RawSample, scratch: &mut Scratch) -> Result<Image, String> {
        self.decode_into(raw, &mut scratch.decoded)?;
        match self.resize {
            Some(r) => r.apply(&scratch.decoded, &mut scratch.resize),
            None => Ok(std::mem::replace(&mut scratch.decoded, Image::empty(3))),
        }
    }

    fn decode_into(&self, raw: RawSample, out: &mut Image) -> Result<(), String> {
        match raw {
            RawSample::Encoded(bytes) => self.decode.apply_into(&bytes, out),
            RawSample::Pixels(image) => {
                *out = self.decode.channels.convert(image);
                Ok(())
            }
        }
    }

    /// What the pipeline does before the fused pass: decodes `raw` (into reused buffers),
    /// draws its plan from `rng` for the `size` x `size` resized image (the same draws as
    /// for [`Transform::prepare`]'s output), then resizes only the rectangle the plan's
    /// views cover (all of it with a per-pixel mean image). Returns that rectangle and the
    /// plan with its windows moved into the rectangle's coordinates: the exact input of
    /// [`Transform::write_fused`]. The rectangle is bit-identical to the same part of
    /// [`Transform::prepare`]'s image ([`ResizeCentreCrop::apply_region`]).
    pub fn prepare_views<'s>(
        &self,
        raw: RawSample,
        rng: &mut impl rand::Rng,
        scratch: &'s mut Scratch,
    ) -> Result<(&'s Image, Plan), String> {
        let plan = self.decode_and_plan(raw, rng, scratch)?;
        self.finish_views(plan, scratch)
    }

    /// Decodes `raw` into `scratch.decoded` and draws its plan for the image the views are
    /// cut from (the resized `size` x `size` one, when resizing).
    fn decode_and_plan(&self, raw: RawSample, rng: &mut impl rand::Rng, scratch: &mut Scratch) -> Result<Plan, String> {
        self.decode_into(raw, &mut scratch.decoded)?;
        match self.resize {
            Some(resize) => self.plan(resize.size, resize.size, rng),
            None => self.plan(scratch.decoded.width, scratch.decoded.height, rng),
        }
    }

    /// The image the views of `plan` are cut from, and the plan in its coordinates: the
    /// decoded image itself, or the resized rectangle the views cover.
    fn finish_views<'s>(&self, mut plan: Plan, scratch: &'s mut Scratch) -> Result<(&'s Image, Plan), String> {
        let Some(resize) = self.resize else { return Ok((&scratch.decoded, plan)) };
        self.resize_views(resize, &mut plan, scratch)?;
        Ok((&scratch.resized, plan))
    }

    /// Resizes the rectangle of `scratch.decoded` that `plan`'s views cover into
    /// `scratch.resized` and moves the windows into its coordinates.
    fn resize_views(&self, resize: ResizeCentreCrop, plan: &mut Plan, scratch: &mut Scratch) -> Result<(), String> {
        let region = if self.normalize.mean_image.is_some() {
            Region { left: 0, top: 0, width: resize.size, height: resize.size }
        } else {
            plan.covered(resize.size)
        };
        resize.apply_region(&scratch.decoded, region, &mut scratch.resize, &mut scratch.resized)?;
        for window in &mut plan.windows {
            window.left -= region.left as isize;
            window.top -= region.top as isize;
        }
        Ok(())
    }

    /// Draws the random choices for a prepared `width` x `height` image. Draw order: crop
    /// row, crop column, flip, then the PCA alphas.
    pub fn plan(&self, width: usize, height: usize, rng: &mut impl rand::Rng) -> Result<Plan, String> {
        let c = self.decode.channels.count();
        let too_small = || format!("image {width}x{height} is smaller than the {0}x{0} crop", self.crop_size());
        let (windows, offset) = match &self.augment {
            Augment::Train { crop, flip, pca } => {
                let mut window = crop.window(width, height, rng).ok_or_else(too_small)?;
                window.flip = flip.draw(rng);
                let offset = match pca {
                    Some(p) => p.offset(&p.draw_alphas(rng)),
                    None => vec![0.0; c],
                };
                (vec![window], offset)
            }
            Augment::Centre(cc) => (vec![cc.window(width, height).ok_or_else(too_small)?], vec![0.0; c]),
            Augment::TenCrop(t) => (t.windows(width, height).ok_or_else(too_small)?.to_vec(), vec![0.0; c]),
        };
        if let Some(m) = &self.normalize.mean_image
            && (m.width, m.height) != (width, height)
        {
            return Err(format!("image {width}x{height} does not match the {}x{} mean image", m.width, m.height));
        }
        Ok(Plan { windows, offset })
    }

    /// Prepares `raw`, draws its plan from `rng` and writes all views into `out`
    /// (`sample_len()` values) with the fused pass.
    pub fn apply(
        &self,
        raw: RawSample,
        rng: &mut impl rand::Rng,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) -> Result<(), String> {
        let plan = self.decode_and_plan(raw, rng, scratch)?;
        if self.write_chw_directly(&plan, scratch, out)? {
            return Ok(());
        }
        let (image, plan) = self.finish_views(plan, scratch)?;
        self.write_fused(image, &plan, out);
        Ok(())
    }

    /// One RGB view inside the resized image, per-channel normalisation: the resize writes the
    /// normalised CHW floats itself, the same values as resize-then-fused-pass. Returns
    /// whether it did (otherwise `out` is untouched).
    fn write_chw_directly(&self, plan: &Plan, scratch: &mut Scratch, out: &mut [f32]) -> Result<bool, String> {
        let Some(resize) = self.resize else { return Ok(false) };
        let ([w], 3, None) = (&plan.windows[..], scratch.decoded.channels, &self.normalize.mean_image) else {
            return Ok(false);
        };
        if w.left < 0 || w.top < 0 {
            return Ok(false);
        }
        let region = Region { left: w.left as usize, top: w.top as usize, width: w.width, height: w.height };
        if region.left + region.width > resize.size || region.top + region.height > resize.size {
            return Ok(false);
        }
        let affine = self.affine(plan, 3);
        let chw = ChwAffine { scale: affine.scale, bias: affine.bias, flip: w.flip };
        resize.apply_region_chw(&scratch.decoded, region, &mut scratch.resize, chw, out)
    }

    /// The fused write of `plan`'s views of a prepared `image` into `out`.
    pub fn write_fused(&self, image: &Image, plan: &Plan, out: &mut [f32]) {
        let affine = self.affine(plan, image.channels);
        let view_len = out.len() / plan.windows.len();
        for (window, view) in plan.windows.iter().zip(out.chunks_exact_mut(view_len)) {
            write_view(image, window, &affine, view);
        }
    }

    /// The fused pass's constants: `scale = 1 / (255 std)`, `bias = (offset - mean) / std`
    /// per channel (the mean left to the mean image, if any), computed in `f64`.
    fn affine(&self, plan: &Plan, channels: usize) -> Affine<'_> {
        let n = &self.normalize;
        let per_pixel = n.mean_image.is_some();
        let mut affine =
            Affine { scale: [0.0; 3], bias: [0.0; 3], inv_std: [0.0; 3], mean_image: n.mean_image.as_deref() };
        for c in 0..channels {
            let std = f64::from(n.std[c]);
            let mean = if per_pixel { 0.0 } else { f64::from(n.mean[c]) };
            affine.scale[c] = (1.0 / (255.0 * std)) as f32;
            affine.bias[c] = ((f64::from(plan.offset[c]) - mean) / std) as f32;
            affine.inv_std[c] = (1.0 / std) as f32;
        }
        affine
    }

    /// The plain reference: crop, flip, to `[0, 1]`, add the PCA offset, subtract the mean,
    /// divide by the std, as separate stages in `f64`. Returns all views, CHW.
    pub fn apply_reference(&self, image: &Image, plan: &Plan) -> Vec<f32> {
        let n = &self.normalize;
        let c = image.channels;
        let mut out = Vec::new();
        for window in &plan.windows {
            let mut view = window.crop(image);
            let mut mean_image = n.mean_image.as_ref().map(|m| window.crop_hwc(&m.data, m.width, m.height, c));
            if window.flip {
                view = Flip::apply(&view);
                mean_image = mean_image.map(|m| Flip::apply_hwc(&m, window.width, c));
            }
            for ch in 0..c {
                for p in 0..window.width * window.height {
                    let x = f64::from(view.data[p * c + ch]) / 255.0;
                    let x = x + f64::from(plan.offset[ch]);
                    let mean = mean_image.as_ref().map_or(f64::from(n.mean[ch]), |m| f64::from(m[p * c + ch]));
                    out.push(((x - mean) / f64::from(n.std[ch])) as f32);
                }
            }
        }
        out
    }
}
