//! TorchScript models end to end: a module scripted in PyTorch (the
//! committed fixture `tests/fixtures/torchscript/image_bn_dropout.pt`: a
//! conv layer, BatchNorm2d, Dropout and a linear head) trained by `mop
//! train` over two PostgreSQL segments, bit for bit as sequential training,
//! saved as TorchScript, scored by `mop predict`; and a module that does not
//! fit the run refused before anything trains.

use std::path::{Path, PathBuf};
use std::process::Command;

use devcluster::{load_images, LocalCluster};
use flight_client::plan::plan;
use flight_client::read::spawn_reader;
use flight_client::FlightSlice;
use hopper_tests::run::mop_train;
use hopper_tests::{binary, cluster, segment_args, FlightServer};
use mop_core::run_config::RunConfig;
use mop_core::schedule::visit_order;
use mop_trainer::device::set_threads;
use mop_trainer::featurize::Featurizer;
use mop_trainer::model::Model;
use mop_trainer::shuffle::{shuffled, unit_seed, WINDOW};
use mop_trainer::train::{seed_unit, train_partition};

const FIXTURE: &str = "image_bn_dropout.pt";

/// Two segments of generated 3×32×32 images, a flight-server over them,
/// and a directory holding a copy of the fixture.
struct Setup {
    cluster: LocalCluster,
    server: FlightServer,
    dir: tempfile::TempDir,
}

async fn setup(rows: u64) -> Setup {
    let cluster = cluster(2).await.unwrap();
    load_images(&cluster, "images", rows, 3).await.unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/torchscript");
    std::fs::copy(fixture.join(FIXTURE), dir.path().join(FIXTURE)).unwrap();
    Setup {
        cluster,
        server,
        dir,
    }
}

impl Setup {
    /// A run configuration in the temporary directory naming the module by
    /// a path relative to it, with `classes` classes.
    fn config(&self, name: &str, classes: usize) -> PathBuf {
        let text = format!(
            r#"
[source]
flight = "{flight}"
table = "images"
validation = {{ fraction = 0.2, key = "id" }}

[train]
epochs = 2
seed = 17
threads = 1

[grid]
arch = [{{ kind = "torchscript", path = "{FIXTURE}" }}]
optimizer = [{{ kind = "adam" }}, {{ kind = "sgd", momentum = 0.9 }}]
lr = [1e-2]
batch_size = [16]
input = {{ kind = "image", channels = 3, height = 32, width = 32 }}
classes = {classes}

[output]
dir = "{out}"
"#,
            flight = self.server.url,
            out = self.out(name).display(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torchscript_module_with_batchnorm_and_dropout_trains_by_mop_as_it_trains_sequentially() {
    let s = setup(600).await;
    let path = s.config("mop", 10);
    mop_train(&path, &[]);
    let out = s.out("mop");
    let mop_states: Vec<Vec<u8>> = (0..2)
        .map(|m| std::fs::read(out.join(format!("models/model-{m}.safetensors"))).unwrap())
        .collect();

    // The rows of each partition, read through Flight as the runner splits
    // them: partition p is every endpoint i with i % 2 == p.
    let config = RunConfig::load(&path).unwrap();
    let slices = plan(&s.server.url, &config.train_sql().unwrap())
        .await
        .unwrap();
    let w = slices.len();
    assert_eq!(w, 2, "one endpoint per segment");
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

    // One process, one model at a time, the partitions in the scheduler's
    // visit order; every unit seeded as trainers seed it.
    let seed = config.train.seed;
    let cfgs = config.grid.expand().unwrap();
    assert_eq!(cfgs.len(), 2);
    let models = cfgs.len();
    let sequential = tokio::task::spawn_blocking(move || {
        set_threads(1);
        (0..models)
            .map(|m| {
                let cfg = cfgs[m].clone();
                let featurizer = Featurizer::new(&cfg);
                let model_seed = seed + m as u64;
                let mut model = Model::new(cfg.clone(), model_seed).unwrap();
                let mut opt = model.optimizer().unwrap();
                for epoch in 0..2 {
                    for p in visit_order(models, w, seed, m, epoch).unwrap() {
                        seed_unit(model_seed, epoch, p);
                        let batches = parts[p].iter().map(|b| featurizer.featurize(b));
                        let batches = shuffled(batches, unit_seed(model_seed, epoch, p), WINDOW);
                        train_partition(&mut model, &mut opt, batches, cfg.batch_size, |_| {})
                            .unwrap();
                    }
                }
                model.to_state(&opt).unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (m, (state, mop_state)) in sequential.iter().zip(&mop_states).enumerate() {
        // Parameters, BatchNorm's buffers and the optimizer state, byte
        // for byte.
        assert!(
            state == mop_state,
            "model {m}: MOP's model differs from sequential training"
        );
    }

    // Each model is also a TorchScript file holding the trained tensors.
    for (m, mop_state) in mop_states.iter().enumerate() {
        let cfg = config.grid.expand().unwrap()[m].clone();
        let file = std::fs::read(out.join(format!("models/model-{m}.pt"))).unwrap();
        let (trained, _) = Model::from_state(cfg.clone(), mop_state).unwrap();
        let saved = Model::new_with_module(cfg, &file, 0).unwrap();
        let saved_vars = saved.var_store().variables();
        for (name, t) in trained.var_store().variables() {
            assert!(
                t.equal(&saved_vars[&name]),
                "model {m}: {name} in model-{m}.pt"
            );
        }
    }

    // And `mop predict` scores every row with it, on its own segment.
    let status = Command::new(binary("mop").unwrap())
        .args(["predict", "--dir"])
        .arg(&out)
        .args(["--table", "images", "--into", "image_scores", "--replace"])
        .status()
        .unwrap();
    assert!(status.success(), "mop predict failed: {status}");
    for segment in 0..2 {
        let client = s.cluster.client(segment).await.unwrap();
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM image_scores), \
                 (SELECT count(*) FROM images JOIN image_scores USING (id))",
                &[],
            )
            .await
            .unwrap();
        let (rows, scores, joined): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert!(rows > 0);
        assert_eq!((scores, joined), (rows, rows), "segment {segment}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_whose_output_does_not_fit_is_refused_before_training_with_the_shapes() {
    let s = setup(60).await;
    // The fixture gives 10 logits; this run wants 3 classes.
    let path = s.config("wrong", 3);
    let output = Command::new(binary("mop").unwrap())
        .args(["train", "--progress", "quiet", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "mop train accepted it: {stderr}");
    assert!(
        stderr.contains(FIXTURE) && stderr.contains("[2, 10]") && stderr.contains("[2, 3]"),
        "{stderr}"
    );
    // Nothing trained: no state was written anywhere.
    assert_eq!(states_under(&s.out("wrong")), 0);
}

/// How many `.safetensors` files are under `dir`.
fn states_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| match p.is_dir() {
            true => states_under(&p),
            false => usize::from(p.extension().is_some_and(|x| x == "safetensors")),
        })
        .sum()
}
