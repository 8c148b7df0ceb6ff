//! A flight-server over a devcluster's segments, as the benchmarks start
//! one: `--auth none` on a free loopback port, its URL read from the line
//! it prints when it listens.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
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

/// The `flight-server` and `mop` binaries beside this benchmark's own
/// executable (the same build); an error saying how to build them (`build`)
/// when either is missing.
pub fn binaries(build: &str) -> Result<(PathBuf, PathBuf)> {
    let here = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (server_bin, mop_bin) = (here.join("flight-server"), here.join("mop"));
    for b in [&server_bin, &mop_bin] {
        if !b.exists() {
            bail!("{} is missing: {build}", b.display());
        }
    }
    Ok((server_bin, mop_bin))
}
