//! A trainer's copy of its partition, in the form its cache mode asks for.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::featurize::Featurized;
use crate::row_checksum::{RowChecksum, SharedChecksum};
use flight_client::read::{spawn_counted_reader, PREFETCH_BATCHES};
use flight_client::retry::retry_budget;
use flight_client::FlightSlice;
use mop_core::config::InputSpec;

/// How the trainer keeps its partition (mirrors the proto's `CacheMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Featurized tensors in memory.
    Memory,
    /// Arrow IPC files on local disk.
    Disk,
    /// Re-read every pass.
    None,
}

/// The featurizer-relevant part of an input spec: models that differ only
/// in `sparse` share one featurized copy.
pub fn feature_key(input: &InputSpec) -> String {
    let mut input = input.clone();
    if let InputSpec::Criteo { sparse, .. } = &mut input {
        *sparse = false;
    }
    serde_json::to_string(&input).unwrap_or_default()
}

/// Rows of one role (training or validation) of the partition.
pub struct PartitionData {
    slices: Vec<FlightSlice>,
    mode: CacheMode,
    /// Raw batches (memory mode), kept to featurize for new input specs.
    batches: Vec<RecordBatch>,
    /// Featurized batches per feature key (memory mode).
    featurized: HashMap<String, SharedFeatures>,
    /// The IPC file (disk mode).
    file: Option<PathBuf>,
    /// Rows read at open (memory and disk modes).
    pub rows: u64,
    /// Arrow IPC bytes read over Flight at open (memory and disk modes).
    pub bytes: u64,
    /// The rows read at open and their checksum (memory and disk modes
    /// with rows to read): passes served from the cache report nothing,
    /// since they cannot see the database change.
    pub read: Option<hopper_proto::RowsRead>,
}

/// Featurized batches shared between passes. Tensors are `Send` but not
/// `Sync`, hence the mutex (taken once per batch, never contended: one
/// unit runs at a time).
pub type SharedFeatures = Arc<Mutex<Vec<Featurized>>>;

/// A source of record batches for one pass.
pub enum Batches {
    /// Already featurized, in memory.
    Featurized(SharedFeatures),
    /// Arrow batches arriving through a bounded channel from the disk cache.
    Stream(mpsc::Receiver<Result<RecordBatch>>),
    /// Arrow batches arriving over Flight (mode none), whose rows the pass
    /// adds to `checksum` as it takes them.
    Flight {
        /// The batches.
        rx: mpsc::Receiver<Result<RecordBatch>>,
        /// What the pass read.
        checksum: SharedChecksum,
    },
}

impl Batches {
    /// The checksum of what the pass reads over Flight; none when it is
    /// served from the trainer's cache.
    pub fn checksum(&self) -> Option<SharedChecksum> {
        match self {
            Batches::Flight { checksum, .. } => Some(checksum.clone()),
            Batches::Featurized(_) | Batches::Stream(_) => None,
        }
    }
}

impl PartitionData {
    /// Opens the rows of `slices`; memory and disk modes read them now.
    pub async fn open(
        slices: Vec<FlightSlice>,
        mode: CacheMode,
        dir: &Path,
        name: &str,
    ) -> Result<Self> {
        let mut data = PartitionData {
            slices,
            mode,
            batches: Vec::new(),
            featurized: HashMap::new(),
            file: None,
            rows: 0,
            bytes: 0,
            read: None,
        };
        if mode == CacheMode::None || data.slices.is_empty() {
            return Ok(data);
        }
        // A stream that broke part-way leaves nothing behind: the cache is
        // emptied and the partition read again from its first row.
        let deadline = std::time::Instant::now() + retry_budget();
        loop {
            match data.fill(dir, name).await {
                Err(Error::Unavailable(m)) if std::time::Instant::now() < deadline => {
                    tracing::warn!(partition = name, error = %m, "reading the partition again");
                    data.batches.clear();
                    data.file = None;
                    data.rows = 0;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                r => return r.map(|()| data),
            }
        }
    }

    /// Reads every slice into the cache (memory or disk mode).
    async fn fill(&mut self, dir: &Path, name: &str) -> Result<()> {
        let (mode, data) = (self.mode, self);
        let bytes = Arc::new(AtomicU64::new(0));
        let mut rx = spawn_counted_reader::<Error>(
            &tokio::runtime::Handle::current(),
            data.slices.clone(),
            bytes.clone(),
        );
        let mut writer: Option<FileWriter<File>> = None;
        let path = dir.join(format!("{name}.arrow"));
        // A fresh checksum per attempt: a failed one's rows are read again.
        let mut checksum = RowChecksum::default();
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            data.rows += batch.num_rows() as u64;
            checksum.add(&batch)?;
            match mode {
                CacheMode::Memory => data.batches.push(batch),
                CacheMode::Disk => {
                    if writer.is_none() {
                        let f = File::create(&path)?;
                        writer = Some(
                            FileWriter::try_new(f, batch.schema_ref())
                                .map_err(|e| Error::Io(std::io::Error::other(e)))?,
                        );
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write(&batch)
                            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
                    }
                }
                CacheMode::None => {}
            }
        }
        if let Some(mut w) = writer {
            w.finish()
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
            data.file = Some(path);
        }
        // Every attempt's bytes crossed the wire, a failed one's too.
        data.bytes += bytes.load(Ordering::Relaxed);
        data.read = Some(checksum.figures());
        Ok(())
    }

    /// Batches for one pass. `fresh` replaces the opened slices (mode none:
    /// a Greenplum endpoint can be read only once); `bytes` counts what the
    /// pass reads over Flight.
    pub fn pass(
        &mut self,
        key: &str,
        fresh: Vec<FlightSlice>,
        bytes: Arc<AtomicU64>,
        featurize: impl Fn(&RecordBatch) -> Result<Featurized>,
    ) -> Result<Batches> {
        match self.mode {
            CacheMode::Memory => {
                if let Some(f) = self.featurized.get(key) {
                    return Ok(Batches::Featurized(f.clone()));
                }
                let f = self
                    .batches
                    .iter()
                    .map(&featurize)
                    .collect::<Result<Vec<_>>>()?;
                let f = Arc::new(Mutex::new(f));
                self.featurized.insert(key.to_string(), f.clone());
                Ok(Batches::Featurized(f))
            }
            CacheMode::Disk => {
                let (tx, rx) = mpsc::channel(PREFETCH_BATCHES);
                let file = self.file.clone();
                std::thread::spawn(move || {
                    let Some(path) = file else { return };
                    let reader = File::open(&path).map_err(Error::Io).and_then(|f| {
                        FileReader::try_new(f, None)
                            .map_err(|e| Error::Io(std::io::Error::other(e)))
                    });
                    match reader {
                        Ok(reader) => {
                            for b in reader {
                                let b = b.map_err(|e| Error::Io(std::io::Error::other(e)));
                                if tx.blocking_send(b).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                        }
                    }
                });
                Ok(Batches::Stream(rx))
            }
            CacheMode::None => {
                let slices = if fresh.is_empty() {
                    self.slices.clone()
                } else {
                    fresh
                };
                Ok(Batches::Flight {
                    rx: spawn_counted_reader(&tokio::runtime::Handle::current(), slices, bytes),
                    checksum: SharedChecksum::default(),
                })
            }
        }
    }

    /// Whether there are any rows to read.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}
