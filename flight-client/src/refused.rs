//! The ticket-refused mark: how a flight-server tells a client that its
//! ticket (not the data, not the server) is the problem, so that planning
//! the query again is the cure. Set and read in this one place.

use tonic::Status;

/// Marks `status` as a refusal of a ticket ([`TICKET_REFUSED`]); a trainer
/// passing a flight-server's refusal on to its runner keeps the mark.
pub fn mark_ticket_refused(status: &mut Status) {
    status.metadata_mut().insert(
        TICKET_REFUSED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}

/// Whether `status` carries the [`TICKET_REFUSED`] mark.
pub fn is_ticket_refused(status: &Status) -> bool {
    status.metadata().contains_key(TICKET_REFUSED)
}

/// Status metadata key set on every refusal of a ticket (forged, altered,
/// expired, issued under another key, a single-read endpoint read again):
/// planning the query again with `GetFlightInfo` gives tickets that work.
/// `mop` re-plans when it sees it.
pub const TICKET_REFUSED: &str = "x-hopper-ticket-refused";
