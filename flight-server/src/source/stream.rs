//! The stream of record batches that flows through the server, carrying
//! its schema.
//!
//! A Flight `DoGet` must send its schema before any batch, and send it even
//! when a partition has no rows; a `DoPut` knows its schema from the first
//! message before any batch arrives. So the schema belongs to the stream,
//! not to its first batch: with [`RecordBatchStream::schema`] a reader
//! never has to peek at a batch, describe a query a second time, or send
//! an empty batch just to say what the columns are. This is DataFusion's
//! `SendableRecordBatchStream` and `RecordBatchStreamAdapter`, with the
//! server's own error type.

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::Stream;

use crate::error::Result;

/// A stream of record batches that all have [`schema`](Self::schema).
pub trait RecordBatchStream: Stream<Item = Result<RecordBatch>> {
    /// The schema of every batch, known before the first one.
    fn schema(&self) -> SchemaRef;
}

/// The stream every source reads into and writes from.
pub type SendableRecordBatchStream = Pin<Box<dyn RecordBatchStream + Send>>;

/// A [`RecordBatchStream`] made of a schema and any stream of batches.
pub struct RecordBatchStreamAdapter {
    schema: SchemaRef,
    stream: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
}

impl RecordBatchStreamAdapter {
    /// `stream`, whose batches all have `schema`.
    pub fn new(
        schema: SchemaRef,
        stream: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> Self {
        Self {
            schema,
            stream: Box::pin(stream),
        }
    }

    /// The same, boxed as the server passes streams around.
    pub fn boxed(
        schema: SchemaRef,
        stream: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> SendableRecordBatchStream {
        Box::pin(Self::new(schema, stream))
    }
}

impl std::fmt::Debug for RecordBatchStreamAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatchStreamAdapter")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Stream for RecordBatchStreamAdapter {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl RecordBatchStream for RecordBatchStreamAdapter {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn an_empty_stream_still_knows_its_schema() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut s = RecordBatchStreamAdapter::boxed(schema.clone(), futures::stream::empty());
        assert_eq!(s.schema(), schema);
        assert!(s.next().await.is_none());
    }
}
