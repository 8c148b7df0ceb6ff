//! Trainer processes: spawned locally (one per partition) or given as
//! addresses, and the gRPC clients that drive them, proving the trainer's
//! key on every call ([`hopper_proto::auth`]).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use hopper_proto::trainer_client::TrainerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use hopper_proto::auth::{Prover, TrainerKey, KEY_FILE_ENV};
use hopper_proto::{CONNECTION_WINDOW, MAX_MESSAGE, STREAM_WINDOW};

/// A client of one trainer: every call carries a proof of its key.
pub type Client = TrainerClient<InterceptedService<Channel, Prover>>;

/// The first line a trainer prints: scripts and the runner read the address from it.
pub const LISTENING: &str = "mop trainer listening on ";

/// A locally spawned trainer process, killed when dropped.
///
/// The trainer runs with `--exit-with-parent` and this struct holds its
/// standard input: when the runner dies, even by SIGKILL, the pipe closes
/// and the trainer exits. The same pipe hands it a fresh key of its own
/// first (`--key-stdin`): no other process on the host can use it, and the
/// key is in neither its arguments nor its environment.
pub struct LocalTrainer {
    child: Option<Child>,
    _stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The key it serves.
    pub key: TrainerKey,
}

impl LocalTrainer {
    /// Starts `<mop> trainer --bind 127.0.0.1:0` with a fresh key and reads
    /// its address.
    pub fn spawn(binary: &PathBuf, threads: usize) -> Result<Self> {
        let key = TrainerKey::generate();
        let mut child = Command::new(binary)
            .args([
                "trainer",
                "--exit-with-parent",
                "--key-stdin",
                "--bind",
                "127.0.0.1:0",
                "--threads",
            ])
            .arg(threads.to_string())
            // It reads as the runner's user with the tokens of the runner's
            // logins: it needs no password, nor the key of other trainers.
            .env_remove(KEY_FILE_ENV)
            .env_remove(flight_client::connect::PASSWORD_ENV)
            .env_remove(flight_client::connect::PASSWORD_FILE_ENV)
            .env_remove(flight_client::connect::USER_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Trainer {
                trainer: binary.display().to_string(),
                message: format!("cannot start: {e}"),
            })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Trainer {
            trainer: "local".into(),
            message: "no stdout".into(),
        })?;
        let mut stdin = child.stdin.take();
        if let Some(pipe) = stdin.as_mut() {
            // A trainer that died before reading it says so below.
            let _ = writeln!(pipe, "{}", key.to_hex()).and_then(|()| pipe.flush());
        }
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        let mut t = LocalTrainer {
            child: Some(child),
            _stdin: stdin,
            address: String::new(),
            key,
        };
        match (read, line.trim().strip_prefix(LISTENING)) {
            (Ok(_), Some(addr)) => {
                t.address = addr.to_string();
                // Anything else the trainer prints goes to our stderr; a
                // closed pipe would make its next print fail.
                std::thread::spawn(move || {
                    for line in reader.lines().map_while(std::result::Result::ok) {
                        let _ = writeln!(std::io::stderr(), "{line}");
                    }
                });
                Ok(t)
            }
            _ => Err(Error::Trainer {
                trainer: "local".into(),
                message: format!("did not start; it printed {line:?}"),
            }),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for LocalTrainer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client to a trainer with hopper's message limits, proving `key` (a
/// spawned trainer's own, or [`KEY_FILE_ENV`]'s for trainers started by
/// hand) on every call.
pub async fn connect(address: &str, key: Option<TrainerKey>) -> Result<Client> {
    let err = |m: String| Error::Trainer {
        trainer: address.to_string(),
        message: m,
    };
    let mut endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| err(format!("bad address: {e}")))?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_timeout(Duration::from_secs(10));
    if address.starts_with("https://") {
        endpoint = endpoint
            .tls_config(flight_client::connect::tls_config(address)?)
            .map_err(|e| err(format!("TLS settings: {e}")))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| err(format!("cannot connect: {e}")))?;
    Ok(TrainerClient::with_interceptor(channel, Prover::new(key))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}
