//! # pg-arrow
//!
//! PostgreSQL's wire formats to and from Apache Arrow, with nothing else:
//! no driver, no runtime, no network. Bytes in, record batches out, and
//! back. The Flight server reads and writes database segments through it;
//! anything else that holds COPY bytes (a benchmark, a test, a tool) can
//! decode them the same way without linking a server.
//!
//! # Design
//!
//! ```text
//!  COPY … TO STDOUT (FORMAT binary) ─ bytes ─► CopyDecoder ─────┐
//!  COPY … TO STDOUT (FORMAT text)   ─ bytes ─► TextCopyDecoder ─┼─► RecordBatch (BatchLimits)
//!  DataRow bodies, binary (Greenplum RETRIEVE) ► CopyDecoder::for_data_rows
//!  DataRow bodies, text ─► BatchBuilder::push_data_row ─────────┘
//!
//!  RecordBatch ─► CopyEncoder ─ bytes ─► COPY <Ident> (…) FROM STDIN (FORMAT binary)
//! ```
//!
//! - [`decode`]: the PostgreSQL → Arrow type mapping ([`arrow_field`]) and
//!   the binary COPY decoder, whose columns (`binary_column`) fill Arrow's
//!   buffers straight from binary values;
//! - [`data_row`]: a `DataRow` message's fields, read in place;
//! - [`text`] and [`text_copy`]: the same Arrow values from PostgreSQL's
//!   text output, and text COPY's line format around it;
//! - [`encode`]: the Arrow → PostgreSQL mapping and the binary COPY
//!   encoder, the inverse of [`decode`];
//! - [`ident`]: table and column names, checked once and always quoted;
//! - [`batch_limits`]: when a decoder closes a batch.
//!
//! Decoders are push-based (`push` a chunk, `take_batch` what is ready,
//! `finish`) so that the caller owns the I/O and its backpressure.

#[cfg(feature = "codec")]
pub mod batch_limits;
#[cfg(feature = "codec")]
mod binary_column;
#[cfg(feature = "codec")]
pub mod data_row;
#[cfg(feature = "codec")]
pub mod decode;
#[cfg(feature = "codec")]
pub mod encode;
pub mod error;
pub mod ident;
#[cfg(feature = "codec")]
pub mod text;
#[cfg(feature = "codec")]
pub mod text_copy;

#[cfg(feature = "codec")]
pub use batch_limits::BatchLimits;
#[cfg(feature = "codec")]
pub use decode::{arrow_field, CopyDecoder};
#[cfg(feature = "codec")]
pub use encode::{check_writable, column_definitions, column_list, pg_type, CopyEncoder};
pub use error::{Error, Result};
pub use ident::Ident;
#[cfg(feature = "codec")]
pub use postgres_types::Type;
#[cfg(feature = "codec")]
pub use text::BatchBuilder;
#[cfg(feature = "codec")]
pub use text_copy::{TextCopyDecoder, TEXT_SETTINGS};
