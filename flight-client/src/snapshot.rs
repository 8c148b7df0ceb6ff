//! Pinned snapshots, the contract and the client side: the actions that
//! pin, renew and release one, their bodies, the header that plans at one,
//! and the mark a server sets when a pin is gone.
//!
//! A client that reads the same query many times (mop, every epoch) pins
//! a snapshot once and plans with its id in the [`SNAPSHOT_HEADER`]: every
//! ticket of such a plan reads exactly the rows the pin saw, however the
//! tables change meanwhile. The server's side is `flight_server::snapshot`.

use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::connect::{client_with, Bearer};
use crate::error::{Error, Result};

/// The `GetFlightInfo` request header naming the pin to plan at.
pub const SNAPSHOT_HEADER: &str = "x-hopper-snapshot";

/// `DoAction` type: pin a snapshot; body a [`PinRequest`] (or empty),
/// answer a [`PinResponse`].
pub const PIN_SNAPSHOT: &str = "pin-snapshot";

/// `DoAction` type: keep a pin (body: its id) from going idle.
pub const RENEW_SNAPSHOT: &str = "renew-snapshot";

/// `DoAction` type: release a pin (body: its id).
pub const RELEASE_SNAPSHOT: &str = "release-snapshot";

/// Status metadata key set when a pin is not held (released, expired, its
/// server restarted): pin again, and expect that the rows may have changed.
pub const SNAPSHOT_LOST: &str = "x-hopper-snapshot-lost";

/// What [`PIN_SNAPSHOT`] accepts.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// How long the pin may live at most (the server caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// What [`PIN_SNAPSHOT`] answers.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PinResponse {
    /// The pin's id, the [`SNAPSHOT_HEADER`]'s value.
    pub snapshot: String,
    /// Its lifetime, after the server's cap.
    pub ttl_seconds: u64,
    /// How long it may go unused (no plan at it, no renewal) before the
    /// server releases it.
    pub idle_seconds: u64,
}

/// Marks `status` as saying the pin it names is gone ([`SNAPSHOT_LOST`]).
pub fn mark_snapshot_lost(status: &mut Status) {
    status.metadata_mut().insert(
        SNAPSHOT_LOST,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}

/// Whether `status` carries the [`SNAPSHOT_LOST`] mark.
pub fn is_snapshot_lost(status: &Status) -> bool {
    status.metadata().contains_key(SNAPSHOT_LOST)
}

/// Pins a snapshot at the flight-server at `location` (logged in with
/// `bearer`, or as `HOPPER_FLIGHT_USER`). `Ok(None)` when the server's
/// source cannot hold one (files) or the server predates pins: reads then
/// see the rows as they are when read.
pub async fn pin(
    location: &str,
    bearer: Option<&Bearer>,
    request: &PinRequest,
) -> Result<Option<PinResponse>> {
    let body = serde_json::to_vec(request)
        .map_err(|e| Error::Flight(format!("encoding {PIN_SNAPSHOT}: {e}")))?;
    let answer = match action(location, bearer, PIN_SNAPSHOT, body).await {
        Ok(answer) => answer,
        Err(ActionError::Status(s))
            if s.code() == tonic::Code::Unimplemented
                || (s.code() == tonic::Code::InvalidArgument
                    && s.message().starts_with("unknown action")) =>
        {
            tracing::info!(%location, reason = %s.message(), "the flight-server holds no snapshot");
            return Ok(None);
        }
        Err(e) => return Err(e.into_error(location, PIN_SNAPSHOT)),
    };
    serde_json::from_slice(&answer).map(Some).map_err(|e| {
        Error::Flight(format!(
            "{location} answered {PIN_SNAPSHOT} with something else than a pin: {e}"
        ))
    })
}

/// Keeps pin `id` at `location` from going idle. [`Error::SnapshotLost`]
/// when it is gone.
pub async fn renew(location: &str, bearer: Option<&Bearer>, id: &str) -> Result<()> {
    action(location, bearer, RENEW_SNAPSHOT, id.as_bytes().to_vec())
        .await
        .map(drop)
        .map_err(|e| e.into_error(location, RENEW_SNAPSHOT))
}

/// Releases pin `id` at `location`: the database may vacuum again.
pub async fn release(location: &str, bearer: Option<&Bearer>, id: &str) -> Result<()> {
    action(location, bearer, RELEASE_SNAPSHOT, id.as_bytes().to_vec())
        .await
        .map(drop)
        .map_err(|e| e.into_error(location, RELEASE_SNAPSHOT))
}

enum ActionError {
    Status(Status),
    Other(Error),
}

impl ActionError {
    fn into_error(self, location: &str, kind: &str) -> Error {
        match self {
            ActionError::Status(s) if is_snapshot_lost(&s) => {
                Error::SnapshotLost(format!("{location}: {}", s.message()))
            }
            ActionError::Status(s) if s.code() == tonic::Code::Unavailable => {
                Error::Unavailable(format!("{kind} at {location}: {}", s.message()))
            }
            ActionError::Status(s) => {
                Error::Flight(format!("{kind} at {location}: {}", s.message()))
            }
            ActionError::Other(e) => e,
        }
    }
}

async fn action(
    location: &str,
    bearer: Option<&Bearer>,
    kind: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, ActionError> {
    use futures::TryStreamExt;
    let mut c = client_with(location, bearer)
        .await
        .map_err(ActionError::Other)?;
    let results = c
        .do_action(arrow_flight::Action::new(kind, body))
        .await
        .map_err(|e| match e {
            arrow_flight::error::FlightError::Tonic(s) => ActionError::Status(*s),
            e => ActionError::Other(Error::Flight(format!("{kind} at {location}: {e}"))),
        })?;
    let answers: Vec<bytes::Bytes> = results.try_collect().await.map_err(|e| match e {
        arrow_flight::error::FlightError::Tonic(s) => ActionError::Status(*s),
        e => ActionError::Other(Error::Flight(format!("{kind} at {location}: {e}"))),
    })?;
    Ok(answers
        .into_iter()
        .next()
        .map(|b| b.to_vec())
        .unwrap_or_default())
}
