//! Running `mop train` from a test and reading what it did: its JSON
//! progress events while it runs, the model files it leaves, and whether
//! the processes it started are gone.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{binary, ChildGuard};

/// How long any one `mop train` may take before a test gives up.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// `mop train --progress json --config <config> <extra>` with `env` set;
/// its JSON events arrive on the receiver (read by a thread, which ends
/// when `mop` closes its stdout).
pub fn spawn_mop_train(
    config: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (ChildGuard, mpsc::Receiver<Value>) {
    let child = Command::new(binary("mop").unwrap())
        .args(["train", "--progress", "json", "--config"])
        .arg(config)
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("mop train", child);
    let stdout = guard.take_stdout().expect("mop's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    (guard, rx)
}

/// Runs `mop train` to completion (it must succeed); returns its events.
pub fn mop_train(config: &Path, extra: &[&str]) -> Vec<Value> {
    let (mut guard, rx) = spawn_mop_train(config, extra, &[]);
    let status = guard.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(status.success(), "mop train {config:?} failed: {status}");
    rx.iter().collect()
}

/// Collects events into `seen` until one satisfies `want` (`what` names it
/// in the panic if none comes within [`RUN_TIMEOUT`]).
pub fn wait_for(
    rx: &mpsc::Receiver<Value>,
    seen: &mut Vec<Value>,
    what: &str,
    want: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no {what} event: {e}"));
        let found = want(&v);
        seen.push(v);
        if found {
            return;
        }
    }
}

/// Whether `v` is an event named `name`.
pub fn is_event(v: &Value, name: &str) -> bool {
    v["event"] == name
}

/// How many events are named `name`.
pub fn count(events: &[Value], name: &str) -> usize {
    events.iter().filter(|v| is_event(v, name)).count()
}

/// Whether process `pid` is gone (or a zombie that no longer runs).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// The model files of a finished run, by name.
pub fn model_files(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.join("models"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Fails unless runs `a` and `b` wrote the same `models` model files, byte
/// for byte.
pub fn assert_same_models(a: &Path, b: &Path, models: usize) {
    let (fa, fb) = (model_files(a), model_files(b));
    assert_eq!(fa.len(), models, "{a:?} has {} model files", fa.len());
    assert_eq!(
        fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
        fb.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{name} differs between {a:?} and {b:?}");
    }
}

/// A finished run's `results.json`.
pub fn results(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// A run configuration's text (with `threads = 1` under `[train]`) that
/// uses `trainers`, already running, instead of spawning its own.
pub fn with_trainers(config: &str, trainers: &[crate::TrainerProcess]) -> String {
    let addresses: Vec<String> = trainers
        .iter()
        .map(|t| format!("{:?}", t.address))
        .collect();
    assert!(config.contains("threads = 1\n"), "{config}");
    config.replace(
        "threads = 1\n",
        &format!("threads = 1\naddresses = [{}]\n", addresses.join(", ")),
    )
}
