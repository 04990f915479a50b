//! Runtime dispatch to SIMD builds of the direct kernels' loops (and of
//! the lowering's copies, `layout/nchw.rs`), so that a library user gets
//! vectorised code without any `target-cpu` flag.

/// Inside a function generic over `T: Element`, returns `$fused(args)`
/// compiled for AVX-512 (F and VL) or else AVX2, with FMA, when the CPU has
/// them, else `$plain(args)` as compiled for the build's target. `$fused`
/// may use `mul_add` (one instruction there); `$plain` must not, as it is a
/// library call without FMA. The loops of the direct kernels vectorise
/// well, and each wider build is faster (BENCHMARKS.md, "Runtime SIMD").
macro_rules! with_runtime_simd {
    ($avx512:ident, $avx2:ident, $fused:expr, $plain:expr, $( $arg:ident : $ty:ty ),* $(,)?) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn $avx512<T: Element>($( $arg: $ty ),*) {
            $fused($( $arg ),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2<T: Element>($( $arg: $ty ),*) {
            $fused($( $arg ),*)
        }

        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
                // SAFETY: `$avx512` only enables AVX-512 F and VL, AVX2 and
                // FMA, which the CPU was just found to support.
                return unsafe { $avx512($( $arg ),*) };
            }
            if has!("avx2") && has!("fma") {
                // SAFETY: `$avx2` only enables AVX2 and FMA, which the CPU
                // was just found to support.
                return unsafe { $avx2($( $arg ),*) };
            }
        }
        $plain($( $arg ),*)
    };
}

pub(crate) use with_runtime_simd;
