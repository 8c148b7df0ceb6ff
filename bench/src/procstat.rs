//! CPU time and memory of the processes on the data path, read from `/proc`.
//!
//! Wall time alone cannot say where a read spends its time on a 2-vCPU
//! machine where PostgreSQL, the flight-server and the client all compete
//! for the same cores. CPU seconds per process group can: a measurement
//! takes a [`CpuSnapshot`] before and after and reports the difference.

use std::fs;
use std::process::Command;

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`; 100
/// on every Linux hopper runs on, used if `getconf` is missing).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The fields of `/proc/PID/stat` after the parenthesized command name
/// (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // The state letter is not a number; keep positions by mapping it to 0.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of `pid` in ticks, plus its reaped children's when `reaped`.
fn cpu_ticks(pid: u32, reaped: bool) -> u64 {
    // Fields 14-17 (utime, stime, cutime, cstime) are indices 11-14.
    match stat_fields(pid) {
        Some(f) if f.len() > 14 => {
            let own = f[11] + f[12];
            if reaped {
                own + f[13] + f[14]
            } else {
                own
            }
        }
        _ => 0,
    }
}

/// PIDs whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).and_then(|f| f.get(1).copied()) == Some(u64::from(ppid)))
        .collect()
}

/// CPU ticks consumed so far by a PostgreSQL instance: the postmaster, its
/// live backends, and the backends it already reaped (a backend exits when
/// its connection closes, and its time then moves into the postmaster's
/// `cutime`/`cstime`, so the sum stays consistent across the exit).
pub fn postgres_ticks(postmaster: u32) -> u64 {
    cpu_ticks(postmaster, true)
        + children_of(postmaster)
            .into_iter()
            .map(|c| cpu_ticks(c, false))
            .sum::<u64>()
}

/// CPU ticks of one process (its own threads only).
pub fn process_ticks(pid: u32) -> u64 {
    cpu_ticks(pid, false)
}

/// Kernel-mode (stime) ticks of one process: socket reads and writes.
pub fn process_sys_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .and_then(|f| f.get(12).copied())
        .unwrap_or(0)
}

/// A CPU delta that could not be measured.
pub const UNKNOWN: u64 = u64::MAX;

/// CPU consumed by the three parties of a read, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    /// All PostgreSQL segments (postmasters and backends).
    pub postgres: u64,
    /// The flight-server process, when one takes part.
    pub server: u64,
    /// The part of `server` spent in the kernel.
    pub server_sys: u64,
    /// This process: the COPY drain or the Flight client.
    pub client: u64,
}

impl CpuSnapshot {
    /// Reads the counters now.
    pub fn take(postmasters: &[u32], server: Option<u32>) -> Self {
        Self {
            postgres: postmasters.iter().map(|p| postgres_ticks(*p)).sum(),
            server: server.map(process_ticks).unwrap_or(0),
            server_sys: server.map(process_sys_ticks).unwrap_or(0),
            client: process_ticks(std::process::id()),
        }
    }

    /// Ticks spent between `earlier` and `self`. A counter that went
    /// backwards (a backend that exited between reading the postmaster and
    /// listing its children) becomes [`UNKNOWN`].
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            postgres: self
                .postgres
                .checked_sub(earlier.postgres)
                .unwrap_or(UNKNOWN),
            server: self.server.saturating_sub(earlier.server),
            server_sys: self.server_sys.saturating_sub(earlier.server_sys),
            client: self.client.saturating_sub(earlier.client),
        }
    }
}

/// A `VmXxx:` line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set size (`VmRSS`) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// Resets `pid`'s `VmHWM` to its current RSS (Linux ≥ 4.0, writing `5` to
/// `/proc/PID/clear_refs`; needs the same user or root), so that the peak of
/// each measurement is its own. False when the kernel refuses.
pub fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `root` and every process below it, as `/proc` lists them now.
fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut at = 0;
    while at < all.len() {
        all.extend(children_of(all[at]));
        at += 1;
    }
    all
}

/// The peak resident memory and the CPU time of each process of a tree
/// while it runs: every `every`, each process's `VmHWM` (its own peak so
/// far) and `utime + stime`. Both are gone with the process, so what counts
/// for one that exits is its last reading: a peak reached, or CPU spent,
/// in its last `every` can be missed.
pub struct TreePeaks {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watcher: std::thread::JoinHandle<std::collections::BTreeMap<u32, (u64, u64)>>,
}

/// What [`TreePeaks`] saw of a tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeUse {
    /// The root's peak resident memory, KiB.
    pub root_kib: u64,
    /// The largest peak of the processes below it, KiB (0 if none was seen).
    pub below_kib: u64,
    /// The CPU seconds of the processes below it, summed.
    pub below_cpu: f64,
}

impl TreePeaks {
    /// Starts watching `root` and its descendants.
    pub fn watch(root: u32, every: std::time::Duration) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let watcher = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            loop {
                // One more reading after the stop, for the end state.
                let last = flag.load(Ordering::Relaxed);
                for pid in tree(root) {
                    if let Ok(kib) = peak_rss_kib(pid) {
                        let (peak, cpu) = seen.entry(pid).or_insert((0, 0));
                        *peak = kib.max(*peak);
                        *cpu = cpu_ticks(pid, false).max(*cpu);
                    }
                }
                if last {
                    return seen;
                }
                std::thread::sleep(every);
            }
        });
        TreePeaks { stop, watcher }
    }

    /// Stops watching; what the tree used.
    pub fn finish(self, root: u32) -> TreeUse {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self.watcher.join().unwrap_or_default();
        let below = || {
            seen.iter()
                .filter(|(pid, _)| **pid != root)
                .map(|(_, v)| *v)
        };
        TreeUse {
            root_kib: seen.get(&root).map_or(0, |v| v.0),
            below_kib: below().map(|v| v.0).max().unwrap_or(0),
            below_cpu: below().map(|v| v.1).sum::<u64>() as f64 / clock_ticks(),
        }
    }
}
