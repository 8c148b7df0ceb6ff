//! The one SQL identifier type of the control plane: a table name a user
//! writes in a run configuration (`output.table`, `grid.table`), which hopper
//! splices into SQL it runs.
//!
//! Only plain names are accepted — letters, digits and `_`, not starting
//! with a digit, optionally schema-qualified — so the name needs no quoting
//! and means the same table in `SELECT`, `DROP` and `COMMENT ON`. Anything
//! else (quotes, spaces, a third part, a semicolon) is refused before it
//! reaches a database.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A plain, optionally schema-qualified SQL identifier: `criteo_models`,
/// `myschema.criteo_models`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident(String);

impl Ident {
    /// Checks `name`; `setting` names where it came from, for the message.
    pub fn new(name: &str, setting: &str) -> Result<Self> {
        if is_plain(name) {
            Ok(Self(name.to_string()))
        } else {
            Err(Error::Config(format!(
                "{setting} {name:?} must be a plain identifier like criteo_models or \
                 myschema.criteo_models (letters, digits and _, not starting with a digit)"
            )))
        }
    }

    /// The name as written, safe to splice into SQL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same name with `suffix` appended to its last part
    /// (`s.t` + `_info` → `s.t_info`), still plain.
    pub fn with_suffix(&self, suffix: &str) -> Result<Self> {
        Self::new(&format!("{}{suffix}", self.0), "a derived table name")
    }
}

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Ident {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(&s, "the table name")
    }
}

impl From<Ident> for String {
    fn from(i: Ident) -> String {
        i.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_qualified_names_pass_and_anything_that_needs_quoting_does_not() {
        for ok in ["t", "_t1", "criteo_models", "s.t", "S_1.T_2"] {
            assert_eq!(Ident::new(ok, "output.table").unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "1t",
            "a.b.c",
            "t;drop table x",
            "\"T\"",
            "t x",
            "s.",
            ".t",
            "t--",
            "té",
        ] {
            let e = Ident::new(bad, "output.table").unwrap_err().to_string();
            assert!(
                e.contains("output.table") && e.contains("plain identifier"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_suffix_stays_on_the_last_part() {
        let t = Ident::new("s.t", "x").unwrap();
        assert_eq!(t.with_suffix("_info").unwrap().as_str(), "s.t_info");
    }
}
