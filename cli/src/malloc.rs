//! glibc's malloc hands large freed blocks straight back to the kernel and
//! maps them afresh on the next call, so every call that allocates a
//! sizeable result (or the GEMM's packing buffers) pays for page faults, and
//! how much depends on what the process allocated before: on the notebook's
//! workload that doubled the strided forward pass (BENCHMARKS.md,
//! "Allocator"). A long-running training process keeps them too, and `benches/pytorch.py` gives PyTorch the same
//! treatment (through the environment variables of the same name).

/// Tells glibc's malloc to keep freed memory: no trimming, no per-call
/// `mmap` below 32 MiB. Returns whether it applied. Does nothing elsewhere.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: `mallopt` only changes two of glibc's malloc tunables; it
        // is called before any thread of ours exists, and both values are
        // in the ranges glibc documents (the mmap threshold's maximum on
        // 64-bit targets is 32 MiB).
        unsafe {
            mallopt(M_TRIM_THRESHOLD, std::ffi::c_int::MAX) == 1
                && mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// After the change, large blocks still come and go intact (and on
    /// plain glibc the change applies; sanitizers' allocators may refuse it).
    #[test]
    fn large_blocks_round_trip_after_keeping_freed_memory() {
        let applied = super::keep_freed_memory();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            eprintln!("mallopt applied: {applied}");
        }
        for round in 0..4u32 {
            let block: Vec<u32> = (0..(1 << 20)).map(|i| i ^ round).collect();
            assert!(
                block
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == i as u32 ^ round)
            );
        }
    }
}
