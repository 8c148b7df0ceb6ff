//! `[search]` end to end: ASHA and Hyperband over six configurations of a
//! Criteo-like table on two PostgreSQL segments, against the full grid
//! over the same configurations. They must train far fewer model-epochs,
//! find about the grid's best model, leave every model it trained
//! byte-identical to training its configuration alone for the same epochs,
//! and take the same decisions after a SIGKILL and `--resume`.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use devcluster::{load_criteo, LocalCluster};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use hopper_tests::run::{
    assert_same_models, count, is_event, mop_train, results, spawn_mop_train, wait_for,
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

/// Two segments of a Criteo-like table and a flight-server over them.
struct Setup {
    cluster: LocalCluster,
    server: FlightServer,
    dir: tempfile::TempDir,
}

const SEGMENTS: usize = 2;
const MODELS: usize = 6;
const MAX_EPOCHS: usize = 9;

async fn setup() -> Setup {
    let cluster = cluster(SEGMENTS).await.unwrap();
    load_criteo(&cluster, "criteo", 6000, 7).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    Setup {
        cluster,
        server,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A run over the six configurations (three learning rates, from one
    /// that learns to one that barely moves, × two batch sizes) with
    /// `search` as its `[search]` section; output in `name/`.
    fn config(&self, name: &str, search: &str) -> PathBuf {
        let grid = r#"arch = [{ kind = "mlp", hidden = [16] }]
lr = [1e-2, 1e-3, 1e-5]
batch_size = [32, 256]"#;
        self.config_with(name, grid, search)
    }

    /// A run whose `[grid]` has `grid` besides its input.
    fn config_with(&self, name: &str, grid: &str, search: &str) -> PathBuf {
        let out = self.out(name);
        let text = format!(
            r#"
[source]
flight = "{flight}"
table = "criteo"
validation = {{ fraction = 0.2, key = "id" }}

[train]
epochs = {MAX_EPOCHS}
seed = 5
threads = 1

[grid]
{grid}
input = {{ kind = "criteo", sparse = true }}

{search}

[output]
dir = "{out}"
"#,
            flight = self.server.url,
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

/// What a run's results.json says about its models.
struct Summary {
    /// Per model: the epochs it trained.
    epochs: Vec<usize>,
    /// The best final validation accuracy.
    best: f64,
    /// Epochs trained, summed over models.
    model_epochs: usize,
}

fn summary(out: &Path) -> Summary {
    let r = results(out);
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), MODELS);
    let mut epochs = Vec::new();
    let mut best: f64 = 0.0;
    for m in models {
        let val = m["val_acc"].as_array().unwrap();
        let stopped_at = m["stopped_at"].as_u64().unwrap() as usize;
        assert_eq!(
            val.len(),
            stopped_at,
            "one validation accuracy per epoch: {m}"
        );
        assert!(val.iter().all(Value::is_f64), "every epoch validated: {m}");
        assert!(m["stop_reason"]["kind"].is_string(), "{m}");
        best = best.max(val.last().unwrap().as_f64().unwrap());
        epochs.push(stopped_at);
        println!(
            "{}: model {} ({}): {}; validation accuracy by epoch {:?}",
            out.file_name().unwrap().to_string_lossy(),
            m["model_id"],
            m["config"]["lr"],
            m["stop"],
            val.iter()
                .map(|v| format!("{:.3}", v.as_f64().unwrap()))
                .collect::<Vec<_>>()
        );
    }
    let model_epochs = epochs.iter().sum();
    assert_eq!(
        r["search"]["model_epochs"].as_u64(),
        Some(model_epochs as u64)
    );
    Summary {
        epochs,
        best,
        model_epochs,
    }
}

/// The partitions' rows as the runner splits them: partition `p` is every
/// endpoint `i` with `i % W == p`.
async fn partitions(server: &str, config: &RunConfig) -> Vec<Vec<RecordBatch>> {
    let slices = plan(server, &config.train_sql().unwrap()).await.unwrap();
    let mut parts = vec![Vec::new(); SEGMENTS];
    for (i, slice) in slices.into_iter().enumerate() {
        let mut rx =
            spawn_reader::<flight_client::Error>(&tokio::runtime::Handle::current(), vec![slice]);
        while let Some(batch) = rx.recv().await {
            parts[i % SEGMENTS].push(batch.unwrap());
        }
    }
    parts
}

/// Model `id` of `config` trained alone, in this process, for `epochs`
/// epochs in its visit order: what a search must leave it as.
fn trained_alone(
    config: &RunConfig,
    parts: &[Vec<RecordBatch>],
    id: usize,
    epochs: usize,
) -> Vec<u8> {
    set_threads(1);
    let cfg = config.models().unwrap().remove(id);
    let seed = config.train.seed;
    let featurizer = Featurizer::new(&cfg);
    // The runner seeds model m with train.seed + m.
    let mut model = Model::new(cfg.clone(), seed + id as u64).unwrap();
    let mut opt = model.optimizer().unwrap();
    for epoch in 0..epochs {
        for p in visit_order(MODELS, SEGMENTS, seed, id, epoch).unwrap() {
            let batches = parts[p].iter().map(|b| featurizer.featurize(b));
            let batches = shuffled(batches, unit_seed(seed + id as u64, epoch, p), WINDOW);
            train_partition(&mut model, &mut opt, batches, cfg.batch_size, |_| {}).unwrap();
        }
    }
    model.to_state(&opt).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn asha_and_hyperband_train_a_fraction_of_the_grid_and_find_its_best_model() {
    let s = setup().await;
    let grid = s.config("grid", "");
    let asha = s.config(
        "asha",
        "[search]\nkind = \"asha\"\nmax_epochs = 9\nmin_epochs = 1\neta = 3",
    );
    // ASHA's results also go to the result tables.
    let text = std::fs::read_to_string(&asha).unwrap().replace(
        "[output]\n",
        &format!(
            "[output]\ntable = \"asha_models\"\ndatabase = \"{}\"\n",
            s.cluster.url(0)
        ),
    );
    std::fs::write(&asha, text).unwrap();
    let hyperband = s.config(
        "hyperband",
        "[search]\nkind = \"hyperband\"\nmax_epochs = 9\neta = 3",
    );
    mop_train(&grid, &[]);
    let asha_events = mop_train(&asha, &[]);
    mop_train(&hyperband, &[]);
    let (g, a, h) = (
        summary(&s.out("grid")),
        summary(&s.out("asha")),
        summary(&s.out("hyperband")),
    );
    println!(
        "model-epochs: grid {} asha {} hyperband {}; best validation accuracy: grid {:.4} asha {:.4} hyperband {:.4}",
        g.model_epochs, a.model_epochs, h.model_epochs, g.best, a.best, h.best
    );
    assert_eq!(g.epochs, vec![MAX_EPOCHS; MODELS]);
    assert_eq!(g.model_epochs, MODELS * MAX_EPOCHS);
    assert!(
        2 * a.model_epochs <= g.model_epochs,
        "ASHA trained {} of the grid's {} model-epochs",
        a.model_epochs,
        g.model_epochs
    );
    assert!(
        2 * h.model_epochs <= g.model_epochs,
        "Hyperband trained {} of the grid's {} model-epochs",
        h.model_epochs,
        g.model_epochs
    );
    assert!(
        a.best >= g.best - 0.02,
        "ASHA {} vs grid {}",
        a.best,
        g.best
    );
    assert!(
        h.best >= g.best - 0.02,
        "Hyperband {} vs grid {}",
        h.best,
        g.best
    );
    // The rungs are 1 and 3 epochs: every stop is at one of them.
    assert!(
        a.epochs.iter().all(|e| [1, 3, MAX_EPOCHS].contains(e)),
        "{:?}",
        a.epochs
    );
    assert!(
        a.epochs.contains(&MAX_EPOCHS),
        "some model trains to the end"
    );
    // Units: exactly the epochs each model trained, on both partitions.
    assert_eq!(count(&asha_events, "unit"), a.model_epochs * SEGMENTS);
    let decisions = asha_events
        .iter()
        .filter(|v| is_event(v, "decision"))
        .count();
    assert!(
        decisions >= MODELS,
        "every model was decided on at rung 1: {decisions}"
    );
    let db = s.cluster.client(0).await.unwrap();
    let rows = db
        .query(
            "SELECT m.stopped_at, m.stop_reason, array_length(i.val_acc, 1)
             FROM asha_models m JOIN asha_models_info i USING (model_id) ORDER BY model_id",
            &[],
        )
        .await
        .unwrap();
    let reasons = results(&s.out("asha"))["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["stop"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(rows.len(), MODELS);
    for (m, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, Option<i32>>(0), Some(a.epochs[m] as i32));
        assert_eq!(
            row.get::<_, Option<String>>(1).as_deref(),
            Some(reasons[m].as_str())
        );
        assert_eq!(row.get::<_, Option<i32>>(2), Some(a.epochs[m] as i32));
    }
    let summary = db
        .query_one(
            "SELECT search, model_epochs, full_model_epochs FROM asha_models_summary",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(summary.get::<_, String>(0), "asha");
    assert_eq!(summary.get::<_, i32>(1), a.model_epochs as i32);
    assert_eq!(summary.get::<_, i32>(2), (MODELS * MAX_EPOCHS) as i32);

    // A model that trained to the end is the grid's model, byte for byte…
    let finished = a.epochs.iter().position(|&e| e == MAX_EPOCHS).unwrap();
    let name = format!("models/model-{finished}.safetensors");
    assert!(
        std::fs::read(s.out("asha").join(&name)).unwrap()
            == std::fs::read(s.out("grid").join(&name)).unwrap(),
        "model {finished} differs from the grid's"
    );
    // …and one ASHA stopped early is its configuration trained alone for
    // the epochs it got.
    let stopped = (0..MODELS).min_by_key(|&m| a.epochs[m]).unwrap();
    assert!(a.epochs[stopped] < MAX_EPOCHS);
    let config = RunConfig::load(&asha).unwrap();
    let parts = partitions(&s.server.url, &config).await;
    let epochs = a.epochs[stopped];
    let alone =
        tokio::task::spawn_blocking(move || trained_alone(&config, &parts, stopped, epochs))
            .await
            .unwrap();
    let file = s
        .out("asha")
        .join(format!("models/model-{stopped}.safetensors"));
    assert!(
        std::fs::read(file).unwrap() == alone,
        "model {stopped}, stopped after {epochs} epochs, differs from training it alone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_killed_mid_search_resumes_to_the_same_decisions_and_weights() {
    let s = setup().await;
    let search = "[search]\nkind = \"asha\"\nmax_epochs = 9\nmin_epochs = 1\neta = 3";
    let interrupted = s.config("interrupted", search);
    let straight = s.config("straight", search);

    // Kill it once the first rung has decided something and more is to come.
    let (mut mop, rx) = spawn_mop_train(&interrupted, &[], &[]);
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, "decision", |v| is_event(v, "decision"));
    while count(&seen, "unit") < 16 {
        wait_for(&rx, &mut seen, "unit", |v| is_event(v, "unit"));
    }
    mop.kill();
    assert!(!s.out("interrupted").join("results.json").exists());
    let checkpoint: Value = serde_json::from_slice(
        &std::fs::read(s.out("interrupted").join("checkpoint/checkpoint.json")).unwrap(),
    )
    .unwrap();
    let done = checkpoint["timeline"].as_array().unwrap().len();
    assert!(
        checkpoint["scheduler"]["search"]["fate"].is_array(),
        "the checkpoint holds the search's decisions"
    );

    let resumed = mop_train(&interrupted, &["--resume"]);
    let clean = mop_train(&straight, &[]);
    let (a, b) = (summary(&s.out("interrupted")), summary(&s.out("straight")));
    assert_eq!(a.epochs, b.epochs, "the same decisions");
    assert_eq!(
        done + count(&resumed, "unit"),
        count(&clean, "unit"),
        "a resumed run redoes no finished unit"
    );
    assert_same_models(&s.out("interrupted"), &s.out("straight"), MODELS);
    let reasons = |out: &Path| -> Vec<Value> {
        results(out)["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["stop_reason"].clone())
            .collect()
    };
    assert_eq!(reasons(&s.out("interrupted")), reasons(&s.out("straight")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grid_kept_in_a_madlib_style_table_is_read_through_flight() {
    let s = setup().await;
    // The table is distributed like the data: each segment holds some rows.
    let rows = [
        (
            3,
            r#"{"kind": "mlp", "hidden": [16]}"#,
            "optimizer='SGD(lr=0.05, momentum=0.9)'",
            "batch_size=64",
        ),
        (
            1,
            r#"{"kind": "log_reg"}"#,
            "optimizer='adam', lr=0.01",
            "batch_size=32",
        ),
        (
            2,
            r#"{"kind": "log_reg"}"#,
            "optimizer='adamw', lr=0.001, l2=0.0001",
            "batch_size=256",
        ),
    ];
    for seg in 0..SEGMENTS {
        let c = s.cluster.client(seg).await.unwrap();
        c.batch_execute(
            "CREATE TABLE mst (mst_key int, arch text, compile_params text, fit_params text)",
        )
        .await
        .unwrap();
        for (i, (key, arch, compile, fit)) in rows.iter().enumerate() {
            if i % SEGMENTS == seg {
                c.execute(
                    "INSERT INTO mst VALUES ($1, $2, $3, $4)",
                    &[key, arch, compile, fit],
                )
                .await
                .unwrap();
            }
        }
    }
    let path = s.config_with("mst", "table = \"mst\"", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("epochs = {MAX_EPOCHS}"), "epochs = 2");
    std::fs::write(&path, text).unwrap();
    let events = mop_train(&path, &[]);
    assert_eq!(count(&events, "unit"), rows.len() * SEGMENTS * 2);
    let r = results(&s.out("mst"));
    let models = r["models"].as_array().unwrap();
    // Model ids follow mst_key order.
    let got: Vec<(String, f64, u64)> = models
        .iter()
        .map(|m| {
            (
                m["config"]["optimizer"]["kind"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["config"]["lr"].as_f64().unwrap(),
                m["config"]["batch_size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("adam".to_string(), 0.01, 32),
            ("adamw".to_string(), 0.001, 256),
            ("sgd".to_string(), 0.05, 64),
        ]
    );
    assert_eq!(
        models[2]["config"]["optimizer"]["momentum"].as_f64(),
        Some(0.9)
    );
    assert_eq!(models[1]["config"]["l2"].as_f64(), Some(0.0001));
    assert!(models
        .iter()
        .all(|m| m["val_acc"].as_array().unwrap().len() == 2));
}
