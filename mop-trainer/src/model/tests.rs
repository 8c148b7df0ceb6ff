//! Model, state and training-loop behaviour on tiny CPU problems.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use super::Model;
use crate::device::set_threads;
use crate::featurize::{Featurized, Featurizer};
use crate::optim::Optimizer;
use crate::train::{evaluate, train_partition};
use mop_core::config::{Arch, InputSpec, ModelConfig, OptimizerKind};

/// A Criteo-like batch whose label is planted in `c0` (values `a…` → 1,
/// `b…` → 0) and, more weakly, in `i0` (large → 1); all other columns noise.
fn planted_criteo(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<i32> = (0..rows).map(|_| rng.random_range(0..2)).collect();
    let mut columns: Vec<(String, ArrayRef)> =
        vec![("label".into(), Arc::new(Int32Array::from(labels.clone())))];
    for j in 0..13 {
        let values: Vec<Option<f64>> = labels
            .iter()
            .map(|&y| {
                let noise = rng.random_range(0.0..100.0);
                match (j, rng.random_range(0..20)) {
                    (_, 0) => None,
                    (0, _) => Some(noise + f64::from(y) * 1000.0),
                    _ => Some(noise),
                }
            })
            .collect();
        columns.push((format!("i{j}"), Arc::new(Float64Array::from(values))));
    }
    for k in 0..26 {
        let values: Vec<Option<String>> = labels
            .iter()
            .map(|&y| {
                let v = rng.random_range(0..40);
                match (k, rng.random_range(0..10)) {
                    (_, 0) => None,
                    (0, _) => Some(format!("{}{v}", if y == 1 { 'a' } else { 'b' })),
                    _ => Some(format!("x{v}")),
                }
            })
            .collect();
        columns.push((format!("c{k}"), Arc::new(StringArray::from(values))));
    }
    RecordBatch::try_from_iter(columns).unwrap()
}

fn criteo_config(arch: Arch, optimizer: OptimizerKind, sparse: bool) -> ModelConfig {
    ModelConfig {
        arch,
        optimizer,
        lr: 1e-2,
        l2: 1e-5,
        batch_size: 16,
        input: InputSpec::criteo(sparse),
        classes: 2,
        task: mop_core::config::Task::Multiclass,
    }
}

fn small_mlp(sparse: bool) -> ModelConfig {
    criteo_config(
        Arch::Mlp {
            hidden: vec![16, 8],
        },
        OptimizerKind::Adam,
        sparse,
    )
}

/// The featurized batch cut into Arrow-like chunks of the given sizes.
fn chunks(f: &Featurized, sizes: &[usize]) -> Vec<crate::Result<Featurized>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for &size in sizes.iter().cycle() {
        if offset >= f.len() {
            break;
        }
        let len = size.min(f.len() - offset);
        out.push(f.slice(offset, len));
        offset += len;
    }
    out
}

fn state_of(model: &Model, opt: &Optimizer) -> Vec<u8> {
    model.to_state(opt).unwrap()
}

/// Names of the tensors that differ between two state blobs (empty when
/// the states are identical), so a failure says what diverged.
fn state_diff(a: &[u8], b: &[u8]) -> Vec<String> {
    let (a, b) = (
        SafeTensors::deserialize(a).unwrap(),
        SafeTensors::deserialize(b).unwrap(),
    );
    let mut names: Vec<String> = a
        .names()
        .into_iter()
        .chain(b.names())
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| match (a.tensor(n), b.tensor(n)) {
            (Ok(x), Ok(y)) => x.data() != y.data() || x.shape() != y.shape(),
            _ => true,
        })
        .collect()
}

#[test]
fn same_seed_builds_identical_weights_and_other_seeds_do_not() {
    let a = Model::new_on(small_mlp(false), 7, Device::Cpu).unwrap();
    let b = Model::new_on(small_mlp(false), 7, Device::Cpu).unwrap();
    let c = Model::new_on(small_mlp(false), 8, Device::Cpu).unwrap();
    let w = |m: &Model| m.var_store().variables()["fc0.weight"].shallow_clone();
    assert!(w(&a).equal(&w(&b)));
    assert!(!w(&a).equal(&w(&c)));
    assert_eq!(a.parameter_count(), 7306 * 16 + 16 + 16 * 8 + 8 + 8 * 2 + 2);
}

#[test]
fn sparse_first_layer_computes_the_dense_function() {
    let batch = planted_criteo(64, 1);
    let dense = Model::new_on(small_mlp(false), 3, Device::Cpu).unwrap();
    let sparse = Model::new_on(small_mlp(true), 3, Device::Cpu).unwrap();
    let f = Featurizer::new(dense.config()).featurize(&batch).unwrap();
    let one_hot = Featurizer::new(dense.config())
        .featurize_dense(&batch)
        .unwrap();
    let by_indices = sparse.forward_t(&f.x, true).unwrap();
    let by_one_hot = dense.forward_t(&one_hot.x, true).unwrap();
    let by_dense_indices = dense.forward_t(&f.x, true).unwrap();
    let diff = (&by_indices - &by_one_hot).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "sparse and dense logits differ by {diff}");
    assert!(by_dense_indices.equal(&by_one_hot));

    // Gradients of the shared weight agree too.
    let grad = |m: &Model, x: &Tensor| {
        let loss = Model::loss(&m.forward_t(x, true).unwrap(), &f.y).unwrap();
        loss.backward();
        m.var_store().variables()["fc0.weight"].grad()
    };
    let gd = grad(&dense, &one_hot.x);
    let gs = grad(&sparse, &f.x);
    let diff = (&gd - &gs).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "sparse and dense gradients differ by {diff}");
}

/// Trains `config` from `seed` over `data` cut into `sizes`, with one thread.
fn train(
    config: &ModelConfig,
    seed: u64,
    data: &Featurized,
    sizes: &[usize],
) -> (Model, Optimizer) {
    set_threads(1);
    let mut model = Model::new_on(config.clone(), seed, Device::Cpu).unwrap();
    let mut opt = model.optimizer().unwrap();
    train_partition(
        &mut model,
        &mut opt,
        chunks(data, sizes),
        config.batch_size,
        |_| {},
    )
    .unwrap();
    (model, opt)
}

#[test]
fn training_is_bit_identical_however_rows_are_grouped_into_batches() {
    let config = small_mlp(true);
    let data = Featurizer::new(&config)
        .featurize(&planted_criteo(100, 2))
        .unwrap();
    let (m1, o1) = train(&config, 5, &data, &[100]);
    let (m2, o2) = train(&config, 5, &data, &[7, 30, 1, 16]);
    assert_eq!(
        o1.steps(),
        7,
        "100 rows in batches of 16 = 6 full + 1 short"
    );
    assert_eq!(
        state_diff(&state_of(&m1, &o1), &state_of(&m2, &o2)),
        Vec::<String>::new()
    );
    assert!(
        state_of(&m1, &o1) == state_of(&m2, &o2),
        "same state, different bytes"
    );
    let (m3, o3) = train(&config, 6, &data, &[100]);
    assert!(!state_diff(&state_of(&m1, &o1), &state_of(&m3, &o3)).is_empty());
}

#[test]
fn progress_reports_every_mini_batch_and_metrics_add_up() {
    let config = small_mlp(false);
    let data = Featurizer::new(&config)
        .featurize(&planted_criteo(40, 3))
        .unwrap();
    let mut model = Model::new_on(config.clone(), 1, Device::Cpu).unwrap();
    let mut opt = model.optimizer().unwrap();
    let mut seen = Vec::new();
    let m = train_partition(&mut model, &mut opt, chunks(&data, &[9]), 16, |p| {
        seen.push(p.samples)
    })
    .unwrap();
    assert_eq!(seen, [16, 32, 40]);
    assert_eq!(m.samples, 40);
    assert!(m.correct <= 40 && m.loss_sum > 0.0 && m.seconds >= m.wait_seconds);
}

#[test]
fn state_round_trip_is_bit_exact_and_training_continues_identically() {
    for optimizer in [
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
        OptimizerKind::Sgd { momentum: 0.9 },
    ] {
        let config = criteo_config(Arch::Mlp { hidden: vec![8] }, optimizer.clone(), true);
        let data = Featurizer::new(&config)
            .featurize(&planted_criteo(64, 4))
            .unwrap();
        let (first, second) = (data.slice(0, 32).unwrap(), data.slice(32, 32).unwrap());

        let mut model = Model::new_on(config.clone(), 9, Device::Cpu).unwrap();
        let mut opt = model.optimizer().unwrap();
        train_partition(&mut model, &mut opt, [Ok(first)], 16, |_| {}).unwrap();
        let blob = model.to_state(&opt).unwrap();

        let (mut hopped, mut hopped_opt) =
            Model::from_state_on(config.clone(), &blob, Device::Cpu).unwrap();
        assert!(
            hopped.to_state(&hopped_opt).unwrap() == blob,
            "round trip changed the state"
        );
        assert_eq!(hopped_opt.steps(), 2);

        let stay = train_partition(
            &mut model,
            &mut opt,
            [Ok(second.shallow_clone())],
            16,
            |_| {},
        );
        let hop = train_partition(&mut hopped, &mut hopped_opt, [Ok(second)], 16, |_| {});
        assert_eq!(stay.unwrap().loss_sum, hop.unwrap().loss_sum);
        let diff = state_diff(
            &model.to_state(&opt).unwrap(),
            &hopped.to_state(&hopped_opt).unwrap(),
        );
        assert!(
            diff.is_empty(),
            "{optimizer:?}: training diverged after a hop in {diff:?}"
        );
    }
}

/// `to_state` writes each tensor straight into its place in the blob; the
/// blob must be, byte for byte, what `safetensors::serialize` makes of the
/// same tensors and metadata (any reader of safetensors reads it, and a
/// state encodes to the same bytes whichever way it is written).
#[test]
fn a_state_is_the_blob_safetensors_would_write() {
    let config = criteo_config(Arch::Mlp { hidden: vec![8] }, OptimizerKind::Adam, true);
    let data = Featurizer::new(&config)
        .featurize(&planted_criteo(32, 5))
        .unwrap();
    let mut model = Model::new_on(config, 3, Device::Cpu).unwrap();
    let mut opt = model.optimizer().unwrap();
    train_partition(&mut model, &mut opt, [Ok(data)], 16, |_| {}).unwrap();
    let blob = model.to_state(&opt).unwrap();

    let (_, header) = SafeTensors::read_metadata(&blob).unwrap();
    let parsed = SafeTensors::deserialize(&blob).unwrap();
    let tensors = parsed.tensors();
    assert!(tensors.iter().any(|(n, _)| n.starts_with("opt.")));
    assert!(tensors.iter().any(|(n, _)| n.starts_with("w.")));
    let metadata = header.metadata().clone();
    assert_eq!(metadata.as_ref().map(|m| m.len()), Some(1));
    let again = safetensors::serialize(tensors, metadata).unwrap();
    assert!(
        again == blob,
        "the blob differs from safetensors::serialize's"
    );
}

#[test]
fn state_of_another_architecture_is_rejected() {
    let model = Model::new_on(small_mlp(true), 1, Device::Cpu).unwrap();
    let blob = model.to_state(&model.optimizer().unwrap()).unwrap();
    let other = criteo_config(Arch::Mlp { hidden: vec![32] }, OptimizerKind::Adam, true);
    let err = Model::from_state_on(other, &blob, Device::Cpu).unwrap_err();
    assert!(matches!(err, crate::Error::State(_)), "{err}");
    let err = Model::from_state_on(small_mlp(true), b"not a state", Device::Cpu).unwrap_err();
    assert!(matches!(err, crate::Error::State(_)), "{err}");
}

#[test]
fn logistic_regression_and_mlp_learn_a_planted_signal() {
    let train_rows = planted_criteo(2000, 10);
    let test_rows = planted_criteo(500, 11);
    for arch in [Arch::LogReg, Arch::Mlp { hidden: vec![32] }] {
        let config = criteo_config(arch.clone(), OptimizerKind::Adam, true);
        let fz = Featurizer::new(&config);
        let data = fz.featurize(&train_rows).unwrap();
        let mut model = Model::new_on(config.clone(), 1, Device::Cpu).unwrap();
        let mut opt = model.optimizer().unwrap();
        let before = evaluate(&model, [fz.featurize(&test_rows)]).unwrap();
        for _ in 0..3 {
            train_partition(&mut model, &mut opt, chunks(&data, &[500]), 32, |_| {}).unwrap();
        }
        let after = evaluate(&model, [fz.featurize(&test_rows)]).unwrap();
        assert_eq!(after.samples, 500);
        assert!(
            after.accuracy > 0.85,
            "{arch:?}: accuracy {} (before {})",
            after.accuracy,
            before.accuracy
        );
        assert!(after.loss < before.loss);
    }
}

fn image_config(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        optimizer: OptimizerKind::Sgd { momentum: 0.9 },
        lr: 1e-2,
        l2: 5e-4,
        batch_size: 4,
        input: InputSpec::Image {
            channels: 3,
            height: 8,
            width: 8,
        },
        classes: 10,
        task: mop_core::config::Task::Multiclass,
    }
}

#[test]
fn every_architecture_runs_forward_and_backward() {
    let images = Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 3, 9, 1]);
    let configs = [
        image_config(Arch::Cnn),
        image_config(Arch::ResNet18),
        image_config(Arch::LogReg),
        image_config(Arch::Mlp { hidden: vec![20] }),
    ];
    for config in configs {
        let mut model = Model::new_on(config.clone(), 2, Device::Cpu).unwrap();
        let mut opt = model.optimizer().unwrap();
        let data = Featurized::new(images.shallow_clone(), labels.shallow_clone()).unwrap();
        let before = model.to_state(&opt).unwrap();
        let m = train_partition(&mut model, &mut opt, [Ok(data)], 4, |_| {}).unwrap();
        assert_eq!(m.samples, 4, "{:?}", config.arch);
        assert!(m.loss_sum.is_finite());
        assert!(
            model.to_state(&opt).unwrap() != before,
            "{:?} did not update",
            config.arch
        );
        let logits = model.forward_t(&images, false).unwrap();
        assert_eq!(logits.size(), [4, 10]);
    }
}

#[test]
fn image_models_reject_table_input() {
    let model = Model::new_on(image_config(Arch::Cnn), 2, Device::Cpu).unwrap();
    let err = model.forward_t(&Tensor::zeros([2, 39], (Kind::Int64, Device::Cpu)), true);
    assert!(matches!(err, Err(crate::Error::Data(_))));
}
