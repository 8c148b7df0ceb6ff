//! A feature spec for any table (`input = { kind = "table", label = "y" }`):
//! which columns become features, and the training rows' statistics that
//! standardize them.
//!
//! The user names the label and, optionally, the columns (`columns`,
//! `exclude`, `categorical`, `buckets`); the runner resolves the rest from
//! the data before anything trains ([`TableFeatures`]): the numeric and
//! float-array columns, and for each numeric column the mean and population
//! standard deviation of the **training** rows, computed by the database.
//! One aggregate query ([`stats_sql`]) runs on every segment, each returns
//! its rows' count, mean and population variance per column, and
//! [`combine`] merges them with the exact pairwise formula (Chan et al.,
//! as PostgreSQL merges its own parallel workers' partial aggregates), so
//! the statistics are those of the union, not an average of averages.
//!
//! A row becomes `[numeric…, array elements…, categorical one-hots…]`, all
//! `f32`: a numeric value `(x − mean) / std` (0 for NULL or NaN, which is
//! the mean; a constant column gives 0); an array column's elements as
//! stored (NULL elements or rows 0), every row the same length; a
//! categorical value's text hashed (FNV-1a) into one of `buckets` one-hot
//! slots (NULL: none). The resolved features travel with each model's
//! configuration and are written to the run directory
//! ([`FEATURES_FILE`]), so a resumed run and `mop predict` featurize exactly
//! as training did.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The run directory's record of a table input's resolved features.
pub const FEATURES_FILE: &str = "table_features.json";
/// The version of [`FEATURES_FILE`]'s format.
pub const FORMAT_VERSION: u32 = 1;
/// Default hash buckets per categorical column.
pub const DEFAULT_BUCKETS: usize = 32;

/// The columns of a table input and their training statistics, resolved
/// from the data when a run starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFeatures {
    /// Numeric columns, in the table's order, standardized.
    pub numeric: Vec<NumericFeature>,
    /// Float-array columns, flattened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrays: Vec<ArrayFeature>,
    /// Training rows the statistics describe.
    pub rows: u64,
}

/// A numeric column and its training statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericFeature {
    /// The column.
    pub name: String,
    /// Mean of its non-NULL training values.
    pub mean: f64,
    /// Population standard deviation of its non-NULL training values.
    pub std: f64,
}

/// A float-array column: every row holds `len` elements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayFeature {
    /// The column.
    pub name: String,
    /// Elements per row.
    pub len: usize,
}

impl TableFeatures {
    /// Feature width with `categorical` columns of `buckets` slots each.
    pub fn dims(&self, categorical: usize, buckets: usize) -> usize {
        self.numeric.len()
            + self.arrays.iter().map(|a| a.len).sum::<usize>()
            + categorical * buckets
    }
}

/// A column as the runner sees it in the table's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// An integer, float or decimal column.
    Numeric,
    /// A one-dimensional array of numbers.
    Array,
    /// Anything else (text, booleans, dates, …): a feature only as
    /// `categorical`.
    Other,
}

/// What the user asked for (the `table` input's fields).
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a> {
    /// The label column.
    pub label: &'a str,
    /// The feature columns; empty: every numeric and array column.
    pub columns: &'a [String],
    /// Columns to leave out of the default.
    pub exclude: &'a [String],
    /// Columns to hash into one-hot buckets.
    pub categorical: &'a [String],
}

/// Columns never taken as features by default (row identifiers).
const IGNORED: &[&str] = &["id"];

/// Picks the numeric and array feature columns from the table's columns
/// (name and kind, in the table's order); checks that every named column
/// exists and has a kind it can be.
pub fn choose(
    schema: &[(String, ColumnKind)],
    choice: Choice<'_>,
) -> Result<(Vec<String>, Vec<String>)> {
    let kind = |name: &str| schema.iter().find(|(n, _)| n == name).map(|(_, k)| k);
    let names = || {
        schema
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = |what: &str, name: &str| {
        Error::Config(format!(
            "input.{what} names {name:?}, which the training query does not return (columns: {})",
            names()
        ))
    };
    if kind(choice.label).is_none() {
        return Err(missing("label", choice.label));
    }
    for (what, list) in [
        ("columns", choice.columns),
        ("exclude", choice.exclude),
        ("categorical", choice.categorical),
    ] {
        if let Some(name) = list.iter().find(|n| kind(n).is_none()) {
            return Err(missing(what, name));
        }
        if list.iter().any(|n| n == choice.label) {
            return Err(Error::Config(format!(
                "input.{what} names the label {:?}: a model may not see its label",
                choice.label
            )));
        }
    }
    let (mut numeric, mut arrays) = (Vec::new(), Vec::new());
    for (name, k) in schema {
        let chosen = if choice.columns.is_empty() {
            !IGNORED.contains(&name.as_str())
                && name != choice.label
                && !choice.exclude.contains(name)
                && !choice.categorical.contains(name)
        } else {
            choice.columns.contains(name) && !choice.exclude.contains(name)
        };
        match (chosen, k) {
            (false, _) => {}
            (true, ColumnKind::Numeric) => numeric.push(name.clone()),
            (true, ColumnKind::Array) => arrays.push(name.clone()),
            (true, ColumnKind::Other) if !choice.columns.is_empty() => {
                return Err(Error::Config(format!(
                    "input.columns names {name:?}, which is neither numeric nor an array of \
                     numbers: list it in input.categorical instead"
                )))
            }
            (true, ColumnKind::Other) => {}
        }
    }
    if numeric.is_empty() && arrays.is_empty() && choice.categorical.is_empty() {
        return Err(Error::Config(format!(
            "the table input has no features: no numeric or array column besides the label \
             {:?} and id (columns: {}); name some in input.columns or input.categorical",
            choice.label,
            names()
        )));
    }
    Ok((numeric, arrays))
}

/// A column name as a quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The aggregate query over the training rows (`train_sql`) that every
/// segment answers with one row: `n` (rows), then per numeric column `j`
/// `n_j`, `mean_j`, `var_j` (non-NULL count, mean, population variance as
/// float8), then per array column `k` `min_len_k`, `max_len_k`.
pub fn stats_sql(train_sql: &str, numeric: &[String], arrays: &[String]) -> String {
    let mut out = vec!["count(*)::int8 AS n".to_string()];
    for (j, name) in numeric.iter().enumerate() {
        let x = format!("{}::float8", quote(name));
        out.push(format!("count({x})::int8 AS n_{j}"));
        out.push(format!("avg({x}) AS mean_{j}"));
        out.push(format!("var_pop({x}) AS var_{j}"));
    }
    for (k, name) in arrays.iter().enumerate() {
        let c = quote(name);
        out.push(format!("min(cardinality({c}))::int8 AS min_len_{k}"));
        out.push(format!("max(cardinality({c}))::int8 AS max_len_{k}"));
    }
    format!(
        "SELECT {} FROM ({}) AS hopper_rows",
        out.join(", "),
        train_sql.trim().trim_end_matches(';')
    )
}

/// One segment's count, mean and population variance of a column.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    /// Non-NULL values.
    pub n: u64,
    /// Their mean (0 when `n` is 0).
    pub mean: f64,
    /// Their population variance (0 when `n` is 0).
    pub var: f64,
}

/// The moments of the union of disjoint parts: the pairwise update of
/// Chan, Golub and LeVeque (PostgreSQL's `float8_combine`), exact up to
/// floating point rounding, in the order given.
pub fn combine(parts: &[Moments]) -> Moments {
    let mut acc = Moments::default();
    for p in parts.iter().filter(|p| p.n > 0) {
        if acc.n == 0 {
            acc = *p;
            continue;
        }
        let (na, nb) = (acc.n as f64, p.n as f64);
        let n = na + nb;
        let delta = p.mean - acc.mean;
        let m2 = acc.var * na + p.var * nb + delta * delta * na * nb / n;
        acc = Moments {
            n: acc.n + p.n,
            mean: acc.mean + delta * nb / n,
            var: m2 / n,
        };
    }
    acc
}

/// The run directory's record of the resolved table input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesFile {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The training query the statistics were computed over.
    pub sql: String,
    /// The resolved input (`input.features` set).
    pub input: crate::config::InputSpec,
}

impl FeaturesFile {
    /// Writes `dir/table_features.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join(FEATURES_FILE), text)?;
        Ok(())
    }

    /// Reads `dir/table_features.json`, if the run wrote one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FEATURES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let file: FeaturesFile = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        if file.format_version != FORMAT_VERSION {
            return Err(Error::Config(format!(
                "{} has format_version {}, this mop reads {FORMAT_VERSION}",
                path.display(),
                file.format_version
            )));
        }
        Ok(Some(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(values: &[f64]) -> Moments {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        Moments {
            n: values.len() as u64,
            mean,
            var,
        }
    }

    #[test]
    fn combining_segments_gives_the_moments_of_their_union() {
        let a = [1.0, 2.0, 4.0, 8.0];
        let b = [100.0, -3.0];
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let got = combine(&[moments(&a), Moments::default(), moments(&b)]);
        let want = moments(&all);
        assert_eq!(got.n, 6);
        assert!((got.mean - want.mean).abs() < 1e-12, "{got:?} {want:?}");
        assert!((got.var - want.var).abs() < 1e-9, "{got:?} {want:?}");
        assert_eq!(combine(&[]), Moments::default());
    }

    fn schema() -> Vec<(String, ColumnKind)> {
        [
            ("id", ColumnKind::Numeric),
            ("target", ColumnKind::Numeric),
            ("age", ColumnKind::Numeric),
            ("city", ColumnKind::Other),
            ("income", ColumnKind::Numeric),
            ("emb", ColumnKind::Array),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect()
    }

    fn choice<'a>(
        columns: &'a [String],
        exclude: &'a [String],
        categorical: &'a [String],
    ) -> Choice<'a> {
        Choice {
            label: "target",
            columns,
            exclude,
            categorical,
        }
    }

    #[test]
    fn by_default_every_numeric_and_array_column_but_the_label_and_id() {
        let (numeric, arrays) = choose(&schema(), choice(&[], &[], &[])).unwrap();
        assert_eq!(numeric, ["age", "income"]);
        assert_eq!(arrays, ["emb"]);
        let (numeric, arrays) = choose(&schema(), choice(&[], &["income".into()], &[])).unwrap();
        assert_eq!((numeric, arrays.len()), (vec!["age".to_string()], 1));
        let (numeric, arrays) = choose(&schema(), choice(&["income".into()], &[], &[])).unwrap();
        assert_eq!((numeric, arrays.len()), (vec!["income".to_string()], 0));
    }

    #[test]
    fn names_that_are_not_columns_or_cannot_be_features_are_refused() {
        let err = |c: Choice<'_>| match choose(&schema(), c) {
            Err(Error::Config(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(choice(&["agee".into()], &[], &[])).contains("\"agee\""));
        assert!(err(choice(&["city".into()], &[], &[])).contains("input.categorical"));
        assert!(err(choice(&[], &[], &["target".into()])).contains("label"));
        let mut bad = choice(&[], &[], &[]);
        bad.label = "y";
        assert!(err(bad).contains("input.label"));
    }

    #[test]
    fn the_stats_query_aggregates_the_training_rows() {
        let sql = stats_sql(
            "SELECT * FROM t WHERE x; ",
            &["a".into(), "we\"ird".into()],
            &["emb".into()],
        );
        assert_eq!(
            sql,
            "SELECT count(*)::int8 AS n, count(\"a\"::float8)::int8 AS n_0, avg(\"a\"::float8) AS mean_0, \
             var_pop(\"a\"::float8) AS var_0, count(\"we\"\"ird\"::float8)::int8 AS n_1, \
             avg(\"we\"\"ird\"::float8) AS mean_1, var_pop(\"we\"\"ird\"::float8) AS var_1, \
             min(cardinality(\"emb\"))::int8 AS min_len_0, max(cardinality(\"emb\"))::int8 AS max_len_0 \
             FROM (SELECT * FROM t WHERE x) AS hopper_rows"
        );
    }
}
