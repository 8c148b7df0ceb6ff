//! A flight-server over a devcluster's segments, as the benchmarks start
//! one: `--auth none` on a free loopback port, its URL read from the line
//! it prints when it listens.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use devcluster::LocalCluster;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running flight-server, killed on drop.
pub struct Server {
    child: tokio::process::Child,
    /// Where it listens (`grpc://…`).
    pub url: String,
}

impl Server {
    /// Starts `bin` over every segment of `cluster`.
    pub async fn start(bin: &Path, cluster: &LocalCluster) -> Result<Self> {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["--bind", "127.0.0.1:0", "--auth", "none"]);
        for url in cluster.segment_urls() {
            cmd.args(["--segment", &url]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let url = line
            .trim()
            .strip_prefix("flight-server listening on ")
            .with_context(|| format!("flight-server printed {line:?}"))?
            .to_string();
        Ok(Self { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
