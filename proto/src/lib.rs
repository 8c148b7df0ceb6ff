//! hopper's own gRPC API: the MOP runner drives its trainers with it.
//!
//! The generated code lives in a private module; this crate re-exports it
//! under the names the rest of the workspace uses. [`auth`] is the other
//! half of the contract: the proof of the shared key every call carries,
//! written by the runner and checked by the trainer through the same code.
//! Likewise the model configuration travels as a typed message, converted
//! to and from [`mop_core::config::ModelConfig`] in one place
//! (`impl From<&mop_core::config::ModelConfig> for ModelConfig` and
//! `impl TryFrom<ModelConfig> for mop_core::config::ModelConfig`, which
//! validates).

pub mod auth;
mod error;
pub mod hop;
mod metrics;
mod model_config;

pub use error::{Error, Result};

/// Largest gRPC message a trainer sends or accepts: a model's state
/// (weights plus two Adam moments) travels in one message.
pub const MAX_MESSAGE: usize = 1 << 30;

/// HTTP/2 flow-control window of one trainer stream, both ways. At h2's
/// default (64 KiB) a 94 MB state crosses in about 1 500 window round trips,
/// each a wake-up on both sides; 8 MiB makes it a dozen. A receiver buffers
/// at most this much of a stream it has not read.
pub const STREAM_WINDOW: u32 = 8 << 20;

/// HTTP/2 flow-control window of a whole trainer connection: two streams'
/// worth, so a queued unit's state and a finished unit's result move at once.
pub const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;

#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("hopper.v1");
}

pub use generated::*;

impl std::fmt::Debug for FlightEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightEndpoint")
            .field("location", &self.location)
            .field("ticket", &format_args!("<{} bytes>", self.ticket.len()))
            .field("bearer", &redacted(&self.bearer))
            .finish()
    }
}

/// How a credential shows in `Debug`: whether there is one, never what.
pub(crate) fn redacted(secret: &str) -> &'static str {
    match secret.is_empty() {
        true => "none",
        false => "<redacted>",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_prints_without_its_bearer_token() {
        let e = FlightEndpoint {
            location: "grpc+tcp://h:1".into(),
            ticket: vec![1, 2, 3],
            bearer: "s3cret-token".into(),
        };
        let printed = format!(
            "{:?}",
            OpenPartitionRequest {
                train: vec![e],
                ..Default::default()
            }
        );
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("grpc+tcp://h:1") && printed.contains("<redacted>"),
            "{printed}"
        );
    }
}
