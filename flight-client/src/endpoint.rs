//! One Flight endpoint as hopper's clients carry it: where to read, the
//! opaque ticket to read with, and whose login to read as. The runner plans
//! them, the trainers read them, `mop predict` reads and writes beside them.

use crate::connect::Bearer;

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
