//! Model configurations: one point of a model-selection grid.
//!
//! A [`ModelConfig`] is everything needed to rebuild a model and its optimizer
//! on any worker: architecture, optimizer and its hyper-parameters, batch size
//! and the shape of the input. It is plain serde data: TOML in a run
//! configuration, JSON in results.json and the result tables (the trainer
//! protocol carries it as a typed message, `hopper_proto::ModelConfig`);
//! [`ModelConfig::validate`] rejects nonsense before any tensor is allocated.
//!
//! ```toml
//! lr = 1e-3
//! l2 = 1e-4
//! batch_size = 32
//! classes = 2
//! arch = { kind = "mlp", hidden = [1000, 500] }
//! optimizer = { kind = "adam" }
//! input = { kind = "criteo", sparse = true }
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Buckets per numeric column of a Criteo-like table (bucket 0 is NULL/NaN).
pub const NUMERIC_BUCKETS: usize = 50;
/// Hash slots per categorical column of a Criteo-like table (slot 0 is NULL).
pub const CATEGORICAL_SLOTS: usize = 256;

/// One model configuration of a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Network architecture.
    pub arch: Arch,
    /// Optimizer and its own hyper-parameters.
    pub optimizer: OptimizerKind,
    /// Learning rate (> 0).
    pub lr: f64,
    /// L2 regularization λ, PyTorch's `weight_decay` (≥ 0): added to the
    /// gradient for SGD and Adam, decoupled for AdamW.
    #[serde(default)]
    pub l2: f64,
    /// Mini-batch size (> 0).
    pub batch_size: usize,
    /// Shape of the input the featurizer produces.
    pub input: InputSpec,
    /// Number of classes (≥ 2); labels are `0..classes`. A binary task
    /// has 2; regression has none (leave it at its default, 2).
    pub classes: usize,
    /// What the model predicts, and so its output width, loss and metrics
    /// (absent in configurations written before tasks existed: multiclass).
    #[serde(default, skip_serializing_if = "Task::is_multiclass")]
    pub task: Task,
}

/// What a model predicts: the output's width, the loss, the label's type
/// and the metrics reported (see [`crate::metrics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One logit; BCE-with-logits; labels 0/1 (an integer or boolean column).
    Binary,
    /// `classes` logits; cross-entropy; labels `0..classes` (an integer column).
    #[default]
    Multiclass,
    /// One output; mean squared error; a float label (any numeric column).
    Regression,
}

impl Task {
    /// The name used in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Task::Binary => "binary",
            Task::Multiclass => "multiclass",
            Task::Regression => "regression",
        }
    }

    /// Whether this is the default task (configurations leave it out).
    pub fn is_multiclass(&self) -> bool {
        *self == Task::Multiclass
    }
}

/// Network architectures of the model zoo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arch {
    /// Fully connected ReLU network; the paper's Criteo "confA" is
    /// `hidden = [1000, 500]`.
    Mlp {
        /// Widths of the hidden layers, input side first.
        hidden: Vec<usize>,
    },
    /// Multinomial logistic regression (an MLP without hidden layers).
    LogReg,
    /// A small convolutional net (two conv + pool stages, two dense layers)
    /// for image input.
    Cnn,
    /// ResNet-18 in its CIFAR form (3×3 stem, no max-pool) for image input.
    #[serde(rename = "resnet18")]
    ResNet18,
    /// A module scripted in PyTorch (`torch.jit.script(net).save(path)`),
    /// its initial weights included; `forward` takes one float tensor of
    /// features and returns one of outputs.
    #[serde(rename = "torchscript")]
    TorchScript {
        /// The module's file. In a run configuration a relative path is
        /// relative to the configuration file's directory, and it is made
        /// absolute when the configuration is loaded
        /// (`RunConfig::load`); runners ship the file's bytes to trainers.
        path: String,
    },
}

/// Optimizers, with PyTorch's semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerKind {
    /// SGD with (non-Nesterov, undampened) momentum.
    Sgd {
        /// Momentum factor in `[0, 1)`; 0 is plain SGD.
        #[serde(default)]
        momentum: f64,
    },
    /// Adam (β = 0.9, 0.999; ε = 1e-8), L2 added to the gradient.
    Adam,
    /// AdamW (β = 0.9, 0.999; ε = 1e-8), decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW,
    /// Lazy Adam: Adam, except that a sparse first layer's rows (Criteo
    /// input with `sparse = true`) are updated only when a batch touches
    /// them — their gradient, moments and L2 term — so a step costs what
    /// the batch's rows cost, not the whole table. A different optimizer
    /// from Adam, not a faster way to compute it: an untouched row's moments
    /// do not decay and its weight does not move on that step.
    LazyAdam,
}

/// The input a model consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputSpec {
    /// A Criteo-like click table: numeric columns bucketed into
    /// [`NUMERIC_BUCKETS`] one-hot slots each, categorical columns hashed into
    /// [`CATEGORICAL_SLOTS`] slots each.
    Criteo {
        /// Compute the first layer as an `embedding_bag` over the active
        /// indices instead of a dense one-hot matrix product (same function,
        /// several times faster).
        #[serde(default)]
        sparse: bool,
        /// Number of numeric columns (Criteo: 13).
        #[serde(default = "default_numeric")]
        numeric: usize,
        /// Number of categorical columns (Criteo: 26).
        #[serde(default = "default_categorical")]
        categorical: usize,
    },
    /// Images as a `pixels` list column, `channels × height × width` floats
    /// per row.
    Image {
        /// Colour channels.
        channels: usize,
        /// Height in pixels.
        height: usize,
        /// Width in pixels.
        width: usize,
    },
    /// Any table's columns as dense float features ([`crate::table`]):
    /// numeric columns standardized with the training rows' statistics,
    /// float arrays flattened, categorical columns one-hot over hashed
    /// buckets.
    Table {
        /// The label column.
        label: String,
        /// The feature columns (numeric, or arrays of numbers); empty:
        /// every numeric and array column but the label, `id` and the
        /// categorical ones.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<String>,
        /// Columns left out.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// Columns one-hot encoded over hashed buckets (any type; its
        /// text is hashed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        categorical: Vec<String>,
        /// Hash buckets per categorical column.
        #[serde(default = "default_buckets")]
        buckets: usize,
        /// The columns and their training statistics, resolved by the
        /// runner from the data when the run starts; not written by hand.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<crate::table::TableFeatures>,
    },
}

fn default_buckets() -> usize {
    crate::table::DEFAULT_BUCKETS
}

fn default_numeric() -> usize {
    13
}

fn default_categorical() -> usize {
    26
}

impl InputSpec {
    /// The Criteo layout of the paper: 13 numeric and 26 categorical columns.
    pub fn criteo(sparse: bool) -> Self {
        InputSpec::Criteo {
            sparse,
            numeric: default_numeric(),
            categorical: default_categorical(),
        }
    }

    /// Width of the flattened (one-hot or pixel) feature vector: 7306 for
    /// Criteo, `C·H·W` for images; for a table, its features' (0 until the
    /// runner resolved them).
    pub fn dims(&self) -> usize {
        match *self {
            InputSpec::Table {
                ref features,
                ref categorical,
                buckets,
                ..
            } => features
                .as_ref()
                .map_or(0, |f| f.dims(categorical.len(), buckets)),
            InputSpec::Criteo {
                numeric,
                categorical,
                ..
            } => numeric * NUMERIC_BUCKETS + categorical * CATEGORICAL_SLOTS,
            InputSpec::Image {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }

    /// Whether the first layer runs as an `embedding_bag` over active indices.
    pub fn is_sparse(&self) -> bool {
        matches!(self, InputSpec::Criteo { sparse: true, .. })
    }
}

impl ModelConfig {
    /// The paper's Criteo "confA": 7306 → 1000 → 500 → 2 with Adam.
    pub fn conf_a(lr: f64, l2: f64, batch_size: usize, sparse: bool) -> Self {
        ModelConfig {
            arch: Arch::Mlp {
                hidden: vec![1000, 500],
            },
            optimizer: OptimizerKind::Adam,
            lr,
            l2,
            batch_size,
            input: InputSpec::criteo(sparse),
            classes: 2,
            task: Task::Multiclass,
        }
    }

    /// Width of the model's output: `classes` logits for multiclass, one
    /// logit (binary) or one value (regression) otherwise. A network whose
    /// output has another width cannot train for the task.
    pub fn outputs(&self) -> usize {
        match self.task {
            Task::Multiclass => self.classes,
            Task::Binary | Task::Regression => 1,
        }
    }

    /// Parses a configuration from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: ModelConfig = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("cannot parse model configuration JSON: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values a deserializer cannot: ranges, and that the
    /// architecture can consume the input.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "lr must be a positive finite number, got {}",
                self.lr
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad(format!(
                "l2 (weight decay) must be ≥ 0 and finite, got {}",
                self.l2
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.classes < 2 {
            return bad(format!("classes must be at least 2, got {}", self.classes));
        }
        match self.task {
            Task::Binary if self.classes != 2 => {
                return bad(format!(
                    "task = \"binary\" predicts one logit for labels 0 and 1: classes must be 2 \
                     (or left out), got {}; use task = \"multiclass\" for {} classes",
                    self.classes, self.classes
                ))
            }
            Task::Regression if self.classes != 2 => {
                return bad(format!(
                    "task = \"regression\" predicts one value and has no classes: drop \
                     classes = {}",
                    self.classes
                ))
            }
            _ => {}
        }
        if let OptimizerKind::Sgd { momentum } = self.optimizer {
            if !(0.0..1.0).contains(&momentum) {
                return bad(format!("SGD momentum must be in [0, 1), got {momentum}"));
            }
        }
        if let InputSpec::Table {
            categorical,
            buckets,
            ..
        } = &self.input
        {
            if !categorical.is_empty() && *buckets == 0 {
                return bad("input.buckets must be at least 1 for categorical columns".into());
            }
        }
        let unresolved = matches!(self.input, InputSpec::Table { features: None, .. });
        if self.input.dims() == 0 && !unresolved {
            return bad("the input has no features (all dimensions are 0)".into());
        }
        if self.optimizer == OptimizerKind::LazyAdam && !self.input.is_sparse() {
            return bad(
                "lazy_adam updates the touched rows of a sparse first layer: set the Criteo input's \
                 sparse = true, or use adam"
                    .into(),
            );
        }
        match (&self.arch, &self.input) {
            (Arch::TorchScript { path }, _) if path.is_empty() => {
                bad("a torchscript architecture needs the module's file: path = \"net.pt\"".into())
            }
            (Arch::TorchScript { .. }, _) if self.optimizer == OptimizerKind::LazyAdam => bad(
                "lazy_adam updates the sparse first layer of mlp and log_reg models; use adam for \
                 a torchscript model"
                    .into(),
            ),
            (Arch::Mlp { hidden }, _) if hidden.contains(&0) => {
                bad(format!("MLP hidden widths must be ≥ 1, got {hidden:?}"))
            }
            (Arch::Cnn | Arch::ResNet18, InputSpec::Criteo { .. } | InputSpec::Table { .. }) => bad(format!(
                "{:?} needs image input (input.kind = \"image\"); use mlp or log_reg for Criteo-like tables",
                self.arch
            )),
            (Arch::Cnn, InputSpec::Image { height, width, .. }) if *height < 4 || *width < 4 => {
                bad(format!(
                    "cnn needs images of at least 4×4 pixels (two 2×2 poolings), got {height}×{width}"
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_a_has_the_papers_7306_inputs_and_validates() {
        let c = ModelConfig::conf_a(1e-3, 1e-4, 32, false);
        assert_eq!(c.input.dims(), 7306);
        c.validate().unwrap();
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let c = ModelConfig::conf_a(1e-4, 1e-5, 256, true);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(ModelConfig::from_json(&text).unwrap(), c);
    }

    #[test]
    fn parses_the_documented_json_shape() {
        let text = r#"{"arch":{"kind":"resnet18"},"optimizer":{"kind":"sgd","momentum":0.9},
            "lr":0.1,"l2":5e-4,"batch_size":64,"classes":10,
            "input":{"kind":"image","channels":3,"height":32,"width":32}}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.arch, Arch::ResNet18);
        assert_eq!(c.input.dims(), 3072);
    }

    #[test]
    fn rejects_bad_values_with_a_config_error() {
        let ok = ModelConfig::conf_a(1e-3, 1e-4, 32, false);
        let cases: Vec<(ModelConfig, &str)> = vec![
            (
                ModelConfig {
                    lr: -1.0,
                    ..ok.clone()
                },
                "lr",
            ),
            (
                ModelConfig {
                    lr: f64::NAN,
                    ..ok.clone()
                },
                "lr",
            ),
            (
                ModelConfig {
                    batch_size: 0,
                    ..ok.clone()
                },
                "batch_size",
            ),
            (
                ModelConfig {
                    l2: -1e-4,
                    ..ok.clone()
                },
                "l2",
            ),
            (
                ModelConfig {
                    classes: 1,
                    ..ok.clone()
                },
                "classes",
            ),
            (
                ModelConfig {
                    arch: Arch::Cnn,
                    ..ok.clone()
                },
                "image input",
            ),
            (
                ModelConfig {
                    optimizer: OptimizerKind::Sgd { momentum: 1.5 },
                    ..ok.clone()
                },
                "momentum",
            ),
            (
                ModelConfig {
                    task: Task::Binary,
                    classes: 3,
                    ..ok.clone()
                },
                "task = \"binary\"",
            ),
            (
                ModelConfig {
                    task: Task::Regression,
                    classes: 10,
                    ..ok.clone()
                },
                "drop classes = 10",
            ),
        ];
        for (config, needle) in cases {
            match config.validate() {
                Err(Error::Config(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("expected a config error about {needle}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_task_sets_the_output_width_and_old_json_reads_as_multiclass() {
        let mut c = ModelConfig::conf_a(1e-3, 1e-4, 32, false);
        assert_eq!(c.outputs(), 2);
        let old = serde_json::to_string(&c).unwrap();
        assert!(!old.contains("task"), "the default task is left out: {old}");
        assert_eq!(ModelConfig::from_json(&old).unwrap().task, Task::Multiclass);
        c.task = Task::Binary;
        assert_eq!(c.outputs(), 1);
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"task\":\"binary\""), "{text}");
        assert_eq!(ModelConfig::from_json(&text).unwrap(), c);
        c.task = Task::Regression;
        assert_eq!(c.outputs(), 1);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_arch_is_a_config_error() {
        let text = r#"{"arch":{"kind":"transformer"},"optimizer":{"kind":"adam"},
            "lr":0.1,"batch_size":64,"classes":2,"input":{"kind":"criteo"}}"#;
        match ModelConfig::from_json(text) {
            Err(Error::Config(msg)) => assert!(msg.contains("transformer"), "{msg}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
