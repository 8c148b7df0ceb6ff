//! The `DoPut` target: which table, on which segment, how.
//!
//! Writers (`mop predict`, any Flight client) put a [`PutCommand`] as JSON
//! in the descriptor of their first `FlightData`; the server answers with a
//! [`PutOutcome`] in the one `PutResult`. flight-server's `put` module
//! documents what the server does with it.

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::FlightDescriptor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a `DoPut` writes (the descriptor's JSON command).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutCommand {
    /// The table, `name` or `schema.name`.
    pub table: String,
    /// The segment that receives the rows.
    #[serde(default)]
    pub segment: i32,
    /// Create the table from the upload's schema if it does not exist.
    #[serde(default)]
    pub create: bool,
    /// Append to the table, or replace it.
    #[serde(default)]
    pub mode: PutMode,
}

/// What happens to rows already in the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PutMode {
    /// Keep them; add the upload.
    #[default]
    Append,
    /// Drop the table (if any) and create it from the upload's schema.
    Replace,
    /// Create the table from the upload's schema; refuse if it exists.
    Create,
}

/// The `PutResult` app metadata of a finished upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOutcome {
    /// The table written.
    pub table: String,
    /// The segment written.
    pub segment: i32,
    /// Rows written.
    pub rows: u64,
}

impl PutCommand {
    /// Append to `table` on `segment`.
    pub fn new(table: impl Into<String>, segment: i32) -> Self {
        Self {
            table: table.into(),
            segment,
            create: false,
            mode: PutMode::Append,
        }
    }

    /// Creates the table if it does not exist.
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: PutMode) -> Self {
        self.mode = mode;
        self
    }

    /// The descriptor a client sends (a JSON command).
    pub fn descriptor(&self) -> FlightDescriptor {
        // Serializing a struct of strings and integers cannot fail.
        FlightDescriptor::new_cmd(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads the target from a `DoPut` descriptor and checks the table name.
    pub fn from_descriptor(d: &FlightDescriptor) -> Result<Self> {
        let cmd = match DescriptorType::try_from(d.r#type) {
            Ok(DescriptorType::Path) => match d.path.as_slice() {
                [table] => PutCommand::new(table.clone(), 0),
                _ => {
                    return Err(Error::BadPut(
                        "a DoPut path descriptor names one table, e.g. [\"predictions\"]".into(),
                    ))
                }
            },
            Ok(DescriptorType::Cmd) => serde_json::from_slice(&d.cmd).map_err(|e| {
                Error::BadPut(format!(
                    "the DoPut command must be JSON like {{\"table\": \"t\", \"segment\": 0, \
                     \"create\": true, \"mode\": \"append\"}}: {e}"
                ))
            })?,
            _ => {
                return Err(Error::BadPut(
                    "a DoPut descriptor is a path [\"table\"] or a JSON command".into(),
                ))
            }
        };
        check_table_name(&cmd.table)?;
        Ok(cmd)
    }
}

/// A plain identifier, optionally schema-qualified ([`pg_arrow::Ident::parse_plain`]):
/// what hopper splices into `CREATE TABLE` and `COPY` unquoted (PostgreSQL
/// folds it to lower case).
pub fn check_table_name(name: &str) -> Result<()> {
    pg_arrow::Ident::parse_plain(name)
        .map(drop)
        .map_err(|e| Error::BadPut(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_name_the_table_segment_and_mode() {
        let d = FlightDescriptor::new_cmd(
            r#"{"table": "public.preds", "segment": 1, "create": true, "mode": "replace"}"#,
        );
        let c = PutCommand::from_descriptor(&d).unwrap();
        assert_eq!(
            c,
            PutCommand::new("public.preds", 1)
                .with_create(true)
                .with_mode(PutMode::Replace)
        );
        assert_eq!(PutCommand::from_descriptor(&c.descriptor()).unwrap(), c);
        let p = PutCommand::from_descriptor(&FlightDescriptor::new_path(vec!["t".into()]));
        assert_eq!(p.unwrap(), PutCommand::new("t", 0));
    }

    #[test]
    fn bad_descriptors_say_what_a_good_one_looks_like() {
        for (d, needle) in [
            (FlightDescriptor::new_cmd("SELECT 1"), "JSON"),
            (
                FlightDescriptor::new_cmd(r#"{"table": "t; DROP"}"#),
                "identifier",
            ),
            (FlightDescriptor::new_cmd(r#"{"tabel": "t"}"#), "tabel"),
            (
                FlightDescriptor::new_path(vec!["a".into(), "b".into()]),
                "one table",
            ),
        ] {
            let e = PutCommand::from_descriptor(&d).unwrap_err();
            assert!(
                matches!(e, Error::BadPut(_)) && e.to_string().contains(needle),
                "{needle}: {e}"
            );
        }
    }
}
