//! `mop train` end to end: PostgreSQL segments, a flight-server, the runner
//! and trainer processes it spawns. Models must learn the planted signal,
//! match sequential training bit for bit, and survive a killed runner or a
//! killed trainer with the same final weights.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use devcluster::{load_criteo, LocalCluster};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use flight_client::FlightSlice;
use hopper_tests::run::{
    assert_same_models, count, is_event, is_gone, mop_train, results, spawn_mop_train, wait_for,
};
use hopper_tests::{cluster, segment_args, FlightServer};
use mop_core::run_config::RunConfig;
use mop_core::schedule::visit_order;
use mop_trainer::device::set_threads;
use mop_trainer::featurize::Featurizer;
use mop_trainer::model::Model;
use mop_trainer::shuffle::{shuffled, unit_seed, WINDOW};
use mop_trainer::train::train_partition;
use serde_json::Value;

/// A cluster with a Criteo-like table and a flight-server over it.
struct Setup {
    cluster: LocalCluster,
    server: FlightServer,
    dir: tempfile::TempDir,
}

async fn setup(segments: usize, rows: u64) -> Setup {
    let cluster = cluster(segments).await.unwrap();
    load_criteo(&cluster, "criteo", rows, 7).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Setup {
        cluster,
        server,
        dir,
    }
}

/// What varies between the tests' run configurations.
struct Run<'a> {
    arch: &'a str,
    optimizer: &'a str,
    lr: &'a str,
    batch_size: &'a str,
    epochs: usize,
    trainers: Option<usize>,
    table: Option<&'a str>,
    /// `source.cache`: memory, disk or none.
    cache: &'a str,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Run {
            arch: r#"{ kind = "log_reg" }"#,
            optimizer: r#"{ kind = "adam" }"#,
            lr: "1e-2",
            batch_size: "64",
            epochs: 2,
            trainers: None,
            table: None,
            cache: "memory",
        }
    }
}

impl Setup {
    /// Writes a run configuration with output in `name/`; returns its path.
    fn config(&self, name: &str, run: &Run<'_>) -> PathBuf {
        let out = self.dir.path().join(name);
        let trainers = run
            .trainers
            .map(|t| format!("trainers = {t}\n"))
            .unwrap_or_default();
        let output = match run.table {
            Some(t) => format!("table = \"{t}\"\ndatabase = \"{}\"\n", self.cluster.url(0)),
            None => String::new(),
        };
        let text = format!(
            r#"
[source]
flight = "{flight}"
table = "criteo"
validation = {{ fraction = 0.2, key = "id" }}
cache = "{cache}"

[train]
epochs = {epochs}
seed = 11
threads = 1
{trainers}
[grid]
arch = [{arch}]
optimizer = [{optimizer}]
lr = [{lr}]
batch_size = [{batch_size}]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
{output}"#,
            flight = self.server.url,
            epochs = run.epochs,
            arch = run.arch,
            optimizer = run.optimizer,
            lr = run.lr,
            batch_size = run.batch_size,
            cache = run.cache,
            out = out.display(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Trainer pids announced by the runner (initial and replacements).
fn trainer_pids(events: &[Value]) -> Vec<u32> {
    events
        .iter()
        .filter(|v| is_event(v, "trainer"))
        .filter_map(|v| v["pid"].as_u64().map(|p| p as u32))
        .collect()
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_grid_learns_the_planted_signal_through_flight_and_separate_trainers() {
    let rows = 20_000;
    let s = setup(2, rows).await;
    let config = s.config(
        "grid",
        &Run {
            lr: "1e-2, 1e-3",
            batch_size: "32, 128",
            epochs: 3,
            table: Some("criteo_models"),
            ..Run::default()
        },
    );
    let events = mop_train(&config, &[]);
    let out = s.out("grid");

    // Two trainers, each its own process, and both gone after the run.
    let pids = trainer_pids(&events);
    assert_eq!(pids.len(), 2, "one trainer per segment: {events:?}");
    assert_ne!(pids[0], pids[1]);
    for pid in pids {
        wait_gone(pid);
    }
    assert_eq!(
        count(&events, "unit"),
        4 * 2 * 3,
        "4 models × 2 partitions × 3 epochs"
    );

    let r = results(&out);
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);
    let mut best: f64 = 0.0;
    for m in models {
        let val_acc = m["val_acc"].as_array().unwrap();
        assert_eq!(val_acc.len(), 3, "one validation accuracy per epoch: {m}");
        println!(
            "model {}: validation accuracy by epoch {val_acc:?}",
            m["model_id"]
        );
        best = best.max(val_acc[2].as_f64().unwrap());
        let file = out.join(m["model_file"].as_str().unwrap());
        assert!(std::fs::metadata(&file).unwrap().len() > 0, "{file:?}");
    }

    // Every model saw every training row once per epoch.
    let mut train_rows = 0i64;
    for i in 0..2 {
        train_rows += s
            .cluster
            .client(i)
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM criteo WHERE mod(abs(hashint8(id::int8)::int8), 1000) >= 200",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    let share = train_rows as f64 / rows as f64;
    assert!(
        (0.77..0.83).contains(&share),
        "{train_rows} training rows of {rows}"
    );
    for id in 0..4u64 {
        for epoch in 0..3u64 {
            let seen: i64 = events
                .iter()
                .filter(|v| is_event(v, "unit") && v["model"] == id && v["epoch"] == epoch)
                .map(|v| v["samples"].as_i64().unwrap())
                .sum();
            assert_eq!(seen, train_rows, "model {id} epoch {epoch}");
        }
        let epochs = events
            .iter()
            .filter(|v| is_event(v, "epoch") && v["model"] == id)
            .count();
        assert_eq!(epochs, 3, "model {id} reports every epoch");
    }

    // A model that learned nothing predicts "no click" everywhere and scores
    // the validation rows' majority rate (about 0.75); the planted signal
    // lets a linear model reach about 0.83 here.
    let (mut val_rows, mut val_negatives) = (0i64, 0i64);
    for i in 0..2 {
        let row = s
            .cluster
            .client(i)
            .await
            .unwrap()
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE label = 0) FROM criteo
                 WHERE mod(abs(hashint8(id::int8)::int8), 1000) < 200",
                &[],
            )
            .await
            .unwrap();
        val_rows += row.get::<_, i64>(0);
        val_negatives += row.get::<_, i64>(1);
    }
    let majority = val_negatives as f64 / val_rows as f64;
    assert!(
        best >= 0.80 && best >= majority + 0.05,
        "best validation accuracy {best}, majority rate {majority}"
    );

    let c = s.cluster.client(0).await.unwrap();
    // The result tables, MADlib style.
    let n: i64 = c
        .query_one("SELECT count(*) FROM criteo_models WHERE state IS NOT NULL AND octet_length(state) > 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4, "one row with a state per model");
    let info = c
        .query(
            "SELECT array_length(train_loss, 1), array_length(val_acc, 1), array_length(epoch_seconds, 1) FROM criteo_models_info",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(info.len(), 4);
    for row in &info {
        for col in 0..3 {
            assert_eq!(
                row.get::<_, Option<i32>>(col),
                Some(3),
                "arrays of one entry per epoch"
            );
        }
    }
    let summary = c
        .query("SELECT models, trainers, epochs, best_val_acc, best_model_id FROM criteo_models_summary", &[])
        .await
        .unwrap();
    assert_eq!(summary.len(), 1);
    let row = &summary[0];
    assert_eq!(row.get::<_, i32>(0), 4);
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, i32>(2), 3);
    let best_db: f64 = row.get(3);
    assert!(
        (best_db - best).abs() < 1e-9,
        "summary best {best_db} vs results.json {best}"
    );
    let best_id: i32 = row.get(4);
    assert_eq!(r["best_model"].as_i64(), Some(best_id as i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn mop_is_bit_identical_to_sequential_training_in_the_same_visit_order() {
    let w = 3;
    let s = setup(w, 3000).await;
    let path = s.config(
        "mop",
        &Run {
            arch: r#"{ kind = "mlp", hidden = [16] }"#,
            // Model 0 is Adam, model 1 lazy Adam (the sparse first layer's
            // touched rows only): both must hop bit-exactly.
            optimizer: r#"{ kind = "adam" }, { kind = "lazy_adam" }"#,
            lr: "1e-2",
            batch_size: "32",
            epochs: 2,
            ..Run::default()
        },
    );
    let events = mop_train(&path, &[]);
    assert_eq!(trainer_pids(&events).len(), w);
    let mop_states: Vec<Vec<u8>> = (0..2)
        .map(|m| std::fs::read(s.out("mop").join(format!("models/model-{m}.safetensors"))).unwrap())
        .collect();

    // The same rows, read through Flight the way the runner splits them:
    // partition p is every endpoint i with i % W == p.
    let config = RunConfig::load(&path).unwrap();
    let slices = plan(&s.server.url, &config.train_sql().unwrap())
        .await
        .unwrap();
    assert_eq!(slices.len(), w, "one endpoint per segment");
    let mut parts = vec![Vec::new(); w];
    for (p, part) in parts.iter_mut().enumerate() {
        let mine: Vec<FlightSlice> = slices
            .iter()
            .enumerate()
            .filter(|(i, _)| i % w == p)
            .map(|(_, s)| s.clone())
            .collect();
        let mut rx = spawn_reader::<flight_client::Error>(&tokio::runtime::Handle::current(), mine);
        while let Some(batch) = rx.recv().await {
            part.push(batch.unwrap());
        }
    }
    let rows: Vec<usize> = parts
        .iter()
        .map(|p| p.iter().map(|b| b.num_rows()).sum())
        .collect();
    assert!(
        rows.iter().all(|&r| r > 500),
        "every partition has rows: {rows:?}"
    );

    // One process, one model at a time, the partitions in the scheduler's
    // visit order.
    let seed = config.train.seed;
    let cfgs = config.grid.expand().unwrap();
    assert_eq!(cfgs.len(), 2);
    let models = cfgs.len();
    let train = move |m: usize, order: &dyn Fn(usize) -> Vec<usize>| {
        set_threads(1);
        let cfg = cfgs[m].clone();
        let featurizer = Featurizer::new(&cfg);
        // The runner seeds model m with train.seed + m.
        let mut model = Model::new(cfg.clone(), seed + m as u64).unwrap();
        let mut opt = model.optimizer().unwrap();
        for epoch in 0..2 {
            for p in order(epoch) {
                let batches = parts[p].iter().map(|b| featurizer.featurize(b));
                let batches = shuffled(batches, unit_seed(seed + m as u64, epoch, p), WINDOW);
                train_partition(&mut model, &mut opt, batches, cfg.batch_size, |_| {}).unwrap();
            }
        }
        (model.to_state(&opt).unwrap(), opt.steps())
    };
    let (sequential, reordered) = tokio::task::spawn_blocking(move || {
        let order = |m: usize| move |e: usize| visit_order(models, w, seed, m, e).unwrap();
        let sequential: Vec<(Vec<u8>, i64)> = (0..models).map(|m| train(m, &order(m))).collect();
        let reordered: Vec<Vec<u8>> = (0..models)
            .map(|m| {
                let forward = order(m);
                train(m, &|e| {
                    let mut o = forward(e);
                    o.reverse();
                    o
                })
                .0
            })
            .collect();
        (sequential, reordered)
    })
    .await
    .unwrap();

    let per_epoch: usize = rows.iter().map(|r| r.div_ceil(32)).sum();
    for (m, ((state, steps), (mop_state, reordered))) in sequential
        .iter()
        .zip(mop_states.iter().zip(&reordered))
        .enumerate()
    {
        // Adam's step counter travelled with the model: one step per mini-batch.
        assert_eq!(*steps, 2 * per_epoch as i64, "model {m}");
        // Weights, both Adam moments and the step, byte for byte.
        assert_eq!(state.len(), mop_state.len(), "model {m}");
        assert!(
            state == mop_state,
            "model {m}: MOP's model differs from sequential training"
        );
        // And the order matters: the comparison can tell.
        assert!(
            reordered != mop_state,
            "model {m}: another visit order gave the same bytes"
        );
    }
}

/// A grid whose run takes long enough to be interrupted mid-way.
fn hopping_run() -> Run<'static> {
    Run {
        arch: r#"{ kind = "mlp", hidden = [32] }"#,
        lr: "1e-2, 1e-3",
        batch_size: "32",
        epochs: 3,
        ..Run::default()
    }
}

/// A model's state hops from the trainer that trained it to the trainer of
/// its next unit: the runner sends no state, and takes one back per model
/// and epoch (`checkpoint = "epoch"`, the default) or per unit; both runs
/// end with the same weights.
#[tokio::test(flavor = "multi_thread")]
async fn states_hop_trainer_to_trainer_and_reach_the_runner_once_per_epoch() {
    let s = setup(2, 4000).await;
    let run = hopping_run(); // 2 models × 3 epochs × 2 partitions: 12 units
    let epoch = s.config("epoch", &run);
    let unit = s.config("unit", &run);
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("[train]\n", "[train]\ncheckpoint = \"unit\"\n");
    std::fs::write(&unit, text).unwrap();
    for (config, returned) in [(&epoch, 6), (&unit, 12)] {
        let events = mop_train(config, &[]);
        let states = events
            .iter()
            .find(|v| is_event(v, "states"))
            .expect("a run reports how states moved");
        let n = |k: &str| states[k].as_u64().unwrap();
        assert_eq!(n("sent"), 0, "the runner sends no state: {states}");
        assert_eq!(n("returned"), returned, "{states}");
        // Every unit but a model's first starts from a state a trainer kept.
        assert_eq!(n("direct") + n("same_trainer"), 12 - 2, "{states}");
        assert!(n("direct") > 0, "{states}");
    }
    assert_same_models(&s.out("epoch"), &s.out("unit"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_runner_resumes_to_the_same_weights() {
    let s = setup(2, 4000).await;
    let run = hopping_run();
    let interrupted = s.config("interrupted", &run);
    let straight = s.config("straight", &run);

    let (mut mop, rx) = spawn_mop_train(&interrupted, &[], &[]);
    let mut seen = Vec::new();
    while count(&seen, "unit") < 3 {
        wait_for(&rx, &mut seen, "unit", |v| is_event(v, "unit"));
    }
    // Checkpoints are written beside the run: killed once one holds two
    // units (each is replaced atomically).
    let file = s.out("interrupted").join("checkpoint/checkpoint.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["timeline"].as_array().map(Vec::len))
        .unwrap_or(0)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint holds two units"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    mop.kill(); // SIGKILL: no chance to clean up
    let pids = trainer_pids(&seen);
    assert_eq!(pids.len(), 2);
    for pid in pids {
        wait_gone(pid); // trainers die with their runner
    }
    let checkpoint: Value = serde_json::from_slice(
        &std::fs::read(s.out("interrupted").join("checkpoint/checkpoint.json")).unwrap(),
    )
    .unwrap();
    let done = checkpoint["timeline"].as_array().unwrap().len();
    assert!((2..12).contains(&done), "killed after {done} of 12 units");
    assert!(!s.out("interrupted").join("results.json").exists());

    let resumed = mop_train(&interrupted, &["--resume"]);
    assert_eq!(
        count(&resumed, "unit"),
        12 - done,
        "a resumed run redoes no finished unit"
    );
    mop_train(&straight, &[]);
    assert_same_models(&s.out("interrupted"), &s.out("straight"), 2);
    let r = results(&s.out("interrupted"));
    for m in r["models"].as_array().unwrap() {
        let val = m["val_acc"].as_array().unwrap();
        assert_eq!(val.len(), 3);
        assert!(val.iter().all(Value::is_f64), "every epoch validated: {m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trainer_killed_mid_unit_is_replaced_and_the_run_ends_identical() {
    trainer_killed_mid_unit("memory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trainer_killed_mid_unit_with_a_disk_cache_is_replaced_and_the_run_ends_identical() {
    trainer_killed_mid_unit("disk").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trainer_killed_mid_unit_without_a_cache_is_replaced_and_the_run_ends_identical() {
    trainer_killed_mid_unit("none").await;
}

/// Kills trainer 0 with SIGKILL as a unit starts on it: its replacement
/// opens the partition again (filling the `cache` afresh) and the run ends
/// with the weights of a run without the fault, every unit trained once.
async fn trainer_killed_mid_unit(cache: &str) {
    let s = setup(2, 4000).await;
    let run = Run {
        cache,
        ..hopping_run()
    };
    let faulty = s.config("faulty", &run);
    let clean = s.config("clean", &run);

    let (mut mop, rx) = spawn_mop_train(&faulty, &[], &[]);
    let mut events = Vec::new();
    while count(&events, "unit") < 2 {
        wait_for(&rx, &mut events, "unit", |v| is_event(v, "unit"));
    }
    let victim = trainer_pids(&events)[0];
    wait_for(&rx, &mut events, "unit_start", |v| {
        is_event(v, "unit_start") && v["partition"] == 0
    });
    kill9(victim);
    let status = mop.wait_timeout(hopper_tests::run::RUN_TIMEOUT).unwrap();
    assert!(
        status.success(),
        "the run survives a dead trainer: {status}"
    );
    events.extend(rx.iter());
    wait_gone(victim);

    assert!(
        events
            .iter()
            .any(|v| is_event(v, "unit_failed") && v["partition"] == 0),
        "the killed trainer's unit failed"
    );
    let trainers: Vec<&Value> = events.iter().filter(|v| is_event(v, "trainer")).collect();
    assert_eq!(
        trainers.len(),
        3,
        "trainer 0 was replaced once: {trainers:?}"
    );
    assert_eq!(trainers[2]["trainer"], 0);
    let units: BTreeSet<(u64, u64, u64)> = events
        .iter()
        .filter(|v| is_event(v, "unit"))
        .map(|v| {
            let f = |k: &str| v[k].as_u64().unwrap();
            (f("model"), f("partition"), f("epoch"))
        })
        .collect();
    assert_eq!(units.len(), 12, "every unit completed");
    // A trainer that dies takes the states it kept with it: those models'
    // units since their last epoch ran again from the runner's copies, each
    // said by a `rewound` event. No other unit ran twice.
    let rewound: u64 = events
        .iter()
        .filter(|v| is_event(v, "rewound"))
        .map(|v| v["units"].as_u64().unwrap())
        .sum();
    assert_eq!(
        count(&events, "unit") as u64,
        12 + rewound,
        "none twice but those a lost state sent back"
    );

    mop_train(&clean, &[]);
    assert_same_models(&s.out("faulty"), &s.out("clean"), 2);
}

/// The 4-configuration grid by MOP on two trainers against the same work
/// on one trainer (a one-segment cluster with the same rows). Run with
/// `cargo test -p hopper-tests --test training -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn measure_mop_on_two_trainers_against_one() {
    let rows: u64 = std::env::var("HOPPER_MEASURE_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    let run = Run {
        arch: r#"{ kind = "mlp", hidden = [64] }"#,
        lr: "1e-2, 1e-3",
        batch_size: "32, 128",
        epochs: 3,
        ..Run::default()
    };
    let mut seconds = Vec::new();
    for segments in [2, 1] {
        let s = setup(segments, rows).await;
        let config = s.config("grid", &run);
        let t = Instant::now();
        mop_train(&config, &[]);
        let wall = t.elapsed().as_secs_f64();
        let r = results(&s.out("grid"));
        let timeline: Vec<Value> =
            serde_json::from_slice(&std::fs::read(s.out("grid").join("timeline.json")).unwrap())
                .unwrap();
        let unit_seconds: f64 = timeline
            .iter()
            .map(|u| u["end"].as_f64().unwrap() - u["start"].as_f64().unwrap())
            .sum();
        let run_seconds = r["seconds"].as_f64().unwrap();
        let train_seconds: f64 = r["models"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["epoch_seconds"].as_array().unwrap().clone())
            .map(|x| x.as_f64().unwrap())
            .sum();
        println!(
            "{segments} trainer(s): mop train wall {wall:.2} s, run {run_seconds:.2} s, \
             units {unit_seconds:.2} s as the runner saw them, {train_seconds:.2} s of training in the trainers"
        );
        seconds.push(run_seconds);
    }
    println!(
        "MOP speed-up, 2 trainers over 1 (run seconds): {:.2}x",
        seconds[1] / seconds[0]
    );
}
