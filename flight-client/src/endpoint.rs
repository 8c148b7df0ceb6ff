//! One Flight endpoint as hopper's clients carry it: where to read and the
//! opaque ticket to read with. The runner plans them, the trainers read
//! them, `mop predict` reads and writes beside them.

/// One Flight endpoint of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightSlice {
    /// `grpc+tcp://host:port` (or `http://host:port`).
    pub location: String,
    /// The opaque ticket.
    pub ticket: Vec<u8>,
}
