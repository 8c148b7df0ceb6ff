//! Planning a query on a flight-server: `GetFlightInfo` with the SQL as a
//! command — the one place a hopper client calls it — into the schema, one
//! [`FlightSlice`] per endpoint with the segment it reads, and when the
//! tickets expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_schema::SchemaRef;

use crate::connect::{client_with, Bearer};
use crate::endpoint::{EndpointMetadata, FlightSlice};
use crate::error::{Error, Result};
use crate::snapshot::{is_snapshot_lost, SNAPSHOT_HEADER};

/// A planned query.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The result's schema.
    pub schema: SchemaRef,
    /// The endpoints, in the server's order.
    pub slices: Vec<FlightSlice>,
    /// Per endpoint, the segment it reads ([`EndpointMetadata`]; the
    /// endpoint's index when the server says nothing).
    pub segments: Vec<i32>,
    /// Whether every segment sees the same tables (Greenplum): a `DoPut`
    /// then writes one table, whatever segment it names.
    pub shared_tables: bool,
    /// Whether each endpoint can be read once only (Greenplum): reading the
    /// query again takes a new plan.
    pub single_read: bool,
    /// The earliest expiration of the endpoints' tickets (`None`: none set).
    pub expires: Option<SystemTime>,
}

/// Plans `sql` on a flight-server: one slice per endpoint, in order.
pub async fn plan(location: &str, sql: &str) -> Result<Vec<FlightSlice>> {
    Ok(plan_query(location, sql).await?.slices)
}

/// Plans `sql` on the flight-server at `location`, logged in as
/// `HOPPER_FLIGHT_USER` if set.
pub async fn plan_query(location: &str, sql: &str) -> Result<Planned> {
    plan_query_at(location, None, sql, None).await
}

/// [`plan_query`] logged in with `bearer` (else as `HOPPER_FLIGHT_USER`),
/// at the pinned snapshot `snapshot` if given
/// ([`crate::snapshot`]; [`Error::SnapshotLost`] when it is gone).
pub async fn plan_query_at(
    location: &str,
    bearer: Option<&Bearer>,
    sql: &str,
    snapshot: Option<&str>,
) -> Result<Planned> {
    let mut c = client_with(location, bearer).await?;
    if let Some(id) = snapshot {
        let value = id
            .parse()
            .map_err(|_| Error::Config(format!("snapshot id {id:?} is not a header value")))?;
        c.metadata_mut().insert(SNAPSHOT_HEADER, value);
    }
    let info = c
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(sql.to_string()))
        .await
        .map_err(|e| match e {
            arrow_flight::error::FlightError::Tonic(s) if is_snapshot_lost(&s) => {
                Error::SnapshotLost(format!("{location}: {}", s.message()))
            }
            e => Error::Flight(format!("planning {sql:?} at {location}: {e}")),
        })?;
    let schema = Arc::new(
        info.clone()
            .try_decode_schema()
            .map_err(|e| Error::Flight(format!("decoding the schema from {location}: {e}")))?,
    );
    let expires = info
        .endpoint
        .iter()
        .filter_map(|ep| ep.expiration_time.as_ref())
        .map(|t| {
            UNIX_EPOCH
                + Duration::from_secs(t.seconds.max(0) as u64)
                + Duration::from_nanos(t.nanos.max(0) as u64)
        })
        .min();
    let mut planned = Planned {
        schema,
        slices: Vec::with_capacity(info.endpoint.len()),
        segments: Vec::with_capacity(info.endpoint.len()),
        shared_tables: false,
        single_read: false,
        expires,
    };
    for (i, ep) in info.endpoint.into_iter().enumerate() {
        let meta = EndpointMetadata::from_bytes(&ep.app_metadata);
        planned.segments.push(meta.map_or(i as i32, |m| m.segment));
        planned.shared_tables |= meta.is_some_and(|m| m.shared_tables);
        planned.single_read |= meta.is_some_and(|m| m.single_read);
        planned.slices.push(FlightSlice {
            location: ep
                .location
                .first()
                .map(|l| l.uri.clone())
                .unwrap_or_else(|| location.to_string()),
            ticket: ep.ticket.map(|t| t.ticket.to_vec()).unwrap_or_default(),
            bearer: None,
        });
    }
    Ok(planned)
}
