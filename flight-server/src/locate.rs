//! Where each endpoint is located: at this server, or at the flight-server
//! beside its segment.
//!
//! Rows should leave a segment host only once, on their way to the trainer;
//! an endpoint located at the server beside its segment is read there
//! straight from the segment (a Greenplum ticket carries everything a
//! retrieve needs), never through the server that planned it. Two ways to
//! say where those servers are:
//!
//! - per segment, `--segment-flight CONTENT=URL`;
//! - for a whole cluster, `--segment-flight-port PORT`: every segment's
//!   endpoint is at `<scheme>://<segment host>:PORT`, the host as
//!   `gp_segment_configuration` names it (through `--host-map` where that
//!   name is not what clients dial). One server per segment host serves all
//!   of that host's segments.
//!
//! Named segments win over the convention; anything neither names is served
//! here.

use std::collections::BTreeMap;

/// Decides each endpoint's location.
#[derive(Clone, Debug, Default)]
pub struct Locator {
    /// This server's advertised location.
    own: String,
    /// `--segment-flight`: segment → location.
    by_segment: BTreeMap<i32, String>,
    /// `--segment-flight-port`: the port of the server on every segment host.
    by_host: Option<HostConvention>,
}

/// A flight-server on every segment host, at one port.
#[derive(Clone, Debug)]
struct HostConvention {
    scheme: &'static str,
    port: u16,
    host_map: BTreeMap<String, String>,
}

impl Locator {
    /// Every endpoint at `own`.
    pub fn here(own: impl Into<String>) -> Self {
        Self {
            own: own.into(),
            ..Self::default()
        }
    }

    /// Segments in `locations` are served at the given location.
    pub fn with_segments(mut self, locations: BTreeMap<i32, String>) -> Self {
        self.by_segment = locations;
        self
    }

    /// Every other segment is served by the flight-server on its host, at
    /// `scheme://<host_map[host] or host>:port`.
    pub fn with_host_port(
        mut self,
        scheme: &'static str,
        port: u16,
        host_map: BTreeMap<String, String>,
    ) -> Self {
        self.by_host = Some(HostConvention {
            scheme,
            port,
            host_map,
        });
        self
    }

    /// This server's own location.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// Where the endpoint of `segment` is read; `host` is the segment's
    /// host as the database names it, where the source knows it.
    pub fn locate(&self, segment: i32, host: Option<&str>) -> String {
        if let Some(url) = self.by_segment.get(&segment) {
            return url.clone();
        }
        match (&self.by_host, host) {
            (Some(c), Some(host)) => {
                let host = c.host_map.get(host).map_or(host, String::as_str);
                format!("{}://{}:{}", c.scheme, bracket_v6(host), c.port)
            }
            _ => self.own.clone(),
        }
    }

    /// Whether another server reads the endpoint of `segment` (this one
    /// only plans it, and must learn from the database when it is done).
    pub fn is_elsewhere(&self, segment: i32, host: Option<&str>) -> bool {
        self.locate(segment, host) != self.own
    }
}

/// An IPv6 literal in a URL needs brackets.
fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_segments_win_then_the_host_convention_then_here() {
        let here = "grpc+tcp://sdw1:50051";
        let loc = Locator::here(here)
            .with_segments(BTreeMap::from([(3, "grpc+tcp://spare:6000".to_string())]))
            .with_host_port(
                "grpc+tcp",
                50051,
                BTreeMap::from([("sdw2".to_string(), "10.0.0.12".to_string())]),
            );
        assert_eq!(loc.locate(3, Some("sdw2")), "grpc+tcp://spare:6000");
        assert_eq!(loc.locate(2, Some("sdw2")), "grpc+tcp://10.0.0.12:50051");
        assert_eq!(loc.locate(0, Some("sdw1")), here);
        assert!(!loc.is_elsewhere(0, Some("sdw1")));
        assert!(loc.is_elsewhere(2, Some("sdw2")));
        // A source that does not know hosts (PostgreSQL segments, files).
        assert_eq!(loc.locate(1, None), here);
        assert_eq!(loc.locate(0, Some("::1")), "grpc+tcp://[::1]:50051");
    }

    #[test]
    fn without_flags_everything_is_here() {
        let loc = Locator::here("grpc+tls://a:1");
        assert_eq!(loc.locate(7, Some("sdw9")), "grpc+tls://a:1");
        assert!(!loc.is_elsewhere(7, Some("sdw9")));
    }
}
