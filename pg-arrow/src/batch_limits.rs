//! How big a record batch may grow: shared by every source's producer and
//! by the decoders in [`crate::CopyDecoder`] and [`crate::TextCopyDecoder`], which close a batch when it is full.

/// How big one record batch may grow before it is sent.
///
/// Whichever limit is hit first closes the batch. Small batches keep
/// latency and memory low; large ones amortize per-batch overhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Maximum rows per batch.
    pub rows: usize,
    /// Approximate maximum bytes of column data per batch.
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            rows: 16 * 1024,
            bytes: 8 * 1024 * 1024,
        }
    }
}
