//! Table names a run configuration gives (`output.table`, `grid.table`),
//! which hopper splices into SQL it runs: one SQL identifier type for all
//! of hopper, [`pg_arrow::Ident`], read here by the rule for names in
//! configurations — plain parts only (letters, digits and `_`, not starting
//! with a digit), optionally schema-qualified — so a name needs no quoting
//! and means the same table in `SELECT`, `DROP` and `COMMENT ON`.

pub use pg_arrow::Ident;

use crate::error::{Error, Result};

/// The table `name` as the configuration setting `setting` gives it.
pub fn table(name: &str, setting: &str) -> Result<Ident> {
    Ident::parse_plain(name).map_err(|e| Error::Config(format!("{setting}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_qualified_names_pass_and_anything_that_needs_quoting_does_not() {
        for ok in ["t", "_t1", "criteo_models", "s.t"] {
            assert_eq!(table(ok, "output.table").unwrap().to_string(), ok);
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
            let e = table(bad, "output.table").unwrap_err().to_string();
            assert!(
                e.contains("output.table") && e.contains("plain identifier"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_suffix_stays_on_the_last_part() {
        let t = table("s.t", "x").unwrap();
        assert_eq!(t.with_suffix("_info").to_string(), "s.t_info");
    }
}
