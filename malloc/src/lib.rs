//! # hopper-malloc
//!
//! The C allocator's settings for hopper's processes that move large
//! buffers: every allocation of libtorch and of hopper goes through glibc's
//! `malloc`, which hands buffers above its mmap threshold to the kernel on
//! `free` and maps them fresh on the next request, and trims freed memory
//! at the top of its heaps.
//! - Training allocates and frees buffers of tens of MB at every step (the
//!   gradient of a wide first layer), and every hop receives, decodes,
//!   encodes and sends a model state of up to hundreds of MB.
//! - A flight-server builds every record batch in column buffers of
//!   megabytes, encodes it into another, and frees both once it is sent.
//!
//! Each such buffer is then faulted in again page by page and zeroed by
//! the kernel.
//!
//! [`keep_freed_memory`] makes `malloc` serve every size from its heaps
//! (`M_MMAP_MAX` 0), keep up to [`TRIM_THRESHOLD`] of freed memory for
//! reuse (`M_TRIM_THRESHOLD`), and use one arena (`M_ARENA_MAX` 1): a
//! thread's own arena grows in heaps of at most 64 MiB and maps anything
//! larger fresh whatever the settings, so a state of 94 MB is only reused
//! from the main heap. One arena costs little here: a trainer trains on one
//! or two threads and its other threads mostly wait, and a flight-server
//! allocates a few buffers per batch, not per row. A process then holds on
//! to its peak working set instead of returning it and faulting it back
//! in; its resident size stays at its peak.
//!
//! Measured (BENCHMARKS.md):
//! - `end-to-end` and `hops`: a confA hop costs less than half of what it
//!   cost with glibc's defaults, and training steps run faster (the
//!   standalone leg took 30 % less time);
//! - `greenplum`: a flight-server beside each segment spends about an
//!   eighth less CPU per row (1.18 → 1.02 µs), and its peak resident size
//!   fell (92 → 69 MiB: no fresh mappings to overlap).
//!
//! A flight-server uses mimalloc instead, with purging off
//! ([`keep_freed_mimalloc_memory`], in `mimalloc_reuse`): it allocates
//! per message as much as per batch.
//!
//! Its `unsafe` is C calls with integer arguments, no pointers.
#![allow(unsafe_code)]

mod mimalloc_reuse;

pub use mimalloc_reuse::{keep_freed_mimalloc_memory, MiMalloc};

/// Freed memory `malloc` keeps at the top of a heap before it returns any
/// to the kernel.
pub const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes glibc's `malloc` keep freed memory for reuse (see the module
/// docs). Call it first thing in `main`, before any other thread starts:
/// a thread that has allocated keeps the arena it has.
/// Returns whether the allocator took the settings: `false` where `malloc`
/// is not glibc's, which is then left as it is.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes two integers and only changes malloc's
        // tuning parameters, under malloc's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The process's minor page faults so far (`/proc/self/stat`, field 10).
    fn minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // The command name (field 2) is in parentheses and may hold spaces.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(7).unwrap().parse().unwrap()
    }

    /// Allocates `bytes`, writes every page, and frees it.
    fn touch(bytes: usize) {
        let v = std::hint::black_box(vec![1u8; bytes]);
        drop(v);
    }

    /// The test runs on a thread of the test harness, which has its own
    /// arena already: a buffer that fits a thread's heap (under 64 MiB, as
    /// confA's first-layer gradient of 29 MB does) shows the settings;
    /// `hops` measures the states beyond that.
    #[test]
    fn a_freed_gradient_sized_buffer_is_reused_without_faulting_its_pages_in_again() {
        const GRADIENT: usize = 32 << 20; // over glibc's largest mmap threshold
        assert!(keep_freed_memory(), "glibc refused the settings");
        touch(GRADIENT);
        let before = minor_faults();
        touch(GRADIENT);
        let faults = minor_faults() - before;
        // With glibc's defaults the second buffer is mapped fresh: one fault
        // per 4 KiB page, 8 192 of them.
        assert!(
            faults < (GRADIENT / 4096 / 10) as u64,
            "{faults} page faults for a buffer freed and allocated again"
        );
    }
}
