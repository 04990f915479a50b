//! Transparent huge pages for the large arrays a call allocates.
//!
//! An allocation of tens of megabytes (a large image's output or gradient)
//! comes from `mmap` fresh on every call, and the first write to each of its
//! 4 KiB pages traps into the kernel: 16 Ki faults for a 64 MiB output,
//! which cost more than the convolution writing it (BENCHMARKS.md, "Huge
//! pages"). Where Linux leaves transparent huge pages to `madvise` (its
//! default), asking for them on the allocation's 2 MiB-aligned interior
//! makes that 32 faults. The advice changes how the memory is backed,
//! never its contents, and is ignored where huge pages are unavailable.

use std::ops::Range;

/// The size of a transparent huge page: a page-middle-directory entry's
/// reach with 4 KiB base pages (x86-64, and AArch64's usual configuration).
/// Elsewhere the advice covers whichever whole huge pages fall inside.
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks the kernel to back the whole huge pages inside the `bytes` bytes at
/// `start`, memory the caller owns and has not written yet, with huge pages.
/// Ranges holding no whole huge page are left alone.
#[cfg(target_os = "linux")]
pub(crate) fn advise(start: *mut u8, bytes: usize) {
    let Some(Range { start: first, end }) = whole_huge_pages(start as usize, bytes) else {
        return;
    };
    // SAFETY: `first..end` lies inside the caller's allocation and starts on
    // a page boundary, as madvise requires. MADV_HUGEPAGE only changes which
    // pages back the range later; it never unmaps it or changes what it
    // holds. The result is advice: an error (huge pages disabled) changes
    // nothing, so it is not read.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

/// The addresses of the whole huge pages inside the `bytes` bytes from
/// `address`, if there are any.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn whole_huge_pages(address: usize, bytes: usize) -> Option<Range<usize>> {
    let first = address.checked_next_multiple_of(HUGE_PAGE_BYTES)?;
    let end = address.saturating_add(bytes) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    (end > first).then_some(first..end)
}

/// Nothing to advise outside Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn advise(_start: *mut u8, _bytes: usize) {}

/// [`advise`] on the unwritten capacity of `data` past its length.
pub(crate) fn advise_spare_capacity<T>(data: &mut Vec<T>) {
    let spare = data.spare_capacity_mut();
    advise(spare.as_mut_ptr().cast(), std::mem::size_of_val(spare));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advised_vectors_keep_what_is_written() {
        for len in [0, 1000, (HUGE_PAGE_BYTES * 3) / 4 + 17] {
            let mut data: Vec<u32> = Vec::with_capacity(len);
            advise_spare_capacity(&mut data);
            data.extend((0..len).map(|i| i as u32 ^ 0x5a5a));
            assert!(
                data.iter()
                    .enumerate()
                    .all(|(i, &v)| v == i as u32 ^ 0x5a5a)
            );
        }
    }

    #[test]
    fn only_whole_aligned_huge_pages_are_advised() {
        let page = HUGE_PAGE_BYTES;
        assert_eq!(whole_huge_pages(page, page), Some(page..2 * page));
        assert_eq!(whole_huge_pages(page - 1, page + 1), Some(page..2 * page));
        assert_eq!(
            whole_huge_pages(page + 16, 3 * page),
            Some(2 * page..4 * page)
        );
        assert_eq!(whole_huge_pages(1, page), None);
        assert_eq!(whole_huge_pages(page + 1, page), None);
        assert_eq!(whole_huge_pages(0, 0), None);
        assert_eq!(whole_huge_pages(usize::MAX - 5, 100), None);
    }
}
