//! hopper's own gRPC API: the MOP runner drives its trainers with it.
//!
//! The generated code lives in a private module; this crate re-exports it
//! under the names the rest of the workspace uses.

#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("hopper.v1");
}

pub use generated::*;
