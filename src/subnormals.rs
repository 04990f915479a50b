//! Subnormal numbers flushed to zero while a call computes.
//!
//! x86-64 cores add tens to hundreds of cycles to a multiply that reads or
//! writes a subnormal (a number below the smallest normal, 1.2e-38 in
//! `f32`, 2.2e-308 in `f64`): weights or errors full of them make a call
//! 20x slower (BENCHMARKS.md, "Subnormals"). The SSE/AVX control register
//! of each thread that computes has its flush-to-zero (FTZ) and
//! denormals-are-zero (DAZ) bits set for the call's duration and put back
//! after: subnormal operands are read as zero, and results that would be
//! subnormal are written as zero. Each affected product or sum changes by
//! less than the smallest normal number, far below any rounding a normal
//! result has.

/// FTZ and DAZ set on this thread while the guard lives, when asked for;
/// the control register as it was when the guard drops.
pub(crate) struct FlushGuard {
    #[cfg(target_arch = "x86_64")]
    saved: Option<u32>,
}

/// The MXCSR bits: flush-to-zero (15) and denormals-are-zero (6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushGuard {
    /// Sets FTZ and DAZ on this thread if `flush`.
    pub(crate) fn new(flush: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = flush.then(|| {
                let saved = read_mxcsr();
                write_mxcsr(saved | FTZ_DAZ);
                saved
            });
            FlushGuard { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = flush;
            FlushGuard {}
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(saved) = self.saved {
            write_mxcsr(saved);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr = 0u32;
    // SAFETY: `stmxcsr` stores the 32-bit MXCSR register (present on every
    // x86-64 CPU) into the `u32` the pointer names, which is valid for
    // writes; it touches no other memory, stack or flags.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(csr: u32) {
    // SAFETY: `ldmxcsr` loads MXCSR from the `u32` the pointer names, valid
    // for reads. The values written are the register's own with at most the
    // FTZ and DAZ bits added, which change how results round to zero, not
    // memory safety; the guard puts the saved value back on drop.
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags));
    }
}

#[cfg(test)]
mod tests {
    use super::FlushGuard;
    use std::hint::black_box;

    /// A subnormal product is zero inside the guard and subnormal again
    /// after it; without the flag the guard changes nothing.
    #[test]
    fn subnormals_are_flushed_inside_the_guard_only() {
        let tiny = black_box(f32::MIN_POSITIVE);
        let half = black_box(0.5f32);
        assert!((tiny * half).is_subnormal());
        {
            let _flush = FlushGuard::new(true);
            if cfg!(target_arch = "x86_64") {
                assert_eq!(black_box(tiny) * black_box(half), 0.0);
                assert_eq!(black_box(tiny * half) + 0.0, 0.0);
            }
        }
        assert!((black_box(tiny) * black_box(half)).is_subnormal());
        let _keep = FlushGuard::new(false);
        assert!((black_box(tiny) * black_box(half)).is_subnormal());
    }
}
