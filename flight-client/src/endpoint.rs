//! One Flight endpoint as hopper's clients carry it: where to read, the
//! opaque ticket to read with, and whose login to read as. The runner plans
//! them, the trainers read them, `mop predict` reads and writes beside them.
//!
//! What a flight-server says about an endpoint beyond the ticket travels in
//! its `app_metadata` as JSON, [`EndpointMetadata`]: the server writes it
//! and hopper's clients read it through that one type. Other Flight
//! clients (pyarrow, ADBC) see the same JSON, so its fields are only ever
//! added, never renamed.

use serde::{Deserialize, Serialize};

use crate::connect::Bearer;

/// The JSON `app_metadata` of every endpoint a flight-server plans:
/// `{"segment":0}`, or `{"segment":0,"shared_tables":true,"single_read":true}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointMetadata {
    /// The segment the endpoint reads: the one a `DoPut` names to write
    /// results next to the rows.
    pub segment: i32,
    /// Whether every segment sees the same tables (Greenplum), so that a
    /// `DoPut` writes one table whatever segment it names. Left out when
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_tables: bool,
    /// Whether the endpoint can be read once only (a Greenplum cursor's):
    /// a client reading the query again plans it again, and should read
    /// every endpoint of each plan. Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_read: bool,
}

impl EndpointMetadata {
    /// The JSON bytes an endpoint carries.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of an integer and a bool always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an endpoint's `app_metadata`; `None` when it is not hopper's
    /// (empty, or another server's).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// One Flight endpoint of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightSlice {
    /// `grpc+tcp://host:port` (or `http://host:port`).
    pub location: String,
    /// The opaque ticket.
    pub ticket: Vec<u8>,
    /// The token of a login to `location` to read with (the runner's, handed
    /// to its trainers); `None`: the reader logs in itself, if
    /// `HOPPER_FLIGHT_USER` is set.
    pub bearer: Option<Bearer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_metadata_keeps_its_wire_json() {
        let plain = EndpointMetadata {
            segment: 2,
            ..Default::default()
        };
        let shared = EndpointMetadata {
            segment: 0,
            shared_tables: true,
            single_read: true,
        };
        assert_eq!(plain.to_bytes(), br#"{"segment":2}"#);
        assert_eq!(
            shared.to_bytes(),
            br#"{"segment":0,"shared_tables":true,"single_read":true}"#
        );
        assert_eq!(
            EndpointMetadata::from_bytes(&shared.to_bytes()),
            Some(shared)
        );
        assert_eq!(
            EndpointMetadata::from_bytes(br#"{"segment": 3, "later": 1}"#),
            Some(EndpointMetadata {
                segment: 3,
                ..Default::default()
            })
        );
        assert_eq!(EndpointMetadata::from_bytes(b""), None);
    }
}
