//! Trainers serve their runner only, and read as the runner's user: a
//! trainer with a key refuses calls that do not prove it, a trainer on a
//! network address without a key or client certificates does not start,
//! the trainers `mop train` spawns get keys of their own, and trainers
//! with no login of their own read a `--auth database` flight-server with
//! the Bearer tokens each runner hands them — so one fleet serves many users.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use hopper_proto::auth::{TrainerKey, PROOF_HEADER};
use hopper_proto::trainer_client::TrainerClient;
use hopper_proto::{
    FetchStateRequest, HealthRequest, OpenPartitionRequest, ReleaseStatesRequest, StateKey,
    TrainUnitRequest,
};
use hopper_tests::run::{count, is_event, spawn_mop_train, wait_for, with_trainers, RUN_TIMEOUT};
use hopper_tests::{
    binary, cluster, segment_args, trainer_key_file, FlightServer, TrainerProcess, TRAINER_KEY_ENV,
};
use tonic::transport::Channel;
use tonic::Code;

async fn raw_client(address: &str) -> TrainerClient<Channel> {
    TrainerClient::connect(address.to_string()).await.unwrap()
}

/// A request carrying `proof` (if any) in its metadata.
fn with_proof<T>(message: T, proof: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(p) = proof {
        r.metadata_mut().insert(PROOF_HEADER, p.parse().unwrap());
    }
    r
}

fn refused(s: tonic::Status, words: &str) {
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains(words), "{}", s.message());
    assert!(s.message().contains(TRAINER_KEY_ENV), "{}", s.message());
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_trainer_with_a_key_refuses_calls_without_a_fresh_proof_of_it() {
    let trainer =
        TrainerProcess::start("127.0.0.1:0", &["--threads".as_ref(), "1".as_ref()], &[]).unwrap();
    let mut c = raw_client(&trainer.address).await;

    // No proof: every method is refused, saying what to configure.
    let s = c
        .health(with_proof(HealthRequest {}, None))
        .await
        .unwrap_err();
    refused(s, "no proof");
    let s = c
        .open_partition(with_proof(OpenPartitionRequest::default(), None))
        .await
        .unwrap_err();
    refused(s, "no proof");
    let s = c
        .train_unit(with_proof(TrainUnitRequest::default(), None))
        .await
        .unwrap_err();
    refused(s, "no proof");
    // The states it keeps for other trainers: neither read nor dropped.
    let key = StateKey {
        model: 0,
        version: 1,
    };
    let s = c
        .fetch_state(with_proof(FetchStateRequest { key: Some(key) }, None))
        .await
        .unwrap_err();
    refused(s, "no proof");
    let s = c
        .release_states(with_proof(ReleaseStatesRequest { keys: vec![key] }, None))
        .await
        .unwrap_err();
    refused(s, "no proof");

    // A proof made with another key.
    let other = TrainerKey::new(vec![7; 32], "test").unwrap();
    let s = c
        .health(with_proof(HealthRequest {}, Some(&other.proof())))
        .await
        .unwrap_err();
    refused(s, "another key");

    // The trainer's key: accepted once, refused when replayed.
    let key = TrainerKey::from_file(&trainer_key_file().unwrap()).unwrap();
    let proof = key.proof();
    let health = c
        .health(with_proof(HealthRequest {}, Some(&proof)))
        .await
        .unwrap()
        .into_inner();
    assert!(!health.device.is_empty());
    let s = c
        .health(with_proof(HealthRequest {}, Some(&proof)))
        .await
        .unwrap_err();
    refused(s, "used before");
    let s = c
        .open_partition(with_proof(OpenPartitionRequest::default(), Some(&proof)))
        .await
        .unwrap_err();
    refused(s, "used before");

    // A proof of the key made a minute ago has expired.
    let stale = key.proof_at(now_millis() - 60_000, *uuid::Uuid::new_v4().as_bytes());
    let s = c
        .health(with_proof(HealthRequest {}, Some(&stale)))
        .await
        .unwrap_err();
    refused(s, "s old");

    // A fresh proof still works.
    c.health(with_proof(HealthRequest {}, Some(&key.proof())))
        .await
        .unwrap();
    // Past the proof, a state it does not keep is named as missing.
    let missing = StateKey {
        model: 4,
        version: 9,
    };
    let s = c
        .fetch_state(with_proof(
            FetchStateRequest { key: Some(missing) },
            Some(&key.proof()),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("model 4 version 9"), "{}", s.message());
}

#[test]
fn a_trainer_on_a_network_address_without_a_key_or_client_certificates_refuses_to_start() {
    let trainer = |args: &[&std::ffi::OsStr]| {
        Command::new(binary("mop").unwrap())
            .args(["trainer", "--bind", "0.0.0.0:0"])
            .args(args)
            .env_remove(TRAINER_KEY_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = trainer(&[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a key: {err}");
    for words in [
        "would train for anyone",
        "head -c 32 /dev/urandom > trainer.key",
        "--key-file",
        "--tls-client-ca",
        "--no-auth",
    ] {
        assert!(err.contains(words), "{words:?} in {err}");
    }
    assert!(out.stdout.is_empty(), "it listened: {:?}", out.stdout);

    // A key shorter than 32 bytes is refused, saying how to make one.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, b"sixteen bytes!!!").unwrap();
    let out = trainer(&["--key-file".as_ref(), short.as_os_str()])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a short key: {err}");
    assert!(
        err.contains("16 bytes") && err.contains("head -c 32 /dev/urandom"),
        "{err}"
    );

    // With a key, or told --no-auth, it starts.
    for args in [
        vec![
            OsString::from("--key-file"),
            trainer_key_file().unwrap().into_os_string(),
        ],
        vec![OsString::from("--no-auth")],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let t = TrainerProcess::start("0.0.0.0:0", &args, &[]).unwrap();
        assert!(t.address.starts_with("http://0.0.0.0:"), "{}", t.address);
    }
}

/// The environment of process `pid`, as `NAME=value` strings.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn no_login_in(pid: u32) {
    for var in environ(pid) {
        for name in ["HOPPER_FLIGHT_USER=", "HOPPER_PASSWORD", TRAINER_KEY_ENV] {
            assert!(!var.starts_with(name), "trainer {pid} has {var}");
        }
    }
}

fn run_config(dir: &std::path::Path, name: &str, url: &str, table: &str, cache: &str) -> String {
    format!(
        r#"
[source]
flight = "{url}"
table = "{table}"
validation = {{ fraction = 0.2, key = "id" }}
cache = "{cache}"

[train]
epochs = 2
seed = 3
threads = 1

[grid]
arch = [{{ kind = "log_reg" }}]
lr = [1e-2, 1e-3]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
"#,
        out = dir.join(name).display()
    )
}

/// Two users, each granted one table, and a flight-server that logs
/// callers in with the database.
async fn two_users() -> (devcluster::LocalCluster, FlightServer) {
    let c = cluster(2).await.unwrap();
    devcluster::load_criteo(&c, "clicks_a", 1500, 11)
        .await
        .unwrap();
    devcluster::load_criteo(&c, "clicks_b", 1500, 12)
        .await
        .unwrap();
    for i in 0..c.len() {
        c.client(i)
            .await
            .unwrap()
            .batch_execute(
                "CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
                 CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
                 GRANT SELECT ON clicks_a TO alice;
                 GRANT SELECT ON clicks_b TO bob;",
            )
            .await
            .unwrap();
    }
    let mut args = segment_args(&c);
    args.extend(["--auth", "database"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fs = FlightServer::start(&args).unwrap();
    (c, fs)
}

fn mop_train(config: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = Command::new(binary("mop").unwrap());
    cmd.args(["train", "--progress", "quiet", "--config"])
        .arg(config)
        .env_remove(TRAINER_KEY_ENV)
        .env_remove("HOPPER_PASSWORD_FILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn trainers_with_a_key_and_no_login_train_for_each_runner_as_its_user() {
    let (c, fs) = two_users().await;
    let trainers: Vec<TrainerProcess> = (0..c.len())
        .map(|_| {
            TrainerProcess::start("127.0.0.1:0", &["--threads".as_ref(), "1".as_ref()], &[])
                .unwrap()
        })
        .collect();
    for t in &trainers {
        no_login_in(t.process.pid());
    }
    let dir = tempfile::tempdir().unwrap();
    let key = trainer_key_file().unwrap();
    let configs: Vec<std::path::PathBuf> =
        [("alice", "clicks_a", "memory"), ("bob", "clicks_b", "none")]
            .iter()
            .map(|(user, table, cache)| {
                let path = dir.path().join(format!("{user}.toml"));
                let text = run_config(dir.path(), user, &fs.url, table, cache);
                std::fs::write(&path, with_trainers(&text, &trainers)).unwrap();
                path
            })
            .collect();

    // Without the trainers' key the runner is refused, and told what to set.
    let out = mop_train(
        &configs[0],
        &[
            ("HOPPER_FLIGHT_USER", "alice".as_ref()),
            ("HOPPER_PASSWORD", "alice-pw".as_ref()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "trained without the key: {err}");
    assert!(
        err.contains(TRAINER_KEY_ENV) && err.contains("no proof"),
        "{err}"
    );

    // With it, alice trains on her table and bob on his (bob's without a
    // cache: every unit and validation pass reads with his token).
    for (config, (user, password)) in configs
        .iter()
        .zip([("alice", "alice-pw"), ("bob", "bob-pw")])
    {
        let out = mop_train(
            config,
            &[
                ("HOPPER_FLIGHT_USER", user.as_ref()),
                ("HOPPER_PASSWORD", password.as_ref()),
                (TRAINER_KEY_ENV, key.as_os_str()),
            ],
        );
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results = hopper_tests::run::results(&dir.path().join(user));
        let models = results["models"].as_array().unwrap();
        assert_eq!(models.len(), 2, "{results}");
        for m in models {
            assert_eq!(m["val_acc"].as_array().unwrap().len(), 2, "{m}");
        }
        // Alice's trainers read her rows when they opened their
        // partitions; bob's in every unit.
        let read = match user {
            "alice" => results["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["rows"].as_u64().unwrap())
                .sum::<u64>(),
            _ => {
                let timeline: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(dir.path().join(user).join("timeline.json")).unwrap(),
                )
                .unwrap();
                let units = timeline.as_array().unwrap();
                assert_eq!(units.len(), 2 * 2 * 2, "{timeline}");
                assert!(
                    units.iter().all(|u| u["bytes_read"].as_u64() > Some(0)),
                    "{timeline}"
                );
                units
                    .iter()
                    .map(|u| u["samples"].as_u64().unwrap())
                    .sum::<u64>()
                    / 4
            }
        };
        assert!(read > 1000, "{user} trained on {read} rows: {results}");
        // Nothing the run wrote holds a token or a password.
        for entry in walk(&dir.path().join(user)) {
            let bytes = std::fs::read(&entry).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("Bearer") && !text.contains(password),
                "{entry:?} holds a secret"
            );
        }
    }
    // Alice's login reads nothing of bob's: the trainers read as the runner.
    let out = mop_train(
        &configs[1],
        &[
            ("HOPPER_FLIGHT_USER", "alice".as_ref()),
            ("HOPPER_PASSWORD", "alice-pw".as_ref()),
            (TRAINER_KEY_ENV, key.as_os_str()),
        ],
    );
    assert!(!out.status.success(), "alice read clicks_b");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `mop train` as alice over `clicks_a` at `url`, its run named `name`.
fn train_as_alice(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    cache: &str,
) -> (
    hopper_tests::ChildGuard,
    std::sync::mpsc::Receiver<serde_json::Value>,
) {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, run_config(dir, name, url, "clicks_a", cache)).unwrap();
    spawn_mop_train(
        &config,
        &[],
        &[
            ("HOPPER_FLIGHT_USER", "alice"),
            ("HOPPER_PASSWORD", "alice-pw"),
        ],
    )
}

#[tokio::test]
async fn the_trainers_mop_train_spawns_refuse_calls_without_the_runs_key() {
    let (_c, fs) = two_users().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut mop, rx) = train_as_alice(dir.path(), "spawned", &fs.url, "memory");
    let mut events = Vec::new();
    wait_for(&rx, &mut events, "trainer", |v| is_event(v, "trainer"));
    // Hold the runner still while its trainer is probed.
    mop.signal(nix::sys::signal::Signal::SIGSTOP as i32)
        .unwrap();
    let trainer = events.last().unwrap().clone();
    let pid = trainer["pid"].as_u64().unwrap() as u32;
    let address = trainer["address"].as_str().unwrap();
    let mut c = raw_client(address).await;
    let s = c
        .health(with_proof(HealthRequest {}, None))
        .await
        .unwrap_err();
    refused(s, "no proof");
    let harness_key = TrainerKey::from_file(&trainer_key_file().unwrap()).unwrap();
    let s = c
        .health(with_proof(HealthRequest {}, Some(&harness_key.proof())))
        .await
        .unwrap_err();
    refused(s, "another key");
    // Its key is in neither its arguments nor its environment, and it has
    // no password: it reads with the runner's token.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("--key-stdin"), "{cmdline:?}");
    assert!(!cmdline.contains("--key-file"), "{cmdline:?}");
    no_login_in(pid);
    mop.signal(nix::sys::signal::Signal::SIGCONT as i32)
        .unwrap();
    let status = mop.wait_timeout(RUN_TIMEOUT).unwrap();
    assert!(status.success(), "mop train: {status}");
}

/// The flight-server restarts mid-run (with the same ticket key, so the
/// tickets stay good): it no longer holds the password behind the runner's
/// tokens, the trainers' next reads are refused, and the runner logs in
/// again when it plans again.
#[tokio::test]
async fn a_login_token_the_flight_server_forgot_is_renewed_by_planning_again() {
    let c = cluster(2).await.unwrap();
    devcluster::load_criteo(&c, "clicks_a", 1500, 13)
        .await
        .unwrap();
    for i in 0..c.len() {
        c.client(i)
            .await
            .unwrap()
            .batch_execute(
                "CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
                 GRANT SELECT ON clicks_a TO alice;",
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ticket_key = dir.path().join("ticket.key");
    let mut secret = uuid::Uuid::new_v4().as_bytes().to_vec();
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    std::fs::write(&ticket_key, secret).unwrap();
    let mut args = segment_args(&c);
    args.extend([
        "--auth".into(),
        "database".into(),
        "--ticket-key-file".into(),
    ]);
    args.push(ticket_key.to_str().unwrap().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut fs = FlightServer::start(&args).unwrap();
    // Every unit reads (no cache), with the tokens of the runner's logins.
    let (mut mop, rx) = train_as_alice(dir.path(), "restarted", &fs.url, "none");
    let mut events = Vec::new();
    wait_for(&rx, &mut events, "unit", |v| is_event(v, "unit"));
    // Held still while the server restarts, so the next units meet the
    // restarted server with the old tokens.
    mop.signal(nix::sys::signal::Signal::SIGSTOP as i32)
        .unwrap();
    let addr = fs.addr.clone();
    fs.process.kill();
    fs = FlightServer::start_on(&addr, &args).unwrap();
    mop.signal(nix::sys::signal::Signal::SIGCONT as i32)
        .unwrap();
    let status = mop.wait_timeout(RUN_TIMEOUT).unwrap();
    events.extend(rx.iter());
    assert!(status.success(), "mop train: {status}");
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|v| is_event(v, "unit_failed"))
        .collect();
    let replans: Vec<&serde_json::Value> =
        events.iter().filter(|v| is_event(v, "replan")).collect();
    assert!(
        !replans.is_empty() && replans.iter().all(|v| v["reason"] == "refused"),
        "the runner logs in again when a token is refused: {replans:?}, failed: {failed:?}"
    );
    assert!(
        failed.iter().any(|v| v["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused the login token"))),
        "a unit met the forgotten token: {failed:?}"
    );
    assert_eq!(count(&events, "unit"), 2 * 2 * 2, "every unit once");
    drop(fs);
}
