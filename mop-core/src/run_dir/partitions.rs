//! Where each partition was read from and by whom: `results.json`'s
//! `partitions`, the report's locality table.

use serde::{Deserialize, Serialize};

/// One partition of a run and the trainer that held it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Partition (= worker) index.
    pub partition: usize,
    /// The trainer's address.
    pub trainer: String,
    /// The host in the trainer's address.
    pub trainer_host: String,
    /// The device the trainer computed on, as it described it (`cpu`,
    /// `cuda:0 (1 of 1 GPUs)`, `cpu (CUDA build, no GPU present)`).
    #[serde(default)]
    pub device: String,
    /// The hosts of the flight-servers its endpoints are located at.
    pub endpoint_hosts: Vec<String>,
    /// Whether every endpoint is located on the trainer's own host: its
    /// rows crossed no network.
    pub local: bool,
    /// Training rows the trainer read when it opened the partition (cache
    /// modes memory and disk; 0 with `cache = "none"`).
    pub rows: u64,
    /// Arrow IPC bytes read over Flight to fill the cache (training and
    /// validation rows); the units' own reads are in the timeline.
    pub open_bytes: u64,
}
