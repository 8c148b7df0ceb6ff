//! The model configuration on the wire: the one conversion between
//! [`mop_core::config::ModelConfig`] and the `ModelConfig` message of
//! `hopper.proto`, in both directions.
//!
//! The runner converts each model's configuration once
//! (`From<&core::ModelConfig>`, which cannot fail: every core value has a
//! message); the trainer converts it back (`TryFrom<ModelConfig>`), which
//! refuses what no core value corresponds to — an unset message field or
//! oneof, which is also how a case added by a newer runner decodes in an
//! older trainer — and then runs [`core::ModelConfig::validate`], so a trainer
//! accepts over gRPC exactly what it would accept from a grid file. The
//! errors are the core's [`mop_core::Error::Config`], which the trainer already
//! answers with `InvalidArgument`.

use mop_core::config as core;
use mop_core::{Error, Result};

use crate::{
    arch, input_spec, optimizer, table_features, Arch, InputSpec, ModelConfig, Optimizer,
    TableFeatures, Task,
};

impl From<&core::ModelConfig> for ModelConfig {
    fn from(c: &core::ModelConfig) -> Self {
        ModelConfig {
            arch: Some(Arch::from(&c.arch)),
            optimizer: Some(Optimizer::from(&c.optimizer)),
            lr: c.lr,
            l2: c.l2,
            batch_size: wide(c.batch_size),
            input: Some(InputSpec::from(&c.input)),
            classes: wide(c.classes),
            task: Task::from(c.task) as i32,
        }
    }
}

impl From<core::Task> for Task {
    fn from(t: core::Task) -> Self {
        match t {
            core::Task::Binary => Task::Binary,
            core::Task::Multiclass => Task::Multiclass,
            core::Task::Regression => Task::Regression,
        }
    }
}

impl From<&core::Arch> for Arch {
    fn from(a: &core::Arch) -> Self {
        let kind = match a {
            core::Arch::Mlp { hidden } => arch::Kind::Mlp(arch::Mlp {
                hidden: hidden.iter().copied().map(wide).collect(),
            }),
            core::Arch::LogReg => arch::Kind::LogReg(arch::LogReg {}),
            core::Arch::Cnn => arch::Kind::Cnn(arch::Cnn {}),
            core::Arch::ResNet18 => arch::Kind::Resnet18(arch::ResNet18 {}),
            // The runner attaches the module's bytes (`with_module`).
            core::Arch::TorchScript { path } => arch::Kind::Torchscript(arch::TorchScript {
                path: path.clone(),
                module: Default::default(),
            }),
        };
        Arch { kind: Some(kind) }
    }
}

impl From<&core::OptimizerKind> for Optimizer {
    fn from(o: &core::OptimizerKind) -> Self {
        let kind = match *o {
            core::OptimizerKind::Sgd { momentum } => {
                optimizer::Kind::Sgd(optimizer::Sgd { momentum })
            }
            core::OptimizerKind::Adam => optimizer::Kind::Adam(optimizer::Adam {}),
            core::OptimizerKind::AdamW => optimizer::Kind::Adamw(optimizer::AdamW {}),
            core::OptimizerKind::LazyAdam => optimizer::Kind::LazyAdam(optimizer::LazyAdam {}),
        };
        Optimizer { kind: Some(kind) }
    }
}

impl From<&core::InputSpec> for InputSpec {
    fn from(i: &core::InputSpec) -> Self {
        let kind = match *i {
            core::InputSpec::Criteo {
                sparse,
                numeric,
                categorical,
            } => input_spec::Kind::Criteo(input_spec::Criteo {
                sparse,
                numeric: wide(numeric),
                categorical: wide(categorical),
            }),
            core::InputSpec::Image {
                channels,
                height,
                width,
            } => input_spec::Kind::Image(input_spec::Image {
                channels: wide(channels),
                height: wide(height),
                width: wide(width),
            }),
            core::InputSpec::Table {
                ref label,
                ref columns,
                ref exclude,
                ref categorical,
                buckets,
                ref features,
            } => input_spec::Kind::Table(input_spec::Table {
                label: label.clone(),
                columns: columns.clone(),
                exclude: exclude.clone(),
                categorical: categorical.clone(),
                buckets: wide(buckets),
                features: features.as_ref().map(|f| TableFeatures {
                    numeric: f
                        .numeric
                        .iter()
                        .map(|n| table_features::Numeric {
                            name: n.name.clone(),
                            mean: n.mean,
                            std: n.std,
                        })
                        .collect(),
                    arrays: f
                        .arrays
                        .iter()
                        .map(|a| table_features::Array {
                            name: a.name.clone(),
                            len: wide(a.len),
                        })
                        .collect(),
                    rows: f.rows,
                }),
            }),
        };
        InputSpec { kind: Some(kind) }
    }
}

impl TryFrom<ModelConfig> for core::ModelConfig {
    type Error = Error;

    /// Rebuilds the core configuration and validates it.
    fn try_from(m: ModelConfig) -> Result<Self> {
        let arch = match required("arch", required("arch", m.arch)?.kind)? {
            arch::Kind::Mlp(arch::Mlp { hidden }) => core::Arch::Mlp {
                hidden: hidden
                    .into_iter()
                    .map(|h| narrow("arch.mlp.hidden", h))
                    .collect::<Result<_>>()?,
            },
            arch::Kind::LogReg(_) => core::Arch::LogReg,
            arch::Kind::Cnn(_) => core::Arch::Cnn,
            arch::Kind::Resnet18(_) => core::Arch::ResNet18,
            arch::Kind::Torchscript(t) => core::Arch::TorchScript { path: t.path },
        };
        let optimizer = match required("optimizer", required("optimizer", m.optimizer)?.kind)? {
            optimizer::Kind::Sgd(optimizer::Sgd { momentum }) => {
                core::OptimizerKind::Sgd { momentum }
            }
            optimizer::Kind::Adam(_) => core::OptimizerKind::Adam,
            optimizer::Kind::Adamw(_) => core::OptimizerKind::AdamW,
            optimizer::Kind::LazyAdam(_) => core::OptimizerKind::LazyAdam,
        };
        let input = match required("input", required("input", m.input)?.kind)? {
            input_spec::Kind::Criteo(c) => core::InputSpec::Criteo {
                sparse: c.sparse,
                numeric: narrow("input.criteo.numeric", c.numeric)?,
                categorical: narrow("input.criteo.categorical", c.categorical)?,
            },
            input_spec::Kind::Image(i) => core::InputSpec::Image {
                channels: narrow("input.image.channels", i.channels)?,
                height: narrow("input.image.height", i.height)?,
                width: narrow("input.image.width", i.width)?,
            },
            input_spec::Kind::Table(t) => core::InputSpec::Table {
                label: t.label,
                columns: t.columns,
                exclude: t.exclude,
                categorical: t.categorical,
                buckets: narrow("input.table.buckets", t.buckets)?,
                features: t
                    .features
                    .map(|f| -> Result<_> {
                        Ok(mop_core::table::TableFeatures {
                            numeric: f
                                .numeric
                                .into_iter()
                                .map(|n| mop_core::table::NumericFeature {
                                    name: n.name,
                                    mean: n.mean,
                                    std: n.std,
                                })
                                .collect(),
                            arrays: f
                                .arrays
                                .into_iter()
                                .map(|a| {
                                    Ok(mop_core::table::ArrayFeature {
                                        name: a.name,
                                        len: narrow("input.table.features.arrays.len", a.len)?,
                                    })
                                })
                                .collect::<Result<_>>()?,
                            rows: f.rows,
                        })
                    })
                    .transpose()?,
            },
        };
        let config = core::ModelConfig {
            arch,
            optimizer,
            lr: m.lr,
            l2: m.l2,
            batch_size: narrow("batch_size", m.batch_size)?,
            input,
            classes: narrow("classes", m.classes)?,
            task: match Task::try_from(m.task) {
                Ok(Task::Binary) => core::Task::Binary,
                Ok(Task::Multiclass) => core::Task::Multiclass,
                Ok(Task::Regression) => core::Task::Regression,
                Ok(Task::Unspecified) | Err(_) => required::<core::Task>("task", None)?,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

impl ModelConfig {
    /// Attaches a TorchScript module's bytes (a configuration of another
    /// architecture is left as it is).
    pub fn with_module(mut self, module: prost::bytes::Bytes) -> Self {
        if let Some(Arch {
            kind: Some(arch::Kind::Torchscript(t)),
        }) = &mut self.arch
        {
            t.module = module;
        }
        self
    }

    /// The TorchScript module's bytes the configuration carries, if any.
    pub fn module(&self) -> Option<&prost::bytes::Bytes> {
        match &self.arch {
            Some(Arch {
                kind: Some(arch::Kind::Torchscript(t)),
            }) if !t.module.is_empty() => Some(&t.module),
            _ => None,
        }
    }
}

/// A message field or oneof that must be set. Both levels (the `arch`
/// message, its `kind`) name the same field: to whoever reads the error
/// there is one thing missing, the architecture.
fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| {
        Error::Config(format!(
            "model configuration: `{field}` is missing, or is a kind this trainer does not know \
             (is the runner newer than the trainer?)"
        ))
    })
}

/// A size as it goes on the wire. `usize` is at most 64 bits on every
/// target hopper builds for, so the cast loses nothing.
fn wide(n: usize) -> u64 {
    n as u64
}

/// A size off the wire, which a 32-bit trainer may not be able to hold.
fn narrow(field: &str, n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| {
        Error::Config(format!(
            "model configuration: `{field}` = {n} does not fit this trainer's usize"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `Arch`, every `OptimizerKind` and every `InputSpec`, each in a
    /// configuration that validates (CNN and ResNet need images, lazy Adam a
    /// sparse Criteo input).
    fn every_variant() -> Vec<core::ModelConfig> {
        let base = core::ModelConfig {
            lr: 0.05,
            l2: 1e-4,
            batch_size: 64,
            classes: 10,
            ..core::ModelConfig::conf_a(1e-3, 0.0, 32, false)
        };
        let image = core::InputSpec::Image {
            channels: 3,
            height: 32,
            width: 28,
        };
        let criteo = core::InputSpec::Criteo {
            sparse: false,
            numeric: 7,
            categorical: 11,
        };
        let archs = [
            core::Arch::Mlp {
                hidden: vec![1000, 500],
            },
            core::Arch::Mlp { hidden: vec![] },
            core::Arch::LogReg,
            core::Arch::Cnn,
            core::Arch::ResNet18,
            core::Arch::TorchScript {
                path: "/models/net.pt".into(),
            },
        ];
        let optimizers = [
            core::OptimizerKind::Sgd { momentum: 0.0 },
            core::OptimizerKind::Sgd { momentum: 0.9 },
            core::OptimizerKind::Adam,
            core::OptimizerKind::AdamW,
            core::OptimizerKind::LazyAdam,
        ];
        let table = core::InputSpec::Table {
            label: "target".into(),
            columns: vec![],
            exclude: vec!["zip".into()],
            categorical: vec!["city".into()],
            buckets: 8,
            features: Some(mop_core::table::TableFeatures {
                numeric: vec![mop_core::table::NumericFeature {
                    name: "age".into(),
                    mean: 41.5,
                    std: 12.25,
                }],
                arrays: vec![mop_core::table::ArrayFeature {
                    name: "emb".into(),
                    len: 4,
                }],
                rows: 1234,
            }),
        };
        let inputs = [
            table.clone(),
            criteo.clone(),
            core::InputSpec::criteo(true),
            core::InputSpec::criteo(false),
            image.clone(),
        ];
        let mut all = Vec::new();
        for arch in &archs {
            for optimizer in &optimizers {
                for input in &inputs {
                    let c = core::ModelConfig {
                        arch: arch.clone(),
                        optimizer: optimizer.clone(),
                        input: input.clone(),
                        ..base.clone()
                    };
                    if c.validate().is_ok() {
                        all.push(c);
                    }
                }
            }
        }
        all
    }

    #[test]
    fn core_to_proto_to_core_is_the_identity_for_every_variant() {
        let all = every_variant();
        // Each variant of each enum appears in some configuration that
        // validates, so the round trip below covers them all.
        let seen = |pred: &dyn Fn(&core::ModelConfig) -> bool| all.iter().any(pred);
        assert!(seen(&|c| matches!(c.arch, core::Arch::Mlp { .. })));
        assert!(seen(&|c| c.arch == core::Arch::LogReg));
        assert!(seen(&|c| c.arch == core::Arch::Cnn));
        assert!(seen(&|c| c.arch == core::Arch::ResNet18));
        assert!(seen(&|c| matches!(c.arch, core::Arch::TorchScript { .. })));
        assert!(seen(
            &|c| c.optimizer == core::OptimizerKind::Sgd { momentum: 0.9 }
        ));
        assert!(seen(&|c| c.optimizer == core::OptimizerKind::Adam));
        assert!(seen(&|c| c.optimizer == core::OptimizerKind::AdamW));
        assert!(seen(&|c| c.optimizer == core::OptimizerKind::LazyAdam));
        assert!(seen(&|c| matches!(c.input, core::InputSpec::Criteo { .. })));
        assert!(seen(&|c| matches!(c.input, core::InputSpec::Image { .. })));
        assert!(seen(&|c| matches!(c.input, core::InputSpec::Table { .. })));

        for c in all {
            let wire = ModelConfig::from(&c);
            // Through the bytes too: what the trainer decodes, not only the
            // struct the runner built.
            let decoded = <ModelConfig as prost::Message>::decode(
                prost::Message::encode_to_vec(&wire).as_slice(),
            )
            .unwrap();
            assert_eq!(decoded, wire);
            let back = core::ModelConfig::try_from(decoded).unwrap();
            assert_eq!(back, c);
        }
    }

    fn refusal(m: ModelConfig) -> String {
        match core::ModelConfig::try_from(m) {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn every_task_crosses_the_wire_and_an_unset_one_is_refused() {
        for task in [
            core::Task::Binary,
            core::Task::Multiclass,
            core::Task::Regression,
        ] {
            let c = core::ModelConfig {
                task,
                ..core::ModelConfig::conf_a(1e-3, 0.0, 32, false)
            };
            let wire = ModelConfig::from(&c);
            let decoded = <ModelConfig as prost::Message>::decode(
                prost::Message::encode_to_vec(&wire).as_slice(),
            )
            .unwrap();
            assert_eq!(core::ModelConfig::try_from(decoded).unwrap(), c);
        }
        let ok = ModelConfig::from(&core::ModelConfig::conf_a(1e-3, 0.0, 32, false));
        let msg = refusal(ModelConfig {
            task: Task::Unspecified as i32,
            ..ok.clone()
        });
        assert!(msg.contains("`task` is missing"), "{msg}");
        let msg = refusal(ModelConfig { task: 99, ..ok });
        assert!(msg.contains("`task` is missing"), "{msg}");
    }

    #[test]
    fn a_torchscript_module_rides_in_the_message_and_nowhere_else() {
        let c = core::ModelConfig {
            arch: core::Arch::TorchScript {
                path: "/models/net.pt".into(),
            },
            ..core::ModelConfig::conf_a(1e-3, 0.0, 32, false)
        };
        let bare = ModelConfig::from(&c);
        assert_eq!(bare.module(), None);
        let wire = bare.with_module(prost::bytes::Bytes::from_static(b"PK\x03\x04module"));
        let decoded = <ModelConfig as prost::Message>::decode(
            prost::Message::encode_to_vec(&wire).as_slice(),
        )
        .unwrap();
        assert_eq!(
            decoded.module().map(|m| &m[..]),
            Some(&b"PK\x03\x04module"[..])
        );
        assert_eq!(core::ModelConfig::try_from(decoded).unwrap(), c);
        // Other architectures carry no module.
        let mlp = ModelConfig::from(&core::ModelConfig::conf_a(1e-3, 0.0, 32, false))
            .with_module(prost::bytes::Bytes::from_static(b"x"));
        assert_eq!(mlp.module(), None);
    }

    #[test]
    fn a_missing_arch_is_refused_by_name() {
        let ok = ModelConfig::from(&core::ModelConfig::conf_a(1e-3, 1e-4, 32, false));
        let msg = refusal(ModelConfig {
            arch: None,
            ..ok.clone()
        });
        assert!(msg.contains("`arch` is missing"), "{msg}");
        // An `Arch` whose oneof is unset: also what a newer runner's new
        // architecture decodes to here.
        let msg = refusal(ModelConfig {
            arch: Some(Arch { kind: None }),
            ..ok.clone()
        });
        assert!(msg.contains("`arch` is missing"), "{msg}");
        let msg = refusal(ModelConfig {
            optimizer: Some(Optimizer { kind: None }),
            ..ok.clone()
        });
        assert!(msg.contains("`optimizer` is missing"), "{msg}");
        let msg = refusal(ModelConfig { input: None, ..ok });
        assert!(msg.contains("`input` is missing"), "{msg}");
    }

    #[test]
    fn an_unknown_oneof_case_from_a_newer_runner_is_refused_by_name() {
        // A newer runner's `Arch` with a case numbered 9 (a message field,
        // wire type 2, empty): field 1 of ModelConfig wrapping field 9.
        let ok = ModelConfig::from(&core::ModelConfig::conf_a(1e-3, 1e-4, 32, false));
        let mut bytes = vec![0x0a, 0x02, 0x4a, 0x00];
        let rest = ModelConfig { arch: None, ..ok };
        bytes.extend(prost::Message::encode_to_vec(&rest));
        let decoded = <ModelConfig as prost::Message>::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.arch, Some(Arch { kind: None }));
        let msg = refusal(decoded);
        assert!(msg.contains("`arch`") && msg.contains("newer"), "{msg}");
    }

    #[test]
    fn a_configuration_that_converts_is_still_validated() {
        let mut m = ModelConfig::from(&core::ModelConfig::conf_a(1e-3, 1e-4, 32, false));
        m.lr = 0.0;
        assert!(refusal(m.clone()).contains("lr"));
        m.lr = 1e-3;
        m.arch = Some(Arch::from(&core::Arch::Cnn));
        assert!(refusal(m).contains("image input"));
    }
}
