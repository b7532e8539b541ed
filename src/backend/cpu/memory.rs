//! Memory policy of the model's process: keep freed activation buffers instead
//! of returning them to the kernel after every op, hand freed memory back when the
//! model is dropped, and allocate large weight buffers on huge pages.

/// Keeps freed activation buffers in the process instead of unmapping them.
///
/// glibc returns every free chunk above its mmap threshold to the kernel, so each
/// of the ~200 ops in a ViT-B/32 forward pass maps fresh pages and faults them in
/// again (about 10% of image-embedding time on the 2-core machine). Raising the
/// thresholds to their maximum makes later batches reuse the same memory. Peak
/// memory is unchanged: the buffers are the same, they are just kept.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, takes plain integers and
    // is thread-safe (it takes the arena locks).
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Returns freed heap memory to the operating system. [`tune_allocator`] keeps
/// freed buffers for reuse, which is right while embedding; but once the model
/// is dropped, its weights (600 MB for PLIP) would otherwise stay resident
/// through the index's compaction.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the heap to the kernel;
    // it is thread-safe and leaves every live allocation in place.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A zeroed `Vec<f32>` of `len` values whose memory the kernel is asked to back
/// with transparent huge pages (Linux, where THP is in `madvise` mode, the common
/// default). Filling a 200 MB buffer of 4 KiB pages costs 50,000 page faults,
/// most of the time it takes to load 100k stored vectors or the text tower's
/// weights; with 2 MiB pages it is a hundred. The advice is only a hint: where it
/// is not honoured, nothing changes.
pub(crate) fn zeroed_f32(len: usize) -> Vec<f32> {
    let v = vec![0f32; len];
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const HUGE: usize = 2 << 20;
        let bytes = len * 4;
        if bytes >= 4 * HUGE {
            let start = v.as_ptr() as usize;
            let first = start.next_multiple_of(HUGE);
            let end = (start + bytes) / HUGE * HUGE;
            if end > first {
                // SAFETY: the range lies inside the vector's allocation, which is
                // not yet touched (calloc maps large blocks fresh); MADV_HUGEPAGE
                // changes only how pages are backed, never their contents.
                unsafe {
                    libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v
}
