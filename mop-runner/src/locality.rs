//! Matching trainers to partitions by host, so that a trainer beside each
//! segment host reads its partition over loopback.
//!
//! Partition `p` is the endpoints `i` with `i % W == p`, and each endpoint's
//! location names the flight-server that serves it — beside its segment
//! when the servers run that way (`--segment-flight`). When the trainers
//! are given (`[train] addresses`), partition `p` goes to a trainer on the
//! host its endpoints are located at, if there is one; otherwise to the
//! trainers in the order given. Which trainer holds which partition changes
//! no weights: every trainer runs the same code on the same rows.
//!
//! "Local" means the endpoint's location and the trainer's address name the
//! same host (`localhost` counts as `127.0.0.1`); hosts are compared as
//! written, not resolved.

use std::collections::BTreeSet;

/// The host of a URL such as `grpc+tcp://10.0.0.5:50051` or
/// `http://[::1]:7000/`, lower-cased; `localhost` becomes `127.0.0.1`.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        "127.0.0.1".into()
    } else {
        host
    }
}

/// The distinct hosts of `locations`, in order of first appearance.
pub fn hosts(locations: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    locations
        .iter()
        .map(|l| host_of(l))
        .filter(|h| seen.insert(h.clone()))
        .collect()
}

/// Whether a trainer on `trainer_host` reads every one of `endpoint_hosts`
/// over loopback.
pub fn is_local(trainer_host: &str, endpoint_hosts: &[String]) -> bool {
    !endpoint_hosts.is_empty() && endpoint_hosts.iter().all(|h| h == trainer_host)
}

/// For each partition, the index of the trainer that should hold it: one
/// on a host all its endpoints are on where possible (partitions in order,
/// each taking the first such trainer still free), then the remaining
/// trainers in the order given. A permutation of `0..trainer_hosts.len()`.
pub fn assign(trainer_hosts: &[String], partition_hosts: &[Vec<String>]) -> Vec<usize> {
    let w = trainer_hosts.len();
    let mut taken = vec![false; w];
    let mut chosen: Vec<Option<usize>> = vec![None; w];
    for (p, hosts) in partition_hosts.iter().enumerate().take(w) {
        if let Some(t) = (0..w).find(|&t| !taken[t] && is_local(&trainer_hosts[t], hosts)) {
            taken[t] = true;
            chosen[p] = Some(t);
        }
    }
    let mut free = (0..w).filter(|&t| !taken[t]);
    chosen
        .into_iter()
        .map(|c| c.or_else(|| free.next()).unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn hosts_come_out_of_every_url_form() {
        assert_eq!(host_of("grpc+tcp://10.0.0.5:50051"), "10.0.0.5");
        assert_eq!(host_of("http://SDW1:7000/"), "sdw1");
        assert_eq!(host_of("grpc+tls://[::1]:1"), "::1");
        assert_eq!(host_of("http://localhost:7000"), "127.0.0.1");
        assert_eq!(host_of("sdw2:7000"), "sdw2");
        assert_eq!(
            hosts(&s(&["grpc+tcp://a:1", "grpc+tcp://b:2", "grpc+tcp://a:3"])),
            s(&["a", "b"])
        );
    }

    #[test]
    fn trainers_are_matched_to_the_hosts_of_their_partitions() {
        // Trainers listed in another order than the segments.
        let trainers = s(&["127.0.0.3", "127.0.0.2"]);
        let parts = vec![s(&["127.0.0.2"]), s(&["127.0.0.3"])];
        assert_eq!(assign(&trainers, &parts), vec![1, 0]);
        // Two trainers on one host, two partitions there, one elsewhere.
        let trainers = s(&["x", "h", "h"]);
        let parts = vec![s(&["h"]), s(&["h"]), s(&["y"])];
        assert_eq!(assign(&trainers, &parts), vec![1, 2, 0]);
        // Nothing matches: the order given.
        assert_eq!(assign(&s(&["a", "b"]), &[s(&["c"]), s(&["d"])]), vec![0, 1]);
        // A partition spread over two hosts is local nowhere.
        assert!(!is_local("a", &s(&["a", "b"])));
        assert!(!is_local("a", &[]));
    }
}
