//! Configurations kept in the database: `[grid] table = "mst"` reads a
//! MADlib-style model-selection table, one row per configuration, through
//! the run's flight-server (so `mop` still speaks Flight only).
//!
//! ```sql
//! CREATE TABLE mst (
//!     mst_key        int,   -- model ids follow mst_key order
//!     arch           text,  -- hopper's architecture as JSON: {"kind": "mlp", "hidden": [16]}
//!     compile_params text,  -- optimizer='adam', lr=0.001, l2=1e-4   or MADlib's optimizer='SGD(lr=0.01, momentum=0.9)'
//!     fit_params     text   -- batch_size=64
//! );
//! ```
//!
//! `compile_params` and `fit_params` are MADlib's `key=value` lists:
//! `optimizer` (sgd, adam, adamw; `SGD(…)` carries its own parameters),
//! `lr` (or `learning_rate`), `l2` (or `weight_decay`), `momentum`; and
//! `batch_size`. Epochs come from `[train]` and `[search]`, not the table.

use crate::config::{Arch, InputSpec, ModelConfig, OptimizerKind, Task};
use crate::error::{Error, Result};

/// The columns a model-selection table must have.
pub const COLUMNS: [&str; 4] = ["mst_key", "arch", "compile_params", "fit_params"];

/// The query that reads table `table`.
pub fn query(table: &str) -> Result<String> {
    let table = crate::ident::table(table, "grid.table")?;
    Ok(format!("SELECT {} FROM {table}", COLUMNS.join(", ")))
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its key.
    pub key: i64,
    /// Architecture (JSON).
    pub arch: String,
    /// MADlib's compile parameters.
    pub compile_params: String,
    /// MADlib's fit parameters.
    pub fit_params: String,
}

/// Rows in key order, checked: keys unique, at least one row.
pub fn ordered(mut rows: Vec<Row>) -> Result<Vec<Row>> {
    rows.sort_by_key(|r| r.key);
    if let Some(w) = rows.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(Error::Config(format!(
            "the model-selection table has mst_key {} twice",
            w[0].key
        )));
    }
    if rows.is_empty() {
        return Err(Error::Config(
            "the model-selection table is empty: add one row per configuration".into(),
        ));
    }
    Ok(rows)
}

/// The configuration of one row, with the grid's input, classes and task.
pub fn config(row: &Row, input: &InputSpec, classes: usize, task: Task) -> Result<ModelConfig> {
    let bad = |m: String| Error::Config(format!("mst_key {}: {m}", row.key));
    let arch: Arch = serde_json::from_str(&row.arch).map_err(|e| {
        bad(format!(
            "arch {:?} is not an architecture ({e}); write JSON like {{\"kind\": \"mlp\", \"hidden\": [16]}}",
            row.arch
        ))
    })?;
    let (mut optimizer, mut lr, mut l2, mut momentum) = (None, None, 0.0, None);
    let number = |k: &str, v: &str| -> Result<f64> {
        v.parse()
            .map_err(|_| bad(format!("{k}={v} is not a number")))
    };
    let mut params = pairs(&row.compile_params).map_err(&bad)?;
    while let Some((k, v)) = params.pop() {
        match k.to_ascii_lowercase().as_str() {
            "optimizer" => {
                let (name, inner) = match v.split_once('(') {
                    Some((name, rest)) => (name.trim(), rest.trim_end().trim_end_matches(')')),
                    None => (v.as_str(), ""),
                };
                optimizer = Some(name.to_ascii_lowercase());
                params.extend(pairs(inner).map_err(&bad)?);
            }
            "lr" | "learning_rate" => lr = Some(number(&k, &v)?),
            "l2" | "weight_decay" => l2 = number(&k, &v)?,
            "momentum" => momentum = Some(number(&k, &v)?),
            // Keras' loss and metrics: hopper trains with cross-entropy and
            // reports accuracy whatever they say.
            "loss" | "metrics" => {}
            other => {
                return Err(bad(format!(
                    "compile_params has {other}=…; hopper knows optimizer, lr, l2, momentum"
                )))
            }
        }
    }
    let optimizer = match optimizer.as_deref() {
        Some("sgd") => OptimizerKind::Sgd {
            momentum: momentum.unwrap_or(0.0),
        },
        Some("adam") | None => OptimizerKind::Adam,
        Some("adamw") => OptimizerKind::AdamW,
        Some("lazy_adam") => OptimizerKind::LazyAdam,
        Some(other) => {
            return Err(bad(format!(
                "optimizer {other:?} is not one of sgd, adam, adamw, lazy_adam"
            )))
        }
    };
    if momentum.is_some() && !matches!(optimizer, OptimizerKind::Sgd { .. }) {
        return Err(bad("momentum is a parameter of sgd only".into()));
    }
    let mut batch_size = None;
    for (k, v) in pairs(&row.fit_params).map_err(&bad)? {
        match k.to_ascii_lowercase().as_str() {
            "batch_size" => {
                batch_size = Some(
                    v.parse()
                        .map_err(|_| bad(format!("batch_size={v} is not a whole number")))?,
                )
            }
            "epochs" => {
                return Err(bad(
                    "fit_params has epochs: every model trains train.epochs (or what [search] \
                     decides); drop it from the table"
                        .into(),
                ))
            }
            other => {
                return Err(bad(format!(
                    "fit_params has {other}=…; hopper knows batch_size"
                )))
            }
        }
    }
    let c = ModelConfig {
        arch,
        optimizer,
        lr: lr.ok_or_else(|| bad("compile_params needs lr=…".into()))?,
        l2,
        batch_size: batch_size.ok_or_else(|| bad("fit_params needs batch_size=…".into()))?,
        input: input.clone(),
        classes,
        task,
    };
    c.validate().map_err(|e| match e {
        Error::Config(m) => bad(m),
        other => other,
    })?;
    Ok(c)
}

/// `a=1, b='x', c=F(d=2)` as key–value pairs (quotes stripped, commas inside
/// parentheses kept).
fn pairs(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, ch) in text.char_indices() {
        match (ch, quote) {
            ('\'' | '"', None) => quote = Some(ch),
            (c, Some(q)) if c == q => quote = None,
            ('(', None) => depth += 1,
            (')', None) => depth -= 1,
            (',', None) if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("{p:?} is not key=value"))?;
            let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
            Ok((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(arch: &str, compile: &str, fit: &str) -> Row {
        Row {
            key: 1,
            arch: arch.into(),
            compile_params: compile.into(),
            fit_params: fit.into(),
        }
    }

    #[test]
    fn madlib_style_parameters_become_configurations() {
        let input = InputSpec::criteo(true);
        let c = config(
            &row(
                r#"{"kind": "mlp", "hidden": [16]}"#,
                "loss='categorical_crossentropy', optimizer='SGD(lr=0.01, momentum=0.9)', metrics=['accuracy']",
                "batch_size=64",
            ),
            &input,
            2,
            Task::Multiclass,
        )
        .unwrap();
        assert_eq!(c.optimizer, OptimizerKind::Sgd { momentum: 0.9 });
        assert_eq!((c.lr, c.batch_size), (0.01, 64));
        let c = config(
            &row(
                r#"{"kind": "log_reg"}"#,
                "optimizer='adamw', lr=1e-3, l2=1e-4",
                "batch_size=32",
            ),
            &input,
            2,
            Task::Multiclass,
        )
        .unwrap();
        assert_eq!(
            (c.optimizer, c.lr, c.l2),
            (OptimizerKind::AdamW, 1e-3, 1e-4)
        );
    }

    #[test]
    fn bad_rows_say_which_key_and_what_is_wrong() {
        let input = InputSpec::criteo(true);
        for (arch, compile, fit, needle) in [
            ("{\"kind\": \"rnn\"}", "lr=0.1", "batch_size=1", "arch"),
            (
                "{\"kind\": \"log_reg\"}",
                "lr=fast",
                "batch_size=1",
                "lr=fast",
            ),
            (
                "{\"kind\": \"log_reg\"}",
                "optimizer='rmsprop', lr=0.1",
                "batch_size=1",
                "rmsprop",
            ),
            (
                "{\"kind\": \"log_reg\"}",
                "lr=0.1",
                "batch_size=32, epochs=3",
                "epochs",
            ),
            ("{\"kind\": \"log_reg\"}", "lr=0.1", "", "batch_size"),
            ("{\"kind\": \"log_reg\"}", "lr=-1", "batch_size=8", "lr"),
        ] {
            match config(&row(arch, compile, fit), &input, 2, Task::Multiclass) {
                Err(Error::Config(m)) => {
                    assert!(
                        m.contains(needle) && m.contains("mst_key 1"),
                        "{needle}: {m}"
                    )
                }
                other => panic!("{needle}: {other:?}"),
            }
        }
        assert!(query("mst; DROP TABLE x").is_err());
    }
}
