//! Shared harness for hopper's end-to-end tests: real processes on free
//! ports, torn down on drop.
//!
//! The binaries under test are the workspace's own (`flight-server`,
//! `mop`), built by `cargo test --workspace` / `cargo nextest run
//! --workspace` next to the test executables.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub mod run;

/// Path of a workspace binary (`flight-server`, `mop`), built if stale.
///
/// A test build (`cargo test`, `cargo nextest run`) builds no binary of a
/// package without integration tests of its own, so each test process asks
/// cargo once for `cargo build --workspace --bins` (what `scripts/test.sh`
/// runs before the tests, so there it is a no-op). It must name the whole
/// workspace: `cargo build -p flight-server` unifies the features of shared
/// dependencies over that one package, so it would rebuild most of the
/// tree with other features, and the next build would rebuild it back.
pub fn binary(name: &str) -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    // Test executables live in target/<profile>/deps/; binaries one level up.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| anyhow!("unexpected test executable path {exe:?}"))?;
    let path = dir.join(name);
    let mut built = BUILT.lock().map_err(|_| anyhow!("poisoned"))?;
    if !*built {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--workspace",
            "--bins",
            "--features",
            "mop/demo",
            "--quiet",
        ]);
        // What cargo set for this test process is no input of the build:
        // some build scripts (ring's) rerun when CARGO_MANIFEST_DIR differs,
        // which would rebuild everything above them here and again in the
        // next test build.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd
            .stdout(Stdio::null())
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --workspace --bins failed (building {name})");
        }
        *built = true;
    }
    if !path.exists() {
        bail!("{} is not built", path.display());
    }
    Ok(path)
}

/// A child process that is killed (and reaped) when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
}

impl ChildGuard {
    /// Wraps a spawned child.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            child: Some(child),
            name: name.into(),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Kills the child now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (e.g. `libc::SIGINT`).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self.pid() as i32;
        if pid == 0 {
            bail!("{} is not running", self.name);
        }
        let sig = nix::sys::signal::Signal::try_from(sig)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
        Ok(())
    }

    /// Waits for the child to exit, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} already reaped", self.name))?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The loopback address where tests pick ports ahead of the process that
/// binds them (`--metrics`, a server on an agreed port, an MLflow server).
/// No test binds port 0 or dials from it, so between the pick and the bind
/// no other server's listener or client socket can take the port; other
/// addresses are shared with servers that bind port 0.
pub const PICKED_PORTS_IP: &str = "127.0.0.9";

/// `N` distinct ports on `ip` that were free a moment ago: each is held
/// until all are chosen, so no two are the same.
pub fn free_ports<const N: usize>(ip: &str) -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind((ip, 0)).expect("a free port on a loopback address"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A port on `ip` that was free a moment ago.
pub fn free_port(ip: &str) -> u16 {
    free_ports::<1>(ip)[0]
}

/// An address for a server's `--metrics`, on [`PICKED_PORTS_IP`].
pub fn metrics_addr() -> String {
    format!("{PICKED_PORTS_IP}:{}", free_port(PICKED_PORTS_IP))
}

/// A running `flight-server` process.
pub struct FlightServer {
    /// The process.
    pub process: ChildGuard,
    /// `grpc+tcp://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl FlightServer {
    /// Starts `flight-server --bind 127.0.0.1:0 <args>` and waits for its address line.
    pub fn start(args: &[&str]) -> Result<Self> {
        let (process, line) = Self::spawn("127.0.0.1:0", args)?;
        let url = listening_url(&line)
            .ok_or_else(|| anyhow!("flight-server did not start; it printed {line:?}"))?;
        let addr = url
            .trim_start_matches("grpc+tcp://")
            .trim_start_matches("grpc+tls://")
            .to_string();
        Ok(Self { process, url, addr })
    }

    /// Starts `flight-server --bind 127.0.0.1:0 <args>` exactly as given:
    /// with no `--auth` in `args` the server's own default applies, as it
    /// does for a user who names none.
    pub fn start_as_deployed(args: &[&str]) -> Result<Self> {
        let (process, line) = Self::spawn_with("127.0.0.1:0", args, false)?;
        let url = listening_url(&line)
            .ok_or_else(|| anyhow!("flight-server did not start; it printed {line:?}"))?;
        let addr = url.trim_start_matches("grpc+tcp://").to_string();
        Ok(Self { process, url, addr })
    }

    /// Spawns the server on `bind`; returns it and its first stdout line.
    /// Authentication is on by default; a test that does not name `--auth`
    /// asks for `--auth none` (its servers bind loopback only).
    fn spawn(bind: &str, args: &[&str]) -> Result<(ChildGuard, String)> {
        Self::spawn_with(bind, args, true)
    }

    fn spawn_with(bind: &str, args: &[&str], auth_none: bool) -> Result<(ChildGuard, String)> {
        let bin = binary("flight-server")?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--bind", bind]);
        if auth_none && !args.contains(&"--auth") {
            cmd.args(["--auth", "none"]);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {bin:?}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let guard = ChildGuard::new("flight-server", child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        Ok((guard, line))
    }
}

/// The URL in flight-server's first line (`flight-server listening on URL`).
fn listening_url(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix("flight-server listening on ")
        .map(str::to_owned)
}

/// The Python with pyarrow that `scripts/setup.sh` prepared (`HOPPER_PYTHON`).
pub fn python() -> Option<PathBuf> {
    std::env::var_os("HOPPER_PYTHON").map(PathBuf::from)
}

/// Runs `tests/python/<script> <args>` with `env` under [`python`] and
/// returns what it did (panics if there is no `HOPPER_PYTHON`).
pub fn python_script(
    script: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    env: &[(&str, &str)],
) -> std::process::Output {
    let py = python().expect("HOPPER_PYTHON is not set: run the tests through scripts/test.sh");
    Command::new(py)
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("python")
                .join(script),
        )
        .args(args.iter().map(|a| a.as_ref()))
        .envs(env.iter().copied())
        .output()
        .expect("running python")
}

/// [`python_script`], which must succeed; its stdout parsed as JSON.
pub fn python_json(
    script: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let out = python_script(script, args, env);
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Starts a local cluster of `n` PostgreSQL segments for a test.
pub async fn cluster(n: usize) -> Result<devcluster::LocalCluster> {
    devcluster::LocalCluster::start(n, Default::default())
        .await
        .context("starting local PostgreSQL segments")
}

/// `--segment URL` arguments for every segment of `cluster`.
pub fn segment_args(cluster: &devcluster::LocalCluster) -> Vec<String> {
    cluster
        .segment_urls()
        .into_iter()
        .flat_map(|u| ["--segment".to_string(), u])
        .collect()
}

/// A flight-server over every segment of `cluster`, with `--auth MODE`
/// (`database` or `none`) and `extra` arguments.
pub fn segments_server(
    cluster: &devcluster::LocalCluster,
    auth: &str,
    extra: &[&str],
) -> Result<FlightServer> {
    let mut args = segment_args(cluster);
    args.extend(["--auth".to_string(), auth.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FlightServer::start(&args)
}

/// Reads every endpoint of `sql` from a flight-server with the Rust client.
pub async fn read_all(
    url: &str,
    sql: &str,
) -> Result<(
    arrow_schema::SchemaRef,
    Vec<arrow_array::RecordBatch>,
    usize,
)> {
    use futures::TryStreamExt;
    let channel = tonic::transport::Endpoint::from_shared(url.replace("grpc+tcp://", "http://"))?
        .connect()
        .await?;
    let mut client = arrow_flight::FlightClient::new(channel);
    let info = client
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(sql.to_string()))
        .await?;
    let schema = std::sync::Arc::new(info.clone().try_decode_schema()?);
    let mut batches = Vec::new();
    let endpoints = info.endpoint.len();
    for ep in info.endpoint {
        let ticket = ep
            .ticket
            .ok_or_else(|| anyhow!("endpoint without ticket"))?;
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok((schema, batches, endpoints))
}

impl ChildGuard {
    /// Takes the child's piped standard output, to read it on another thread.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }
}

impl FlightServer {
    /// Starts `flight-server --bind <addr> <args>` on a fixed address (to
    /// restart a killed server where its clients expect it), retrying the
    /// bind for a few seconds while the old socket is released.
    pub fn start_on(addr: &str, args: &[&str]) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (guard, line) = Self::spawn(addr, args)?;
            if let Some(url) = listening_url(&line) {
                return Ok(Self {
                    process: guard,
                    url,
                    addr: addr.to_string(),
                });
            }
            if Instant::now() > deadline {
                bail!("flight-server did not start on {addr}; it printed {line:?}");
            }
            drop(guard);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Counts the flight-server's backends (`application_name =
/// hopper-flight-server`) on one PostgreSQL instance.
pub async fn flight_backends(client: &tokio_postgres::Client) -> Result<i64> {
    Ok(client.query_one(BACKENDS, &[]).await?.get(0))
}

/// Counts the flight-server's backends on a segment (`pg_stat_activity`).
pub const BACKENDS: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hopper-flight-server'";

/// A Flight client connected to `url` (`grpc+tcp://host:port`), without authentication.
pub async fn flight_client(url: &str) -> Result<arrow_flight::FlightClient> {
    Ok(arrow_flight::FlightClient::new(channel(url).await?))
}

/// A gRPC channel to a `grpc+tcp://` flight-server.
pub async fn channel(url: &str) -> Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(url.replace("grpc+tcp://", "http://"))?
            .connect()
            .await?,
    )
}

/// A Flight SQL client of the flight-server at `url`.
pub async fn flight_sql_client(
    url: &str,
) -> Result<arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>> {
    Ok(arrow_flight::sql::client::FlightSqlServiceClient::new(
        channel(url).await?,
    ))
}

/// The gRPC status inside a Flight client error (panics on any other error).
pub fn status_of(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("not a gRPC status: {other}"),
    }
}

/// A running `mop trainer` process.
pub struct TrainerProcess {
    /// The process.
    pub process: ChildGuard,
    /// The address it prints (`http://HOST:PORT`, `https://` with TLS).
    pub address: String,
}

impl TrainerProcess {
    /// Starts `mop trainer --bind <bind> --key-file <trainer_key_file()>
    /// <args>` with `envs` (TLS files, a login of its own) and waits for its
    /// address line. It inherits no login and no trainer key from the test's
    /// environment; a runner dials it with [`TRAINER_KEY_ENV`] set to
    /// [`trainer_key_file`]. With `--key-file` or `--no-auth` in `args`, the
    /// harness's key is left out.
    pub fn start(bind: &str, args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(binary("mop")?);
        cmd.args(["trainer", "--bind", bind]);
        if !args.iter().any(|a| *a == "--key-file" || *a == "--no-auth") {
            cmd.arg("--key-file").arg(trainer_key_file()?);
        }
        for var in [
            "HOPPER_FLIGHT_USER",
            "HOPPER_PASSWORD",
            "HOPPER_PASSWORD_FILE",
            TRAINER_KEY_ENV,
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning mop trainer")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let process = ChildGuard::new(format!("trainer on {bind}"), child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("mop trainer listening on ")
            .ok_or_else(|| anyhow!("mop trainer did not start on {bind}; it printed {line:?}"))?
            .to_string();
        Ok(Self { process, address })
    }
}

/// The environment variable naming the key file `mop train` proves itself
/// to trainers started by hand with.
pub const TRAINER_KEY_ENV: &str = "HOPPER_TRAINER_KEY_FILE";

/// The key file of the trainers the harness starts (32 random bytes, made
/// once in the target directory and shared by every test process).
pub fn trainer_key_file() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| anyhow!("unexpected test executable path {exe:?}"))?;
    let path = dir.join("hopper-tests-trainer.key");
    if !path.exists() {
        // Written aside and linked into place: a link never replaces a
        // file another test process made meanwhile, and no reader sees
        // half a key.
        let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::fs::write(tmp.path(), key)?;
        match std::fs::hard_link(tmp.path(), &path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
    }
    Ok(path)
}

/// A Flight Handshake with Basic credentials over `channel`, as pyarrow's
/// `authenticate_basic_token` sends it: the `Bearer …` header the server
/// answers with, or the status it refused with.
pub async fn handshake_on(
    channel: tonic::transport::Channel,
    user: &str,
    password: &str,
) -> std::result::Result<String, tonic::Status> {
    use base64::Engine as _;
    let mut raw = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(futures::stream::iter(vec![
        arrow_flight::HandshakeRequest::default(),
    ]));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let value = format!("Basic {basic}")
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("credentials are not a header value"))?;
    request.metadata_mut().insert("authorization", value);
    let response = raw.handshake(request).await?;
    let header = response
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !header.starts_with("Bearer ") {
        return Err(tonic::Status::internal(format!(
            "the handshake answered without a bearer token: {header:?}"
        )));
    }
    Ok(header)
}

/// A channel to `url` (`grpc+tcp://…`) whose connections come from
/// `local` (another loopback address stands in for another host).
pub async fn channel_from(
    url: &str,
    local: Option<std::net::IpAddr>,
) -> Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(url.replace("grpc+tcp://", "http://"))?
            .local_address(local)
            .connect()
            .await?,
    )
}
