//! Colour statistics over a training set and the paper's PCA colour noise ("fancy PCA").
//!
//! Pixel values are taken in `[0, 1]` (byte / 255), the scale every published
//! implementation uses: the noise `[p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T` has units of value
//! squared through the eigenvalues, so the scale matters; on `[0, 1]` with sigma 0.1 it
//! shifts colours by about 1%, as intended.

use crate::source::{RawSample, Source};
use crate::{Decode, Error, ResizeCentreCrop, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Eigen-decomposition of a symmetric `n` x `n` matrix (row-major) by cyclic Jacobi
/// rotations, in `f64`. Returns eigenvalues in descending order and the matching unit
/// eigenvectors (`vectors[i]` belongs to `values[i]`).
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(matrix.len(), n * n, "symmetric_eigen: matrix is not {n}x{n}");
    let mut a = matrix.to_vec();
    let mut v: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (0..n).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q].powi(2))
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>();
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation angle that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1).
                let tau = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order.iter().map(|&i| (0..n).map(|k| v[k * n + i]).collect()).collect();
    (values, vectors)
}

/// Options for the statistics pass.
#[derive(Debug, Clone)]
pub struct StatsOptions {
    /// At most this many images are read: every `ceil(len / max_images)`-th sample in
    /// source order, starting at 0 (a fixed rule, so the statistics are reproducible).
    pub max_images: usize,
    /// Threads for the pass.
    pub workers: usize,
    /// Also accumulate the per-pixel mean image (needs equal-sized images, e.g. a resize).
    pub per_pixel_mean: bool,
    /// The folder the cache file goes into (default: `$XDG_CACHE_HOME` or `~/.cache`, then
    /// the system temp folder, each under `alexnet-augment/`). Never the data folder, which
    /// may be read-only or shared.
    pub cache_dir: Option<PathBuf>,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions { max_images: 10_000, workers: 2, per_pixel_mean: false, cache_dir: None }
    }
}

/// Per-channel and colour-covariance statistics of a training set, in `[0, 1]` pixel units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColourStats {
    /// Hex SHA-256 of the source's file list and the preprocessing, the cache key.
    pub fingerprint: String,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Images that contributed.
    pub images: u64,
    /// Images that could not be read or decoded.
    pub skipped: u64,
    /// Pixels that contributed.
    pub pixels: u64,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    pub std: Vec<f64>,
    /// Channel covariance, row-major `channels x channels`.
    pub covariance: Vec<f64>,
    /// Eigenvalues of the covariance, descending.
    pub eigenvalues: Vec<f64>,
    /// Unit eigenvectors, `eigenvectors[i]` for `eigenvalues[i]`.
    pub eigenvectors: Vec<Vec<f64>>,
    /// Per-pixel mean image (HWC, `[0, 1]` units) with its width and height, when asked for.
    pub mean_image: Option<(usize, usize, Vec<f32>)>,
}

/// Where the statistics came from and where they are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReport {
    /// The cache file.
    pub path: PathBuf,
    /// True if read from the cache, false if computed.
    pub loaded: bool,
    /// What went wrong with the cache, if anything: an unreadable file that was recomputed
    /// and replaced, or a file that could not be written (the statistics are returned all
    /// the same: the cache only saves time).
    pub problem: Option<String>,
}

struct Accumulator {
    sum: Vec<f64>,
    outer: Vec<f64>,
    pixels: u64,
    images: u64,
    skipped: u64,
    mean_image: Option<(usize, usize, Vec<f64>)>,
}

impl Accumulator {
    fn new(c: usize) -> Self {
        Accumulator { sum: vec![0.0; c], outer: vec![0.0; c * c], pixels: 0, images: 0, skipped: 0, mean_image: None }
    }

    fn add(&mut self, image: &crate::Image, per_pixel: bool) -> Result<()> {
        let c = image.channels;
        // Integer sums are exact; converting once per image keeps the pass fast.
        let mut sum = vec![0u64; c];
        let mut outer = vec![0u64; c * c];
        for px in image.data.chunks_exact(c) {
            for i in 0..c {
                sum[i] += u64::from(px[i]);
                for j in i..c {
                    outer[i * c + j] += u64::from(px[i]) * u64::from(px[j]);
                }
            }
        }
        for i in 0..c {
            self.sum[i] += sum[i] as f64 / 255.0;
            for j in i..c {
                let v = outer[i * c + j] as f64 / (255.0 * 255.0);
                self.outer[i * c + j] += v;
                if i != j {
                    self.outer[j * c + i] += v;
                }
            }
        }
        self.pixels += (image.width * image.height) as u64;
        self.images += 1;
        if per_pixel {
            let (w, h, acc) =
                self.mean_image.get_or_insert_with(|| (image.width, image.height, vec![0.0; image.data.len()]));
            if (*w, *h) != (image.width, image.height) {
                return Err(Error::Config(format!(
                    "per-pixel mean needs equal image sizes: {}x{} after {w}x{h} (add a resize)",
                    image.width, image.height
                )));
            }
            for (a, &v) in acc.iter_mut().zip(&image.data) {
                *a += f64::from(v) / 255.0;
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: Accumulator) -> Result<()> {
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            *a += b;
        }
        for (a, b) in self.outer.iter_mut().zip(other.outer) {
            *a += b;
        }
        self.pixels += other.pixels;
        self.images += other.images;
        self.skipped += other.skipped;
        match (&mut self.mean_image, other.mean_image) {
            (Some((w, h, a)), Some((ow, oh, b))) => {
                if (*w, *h) != (ow, oh) {
                    return Err(Error::Config(format!(
                        "per-pixel mean needs equal image sizes: {ow}x{oh} and {w}x{h}"
                    )));
                }
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            }
            (slot @ None, Some(b)) => *slot = Some(b),
            _ => {}
        }
        Ok(())
    }
}

impl ColourStats {
    /// The cache key for `source` read through `decode` and `resize` with `options`.
    pub fn fingerprint(
        source: &dyn Source,
        decode: Decode,
        resize: Option<ResizeCentreCrop>,
        options: &StatsOptions,
    ) -> String {
        let mut hasher = Sha256::new();
        hasher.update(source.fingerprint_bytes());
        hasher.update(
            format!(
                "channels={} max_pixels={} resize={:?} max_images={} per_pixel_mean={} v1",
                decode.channels.count(),
                decode.max_pixels,
                resize.map(|r| r.size),
                options.max_images,
                options.per_pixel_mean
            )
            .as_bytes(),
        );
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Computes the statistics in one pass over (a fixed subsample of) the source, decoding
    /// and resizing as the pipeline does. Unreadable samples are counted in `skipped`.
    pub fn compute(
        source: &dyn Source,
        decode: Decode,
        resize: Option<ResizeCentreCrop>,
        options: &StatsOptions,
    ) -> Result<Self> {
        let c = decode.channels.count();
        let stride = source.len().div_ceil(options.max_images.max(1)).max(1);
        let picks: Vec<usize> = (0..source.len()).step_by(stride).collect();
        let workers = options.workers.clamp(1, picks.len().max(1));
        let per_worker = picks.len().div_ceil(workers).max(1);
        let partials: Vec<Result<Accumulator>> = std::thread::scope(|scope| {
            let handles: Vec<_> = picks
                .chunks(per_worker)
                .map(|chunk| {
                    scope.spawn(move || {
                        let mut acc = Accumulator::new(c);
                        let mut resize_buffers = crate::ResizeBuffers::default();
                        for &index in chunk {
                            let image = source.read(index).and_then(|raw| match raw {
                                RawSample::Encoded(bytes) => decode.apply(&bytes),
                                RawSample::Pixels(image) => Ok(decode.channels.convert(image)),
                            });
                            let image = match (image, resize) {
                                (Ok(image), Some(r)) => r.apply(&image, &mut resize_buffers),
                                (image, _) => image,
                            };
                            match image {
                                Ok(image) => acc.add(&image, options.per_pixel_mean)?,
                                Err(_) => acc.skipped += 1,
                            }
                        }
                        Ok(acc)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("statistics worker panicked")).collect()
        });
        let mut total = Accumulator::new(c);
        for partial in partials {
            total.merge(partial?)?;
        }
        if total.pixels == 0 {
            return Err(Error::Config(format!("no readable images for statistics ({} skipped)", total.skipped)));
        }
        let n = total.pixels as f64;
        let mean: Vec<f64> = total.sum.iter().map(|s| s / n).collect();
        let covariance: Vec<f64> = (0..c * c).map(|k| total.outer[k] / n - mean[k / c] * mean[k % c]).collect();
        let std = (0..c).map(|i| covariance[i * c + i].max(0.0).sqrt()).collect();
        let (eigenvalues, eigenvectors) = symmetric_eigen(&covariance, c);
        let mean_image = total.mean_image.map(|(w, h, acc)| {
            let count = total.images as f64;
            (w, h, acc.iter().map(|&v| (v / count) as f32).collect())
        });
        Ok(ColourStats {
            fingerprint: Self::fingerprint(source, decode, resize, options),
            channels: c,
            images: total.images,
            skipped: total.skipped,
            pixels: total.pixels,
            mean,
            std,
            covariance,
            eigenvalues,
            eigenvectors,
            mean_image,
        })
    }

    /// Reads the statistics from the cache, or computes and caches them. The cache file is
    /// `alexnet-augment-stats-<fingerprint>.json` in [`StatsOptions::cache_dir`]. A cache
    /// file that cannot be read (truncated by a crash, say) is recomputed and replaced, and
    /// one that cannot be written is skipped; [`CacheReport::problem`] says so. Only the
    /// statistics themselves can fail (no readable images).
    pub fn load_or_compute(
        source: &dyn Source,
        decode: Decode,
        resize: Option<ResizeCentreCrop>,
        options: &StatsOptions,
    ) -> Result<(Self, CacheReport)> {
        let fingerprint = Self::fingerprint(source, decode, resize, options);
        let name = format!("alexnet-augment-stats-{}.json", &fingerprint[..32]);
        let path = options.cache_dir.clone().unwrap_or_else(default_cache_dir).join(name);
        let mut problem = None;
        match std::fs::read_to_string(&path).map(|text| serde_json::from_str::<ColourStats>(&text)) {
            Ok(Ok(stats)) if stats.fingerprint == fingerprint => {
                return Ok((stats, CacheReport { path, loaded: true, problem: None }));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problem = Some(format!("{} was unreadable ({e}); recomputed", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problem = Some(format!("{} could not be read ({e}); recomputed", path.display())),
        }
        let stats = Self::compute(source, decode, resize, options)?;
        let json = serde_json::to_string_pretty(&stats).expect("statistics serialise");
        if let Err(e) = write_file(&path, &json) {
            problem = Some(format!("{} could not be written: {e}", path.display()));
        }
        Ok((stats, CacheReport { path, loaded: false, problem }))
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("alexnet-augment")
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a reader never sees half a file; the temporary name is unique
    // to this call, so threads computing the same statistics do not write into each other.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{call}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The paper's PCA colour noise: each time an image is used, draw `a_i ~ N(0, sigma)` and
/// add `sum_i a_i * l_i * p_i` to every pixel (in `[0, 1]` units).
#[derive(Debug, Clone, PartialEq)]
pub struct PcaNoise {
    /// Eigenvalues `l_i` of the training set's colour covariance.
    pub eigenvalues: Vec<f32>,
    /// Unit eigenvectors `p_i` (each of length `channels`).
    pub eigenvectors: Vec<Vec<f32>>,
    /// Standard deviation of the `a_i` (the paper: 0.1).
    pub sigma: f32,
}

impl PcaNoise {
    /// The noise for `stats` with the paper's sigma of 0.1.
    pub fn from_stats(stats: &ColourStats) -> Self {
        PcaNoise {
            eigenvalues: stats.eigenvalues.iter().map(|&v| v as f32).collect(),
            eigenvectors: stats.eigenvectors.iter().map(|p| p.iter().map(|&v| v as f32).collect()).collect(),
            sigma: 0.1,
        }
    }

    /// Draws the `a_i`, one per eigenvalue.
    pub fn draw_alphas(&self, rng: &mut impl rand::Rng) -> Vec<f32> {
        let normal = rand_distr::Normal::new(0.0f32, self.sigma).expect("sigma is finite and >= 0");
        self.eigenvalues.iter().map(|_| rand_distr::Distribution::sample(&normal, rng)).collect()
    }

    /// The per-channel offset `[p1 .. pn] [a1 l1 .. an ln]^T` for the drawn `alphas`.
    pub fn offset(&self, alphas: &[f32]) -> Vec<f32> {
        let c = self.eigenvectors.first().map_or(0, Vec::len);
        (0..c)
            .map(|ch| {
                let sum: f64 = (0..self.eigenvalues.len())
                    .map(|i| {
                        f64::from(self.eigenvectors[i][ch]) * f64::from(alphas[i]) * f64::from(self.eigenvalues[i])
                    })
                    .sum();
                sum as f32
            })
            .collect()
    }
}
