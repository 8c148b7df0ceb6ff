//! mimalloc, the flight-server's allocator, and its one setting.
//!
//! A flight-server allocates per message as much as per batch: tonic's
//! and h2's buffers and frames, prost's messages, the IPC encoder's
//! vectors, each batch's column buffers of megabytes. mimalloc serves the
//! small ones from per-thread free lists and reuses the large ones. Freed
//! memory it *purges* by default (gives back to the kernel a second
//! after it was freed), and a batch's buffers then fault in page by page
//! again: on the PostgreSQL route that cost more in the kernel than the
//! allocator saved. [`keep_freed_mimalloc_memory`] turns purging off, as
//! [`crate::keep_freed_memory`] does for glibc: the process holds on to
//! its peak working set.
//!
//! Measured (BENCHMARKS.md, data plane run 10), against glibc's `malloc`
//! with [`crate::keep_freed_memory`], in the same runs: server CPU per row
//! beside each Greenplum segment 0.70–0.74 µs against 0.76–0.90 (four
//! runs), one server 0.56–0.60 against 0.72–0.80 (three of four runs);
//! PostgreSQL, two endpoints, 0.72–0.92 against 0.86–1.01 (three runs),
//! one endpoint 1.01–1.27 against 1.02–1.15. The price is memory: a
//! server's peak RSS is 50–90 MiB higher (130–180 MiB), as flat as before
//! from 2 to 10 M rows.

pub use ::mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`), which
/// `libmimalloc-sys` leaves unnamed: milliseconds before freed memory
/// goes back to the kernel, -1 for never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc keep freed memory for reuse instead of returning it to
/// the kernel. Call it first thing in `main` of a process whose global
/// allocator is [`MiMalloc`].
pub fn keep_freed_mimalloc_memory() {
    // SAFETY: `mi_option_set` takes an option's index and a value and
    // only changes mimalloc's settings; the index is checked by the test.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::os::raw::c_long {
        // SAFETY: reads one of mimalloc's settings.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// The index is mimalloc's purge delay (its default, 1000 ms in
    /// `src/options.c` of the mimalloc this crate builds, tells it from
    /// its neighbours) and the call turns purging off.
    #[test]
    fn the_option_is_the_purge_delay_and_the_call_turns_purging_off() {
        assert_eq!(
            purge_delay(),
            1000,
            "index 15 is not mimalloc's purge delay"
        );
        keep_freed_mimalloc_memory();
        assert_eq!(purge_delay(), -1);
    }
}
