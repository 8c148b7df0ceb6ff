//! TorchScript models on tiny CPU problems: the committed fixture
//! `tests/fixtures/torchscript/image_bn_dropout.pt` (a conv layer,
//! BatchNorm2d, Dropout, a linear head; `make.sh` beside it made it).

use safetensors::SafeTensors;
use tch::{Kind, Tensor};

use crate::device::set_threads;
use crate::error::Error;
use crate::featurize::Featurized;
use crate::model::Model;
use crate::train::{evaluate, seed_unit, train_partition};
use mop_core::config::{Arch, InputSpec, ModelConfig};

fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/torchscript/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn image_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::TorchScript {
            path: fixture("image_bn_dropout.pt"),
        },
        input: InputSpec::Image {
            channels: 3,
            height: 32,
            width: 32,
        },
        classes: 10,
        lr: 1e-2,
        batch_size: 16,
        ..ModelConfig::conf_a(1e-2, 1e-4, 16, false)
    }
}

/// `rows` random images with labels, drawn from libtorch's generator.
fn images(rows: i64, seed: i64) -> Featurized {
    tch::manual_seed(seed);
    let x = Tensor::rand([rows, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::randint(10, [rows], (Kind::Int64, tch::Device::Cpu));
    Featurized::new(x, y).unwrap()
}

/// Trains `model` on `data` as one unit of (epoch, partition).
fn unit(
    model: &mut Model,
    opt: &mut crate::optim::Optimizer,
    data: &Featurized,
    epoch: usize,
    partition: usize,
) {
    seed_unit(5, epoch, partition);
    let batches = vec![Ok(data.shallow_clone())];
    train_partition(model, opt, batches, 16, |_| {}).unwrap();
}

#[test]
fn a_scripted_module_hops_with_its_buffers_and_optimizer_state_bit_exactly() {
    set_threads(1);
    let config = image_config();
    let parts = [images(40, 1), images(24, 2)];
    // Two epochs over two partitions without a hop…
    let mut model = Model::new(config.clone(), 5).unwrap();
    let mut opt = model.optimizer().unwrap();
    for epoch in 0..2 {
        for (p, data) in parts.iter().enumerate() {
            unit(&mut model, &mut opt, data, epoch, p);
        }
    }
    let stayed = model.to_state(&opt).unwrap();
    // …and with the model rebuilt from its state before every unit, as a
    // trainer that receives it does (from the module's bytes, not its file).
    let module = std::fs::read(fixture("image_bn_dropout.pt")).unwrap();
    let mut state = Vec::new();
    for epoch in 0..2 {
        for (p, data) in parts.iter().enumerate() {
            let (mut model, mut opt) = if state.is_empty() {
                let model = Model::new_with_module(config.clone(), &module, 5).unwrap();
                let opt = model.optimizer().unwrap();
                (model, opt)
            } else {
                Model::from_state_with_module(config.clone(), &module, &state).unwrap()
            };
            unit(&mut model, &mut opt, data, epoch, p);
            state = model.to_state(&opt).unwrap();
        }
    }
    assert!(stayed == state, "a hop changed the model");

    // The buffers travelled: BatchNorm's statistics moved, and its counter
    // counted every training step (3 + 2 mini-batches, two epochs).
    let blob = SafeTensors::deserialize(&state).unwrap();
    let names: Vec<String> = blob.names().into_iter().map(str::to_string).collect();
    for name in [
        "w.conv.weight",
        "w.bn.running_mean",
        "w.bn.running_var",
        "w.bn.num_batches_tracked",
        "opt.conv.weight.m",
        "opt.head.bias.v",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    let counter = blob.tensor("w.bn.num_batches_tracked").unwrap();
    assert_eq!(counter.data(), 10i64.to_le_bytes());
    let (model, _) = Model::from_state(config.clone(), &state).unwrap();
    let mean = model
        .var_store()
        .variables()
        .remove("bn.running_mean")
        .unwrap();
    assert!(mean.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn dropout_draws_from_the_units_seed() {
    set_threads(1);
    let config = image_config();
    let data = images(32, 3);
    let train_as = |partition: usize| {
        let mut model = Model::new(config.clone(), 5).unwrap();
        let mut opt = model.optimizer().unwrap();
        unit(&mut model, &mut opt, &data, 0, partition);
        model.to_state(&opt).unwrap()
    };
    // The same unit twice: the same masks; another partition's seed: others.
    assert!(train_as(0) == train_as(0));
    assert!(train_as(0) != train_as(1));
}

#[test]
fn evaluation_uses_the_running_statistics_and_moves_nothing() {
    set_threads(1);
    let config = image_config();
    let data = images(48, 4);
    let mut model = Model::new(config, 5).unwrap();
    let mut opt = model.optimizer().unwrap();
    unit(&mut model, &mut opt, &data, 0, 0);
    let before = model.to_state(&opt).unwrap();
    let first = evaluate(&model, vec![Ok(data.shallow_clone())]).unwrap();
    let second = evaluate(&model, vec![Ok(data.shallow_clone())]).unwrap();
    assert_eq!(
        first, second,
        "evaluation mode is deterministic (no dropout)"
    );
    assert!(
        model.to_state(&opt).unwrap() == before,
        "evaluation moved a buffer"
    );
}

#[test]
fn the_saved_module_holds_the_trained_tensors() {
    set_threads(1);
    let config = image_config();
    let mut model = Model::new(config.clone(), 5).unwrap();
    let mut opt = model.optimizer().unwrap();
    unit(&mut model, &mut opt, &images(32, 6), 0, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trained.pt");
    model.save_torchscript(&file).unwrap();
    // Loaded as a fresh module, its initial weights are the trained ones.
    let saved = std::fs::read(&file).unwrap();
    let reloaded = Model::new_with_module(config, &saved, 0).unwrap();
    let trained = model.var_store().variables();
    let loaded = reloaded.var_store().variables();
    assert_eq!(trained.len(), loaded.len());
    assert_eq!(trained.len(), 9, "6 parameters and 3 buffers");
    for (name, t) in &trained {
        assert!(t.equal(&loaded[name]), "{name} differs after save and load");
    }
}

#[test]
fn a_forward_that_does_not_fit_is_refused_with_the_shapes() {
    let wrong_input = ModelConfig {
        input: InputSpec::criteo(false),
        ..image_config()
    };
    match Model::new(wrong_input, 0) {
        Err(Error::Config(m)) => assert!(
            m.contains("image_bn_dropout.pt") && m.contains("[n, 7306]") && m.contains("forward"),
            "{m}"
        ),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let wrong_output = ModelConfig {
        classes: 2,
        ..image_config()
    };
    match Model::new(wrong_output, 0) {
        Err(Error::Config(m)) => assert!(
            m.contains("shape [2, 10]") && m.contains("wanted") && m.contains("[2, 2]"),
            "{m}"
        ),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_no_torchscript_module_is_refused() {
    let config = image_config();
    match Model::new_with_module(config.clone(), b"not a zip archive", 0) {
        Err(Error::Config(m)) => assert!(m.contains("not a TorchScript module"), "{m}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let missing = ModelConfig {
        arch: Arch::TorchScript {
            path: "/nonexistent/net.pt".into(),
        },
        ..config
    };
    match Model::new(missing, 0) {
        Err(Error::Config(m)) => assert!(m.contains("/nonexistent/net.pt"), "{m}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
