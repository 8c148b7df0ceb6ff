//! # devcluster
//!
//! Local PostgreSQL instances that play the segments of an MPP database.
//!
//! Tests, benchmarks and the demo need "a Greenplum" without having one: a
//! [`LocalCluster`] is N independent PostgreSQL servers on loopback ports,
//! each one a segment. Every instance gets its own data directory and
//! unix-socket directory under one base directory (a temp dir by default),
//! is tuned for scratch use (no fsync, no full-page writes, minimal WAL) and
//! trusts local connections for the superuser `hopper`, database `hopper`.
//!
//! # Design
//!
//! ```text
//!  base_dir/
//!    cluster.json          ports and paths, so that `attach` finds a kept cluster again
//!    seg0/                 owned by the server's OS user; its unix socket lives here
//!      data/               initdb'd data directory; data/server.log is the server's log
//!    seg1/ …
//! ```
//!
//! * **Root.** `initdb` and `postgres` refuse to run as root, and CI runs as
//!   root. Then the servers run as an unprivileged OS user (`postgres` if it
//!   exists, else a system user `hopper` is created): `initdb` through
//!   `runuser -u USER --`, the postmaster through `setpriv` (which `exec`s,
//!   so the postmaster is a direct child that can be reaped; `runuser` when
//!   `setpriv` is missing).
//! * **Free ports.** A port is found by binding `127.0.0.1:0`; another
//!   process can take it before the server binds it, so a start that fails
//!   with "Address already in use" is retried on a new port. Readiness is a
//!   real connection (polled, never a fixed sleep) that also checks the
//!   server's `data_directory`, so a stranger on the same port is not
//!   mistaken for our segment.
//! * **No orphans.** Dropping a [`LocalCluster`] (also while a test unwinds
//!   from a panic) fast-stops every postmaster (SIGINT), escalates to
//!   SIGKILL of the postmaster and its backends after a timeout, and removes
//!   the base dir when it was a temp dir. The postmasters stay in the
//!   caller's process group, so Ctrl-C on a test run stops them too.
//!   [`LocalCluster::keep`] opts out for the demo's `--keep`;
//!   [`LocalCluster::attach`] picks a kept (or stopped) cluster up again.
//!
//! [`datagen`] fills a cluster with generated tables that carry a planted,
//! learnable signal.
//!
//! ```no_run
//! # async fn example() -> devcluster::Result<()> {
//! use devcluster::{load_criteo, ClusterOptions, LocalCluster};
//!
//! let cluster = LocalCluster::start(2, ClusterOptions::default()).await?;
//! let stats = load_criteo(&cluster, "criteo", 100_000, 42).await?;
//! println!("{:?} rows per segment; first at {}", stats.rows_per_segment, cluster.url(0));
//! # Ok(())
//! # }
//! ```

pub mod datagen;
pub mod error;

pub use datagen::{load_criteo, load_criteo_into, load_images, segment_of, LoadStats};
pub use error::{Error, Result};

use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use serde::{Deserialize, Serialize};

/// Superuser (and owner of the data) in every segment.
pub const SUPERUSER: &str = "hopper";
/// Database created in every segment; [`LocalCluster::url`] points at it.
pub const DATABASE: &str = "hopper";
/// File in the base dir that records ports and paths for [`LocalCluster::attach`].
pub const MANIFEST_FILE: &str = "cluster.json";

/// How often readiness and shutdown are polled.
const POLL: Duration = Duration::from_millis(20);
/// Attempts to find a port nobody else grabs between probing and binding.
const PORT_ATTEMPTS: usize = 8;
/// Longest unix-socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How a [`LocalCluster`] is started.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the segments live. `None`: a fresh temp dir, removed on drop.
    /// `Some`: this directory (created if missing, must not already hold a
    /// cluster) is left in place on drop so that a kept cluster can be
    /// attached again.
    pub base_dir: Option<PathBuf>,
    /// Directory with `initdb` and `postgres`; `None` searches
    /// (`HOPPER_PG_BIN`, `pg_config --bindir`, newest `/usr/lib/postgresql/*/bin`).
    pub bin_dir: Option<PathBuf>,
    /// How long one segment may take to accept connections.
    pub startup_timeout: Duration,
    /// How long a fast shutdown may take before the segment is killed.
    pub stop_timeout: Duration,
    /// Extra `postgresql.conf` settings (name, value as written in the file),
    /// applied after hopper's own so they can override them.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            base_dir: None,
            bin_dir: None,
            startup_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            settings: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Keeps the segments under `dir` instead of a temp dir.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Uses the server binaries in `dir`.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Adds a `postgresql.conf` setting, e.g. `("work_mem", "'64MB'")`.
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Sets how long one segment may take to start.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

/// What `cluster.json` records: enough to find, reconnect to or restart the
/// segments from another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    bin_dir: PathBuf,
    os_user: Option<String>,
    segments: Vec<SegmentManifest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentManifest {
    port: u16,
    data_dir: PathBuf,
    socket_dir: Option<PathBuf>,
    /// Set by [`LocalCluster::require_tls`].
    #[serde(default)]
    tls_only: bool,
}

/// The unprivileged OS user the servers run as when hopper runs as root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

/// One segment: fixed paths, a port, and its server process if it runs.
#[derive(Debug)]
struct Segment {
    port: AtomicU16,
    dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: Option<PathBuf>,
    /// TCP takes TLS only ([`LocalCluster::require_tls`]): the harness's
    /// own connections go over the unix socket.
    tls_only: AtomicBool,
    proc: Mutex<Proc>,
}

#[derive(Debug, Default)]
struct Proc {
    /// The process we spawned (the postmaster itself, or `runuser` around
    /// it); `None` for a postmaster adopted by `attach` or a stopped segment.
    child: Option<Child>,
    /// The postmaster's PID once it served a connection. Kept because the
    /// postmaster removes `postmaster.pid` a moment before it exits.
    pid: Option<i32>,
}

impl Segment {
    fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    fn log_file(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    fn proc(&self) -> MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running postmaster's PID, from `postmaster.pid`, if that process
    /// is alive and is a postgres process (the file outlives a killed server).
    fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (pid > 0 && pid_alive(pid) && is_postgres(pid)).then_some(pid)
    }

    /// Reaps our child if it exited; true when no server process of this
    /// segment remains.
    fn exited(&self) -> bool {
        let mut proc = self.proc();
        if let Some(child) = proc.child.as_mut() {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => proc.child = None,
                Ok(None) => return false,
            }
        }
        if let Some(pid) = proc.pid {
            if pid_alive(pid) && is_postgres(pid) {
                return false;
            }
            proc.pid = None;
        }
        drop(proc);
        self.postmaster_pid().is_none()
    }

    /// The postmaster to signal: from `postmaster.pid`, else the one last seen.
    fn signal_target(&self) -> Option<i32> {
        self.postmaster_pid().or_else(|| {
            self.proc()
                .pid
                .filter(|&pid| pid_alive(pid) && is_postgres(pid))
        })
    }

    /// Asks the postmaster for a fast shutdown: active sessions are
    /// terminated, the data is checkpointed.
    fn begin_stop(&self) {
        if let Some(pid) = self.signal_target() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        } else if let Some(child) = self.proc().child.as_ref() {
            // Not yet (or no longer) in postmaster.pid: signal what we spawned.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        }
    }

    /// Kills the postmaster and its backends, then reaps our child.
    fn force_stop(&self) {
        if let Some(pid) = self.signal_target() {
            let backends = children_of(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            for b in backends {
                let _ = kill(Pid::from_raw(b), Signal::SIGKILL);
            }
        }
        let mut proc = self.proc();
        if let Some(mut child) = proc.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fast shutdown, escalating to [`Self::force_stop`] after `timeout`.
    async fn stop(&self, timeout: Duration) {
        self.begin_stop();
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() >= deadline {
                self.force_stop();
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn conninfo(&self, database: &str) -> String {
        let host = match &self.socket_dir {
            Some(dir) if self.tls_only.load(Ordering::SeqCst) => dir.display().to_string(),
            _ => "127.0.0.1".to_owned(),
        };
        format!(
            "host='{host}' port={} user={SUPERUSER} dbname={database} connect_timeout=5",
            self.port()
        )
    }
}

/// A set of local PostgreSQL instances, one per segment, stopped on drop.
#[derive(Debug)]
pub struct LocalCluster {
    base_dir: PathBuf,
    /// Set when the base dir is a temp dir: it is removed after the servers stop.
    temp: Option<tempfile::TempDir>,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    segments: Vec<Segment>,
    startup_timeout: Duration,
    stop_timeout: Duration,
    kept: bool,
}

/// A cluster left running by [`LocalCluster::keep`]: where it lives and how
/// to reach it.
#[derive(Debug, Clone)]
pub struct KeptCluster {
    base_dir: PathBuf,
    urls: Vec<String>,
}

impl KeptCluster {
    /// The base directory to pass to [`LocalCluster::attach`].
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// One connection URL per segment.
    pub fn segment_urls(&self) -> &[String] {
        &self.urls
    }

    /// Reconnects to (or restarts) the kept cluster.
    pub async fn attach(&self) -> Result<LocalCluster> {
        LocalCluster::attach(&self.base_dir).await
    }
}

impl LocalCluster {
    /// Starts `segments` fresh PostgreSQL instances in parallel and waits
    /// until each accepts connections to database [`DATABASE`].
    pub async fn start(segments: usize, opts: ClusterOptions) -> Result<LocalCluster> {
        if segments == 0 {
            return Err(Error::Config("a cluster needs at least one segment".into()));
        }
        let bin_dir = match &opts.bin_dir {
            Some(dir) => check_bin_dir(dir)?,
            None => find_bin_dir()?,
        };
        let run_as = service_user()?;
        let (base_dir, temp) = match &opts.base_dir {
            Some(dir) => {
                if dir.join(MANIFEST_FILE).exists() {
                    return Err(Error::Config(format!(
                        "{} already holds a cluster; attach to it (LocalCluster::attach) \
                         or remove the directory",
                        dir.display()
                    )));
                }
                fs::create_dir_all(dir).map_err(|e| io_config("creating base dir", dir, e))?;
                let abs = fs::canonicalize(dir).map_err(|e| io_config("resolving", dir, e))?;
                (abs, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("hopper-cluster-")
                    .tempdir()
                    .map_err(|e| Error::Config(format!("creating a temp dir: {e}")))?;
                let abs =
                    fs::canonicalize(t.path()).map_err(|e| io_config("resolving", t.path(), e))?;
                (abs, Some(t))
            }
        };
        prepare_dir(&base_dir, run_as.as_ref())?;
        let segs = (0..segments)
            .map(|i| {
                let dir = base_dir.join(format!("seg{i}"));
                let data_dir = dir.join("data");
                Segment {
                    port: AtomicU16::new(0),
                    socket_dir: socket_dir_for(&dir),
                    dir,
                    data_dir,
                    tls_only: AtomicBool::new(false),
                    proc: Mutex::new(Proc::default()),
                }
            })
            .collect();
        // Built before anything runs, so that an error or a cancelled future
        // half-way through stops whatever did start.
        let cluster = LocalCluster {
            base_dir,
            temp,
            bin_dir,
            run_as,
            segments: segs,
            startup_timeout: opts.startup_timeout,
            stop_timeout: opts.stop_timeout,
            kept: false,
        };
        futures::future::try_join_all(
            (0..segments).map(|i| cluster.init_and_start(i, &opts.settings)),
        )
        .await?;
        cluster.write_manifest()?;
        Ok(cluster)
    }

    /// Reconnects to a cluster left by [`LocalCluster::keep`] (or stopped
    /// since): segments still running are adopted, stopped ones are
    /// restarted on their old port (a new one if that is taken). The result
    /// stops the segments on drop like any cluster; call [`LocalCluster::keep`]
    /// again to leave them running. Only one process should attach at a time.
    pub async fn attach(base_dir: impl AsRef<Path>) -> Result<LocalCluster> {
        let base_dir = fs::canonicalize(base_dir.as_ref())
            .map_err(|e| io_config("opening cluster dir", base_dir.as_ref(), e))?;
        let manifest_path = base_dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path).map_err(|e| {
            Error::Config(format!(
                "{} is not a hopper cluster (reading {}: {e})",
                base_dir.display(),
                manifest_path.display()
            ))
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", manifest_path.display())))?;
        let bin_dir = match check_bin_dir(&manifest.bin_dir) {
            Ok(dir) => dir,
            Err(_) => find_bin_dir()?,
        };
        let run_as = service_user()?;
        let segments = manifest
            .segments
            .iter()
            .map(|s| Segment {
                port: AtomicU16::new(s.port),
                dir: s
                    .data_dir
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                data_dir: s.data_dir.clone(),
                socket_dir: s.socket_dir.clone(),
                tls_only: AtomicBool::new(s.tls_only),
                proc: Mutex::new(Proc::default()),
            })
            .collect();
        let opts = ClusterOptions::default();
        let cluster = LocalCluster {
            base_dir,
            temp: None,
            bin_dir,
            run_as,
            segments,
            startup_timeout: opts.startup_timeout,
            stop_timeout: opts.stop_timeout,
            kept: false,
        };
        futures::future::try_join_all((0..cluster.len()).map(|i| cluster.adopt_or_start(i)))
            .await?;
        cluster.write_manifest()?;
        Ok(cluster)
    }

    /// Leaves every segment running (and the base dir in place, even a temp
    /// dir) and returns where to find them again.
    pub fn keep(mut self) -> KeptCluster {
        self.kept = true;
        if let Some(t) = self.temp.take() {
            let _ = t.keep();
        }
        KeptCluster {
            base_dir: self.base_dir.clone(),
            urls: self.segment_urls(),
        }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Always false: a cluster has at least one segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Connection URL of every segment, in segment order.
    pub fn segment_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// Connection URL of segment `i` over TCP
    /// (`postgresql://hopper@127.0.0.1:PORT/hopper`). Panics if `i >= len()`.
    pub fn url(&self, i: usize) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{DATABASE}",
            self.segments[i].port()
        )
    }

    /// Key-value connection string for segment `i` over its unix socket
    /// (faster than TCP for bulk reads); `None` if the base dir path is too
    /// long for a socket path. Panics if `i >= len()`.
    pub fn socket_conninfo(&self, i: usize) -> Option<String> {
        let seg = &self.segments[i];
        seg.socket_dir.as_ref().map(|dir| {
            format!(
                "host={} port={} user={SUPERUSER} dbname={DATABASE}",
                dir.display(),
                seg.port()
            )
        })
    }

    /// TCP port of segment `i`. Panics if `i >= len()`.
    pub fn port(&self, i: usize) -> u16 {
        self.segments[i].port()
    }

    /// The directory that holds every segment (and `cluster.json`).
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Data directory of segment `i`. Panics if `i >= len()`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.segments[i].data_dir
    }

    /// Server log of segment `i`. Panics if `i >= len()`.
    pub fn log_file(&self, i: usize) -> PathBuf {
        self.segments[i].log_file()
    }

    /// PID of segment `i`'s postmaster (from `postmaster.pid`), `None` when
    /// it is not running. Panics if `i >= len()`.
    pub fn postmaster_pid(&self, i: usize) -> Option<u32> {
        self.segments[i].postmaster_pid().map(|p| p as u32)
    }

    /// Connects to segment `i` as the superuser; the connection task is
    /// spawned on the current tokio runtime.
    pub async fn client(&self, i: usize) -> Result<tokio_postgres::Client> {
        let seg = self.segment(i)?;
        let (client, conn) =
            tokio_postgres::connect(&seg.conninfo(DATABASE), tokio_postgres::NoTls)
                .await
                .map_err(|e| Error::from_pg(&format!("connecting to segment {i}"), e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("segment {i} connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// Fast-stops segment `i` (active sessions are terminated, as when a
    /// segment fails); its port and data stay, so [`Self::start_segment`]
    /// brings it back at the same URL.
    pub async fn stop_segment(&self, i: usize) -> Result<()> {
        self.segment(i)?.stop(self.stop_timeout).await;
        Ok(())
    }

    /// Starts segment `i` again on its old port after [`Self::stop_segment`];
    /// does nothing if it runs.
    pub async fn start_segment(&self, i: usize) -> Result<()> {
        let seg = self.segment(i)?;
        if seg.postmaster_pid().is_some() {
            return self.wait_ready(i, "postgres").await;
        }
        self.launch_and_wait(i, true).await
    }

    /// Makes segment `i` take TCP connections over TLS only, as a cluster
    /// whose `pg_hba.conf` has only `hostssl` lines: it serves `cert_pem`
    /// (its key `key_pem`) with `ssl = on`, trusts the superuser and asks
    /// other roles for their password, over TLS; `local` connections stay
    /// trusted, and this cluster's own connections ([`Self::client`]) use
    /// them from now on. Restarts the segment on its port; needs its unix
    /// socket.
    pub async fn require_tls(&self, i: usize, cert_pem: &str, key_pem: &str) -> Result<()> {
        let seg = self.segment(i)?;
        if seg.socket_dir.is_none() {
            return Err(Error::Config(format!(
                "segment {i} has no unix socket (its directory's path is too long), which a \
                 TLS-only segment's own connections need: use a shorter base dir"
            )));
        }
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = seg.data_dir.join(name);
            // The server refuses a key that others may read.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io_config("creating", &path, e))?;
            file.write_all(pem.as_bytes())
                .map_err(|e| io_config("writing", &path, e))?;
            if let Some(user) = &self.run_as {
                nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).map_err(|e| {
                    Error::Config(format!("chown {} to {}: {e}", path.display(), user.name))
                })?;
            }
        }
        let hba_path = seg.data_dir.join("pg_hba.conf");
        let hba = format!(
            "# hopper: TCP over TLS only; superuser trusted, other roles by password\n\
             local all all trust\n\
             hostssl all {SUPERUSER} 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n"
        );
        fs::write(&hba_path, hba).map_err(|e| io_config("writing", &hba_path, e))?;
        let conf_path = seg.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| {
                f.write_all(
                    b"\n# hopper: TLS\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                )
            })
            .map_err(|e| io_config("writing", &conf_path, e))?;
        seg.tls_only.store(true, Ordering::SeqCst);
        self.write_manifest()?;
        self.stop_segment(i).await?;
        self.start_segment(i).await
    }

    fn segment(&self, i: usize) -> Result<&Segment> {
        self.segments.get(i).ok_or_else(|| {
            Error::Config(format!(
                "segment {i} does not exist (the cluster has {})",
                self.len()
            ))
        })
    }

    /// initdb, configure, start and create the database for segment `i`.
    async fn init_and_start(&self, i: usize, settings: &[(String, String)]) -> Result<()> {
        let seg = &self.segments[i];
        prepare_dir(&seg.dir, self.run_as.as_ref())?;
        let mut cmd = self.as_server_user(&self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&seg.data_dir)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        let out = tokio::process::Command::from(cmd)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Unavailable(format!("running initdb for segment {i}: {e}")))?;
        if !out.status.success() {
            return Err(Error::Unavailable(format!(
                "initdb for segment {i} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        write_config(seg, settings)?;
        self.launch_and_wait(i, false).await?;
        let client = self.connect_to(i, "postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .map_err(|e| Error::from_pg(&format!("creating database on segment {i}"), e))?;
        Ok(())
    }

    /// For `attach`: adopt a running postmaster, else start the segment.
    async fn adopt_or_start(&self, i: usize) -> Result<()> {
        let seg = &self.segments[i];
        if !seg.data_dir.join("PG_VERSION").exists() {
            return Err(Error::Config(format!(
                "segment {i}'s data dir {} is missing or not initialized",
                seg.data_dir.display()
            )));
        }
        if seg.postmaster_pid().is_some() {
            return self.wait_ready(i, DATABASE).await;
        }
        self.launch_and_wait(i, false).await
    }

    /// Starts the postmaster of segment `i` and waits for a connection.
    /// With `fixed_port` false the port may change when it is taken.
    async fn launch_and_wait(&self, i: usize, fixed_port: bool) -> Result<()> {
        let seg = &self.segments[i];
        let mut last_err = None;
        for attempt in 0..PORT_ATTEMPTS {
            if seg.port() == 0 || (!fixed_port && attempt > 0) {
                seg.port.store(free_port()?, Ordering::SeqCst);
            }
            self.spawn_postmaster(i)?;
            match self.wait_ready(i, "postgres").await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // Stopped first, so that the log holds the server's last word.
                    seg.stop(self.stop_timeout).await;
                    let in_use = fs::read_to_string(seg.log_file())
                        .map(|log| log_tail(&log).contains("Address already in use"))
                        .unwrap_or(false);
                    if !in_use || fixed_port {
                        return Err(e);
                    }
                    tracing::debug!("segment {i}: port {} taken, retrying", seg.port());
                    // The log should show only this attempt's failure next time.
                    let _ = fs::write(seg.log_file(), b"");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Unavailable(format!("segment {i} did not start"))))
    }

    fn spawn_postmaster(&self, i: usize) -> Result<()> {
        let seg = &self.segments[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(seg.log_file())
            .map_err(|e| io_config("opening server log", &seg.log_file(), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_config("opening server log", &seg.log_file(), e))?;
        let socket_dir = seg
            .socket_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut cmd = self.as_server_user_exec(&self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&seg.data_dir)
            .args(["-p", &seg.port().to_string(), "-k", &socket_dir])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .map_err(|e| Error::Unavailable(format!("starting postgres for segment {i}: {e}")))?;
        seg.proc().child = Some(child);
        Ok(())
    }

    /// Polls until segment `i` accepts a connection to `database` and proves
    /// to be our server (its `data_directory`), the server process exits, or
    /// the startup timeout passes.
    async fn wait_ready(&self, i: usize, database: &str) -> Result<()> {
        let seg = &self.segments[i];
        let deadline = Instant::now() + self.startup_timeout;
        let want = fs::canonicalize(&seg.data_dir).unwrap_or_else(|_| seg.data_dir.clone());
        loop {
            let spawned_and_gone = {
                let mut proc = seg.proc();
                match proc.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => {
                        proc.child = None;
                        Some(status.to_string())
                    }
                    _ => None,
                }
            };
            if let Some(status) = spawned_and_gone {
                return Err(self.start_error(i, &format!("the server exited ({status})")));
            }
            // Bounded: a stranger holding the port may accept and never answer.
            let probe =
                tokio::time::timeout(Duration::from_secs(1), self.data_directory(i, database));
            if let Ok(Ok(dir)) = probe.await {
                if fs::canonicalize(&dir).unwrap_or_else(|_| PathBuf::from(&dir)) == want {
                    let pid = seg.postmaster_pid();
                    seg.proc().pid = pid;
                    return Ok(());
                }
                return Err(self.start_error(
                    i,
                    &format!("port {} is served by another cluster ({dir})", seg.port()),
                ));
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(
                    i,
                    &format!("no connection within {:?}", self.startup_timeout),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn data_directory(&self, i: usize, database: &str) -> Result<String> {
        let client = self.connect_to(i, database).await?;
        let row = client
            .query_one("SHOW data_directory", &[])
            .await
            .map_err(|e| Error::from_pg("reading data_directory", e))?;
        row.try_get(0)
            .map_err(|e| Error::from_pg("reading data_directory", e))
    }

    async fn connect_to(&self, i: usize, database: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) =
            tokio_postgres::connect(&self.segments[i].conninfo(database), tokio_postgres::NoTls)
                .await
                .map_err(|e| Error::from_pg(&format!("connecting to segment {i}"), e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    fn start_error(&self, i: usize, what: &str) -> Error {
        let seg = &self.segments[i];
        let tail = fs::read_to_string(seg.log_file())
            .map(|log| log_tail(&log).to_string())
            .unwrap_or_else(|e| format!("(no log: {e})"));
        Error::Unavailable(format!(
            "segment {i} (port {}, data {}) did not start: {what}; server log {}:\n{tail}",
            seg.port(),
            seg.data_dir.display(),
            seg.log_file().display()
        ))
    }

    /// A command that runs `program` as the server user, waiting for it
    /// (`runuser` stays as the parent).
    fn as_server_user(&self, program: &Path) -> Command {
        match &self.run_as {
            None => Command::new(program),
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", &user.name, "--"]).arg(program);
                cmd
            }
        }
    }

    /// Like [`Self::as_server_user`], but `setpriv` execs `program`, so the
    /// spawned child *is* the program (a postmaster we can reap).
    fn as_server_user_exec(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) if which("setpriv").is_some() => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
            _ => self.as_server_user(program),
        }
    }

    fn write_manifest(&self) -> Result<()> {
        let manifest = Manifest {
            bin_dir: self.bin_dir.clone(),
            os_user: self.run_as.as_ref().map(|u| u.name.clone()),
            segments: self
                .segments
                .iter()
                .map(|s| SegmentManifest {
                    port: s.port(),
                    data_dir: s.data_dir.clone(),
                    socket_dir: s.socket_dir.clone(),
                    tls_only: s.tls_only.load(Ordering::SeqCst),
                })
                .collect(),
        };
        let path = self.base_dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("encoding {MANIFEST_FILE}: {e}")))?;
        fs::write(&path, text).map_err(|e| io_config("writing", &path, e))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // All segments shut down in parallel; each gets the full timeout.
        for seg in &self.segments {
            seg.begin_stop();
        }
        let deadline = Instant::now() + self.stop_timeout;
        while !self.segments.iter().all(Segment::exited) {
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        // Past the timeout: kill what is left (postmaster and backends).
        for seg in &self.segments {
            if !seg.exited() {
                tracing::warn!(
                    "a segment under {} ignored fast shutdown; killing it",
                    self.base_dir.display()
                );
                seg.force_stop();
            }
        }
        // `temp`, if any, is removed when the field drops right after this.
    }
}

/// The directory with PostgreSQL's server binaries: `HOPPER_PG_BIN`, else
/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HOPPER_PG_BIN") {
        return check_bin_dir(Path::new(&dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if let Ok(dir) = check_bin_dir(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let version = name
                .split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions
        .into_iter()
        .rev()
        .find(|(_, d)| check_bin_dir(d).is_ok())
    {
        return Ok(dir);
    }
    Err(Error::Config(
        "PostgreSQL server binaries (initdb, postgres) not found: install them with \
         `apt-get install postgresql`, or point HOPPER_PG_BIN at their directory"
            .into(),
    ))
}

/// Whether PostgreSQL server binaries can be found (tests skip without them).
pub fn postgres_available() -> bool {
    find_bin_dir().is_ok()
}

fn check_bin_dir(dir: &Path) -> Result<PathBuf> {
    for program in ["initdb", "postgres"] {
        if !dir.join(program).is_file() {
            return Err(Error::Config(format!(
                "{} has no `{program}`: install the server with `apt-get install postgresql` \
                 or set HOPPER_PG_BIN to the directory holding initdb and postgres",
                dir.display()
            )));
        }
    }
    Ok(dir.to_path_buf())
}

/// `None` when not root; else the OS user the servers run as: `postgres` if
/// it exists, else a system user `hopper`, created on first use.
fn service_user() -> Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let lookup = |name: &str| -> Result<Option<RunAs>> {
        Ok(User::from_name(name)
            .map_err(|e| Error::Config(format!("looking up OS user {name}: {e}")))?
            .map(|u| RunAs {
                name: u.name,
                uid: u.uid,
                gid: u.gid,
            }))
    };
    for name in ["postgres", SUPERUSER] {
        if let Some(user) = lookup(name)? {
            return Ok(Some(user));
        }
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(SUPERUSER)
        .output();
    // A concurrent caller may have created it first: look again either way.
    if let Some(user) = lookup(SUPERUSER)? {
        return Ok(Some(user));
    }
    let detail = match out {
        Ok(o) => String::from_utf8_lossy(&o.stderr).to_string(),
        Err(e) => e.to_string(),
    };
    Err(Error::Config(format!(
        "PostgreSQL refuses to run as root and no `postgres` user exists; \
         creating system user `{SUPERUSER}` failed: {detail}"
    )))
}

/// Creates `dir` and hands it to the server user, who must write below it.
fn prepare_dir(dir: &Path, run_as: Option<&RunAs>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_config("creating", dir, e))?;
    if let Some(user) = run_as {
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::Config(format!("chown {} to {}: {e}", dir.display(), user.name)))?;
        check_reachable(dir, user)?;
    }
    Ok(())
}

/// The server user must be able to traverse every parent of `dir` (a base
/// dir under root's 0700 home is not), or initdb fails obscurely.
fn check_reachable(dir: &Path, user: &RunAs) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let searchable = if meta.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(Error::Config(format!(
                "the database servers run as OS user `{}`, which cannot reach {}: {} is not \
                 searchable by it; put the cluster elsewhere (e.g. under /tmp or /var/tmp) \
                 or `chmod o+x {}`",
                user.name,
                dir.display(),
                ancestor.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
}

/// The segment dir doubles as socket dir unless its socket path would be
/// too long for the kernel; then the segment is reachable over TCP only.
fn socket_dir_for(dir: &Path) -> Option<PathBuf> {
    let longest = dir.join(".s.PGSQL.65535.lock");
    (longest.as_os_str().len() <= MAX_SOCKET_PATH).then(|| dir.to_path_buf())
}

/// Client authentication: the superuser and unix sockets are trusted (the
/// harness and the server's own segment URLs carry no password); every
/// other role logs in over TCP with its password, so that a flight-server
/// with `--auth database` has its users' passwords checked by the segment.
fn write_hba(seg: &Segment) -> Result<()> {
    let path = seg.data_dir.join("pg_hba.conf");
    let hba = format!(
        "# hopper: superuser trusted, other roles by password\n\
         local all all trust\n\
         host all {SUPERUSER} 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n"
    );
    fs::write(&path, hba).map_err(|e| io_config("writing", &path, e))
}

fn write_config(seg: &Segment, extra: &[(String, String)]) -> Result<()> {
    write_hba(seg)?;
    let path = seg.data_dir.join("postgresql.conf");
    let mut conf = String::from(
        "\n# hopper: a scratch segment; durability traded for load and scan speed\n\
         listen_addresses = '127.0.0.1'\n\
         max_connections = 100\n\
         shared_buffers = 128MB\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         wal_level = minimal\n\
         max_wal_senders = 0\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] '\n",
    );
    for (name, value) in extra {
        conf.push_str(&format!("{name} = {value}\n"));
    }
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| io_config("opening", &path, e))?;
    file.write_all(conf.as_bytes())
        .map_err(|e| io_config("writing", &path, e))
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Unavailable(format!("finding a free loopback port: {e}")))
}

fn log_tail(log: &str) -> &str {
    const TAIL: usize = 2000;
    if log.len() <= TAIL {
        return log;
    }
    let mut start = log.len() - TAIL;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

/// Alive and not a zombie (an exited child of a parent that does not reap,
/// e.g. a postmaster re-parented to an init that does not reap).
fn pid_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => false,
        _ => match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => proc_state(&stat) != Some('Z'),
            Err(_) => !Path::new("/proc/self").exists(),
        },
    }
}

fn is_postgres(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => matches!(comm.trim(), "postgres" | "postmaster"),
        // Without /proc we cannot tell; trust postmaster.pid.
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// The state letter of a `/proc/PID/stat` line (after the parenthesized name).
fn proc_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// PIDs whose parent is `ppid` (a postmaster's backends and helpers).
fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .to_string();
                    rest.parse::<i32>().ok()
                })
                == Some(ppid)
        })
        .collect()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn io_config(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running_pids(cluster: &LocalCluster) -> Vec<i32> {
        (0..cluster.len())
            .map(|i| cluster.postmaster_pid(i).expect("segment runs") as i32)
            .collect()
    }

    #[tokio::test]
    async fn three_segments_hold_a_loaded_table_and_leave_nothing_behind_on_drop() {
        let cluster = LocalCluster::start(3, ClusterOptions::default())
            .await
            .unwrap();
        assert_eq!(cluster.len(), 3);
        let stats = load_criteo(&cluster, "criteo", 10_000, 42).await.unwrap();
        assert_eq!(stats.rows, 10_000);
        assert_eq!(stats.rows_per_segment.iter().sum::<u64>(), 10_000);

        let mut labels = 0i64;
        for i in 0..3 {
            let client = cluster.client(i).await.unwrap();
            let row = client
                .query_one(
                    "SELECT count(*), sum(label)::bigint, min(id), max(id) FROM criteo",
                    &[],
                )
                .await
                .unwrap();
            let count: i64 = row.get(0);
            assert_eq!(count as u64, stats.rows_per_segment[i]);
            labels += row.get::<_, i64>(1);
            // Placement follows the documented hash.
            let ids = client
                .query("SELECT id FROM criteo LIMIT 100", &[])
                .await
                .unwrap();
            for r in ids {
                assert_eq!(segment_of(r.get::<_, i64>(0) as u64, 3), i);
            }
        }
        let mean = labels as f64 / 10_000.0;
        assert!(
            (mean - datagen::CRITEO_BASE_RATE).abs() < 0.03,
            "label mean {mean}"
        );

        let pids = running_pids(&cluster);
        let base = cluster.base_dir().to_path_buf();
        assert!(base.join(MANIFEST_FILE).is_file());
        drop(cluster);
        for pid in pids {
            assert!(!pid_alive(pid), "postmaster {pid} survived the drop");
        }
        assert!(
            !base.exists(),
            "temp base dir {} not removed",
            base.display()
        );
    }

    #[tokio::test]
    async fn a_panicking_owner_still_stops_its_segments() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let owner = tokio::spawn(async move {
            let cluster = LocalCluster::start(2, ClusterOptions::default())
                .await
                .unwrap();
            let _ = tx.send((running_pids(&cluster), cluster.base_dir().to_path_buf()));
            panic!("test body failed while holding the cluster");
        });
        assert!(owner.await.unwrap_err().is_panic());
        let (pids, base) = rx.await.unwrap();
        for pid in pids {
            assert!(!pid_alive(pid), "postmaster {pid} outlived the panic");
        }
        assert!(!base.exists());
    }

    #[tokio::test]
    async fn a_kept_cluster_can_be_attached_and_a_stopped_one_restarted() {
        let scratch = tempfile::tempdir().unwrap();
        let base = scratch.path().join("cluster");
        let cluster = LocalCluster::start(2, ClusterOptions::default().with_base_dir(&base))
            .await
            .unwrap();
        cluster
            .client(1)
            .await
            .unwrap()
            .batch_execute("CREATE TABLE t AS SELECT 7 AS x")
            .await
            .unwrap();
        let pids = running_pids(&cluster);
        let kept = cluster.keep();
        // Attach right away so a failing assertion below still stops the servers.
        let attached = kept.attach().await.unwrap();
        assert_eq!(attached.segment_urls(), kept.segment_urls());
        assert_eq!(running_pids(&attached), pids, "running servers are adopted");
        let x: i32 = attached
            .client(1)
            .await
            .unwrap()
            .query_one("SELECT x FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(x, 7);

        // Dropping an attached cluster stops it but keeps a given base dir.
        drop(attached);
        for pid in &pids {
            assert!(!pid_alive(*pid));
        }
        assert!(base.join(MANIFEST_FILE).is_file());
        let restarted = LocalCluster::attach(&base).await.unwrap();
        assert_eq!(restarted.len(), 2);
        let x: i32 = restarted
            .client(1)
            .await
            .unwrap()
            .query_one("SELECT x FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(x, 7, "data survives a stop and restart");
        let again = running_pids(&restarted);
        drop(restarted);
        for pid in again {
            assert!(!pid_alive(pid));
        }
    }

    #[tokio::test]
    async fn attach_moves_a_segment_whose_port_was_taken_meanwhile() {
        let scratch = tempfile::tempdir().unwrap();
        let base = scratch.path().join("cluster");
        let cluster = LocalCluster::start(1, ClusterOptions::default().with_base_dir(&base))
            .await
            .unwrap();
        let old_port = cluster.port(0);
        drop(cluster);
        let squatter = TcpListener::bind(("127.0.0.1", old_port)).unwrap();
        let cluster = LocalCluster::attach(&base).await.unwrap();
        assert_ne!(cluster.port(0), old_port);
        cluster
            .client(0)
            .await
            .unwrap()
            .simple_query("SELECT 1")
            .await
            .unwrap();
        let manifest = fs::read_to_string(base.join(MANIFEST_FILE)).unwrap();
        assert!(
            manifest.contains(&cluster.port(0).to_string()),
            "{manifest}"
        );
        drop(squatter);
    }

    #[tokio::test]
    async fn a_stopped_segment_is_unavailable_until_started_again_at_the_same_url() {
        let cluster = LocalCluster::start(2, ClusterOptions::default())
            .await
            .unwrap();
        let url = cluster.url(0);
        let session = cluster.client(0).await.unwrap();
        cluster.stop_segment(0).await.unwrap();
        assert!(cluster.postmaster_pid(0).is_none());
        assert!(
            session.simple_query("SELECT 1").await.is_err(),
            "session was terminated"
        );
        match cluster.client(0).await {
            Err(Error::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // The other segment is unaffected.
        cluster
            .client(1)
            .await
            .unwrap()
            .simple_query("SELECT 1")
            .await
            .unwrap();
        cluster.start_segment(0).await.unwrap();
        assert_eq!(cluster.url(0), url);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.simple_query("SELECT 1").await.unwrap();
    }

    #[tokio::test]
    async fn images_load_as_3072_float_arrays_with_ten_classes() {
        let cluster = LocalCluster::start(1, ClusterOptions::default())
            .await
            .unwrap();
        let stats = load_images(&cluster, "images", 300, 1).await.unwrap();
        assert_eq!(stats.rows_per_segment, vec![300]);
        let row = cluster
            .client(0)
            .await
            .unwrap()
            .query_one(
                "SELECT min(array_length(pixels, 1)), max(array_length(pixels, 1)), \
                 count(DISTINCT label), min(label), max(label) FROM images",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 3072);
        assert_eq!(row.get::<_, i32>(1), 3072);
        assert_eq!(row.get::<_, i64>(2), 10);
        assert_eq!((row.get::<_, i32>(3), row.get::<_, i32>(4)), (0, 9));
    }

    #[tokio::test]
    async fn a_base_dir_the_server_user_cannot_reach_is_refused_with_advice() {
        // Only root hits the unreachable-directory path (other users run
        // PostgreSQL as themselves); CI runs as root.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        use std::os::unix::fs::PermissionsExt as _;
        let scratch = tempfile::tempdir().unwrap();
        fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let opts = ClusterOptions::default().with_base_dir(scratch.path().join("cluster"));
        let err = LocalCluster::start(1, opts).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("chmod o+x"), "{err}");
    }

    #[test]
    fn missing_binaries_name_the_fix() {
        let err = check_bin_dir(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
    }
}
