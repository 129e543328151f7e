//! What the supervisor's allocator keeps: memory handed back to the system once it is
//! free, so that the supervisor's RSS is what it holds, not what it once held.
//!
//! glibc's allocator keeps freed memory resident in two ways, and both cost a supervisor
//! of many services more than its services do:
//! - It raises its mmap threshold to the size of each large block freed: after the first
//!   `status` answer of a few MiB, every later answer comes from the heap, and what is
//!   freed below the heap's top stays resident (about 7 MiB at 4,000 services, 2 KiB per
//!   service). [`keep_thresholds`] fixes the thresholds at glibc's defaults: a block of
//!   128 KiB or more is its own mapping, unmapped when freed, and a free top of the heap
//!   over 128 KiB is returned.
//! - What the boot and each reload free (the configuration's parse and validation, every
//!   service's first steps) lies between what stays: [`release_free_memory`] gives back
//!   every whole free page inside the heap (`malloc_trim`) once such a burst is over.
//!
//! With another C library (musl returns memory by itself and has neither call) both do
//! nothing.

/// The mmap and trim thresholds, in bytes: glibc's initial values, kept from now on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes the allocator's thresholds (see the module's header). Call once, before the
/// supervisor starts.
pub fn keep_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` takes no pointer; glibc allows it at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

/// Returns the allocator's free pages to the system. It walks the free memory, a few
/// milliseconds for a heap of tens of MiB: call it once a burst is over, not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointer and only releases memory the allocator
    // holds free; glibc allows it at any time, from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
