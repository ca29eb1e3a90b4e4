use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How `alpha` scales the sum of squares in local response normalisation. The same
/// normalisation is written two ways: the paper's `alpha = 1e-4` is `alpha = 5e-4` under
/// PyTorch's and Caffe's convention (window `n = 5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AlphaConvention {
    /// The paper's (Krizhevsky et al. 2012, section 3.3; also TensorFlow's
    /// `tf.nn.local_response_normalization`): `k + alpha * sum(a_j^2)`.
    #[default]
    Paper,
    /// PyTorch's `nn.LocalResponseNorm` and Caffe's `LRN` layer: `k + (alpha / n) * sum(a_j^2)`.
    PyTorchCaffe,
}

/// Parameters of local response normalisation across channels:
/// `b_i = a_i / (k + alpha' * sum_{j = max(0, i - n/2)}^{min(C-1, i + n/2)} a_j^2)^beta`,
/// where `alpha'` is `alpha` or `alpha / n` depending on [`AlphaConvention`]. The window
/// clips at the first and last channel, as in the paper.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrnParams {
    /// Window size `n` in channels (odd).
    pub size: usize,
    /// `alpha`, read according to `convention`.
    pub alpha: f32,
    /// Exponent `beta`.
    pub beta: f32,
    /// Additive constant `k`.
    pub k: f32,
    /// How `alpha` multiplies the sum.
    pub convention: AlphaConvention,
}

impl LrnParams {
    /// The paper's values: n = 5, alpha = 1e-4 (times the plain sum), beta = 0.75, k = 2.
    pub fn paper() -> Self {
        Self { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0, convention: AlphaConvention::Paper }
    }

    /// Validated parameters.
    ///
    /// ```
    /// use alexnet_core::{AlphaConvention, LrnParams};
    /// let caffe = LrnParams::new(5, 1e-4, 0.75, 1.0, AlphaConvention::PyTorchCaffe)?;
    /// assert!((caffe.sum_coefficient() - 2e-5).abs() < 1e-12);
    /// assert!(LrnParams::new(4, 1e-4, 0.75, 2.0, AlphaConvention::Paper).is_err());
    /// # Ok::<(), alexnet_core::Error>(())
    /// ```
    pub fn new(size: usize, alpha: f32, beta: f32, k: f32, convention: AlphaConvention) -> Result<Self> {
        let params = Self { size, alpha, beta, k, convention };
        params.validate()?;
        Ok(params)
    }

    /// Checks the window is odd and positive, and the constants finite with `k > 0` (so the
    /// denominator never vanishes), `alpha >= 0`, `beta >= 0`.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size.is_multiple_of(2) {
            return Err(Error::LrnSize { size: self.size });
        }
        let check = |what: &'static str, value: f32, ok: bool, reason: &'static str| {
            if ok { Ok(()) } else { Err(Error::InvalidParameter { what, value: value.into(), reason }) }
        };
        check("LRN k", self.k, self.k.is_finite() && self.k > 0.0, "must be finite and positive")?;
        check("LRN alpha", self.alpha, self.alpha.is_finite() && self.alpha >= 0.0, "must be finite and non-negative")?;
        check("LRN beta", self.beta, self.beta.is_finite() && self.beta >= 0.0, "must be finite and non-negative")
    }

    /// The coefficient that multiplies the plain sum of squares: `alpha` or `alpha / n`.
    pub fn sum_coefficient(&self) -> f32 {
        match self.convention {
            AlphaConvention::Paper => self.alpha,
            AlphaConvention::PyTorchCaffe => self.alpha / self.size as f32,
        }
    }

    /// The channels `lo..=hi` in the window of channel `i` among `channels`.
    pub fn window(&self, i: usize, channels: usize) -> (usize, usize) {
        let half = self.size / 2;
        (i.saturating_sub(half), (i + half).min(channels - 1))
    }
}

impl Default for LrnParams {
    fn default() -> Self {
        Self::paper()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_and_conventions() {
        let p = LrnParams::paper();
        assert_eq!((p.size, p.alpha, p.beta, p.k), (5, 1e-4, 0.75, 2.0));
        assert_eq!(p.sum_coefficient(), 1e-4);
        let avg = LrnParams { convention: AlphaConvention::PyTorchCaffe, ..p };
        assert!((avg.sum_coefficient() - 2e-5).abs() < 1e-12);
    }

    #[test]
    fn window_clips_at_edges() {
        let p = LrnParams::paper();
        assert_eq!(p.window(0, 96), (0, 2));
        assert_eq!(p.window(1, 96), (0, 3));
        assert_eq!(p.window(50, 96), (48, 52));
        assert_eq!(p.window(95, 96), (93, 95));
        assert_eq!(p.window(0, 1), (0, 0));
    }

    #[test]
    fn invalid_params() {
        for size in [0, 2, 4] {
            assert_eq!(LrnParams::new(size, 1e-4, 0.75, 2.0, AlphaConvention::Paper), Err(Error::LrnSize { size }));
        }
        assert!(matches!(
            LrnParams::new(5, 1e-4, 0.75, 0.0, AlphaConvention::Paper),
            Err(Error::InvalidParameter { what: "LRN k", .. })
        ));
        assert!(matches!(
            LrnParams::new(5, -1.0, 0.75, 2.0, AlphaConvention::Paper),
            Err(Error::InvalidParameter { what: "LRN alpha", .. })
        ));
        assert!(matches!(
            LrnParams::new(5, 1e-4, f32::NAN, 2.0, AlphaConvention::Paper),
            Err(Error::InvalidParameter { what: "LRN beta", .. })
        ));
    }
}
