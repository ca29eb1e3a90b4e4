//! The Winograd transforms F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): a tile of `a = m + 2` inputs becomes `B^T d B`, a 3x3 kernel
//! `G g G^T`, and their element-wise product `M` gives the `m x m` outputs `A^T M A`.
//!
//! Each 2-D transform is the 1-D one applied to the columns and then to the rows. Inputs and
//! outputs go [`LANES`] tiles at a time, one tile per lane, so that the arithmetic vectorises.

use std::ops::{Add, Mul, Sub};

/// Tiles transformed together, one per lane.
pub(crate) const LANES: usize = 8;

/// One value of [`LANES`] tiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Lanes(pub [f32; LANES]);

impl Lanes {
    pub(crate) const ZERO: Self = Self([0.0; LANES]);
}

impl Add for Lanes {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] + o.0[l]))
    }
}

impl Sub for Lanes {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] - o.0[l]))
    }
}

impl Mul<f32> for Lanes {
    type Output = Self;
    #[inline(always)]
    fn mul(self, k: f32) -> Self {
        Self(std::array::from_fn(|l| self.0[l] * k))
    }
}

/// One Winograd variant F(`M` x `M`, 3 x 3) with input tiles of `A = M + 2`: its three 1-D
/// transforms.
pub(crate) trait Variant<const M: usize, const A: usize> {
    /// `B^T d` for one column of an input tile.
    fn input(d: [Lanes; A]) -> [Lanes; A];
    /// `G g` for one column of a kernel (in `f64`: weights are transformed once per call).
    fn kernel(g: [f64; 3]) -> [f64; A];
    /// `A^T m` for one column of a transformed output tile.
    fn output(m: [Lanes; A]) -> [Lanes; M];
}

/// F(2x2, 3x3): 4x4 input tiles, 2.25x fewer multiplies than direct convolution.
pub(crate) struct F2;

impl Variant<2, 4> for F2 {
    #[inline(always)]
    fn input([d0, d1, d2, d3]: [Lanes; 4]) -> [Lanes; 4] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
    }

    fn kernel([g0, g1, g2]: [f64; 3]) -> [f64; 4] {
        [g0, (g0 + g1 + g2) / 2.0, (g0 - g1 + g2) / 2.0, g2]
    }

    #[inline(always)]
    fn output([m0, m1, m2, m3]: [Lanes; 4]) -> [Lanes; 2] {
        [m0 + m1 + m2, m1 - m2 - m3]
    }
}

/// F(4x4, 3x3): 6x6 input tiles, 4x fewer multiplies than direct convolution (interpolation
/// points 0, +-1, +-2 and infinity).
pub(crate) struct F4;

impl Variant<4, 6> for F4 {
    #[inline(always)]
    fn input([d0, d1, d2, d3, d4, d5]: [Lanes; 6]) -> [Lanes; 6] {
        let (d1x4, d2x4, d1x2, d3x2) = (d1 * 4.0, d2 * 4.0, d1 * 2.0, d3 * 2.0);
        [
            d0 * 4.0 - d2 * 5.0 + d4,
            d3 + d4 - d1x4 - d2x4,
            d1x4 - d2x4 - d3 + d4,
            d3x2 - d1x2 - d2 + d4,
            d1x2 - d2 - d3x2 + d4,
            d1x4 - d3 * 5.0 + d5,
        ]
    }

    fn kernel([g0, g1, g2]: [f64; 3]) -> [f64; 6] {
        [
            g0 / 4.0,
            -(g0 + g1 + g2) / 6.0,
            -(g0 - g1 + g2) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
            g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
            g2,
        ]
    }

    #[inline(always)]
    fn output([m0, m1, m2, m3, m4, m5]: [Lanes; 6]) -> [Lanes; 4] {
        let (p12, m12, p34, m34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        [m0 + p12 + p34, m12 + m34 * 2.0, p12 + p34 * 4.0, m12 + m34 * 8.0 + m5]
    }
}

/// `B^T d B` of [`LANES`] input tiles (`d[row][col]`).
#[inline(always)]
pub(crate) fn input_tile<const M: usize, const A: usize, V: Variant<M, A>>(d: &[[Lanes; A]; A]) -> [[Lanes; A]; A] {
    let mut t = [[Lanes::ZERO; A]; A];
    for j in 0..A {
        let col = V::input(std::array::from_fn(|i| d[i][j]));
        for (row, v) in t.iter_mut().zip(col) {
            row[j] = v;
        }
    }
    t.map(V::input)
}

/// `A^T m A` of [`LANES`] transformed output tiles (`m[row][col]`): the `M x M` outputs.
#[inline(always)]
pub(crate) fn output_tile<const M: usize, const A: usize, V: Variant<M, A>>(m: &[[Lanes; A]; A]) -> [[Lanes; M]; M] {
    let mut t = [[Lanes::ZERO; A]; M];
    for j in 0..A {
        let col = V::output(std::array::from_fn(|i| m[i][j]));
        for (row, v) in t.iter_mut().zip(col) {
            row[j] = v;
        }
    }
    t.map(V::output)
}

/// `G g G^T` of one 3x3 kernel (`g[row][col]`), flipped in both axes first if `flip`.
pub(crate) fn kernel_tile<const M: usize, const A: usize, V: Variant<M, A>>(
    g: &[f32],
    flip: bool,
) -> [[f64; A]; A] {
    let at = |i: usize, j: usize| f64::from(if flip { g[(2 - i) * 3 + (2 - j)] } else { g[i * 3 + j] });
    let cols: [[f64; A]; 3] = std::array::from_fn(|j| V::kernel([at(0, j), at(1, j), at(2, j)]));
    std::array::from_fn(|i| V::kernel([cols[0][i], cols[1][i], cols[2][i]]))
}
