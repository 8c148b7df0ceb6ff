//! Generated tables with a planted, learnable signal, loaded into a
//! [`LocalCluster`].
//!
//! No data can be downloaded at run time, yet training over the database
//! must show that models learn. So hopper generates data whose label depends
//! on the features through a known model, and loads it the fastest way
//! PostgreSQL offers: text `COPY … FROM STDIN` in the same transaction that
//! creates the table (with `wal_level = minimal` no WAL is written, and
//! `FREEZE` spares the first scan from setting hint bits), one connection
//! per segment, all segments concurrently. Rows are produced by a blocking
//! thread per segment into 1 MiB chunks over a bounded channel, so memory
//! stays flat however many rows are asked for.
//!
//! # Placement and determinism
//!
//! Row `id` (0, 1, …, rows − 1) lives on segment [`segment_of`]`(id, n)` =
//! `splitmix64(id) mod n`, where `splitmix64` is the finalizer of Steele et
//! al.'s SplitMix64 (add `0x9E3779B97F4A7C15`, then
//! `z = (z ^ z>>30)·0xBF58476D1CE4E5B9; z = (z ^ z>>27)·0x94D049BB133111EB;
//! z ^ z>>31`, wrapping). The content of a row depends only on `(seed, id)`:
//! it is drawn from a `ChaCha8Rng` keyed by the seed with the row id as
//! stream number. So the same seed gives the same table whatever the number
//! of segments. The *generative model* (vocabularies, weights) is fixed and
//! does not depend on the seed: tables loaded with different seeds are
//! independent samples of the same distribution (a training and a validation
//! table).
//!
//! # Criteo-like clicks ([`load_criteo`])
//!
//! `(id bigint, label int, i1 … i13 real, c1 … c26 text)`, like the Criteo
//! display-advertising data the papers train on.
//! - **Numeric `i_j`**: NULL with probability 5 %; else 0 with probability
//!   `zero_j`, else `floor(exp(mu_j + sigma_j·Z))`, Z standard normal — the
//!   heavy-tailed, non-negative counts of Criteo ([`NUMERIC`] lists
//!   `zero, mu, sigma` per column; `i5` reaches the millions).
//! - **Categorical `c_j`**: NULL with probability 4 %, the empty string with
//!   1 %; else the value of rank `r` in the column's vocabulary of size `V_j`
//!   ([`VOCAB`]), drawn with Zipf-like probability ∝ `1/(r+1)^1.1`. A value
//!   is 8 lowercase hex digits, fixed per (column, rank).
//! - **Label**: `label ~ Bernoulli(sigmoid(s))` with, for `x_j = ln(1 + i_j)`
//!   and a NULL contributing 0,
//!   ```text
//!   s = B + 1.1·(x1 − 1.0) + 0.9·(x3 − 2.5) − 0.9·(x6 − 3.5)
//!         + 1.2 − 0.45·(x9 − 4.0)²
//!         + e1(c1) + e4(c4) + e9(c9) + e17(c17) + e20(c20) + e23(c23)
//!   ```
//!   where `e_j(v)` is a fixed effect, drawn once from N(0, σ_j²), for each
//!   of the 40 most frequent values of the column and 0 for all other values
//!   ([`CAT_SIGNAL`] lists σ_j), and the intercept `B` = [`CRITEO_INTERCEPT`]
//!   puts the click rate at ≈ 25 % ([`CRITEO_BASE_RATE`]). The remaining
//!   columns are noise. `i9` matters non-monotonically, so bucketing (the
//!   papers' featurization: 50 buckets per numeric column, categoricals
//!   hashed into 256) beats a linear model on the raw numbers. A logistic
//!   regression on that featurization reaches ≈ 0.85 accuracy against 0.75
//!   for always predicting "no click" (a unit test pins ≥ 0.8).
//!
//! # Images ([`load_images`])
//!
//! `(id bigint, label int, pixels real[])`, 3×32×32 = 3072 values in [0, 1],
//! channel-major (CHW) like tensors, printed with three decimals. The label
//! `c` is uniform over 10 classes. An image is a gray background (level
//! uniform in [0.3, 0.6]) with a stripe texture whose orientation is
//! horizontal for even `c` and vertical for odd `c` and whose frequency is
//! `1 + c/2` cycles per image (amplitude 0.12, random phase), a filled disc
//! of radius 4…8 px at a random position in the class's color
//! ([`PALETTE`]), and Gaussian pixel noise (σ = 0.08), clipped to [0, 1].
//! Position and phase vary, so a classifier has to find the pattern, which a
//! small CNN does quickly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use super::LocalCluster;
use crate::error::{Error, Result};

/// Share of rows with label 1 the Criteo-like generator aims at.
pub const CRITEO_BASE_RATE: f64 = 0.25;
/// Intercept `B` of the click model, chosen so the label mean is ≈ [`CRITEO_BASE_RATE`].
pub const CRITEO_INTERCEPT: f64 = -0.72;
/// Number of classes of the image generator.
pub const IMAGE_CLASSES: usize = 10;
/// Channels, height and width of a generated image.
pub const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

/// Distribution of one numeric Criteo-like column: `zero` probability of a
/// zero count, else `floor(exp(mu + sigma·Z))`.
#[derive(Debug, Clone, Copy)]
pub struct NumericSpec {
    /// Probability of a zero count (among non-NULL values).
    pub zero: f64,
    /// Mean of the log of a non-zero count.
    pub mu: f64,
    /// Standard deviation of the log of a non-zero count.
    pub sigma: f64,
}

const fn num(zero: f64, mu: f64, sigma: f64) -> NumericSpec {
    NumericSpec { zero, mu, sigma }
}

/// The 13 numeric columns `i1 … i13`.
pub const NUMERIC: [NumericSpec; 13] = [
    num(0.45, 0.8, 1.2),
    num(0.10, 2.5, 1.8),
    num(0.05, 2.0, 1.5),
    num(0.10, 1.5, 1.0),
    num(0.02, 7.5, 2.0),
    num(0.10, 3.5, 1.8),
    num(0.20, 1.5, 1.5),
    num(0.05, 2.5, 1.0),
    num(0.05, 4.0, 1.5),
    num(0.50, 0.3, 0.6),
    num(0.20, 1.0, 1.0),
    num(0.70, 0.5, 1.0),
    num(0.10, 2.0, 1.2),
];

/// Vocabulary size of each categorical column `c1 … c26` (Criteo has a few
/// tiny and many large vocabularies; these are capped for a fast start-up).
pub const VOCAB: [usize; 26] = [
    1460, 583, 10131, 2202, 305, 24, 12517, 633, 3, 9327, 5721, 8000, 3194, 27, 14992, 5461, 10,
    5652, 2173, 4, 7046, 18, 15, 2861, 105, 1420,
];

/// Categorical columns that carry signal (0-based: `c1` is 0) and the
/// standard deviation of their values' effects on the logit.
pub const CAT_SIGNAL: [(usize, f64); 6] = [
    (0, 1.2),
    (3, 1.0),
    (8, 1.5),
    (16, 1.2),
    (19, 1.2),
    (22, 1.0),
];

/// How many of the most frequent values of a signal column carry an effect.
const EFFECT_RANKS: usize = 40;
const NUMERIC_NULL: f64 = 0.05;
const CAT_NULL: f64 = 0.04;
const CAT_EMPTY: f64 = 0.01;
const ZIPF_EXPONENT: f64 = 1.1;
/// Seed of the fixed generative model (vocabulary strings, effects).
const MODEL_SEED: u64 = 0x686f_7070_6572; // "hopper"
/// Size of the chunks handed to `COPY`.
const CHUNK: usize = 1 << 20;

/// The image colors of the 10 classes (RGB in [0, 1]).
pub const PALETTE: [[f32; 3]; IMAGE_CLASSES] = [
    [0.90, 0.10, 0.10],
    [0.10, 0.80, 0.10],
    [0.15, 0.25, 0.95],
    [0.95, 0.90, 0.10],
    [0.90, 0.10, 0.90],
    [0.10, 0.90, 0.90],
    [0.98, 0.55, 0.05],
    [0.55, 0.10, 0.80],
    [0.05, 0.05, 0.05],
    [0.98, 0.98, 0.98],
];

/// The segment that holds row `id` in a cluster of `segments` segments:
/// `splitmix64(id) mod segments` (see the module docs).
pub fn segment_of(id: u64, segments: usize) -> usize {
    (splitmix64(id) % segments.max(1) as u64) as usize
}

/// SplitMix64's output function, a cheap well-mixing 64-bit hash.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a loader did.
#[derive(Debug, Clone)]
pub struct LoadStats {
    /// The table that was (re)created on every segment.
    pub table: String,
    /// Rows loaded in total.
    pub rows: u64,
    /// Rows loaded per segment, as `COPY` reported them.
    pub rows_per_segment: Vec<u64>,
    /// Bytes of COPY text sent.
    pub bytes: u64,
    /// Wall time from the first `CREATE TABLE` to the last `ANALYZE`.
    pub elapsed: Duration,
}

impl LoadStats {
    /// Load throughput over the whole cluster.
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// (Re)creates `table` on every segment as `(id bigint, label int, i1 … i13
/// real, c1 … c26 text)` and loads `rows` Criteo-like rows generated from
/// `seed` (model in the module docs), spread by [`segment_of`]; then ANALYZEs.
pub async fn load_criteo(
    cluster: &LocalCluster,
    table: &str,
    rows: u64,
    seed: u64,
) -> Result<LoadStats> {
    let model = Arc::new(CriteoModel::new());
    load(
        cluster,
        table,
        &criteo_columns(),
        rows,
        seed,
        move |rng, id, buf| {
            let row = model.row(rng, id);
            model.write_text(&row, id, buf);
        },
    )
    .await
}

/// (Re)creates `table` on every segment as `(id bigint, label int, pixels
/// real[])` and loads `rows` 3×32×32 images of 10 classes generated from
/// `seed` (model in the module docs), spread by [`segment_of`]; then ANALYZEs.
pub async fn load_images(
    cluster: &LocalCluster,
    table: &str,
    rows: u64,
    seed: u64,
) -> Result<LoadStats> {
    let columns = "id bigint, label int, pixels real[]";
    load(cluster, table, columns, rows, seed, move |rng, id, buf| {
        let mut pixels = vec![0f32; IMAGE_SHAPE.iter().product()];
        let label = image(rng, &mut pixels);
        write_image_text(id, label, &pixels, buf);
    })
    .await
}

/// The RNG of row `id`: keyed by the table seed, the row id as stream, so a
/// row's content does not depend on which segment or thread makes it.
pub fn row_rng(key: [u8; 32], id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(id);
    rng
}

/// The ChaCha key derived from a table seed (used with [`row_rng`]).
pub fn seed_key(seed: u64) -> [u8; 32] {
    ChaCha8Rng::seed_from_u64(seed).get_seed()
}

/// The column list of the Criteo-like table.
fn criteo_columns() -> String {
    let mut columns = String::from("id bigint, label int");
    for j in 1..=13 {
        columns.push_str(&format!(", i{j} real"));
    }
    for j in 1..=26 {
        columns.push_str(&format!(", c{j} text"));
    }
    columns
}

/// (Re)creates `table` through one connection — a Greenplum coordinator,
/// which distributes the rows by `id` over its segments — and loads the
/// same `rows` Criteo-like rows [`load_criteo`] would for `seed`; then
/// ANALYZEs.
pub async fn load_criteo_into(
    client: &tokio_postgres::Client,
    table: &str,
    rows: u64,
    seed: u64,
) -> Result<LoadStats> {
    check_table_name(table)?;
    let started = Instant::now();
    let model = Arc::new(CriteoModel::new());
    let write_row = Arc::new(move |rng: &mut ChaCha8Rng, id: u64, buf: &mut Vec<u8>| {
        let row = model.row(rng, id);
        model.write_text(&row, id, buf);
    });
    let create = format!(
        "CREATE TABLE {table} ({}) DISTRIBUTED BY (id)",
        criteo_columns()
    );
    let (loaded, bytes) =
        load_segment(client, table, &create, "", (1, 0), rows, seed, write_row).await?;
    Ok(LoadStats {
        table: table.to_string(),
        rows: loaded,
        rows_per_segment: vec![loaded],
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Creates the table on every segment and streams generated rows into it.
async fn load<F>(
    cluster: &LocalCluster,
    table: &str,
    columns: &str,
    rows: u64,
    seed: u64,
    write_row: F,
) -> Result<LoadStats>
where
    F: Fn(&mut ChaCha8Rng, u64, &mut Vec<u8>) + Send + Sync + 'static,
{
    check_table_name(table)?;
    let started = Instant::now();
    let write_row = Arc::new(write_row);
    let segments = cluster.len();
    let create = format!("CREATE TABLE {table} ({columns})");
    let per_segment = (0..segments).map(|s| {
        let write_row = Arc::clone(&write_row);
        let create = &create;
        async move {
            let client = cluster.client(s).await?;
            // FREEZE: the table is new in this transaction, so the first
            // scan need not set hint bits.
            load_segment(
                &client,
                table,
                create,
                ", FREEZE",
                (segments, s),
                rows,
                seed,
                write_row,
            )
            .await
        }
    });
    let results = futures::future::try_join_all(per_segment).await?;
    let stats = LoadStats {
        table: table.to_string(),
        rows: results.iter().map(|r| r.0).sum(),
        rows_per_segment: results.iter().map(|r| r.0).collect(),
        bytes: results.iter().map(|r| r.1).sum(),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        table,
        rows = stats.rows,
        secs = stats.elapsed.as_secs_f64(),
        rows_per_sec = stats.rows_per_sec() as u64,
        "loaded generated table"
    );
    Ok(stats)
}

/// Recreates `table` with `create` over `client` and COPYs into it the rows
/// of segment `s` of `segments` in one transaction; returns (rows, bytes).
#[allow(clippy::too_many_arguments)]
async fn load_segment<F>(
    client: &tokio_postgres::Client,
    table: &str,
    create: &str,
    copy_options: &str,
    (segments, s): (usize, usize),
    rows: u64,
    seed: u64,
    write_row: Arc<F>,
) -> Result<(u64, u64)>
where
    F: Fn(&mut ChaCha8Rng, u64, &mut Vec<u8>) + Send + Sync + 'static,
{
    let ctx = |what: &str| format!("{what} {table} on segment {s}");
    client
        .batch_execute(&format!("BEGIN; DROP TABLE IF EXISTS {table}; {create}"))
        .await
        .map_err(|e| Error::from_pg(&ctx("creating"), e))?;
    let sink = client
        .copy_in::<_, Bytes>(&format!(
            "COPY {table} FROM STDIN (FORMAT text{copy_options})"
        ))
        .await
        .map_err(|e| Error::from_pg(&ctx("loading"), e))?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let producer = tokio::task::spawn_blocking(move || {
        generate(segments, s, rows, seed, write_row.as_ref(), tx)
    });
    let mut sink = Box::pin(sink);
    let mut bytes = 0u64;
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.len() as u64;
        if let Err(e) = sink.send(chunk).await {
            sent = Err(Error::from_pg(&ctx("loading"), e));
            break;
        }
    }
    drop(rx);
    producer
        .await
        .map_err(|e| Error::Internal(format!("row generator of segment {s}: {e}")))?;
    sent?;
    let loaded = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| Error::from_pg(&ctx("loading"), e))?;
    client
        .batch_execute(&format!("COMMIT; ANALYZE {table}"))
        .await
        .map_err(|e| Error::from_pg(&ctx("analyzing"), e))?;
    Ok((loaded, bytes))
}

/// Writes the COPY text of segment `s`'s rows into 1 MiB chunks; stops early
/// when the receiver is gone (the COPY failed).
fn generate<F>(
    segments: usize,
    s: usize,
    rows: u64,
    seed: u64,
    write_row: &F,
    tx: mpsc::Sender<Bytes>,
) where
    F: Fn(&mut ChaCha8Rng, u64, &mut Vec<u8>),
{
    let key = seed_key(seed);
    let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
    for id in (0..rows).filter(|&id| segment_of(id, segments) == s) {
        let mut rng = row_rng(key, id);
        write_row(&mut rng, id, &mut buf);
        if buf.len() >= CHUNK {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 64 * 1024));
            if tx.blocking_send(Bytes::from(full)).is_err() {
                return;
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(Bytes::from(buf));
    }
}

/// A table name hopper splices into SQL: `name` or `schema.name`, plain
/// identifiers only ([`pg_arrow::Ident::parse_plain`]).
fn check_table_name(table: &str) -> Result<()> {
    pg_arrow::Ident::parse_plain(table)
        .map(drop)
        .map_err(|e| Error::Config(e.to_string()))
}

/// A categorical cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cat {
    /// SQL NULL.
    Null,
    /// The empty string.
    Empty,
    /// The vocabulary value of this rank (0 = most frequent).
    Rank(u32),
}

/// One generated Criteo-like row before it is written as text.
#[derive(Debug, Clone)]
pub struct CriteoRow {
    /// 1 = click.
    pub label: i32,
    /// `i1 … i13`; `None` is NULL.
    pub ints: [Option<u64>; 13],
    /// `c1 … c26`.
    pub cats: [Cat; 26],
    /// The click probability the label was drawn with.
    pub p_click: f64,
}

/// The fixed generative model of the Criteo-like table (module docs).
#[derive(Debug)]
pub struct CriteoModel {
    /// Per column, the cumulative rank probabilities.
    cdf: Vec<Vec<f64>>,
    /// Per column, the 8 hex digits of each rank's value.
    values: Vec<Vec<[u8; 8]>>,
    /// Per column, the logit effect of each of the top ranks (empty: no signal).
    effects: Vec<Vec<f64>>,
}

impl Default for CriteoModel {
    fn default() -> Self {
        Self::new()
    }
}

impl CriteoModel {
    /// Builds the vocabularies and effects (a few milliseconds).
    pub fn new() -> Self {
        let cdf = VOCAB
            .iter()
            .map(|&v| {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (0..v)
                    .map(|r| {
                        acc += 1.0 / ((r + 1) as f64).powf(ZIPF_EXPONENT);
                        acc
                    })
                    .collect();
                for c in &mut cdf {
                    *c /= acc;
                }
                cdf
            })
            .collect();
        let values = VOCAB
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                (0..v as u64)
                    .map(|r| {
                        let h = splitmix64(MODEL_SEED ^ ((j as u64) << 40) ^ r) as u32;
                        let mut out = [0u8; 8];
                        for (k, o) in out.iter_mut().enumerate() {
                            *o = b"0123456789abcdef"[((h >> (28 - 4 * k)) & 0xf) as usize];
                        }
                        out
                    })
                    .collect()
            })
            .collect();
        let mut effects = vec![Vec::new(); VOCAB.len()];
        for &(j, sd) in &CAT_SIGNAL {
            let mut rng = ChaCha8Rng::seed_from_u64(MODEL_SEED ^ j as u64);
            effects[j] = (0..EFFECT_RANKS.min(VOCAB[j]))
                .map(|_| sd * normal(&mut rng))
                .collect();
        }
        Self {
            cdf,
            values,
            effects,
        }
    }

    /// Draws row `id`'s cells and label from its RNG.
    pub fn row(&self, rng: &mut ChaCha8Rng, _id: u64) -> CriteoRow {
        let mut ints = [None; 13];
        for (cell, spec) in ints.iter_mut().zip(NUMERIC.iter()) {
            if rng.random::<f64>() < NUMERIC_NULL {
                continue;
            }
            *cell = Some(if rng.random::<f64>() < spec.zero {
                0
            } else {
                (spec.mu + spec.sigma * normal(rng)).exp().min(1e9) as u64
            });
        }
        let mut cats = [Cat::Null; 26];
        for (j, cell) in cats.iter_mut().enumerate() {
            let u = rng.random::<f64>();
            *cell = if u < CAT_NULL {
                Cat::Null
            } else if u < CAT_NULL + CAT_EMPTY {
                Cat::Empty
            } else {
                let r = rng.random::<f64>();
                let cdf = &self.cdf[j];
                Cat::Rank(cdf.partition_point(|&c| c < r).min(cdf.len() - 1) as u32)
            };
        }
        let p_click = sigmoid(self.logit(&ints, &cats));
        let label = (rng.random::<f64>() < p_click) as i32;
        CriteoRow {
            label,
            ints,
            cats,
            p_click,
        }
    }

    /// The click logit `s` of the module docs.
    pub fn logit(&self, ints: &[Option<u64>; 13], cats: &[Cat; 26]) -> f64 {
        let x = |j: usize| ints[j].map(|v| (v as f64).ln_1p());
        let lin = |j: usize, w: f64, c: f64| x(j).map_or(0.0, |x| w * (x - c));
        let mut s = CRITEO_INTERCEPT
            + lin(0, 1.1, 1.0)
            + lin(2, 0.9, 2.5)
            + lin(5, -0.9, 3.5)
            + x(8).map_or(0.0, |x| 1.2 - 0.45 * (x - 4.0) * (x - 4.0));
        for &(j, _) in &CAT_SIGNAL {
            if let Cat::Rank(r) = cats[j] {
                s += self.effects[j].get(r as usize).copied().unwrap_or(0.0);
            }
        }
        s
    }

    /// The text of a categorical cell as stored (`None` for NULL).
    pub fn cat_text(&self, j: usize, cat: Cat) -> Option<&str> {
        match cat {
            Cat::Null => None,
            Cat::Empty => Some(""),
            // The digits are ASCII by construction.
            Cat::Rank(r) => std::str::from_utf8(&self.values[j][r as usize]).ok(),
        }
    }

    /// Appends the row as one line of COPY text.
    pub fn write_text(&self, row: &CriteoRow, id: u64, buf: &mut Vec<u8>) {
        write_u64(buf, id);
        buf.push(b'\t');
        write_u64(buf, row.label as u64);
        for v in &row.ints {
            buf.push(b'\t');
            match v {
                Some(v) => write_u64(buf, *v),
                None => buf.extend_from_slice(b"\\N"),
            }
        }
        for (j, c) in row.cats.iter().enumerate() {
            buf.push(b'\t');
            match c {
                Cat::Null => buf.extend_from_slice(b"\\N"),
                Cat::Empty => {}
                Cat::Rank(r) => buf.extend_from_slice(&self.values[j][*r as usize]),
            }
        }
        buf.push(b'\n');
    }
}

/// Draws one image into `pixels` (CHW, 3×32×32) and returns its class.
pub fn image(rng: &mut ChaCha8Rng, pixels: &mut [f32]) -> i32 {
    let [_, h, w] = IMAGE_SHAPE;
    let class = rng.random_range(0..IMAGE_CLASSES);
    let background = rng.random_range(0.3f32..0.6);
    let phase = rng.random_range(0.0f32..std::f32::consts::TAU);
    let freq = (1 + class / 2) as f32;
    let radius = rng.random_range(4.0f32..8.0);
    let cx = rng.random_range(radius..w as f32 - radius);
    let cy = rng.random_range(radius..h as f32 - radius);
    let color = PALETTE[class];
    for y in 0..h {
        for x in 0..w {
            let along = if class % 2 == 0 { y } else { x } as f32;
            let stripe = 0.12 * (std::f32::consts::TAU * freq * along / h as f32 + phase).sin();
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let in_disc = dx * dx + dy * dy <= radius * radius;
            for (c, &col) in color.iter().enumerate() {
                let base = if in_disc { col } else { background + stripe };
                let v = base + 0.08 * normal(rng) as f32;
                pixels[(c * h + y) * w + x] = v.clamp(0.0, 1.0);
            }
        }
    }
    class as i32
}

/// Appends one image row as COPY text (`{0.123,…}` for the array).
fn write_image_text(id: u64, label: i32, pixels: &[f32], buf: &mut Vec<u8>) {
    write_u64(buf, id);
    buf.push(b'\t');
    write_u64(buf, label as u64);
    buf.extend_from_slice(b"\t{");
    for (k, &v) in pixels.iter().enumerate() {
        if k > 0 {
            buf.push(b',');
        }
        let milli = (v * 1000.0).round() as u32;
        if milli >= 1000 {
            buf.push(b'1');
        } else {
            buf.extend_from_slice(&[
                b'0',
                b'.',
                b'0' + (milli / 100) as u8,
                b'0' + (milli / 10 % 10) as u8,
                b'0' + (milli % 10) as u8,
            ]);
        }
    }
    buf.extend_from_slice(b"}\n");
}

fn write_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = digits.len();
    loop {
        n -= 1;
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[n..]);
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A standard normal draw (Box–Muller; one of the pair is dropped to keep
/// the draw count per call fixed).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The papers' featurization: 50 buckets per numeric column (bucket 0 is
    /// NULL, then `floor(4·ln(1+x))` capped), 256 hash buckets per categorical.
    fn features(model: &CriteoModel, row: &CriteoRow) -> Vec<usize> {
        let mut f = Vec::with_capacity(39);
        for (j, v) in row.ints.iter().enumerate() {
            let b = v.map_or(0, |v| 1 + ((v as f64).ln_1p() * 4.0).min(48.0) as usize);
            f.push(j * 50 + b);
        }
        for (j, &c) in row.cats.iter().enumerate() {
            let text = model.cat_text(j, c).unwrap_or("\\N");
            let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            f.push(13 * 50 + j * 256 + (h % 256) as usize);
        }
        f
    }

    fn rows(model: &CriteoModel, seed: u64, n: u64) -> Vec<CriteoRow> {
        let key = seed_key(seed);
        (0..n)
            .map(|id| model.row(&mut row_rng(key, id), id))
            .collect()
    }

    #[test]
    fn criteo_label_mean_is_near_the_base_rate() {
        let model = CriteoModel::new();
        let rows = rows(&model, 7, 50_000);
        let mean = rows.iter().map(|r| r.label as f64).sum::<f64>() / rows.len() as f64;
        let bayes = rows
            .iter()
            .filter(|r| (r.p_click > 0.5) == (r.label == 1))
            .count() as f64
            / rows.len() as f64;
        eprintln!("label mean {mean:.4}, Bayes accuracy {bayes:.4}");
        assert!((mean - CRITEO_BASE_RATE).abs() < 0.03, "label mean {mean}");
    }

    #[test]
    fn logistic_regression_on_bucketed_features_beats_the_base_rate() {
        let model = CriteoModel::new();
        let train = rows(&model, 1, 40_000);
        let test = rows(&model, 2, 10_000);
        let dims = 13 * 50 + 26 * 256;
        let mut w = vec![0f64; dims];
        let mut g2 = vec![1e-8f64; dims];
        let mut bias = 0f64;
        let mut bias_g2 = 1e-8f64;
        for _epoch in 0..4 {
            for row in &train {
                let f = features(&model, row);
                let z: f64 = bias + f.iter().map(|&i| w[i]).sum::<f64>();
                let g = sigmoid(z) - row.label as f64;
                // Adagrad keeps rare buckets learning fast without tuning.
                bias_g2 += g * g;
                bias -= 0.1 * g / bias_g2.sqrt();
                for &i in &f {
                    g2[i] += g * g;
                    w[i] -= 0.1 * g / g2[i].sqrt();
                }
            }
        }
        let correct = test
            .iter()
            .filter(|row| {
                let z: f64 = bias + features(&model, row).iter().map(|&i| w[i]).sum::<f64>();
                (z > 0.0) == (row.label == 1)
            })
            .count();
        let accuracy = correct as f64 / test.len() as f64;
        eprintln!("logistic regression test accuracy {accuracy:.4}");
        assert!(accuracy >= 0.8, "accuracy {accuracy}");
    }

    #[test]
    fn rows_are_deterministic_and_independent_of_placement() {
        let model = CriteoModel::new();
        let mut a = Vec::new();
        let mut b = Vec::new();
        let key = seed_key(3);
        for id in [5u64, 0, 17] {
            model.write_text(&model.row(&mut row_rng(key, id), id), id, &mut a);
        }
        for id in [5u64, 0, 17] {
            model.write_text(&model.row(&mut row_rng(key, id), id), id, &mut b);
        }
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(first.split('\t').count(), 2 + 13 + 26, "{first}");
        assert!(first.starts_with("5\t"));
    }

    #[test]
    fn segment_of_spreads_rows_evenly() {
        let mut counts = [0u64; 3];
        for id in 0..30_000 {
            counts[segment_of(id, 3)] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn images_have_the_right_shape_and_range() {
        let key = seed_key(9);
        let mut pixels = vec![0f32; 3 * 32 * 32];
        let mut seen = [false; IMAGE_CLASSES];
        for id in 0..200 {
            let c = image(&mut row_rng(key, id), &mut pixels);
            seen[c as usize] = true;
            assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        }
        assert!(seen.iter().all(|&s| s), "every class appears");
        let mut buf = Vec::new();
        write_image_text(1, 3, &pixels, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        let array = text.trim_end().split('\t').nth(2).unwrap();
        assert_eq!(array.split(',').count(), 3072);
    }

    #[test]
    fn table_names_are_checked() {
        assert!(check_table_name("criteo").is_ok());
        assert!(check_table_name("public.criteo_2").is_ok());
        assert!(check_table_name("x; DROP TABLE y").is_err());
        assert!(check_table_name("").is_err());
    }
}
