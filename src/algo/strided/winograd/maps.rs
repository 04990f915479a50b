//! The 1-D maps of Winograd's minimal filtering algorithms F(m, 3) (Lavin
//! and Gray, 2016): an output tile of `M` pixels from an input tile of `N =
//! M + 2` by `N` products. Each 2-D transform applies one map along the
//! rows of a tile and then one along its columns; the adjoints serve the
//! backward pass.

use crate::element::Element;

/// One algorithm F(M, 3): its input, output and kernel maps and their
/// adjoints. With `V = Bᵀ d`, `U = G g` and `Y = Aᵀ (U ⊙ V)`, `Y` is the
/// 3-tap correlation of `d` with `g`.
pub(super) trait MinimalFilter<const M: usize, const N: usize> {
    /// `Bᵀ d`, an input tile's row or column into the transform domain.
    fn bt<T: Element>(d: [T; N]) -> [T; N];
    /// `B v`, the adjoint of [`bt`](Self::bt).
    fn b<T: Element>(v: [T; N]) -> [T; N];
    /// `Aᵀ m`, from the transform domain to `M` output pixels.
    fn at<T: Element>(m: [T; N]) -> [T; M];
    /// `A y`, the adjoint of [`at`](Self::at).
    fn a<T: Element>(y: [T; M]) -> [T; N];
    /// `G g`, a kernel row or column into the transform domain.
    fn g<T: Element>(g: [T; 3]) -> [T; N];
    /// `Gᵀ u`, the adjoint of [`g`](Self::g).
    fn gt<T: Element>(u: [T; N]) -> [T; 3];
}

/// F(2, 3) on the points 0, 1, -1 and ∞: 4 products for 2 outputs, with
/// coefficients 1 and 1/2 (results a few units in the last place from the
/// direct sum).
#[derive(Clone, Copy, Debug)]
pub(super) struct F2;

impl MinimalFilter<2, 4> for F2 {
    #[inline(always)]
    fn bt<T: Element>([d0, d1, d2, d3]: [T; 4]) -> [T; 4] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
    }

    #[inline(always)]
    fn b<T: Element>([v0, v1, v2, v3]: [T; 4]) -> [T; 4] {
        [v0, v1 - v2 + v3, v1 + v2 - v0, -v3]
    }

    #[inline(always)]
    fn at<T: Element>([m0, m1, m2, m3]: [T; 4]) -> [T; 2] {
        [m0 + m1 + m2, m1 - m2 - m3]
    }

    #[inline(always)]
    fn a<T: Element>([y0, y1]: [T; 2]) -> [T; 4] {
        [y0, y0 + y1, y0 - y1, -y1]
    }

    #[inline(always)]
    fn g<T: Element>([g0, g1, g2]: [T; 3]) -> [T; 4] {
        let half = T::from_f64(0.5);
        [g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2]
    }

    #[inline(always)]
    fn gt<T: Element>([u0, u1, u2, u3]: [T; 4]) -> [T; 3] {
        let half = T::from_f64(0.5);
        [
            u0 + (u1 + u2) * half,
            (u1 - u2) * half,
            (u1 + u2) * half + u3,
        ]
    }
}

/// F(4, 3) on the points 0, 1, -1, 2, -2 and ∞: 6 products for 4 outputs
/// (2.25 multiplies an output pixel in 2-D instead of F(2, 3)'s 4), with
/// coefficients up to 8 and 1/24, so results lie further from the direct
/// sum than F(2, 3)'s (BENCHMARKS.md, "Winograd F(4x4, 3x3)").
#[derive(Clone, Copy, Debug)]
pub(super) struct F4;

impl MinimalFilter<4, 6> for F4 {
    #[inline(always)]
    fn bt<T: Element>([d0, d1, d2, d3, d4, d5]: [T; 6]) -> [T; 6] {
        let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        // Shared terms: rows 1 and 2, and rows 3 and 4, differ in sign.
        let (even, odd) = (d4 - four * d2, d3 - four * d1);
        let (even2, odd2) = (d4 - d2, two * (d3 - d1));
        [
            four * d0 - five * d2 + d4,
            even + odd,
            even - odd,
            even2 + odd2,
            even2 - odd2,
            four * d1 - five * d3 + d5,
        ]
    }

    #[inline(always)]
    fn b<T: Element>([v0, v1, v2, v3, v4, v5]: [T; 6]) -> [T; 6] {
        let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        let (sum12, diff12) = (v1 + v2, v2 - v1);
        let (sum34, diff34) = (v3 + v4, v3 - v4);
        [
            four * v0,
            four * (diff12 + v5) - two * diff34,
            -five * v0 - four * sum12 - sum34,
            two * diff34 - diff12 - five * v5,
            v0 + sum12 + sum34,
            v5,
        ]
    }

    #[inline(always)]
    fn at<T: Element>([m0, m1, m2, m3, m4, m5]: [T; 6]) -> [T; 4] {
        let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        let (sum12, diff12) = (m1 + m2, m1 - m2);
        let (sum34, diff34) = (m3 + m4, m3 - m4);
        [
            m0 + sum12 + sum34,
            diff12 + two * diff34,
            sum12 + four * sum34,
            diff12 + eight * diff34 + m5,
        ]
    }

    #[inline(always)]
    fn a<T: Element>([y0, y1, y2, y3]: [T; 4]) -> [T; 6] {
        let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        let (even, odd) = (y0 + y2, y1 + y3);
        let (even2, odd2) = (y0 + four * y2, two * y1 + eight * y3);
        [y0, even + odd, even - odd, even2 + odd2, even2 - odd2, y3]
    }

    #[inline(always)]
    fn g<T: Element>([g0, g1, g2]: [T; 3]) -> [T; 6] {
        let (quarter, sixth, twentyfourth) = (
            T::from_f64(0.25),
            T::from_f64(1.0 / 6.0),
            T::from_f64(1.0 / 24.0),
        );
        let ends = g0 + g2;
        let (ends4, middle2) = (g0 + T::from_f64(4.0) * g2, T::from_f64(2.0) * g1);
        [
            quarter * g0,
            -sixth * (ends + g1),
            -sixth * (ends - g1),
            twentyfourth * (ends4 + middle2),
            twentyfourth * (ends4 - middle2),
            g2,
        ]
    }

    #[inline(always)]
    fn gt<T: Element>([u0, u1, u2, u3, u4, u5]: [T; 6]) -> [T; 3] {
        let (quarter, sixth, twelfth, twentyfourth) = (
            T::from_f64(0.25),
            T::from_f64(1.0 / 6.0),
            T::from_f64(1.0 / 12.0),
            T::from_f64(1.0 / 24.0),
        );
        let (sum12, diff12) = (u1 + u2, u2 - u1);
        let (sum34, diff34) = (u3 + u4, u3 - u4);
        [
            quarter * u0 - sixth * sum12 + twentyfourth * sum34,
            sixth * diff12 + twelfth * diff34,
            sixth * (sum34 - sum12) + u5,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot<const K: usize>(x: [f64; K], y: [f64; K]) -> f64 {
        x.iter().zip(y).map(|(a, b)| a * b).sum()
    }

    /// Values in [-1, 1] from a fixed sequence (no generator needed).
    fn values<const K: usize>(seed: usize) -> [f64; K] {
        std::array::from_fn(|i| (((seed * 31 + i * 17) % 23) as f64 - 11.0) / 11.0)
    }

    /// `Aᵀ (G g ⊙ Bᵀ d)` is the correlation of `d` with `g`, and each
    /// adjoint satisfies `<f(x), y> = <x, f*(y)>`.
    fn check<F: MinimalFilter<M, N>, const M: usize, const N: usize>() {
        for seed in 0..20 {
            let (d, g) = (values::<N>(seed), values::<3>(seed + 7));
            let (v, u) = (F::bt(d), F::g(g));
            let y = F::at(std::array::from_fn(|j| u[j] * v[j]));
            for (i, &got) in y.iter().enumerate() {
                let want: f64 = (0..3).map(|k| d[i + k] * g[k]).sum();
                assert!((got - want).abs() < 1e-12, "output {i}: {got} != {want}");
            }
            let (x, z) = (values::<N>(seed + 1), values::<N>(seed + 2));
            assert!((dot(F::bt(x), z) - dot(x, F::b(z))).abs() < 1e-12, "B");
            let (ym, zn) = (values::<M>(seed + 3), values::<N>(seed + 4));
            assert!((dot(F::at(zn), ym) - dot(zn, F::a(ym))).abs() < 1e-12, "A");
            let k = values::<3>(seed + 5);
            assert!((dot(F::g(k), zn) - dot(k, F::gt(zn))).abs() < 1e-12, "G");
        }
    }

    #[test]
    fn f2_filters_and_its_adjoints_transpose() {
        check::<F2, 2, 4>();
    }

    #[test]
    fn f4_filters_and_its_adjoints_transpose() {
        check::<F4, 4, 6>();
    }
}
