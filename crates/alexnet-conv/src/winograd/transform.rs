//! The Winograd transforms F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): a tile of `a = m + 2` inputs becomes `B^T d B`, a 3x3 kernel
//! `G g G^T`, and their element-wise product `M` gives the `m x m` outputs `A^T M A`.
//! Written for any `m` through [`Variant`]; the crate uses F(2x2, 3x3).
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
pub(crate) fn kernel_tile<const M: usize, const A: usize, V: Variant<M, A>>(g: &[f32], flip: bool) -> [[f64; A]; A] {
    let at = |i: usize, j: usize| f64::from(if flip { g[(2 - i) * 3 + (2 - j)] } else { g[i * 3 + j] });
    let cols: [[f64; A]; 3] = std::array::from_fn(|j| V::kernel([at(0, j), at(1, j), at(2, j)]));
    std::array::from_fn(|i| V::kernel([cols[0][i], cols[1][i], cols[2][i]]))
}
