//! SQL identifiers: a name checked once, then printed so that it means
//! exactly that name.
//!
//! hopper splices table and column names into statements it builds itself
//! (`CREATE TABLE`, `COPY … FROM STDIN`, `DISTRIBUTED BY`). Quoting every
//! name on the way out means no name, whatever it holds, can change the
//! statement's meaning; checking it on the way in means a bad name is
//! refused with a message about the name rather than a syntax error from
//! the database. An [`Ident`] is the one type that does both.
//!
//! A name written the way SQL writes it ([`Ident::parse`]) follows
//! PostgreSQL's rules: an unquoted part is folded to lower case, a quoted
//! part is kept as it is, and a table may be qualified by its schema. So
//! `Preds`, `preds` and `"preds"` are one table. A name written plain is
//! printed plain (folded: `preds`), which PostgreSQL reads as the same
//! name and which cannot hold anything but letters, digits and `_`; every
//! other name is printed quoted.

use std::fmt;

use crate::error::{Error, Result};

/// A validated SQL identifier, possibly schema-qualified (`schema.name`),
/// printed for SQL by [`Display`](fmt::Display): plain if it was written
/// plain, quoted otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ident {
    schema: Option<String>,
    name: String,
    /// Every part was written plain (and is stored folded): print it so.
    plain: bool,
}

impl Ident {
    /// One name taken literally, as an Arrow field or a catalog gives it
    /// (no folding, no splitting at dots).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_part(&name, &name)?;
        Ok(Self {
            schema: None,
            name,
            plain: false,
        })
    }

    /// `name` qualified by `schema`, both taken literally.
    pub fn qualified(schema: impl Into<String>, name: impl Into<String>) -> Result<Self> {
        let (schema, name) = (schema.into(), name.into());
        check_part(&schema, &schema)?;
        check_part(&name, &name)?;
        Ok(Self {
            schema: Some(schema),
            name,
            plain: false,
        })
    }

    /// A name as SQL writes it: `name` or `schema.name`, each part plain
    /// (`[A-Za-z_][A-Za-z0-9_]*`, folded to lower case) or double-quoted
    /// (`"My Table"`, with `""` for a quote).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Ident(format!(
                "{text:?} is not a table name ({why}); write a plain identifier like \
                 predictions or myschema.predictions, or quote it: \"My Table\""
            ))
        };
        let mut parts = Vec::new();
        let mut plain = true;
        let mut rest = text;
        loop {
            let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
                plain = false;
                quoted_part(quoted).ok_or_else(|| bad("an unclosed quote"))?
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                let part = &rest[..end];
                if !is_plain(part) {
                    return Err(bad(if part.is_empty() {
                        "an empty part"
                    } else {
                        "a part that is neither plain nor quoted"
                    }));
                }
                (part.to_ascii_lowercase(), &rest[end..])
            };
            check_part(&part, text)?;
            parts.push(part);
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => break,
                None => return Err(bad("text after a quoted part")),
            }
        }
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Ok(Self {
                schema: Some(schema),
                name,
                plain,
            }),
            Err(parts) => match <[String; 1]>::try_from(parts) {
                Ok([name]) => Ok(Self {
                    schema: None,
                    name,
                    plain,
                }),
                Err(_) => Err(bad("more than schema.name")),
            },
        }
    }

    /// Like [`parse`](Self::parse), but only plain parts: the unquoted
    /// `name` or `schema.name` a configuration file or a `DoPut` names.
    pub fn parse_plain(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() <= 2 && parts.iter().all(|p| is_plain(p)) {
            Self::parse(text)
        } else {
            Err(Error::Ident(format!(
                "table {text:?} must be a plain identifier like predictions or myschema.predictions"
            )))
        }
    }

    /// The name itself, unquoted (the table's, for a qualified name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema that qualifies the name, unquoted, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The same identifier with `suffix` appended to its name (a table's
    /// companions: `results` → `results_info`).
    pub fn with_suffix(&self, suffix: &str) -> Self {
        Self {
            schema: self.schema.clone(),
            name: format!("{}{suffix}", self.name),
            plain: self.plain
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Plain parts hold only [a-z0-9_] once folded: safe as they stand.
        let part = |f: &mut fmt::Formatter<'_>, p: &str| {
            if self.plain {
                f.write_str(p)
            } else {
                write_quoted(f, p)
            }
        };
        if let Some(schema) = &self.schema {
            part(f, schema)?;
            f.write_str(".")?;
        }
        part(f, &self.name)
    }
}

impl std::str::FromStr for Ident {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, part: &str) -> fmt::Result {
    write!(f, "\"{}\"", part.replace('"', "\"\""))
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a part PostgreSQL reads unquoted.
fn is_plain(part: &str) -> bool {
    part.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The part after an opening quote, unescaped, and what follows its
/// closing quote; `None` if it is not closed.
fn quoted_part(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
        } else if s[i + 1..].starts_with('"') {
            out.push('"');
            chars.next();
        } else {
            return Some((out, &s[i + 1..]));
        }
    }
    None
}

/// What PostgreSQL refuses in any identifier, quoted or not.
/// The longest name PostgreSQL keeps (`NAMEDATALEN` - 1).
const MAX_NAME_BYTES: usize = 63;

fn check_part(part: &str, whole: &str) -> Result<()> {
    if part.is_empty() {
        return Err(Error::Ident(format!(
            "{whole:?} has an empty name; SQL names are at least one character"
        )));
    }
    if part.contains('\0') {
        return Err(Error::Ident(format!(
            "{whole:?} holds a NUL character, which no SQL name may"
        )));
    }
    if part.len() > MAX_NAME_BYTES {
        return Err(Error::Ident(format!(
            "{whole:?} has a name of {} bytes; PostgreSQL keeps {MAX_NAME_BYTES} and would \
             silently cut the rest (so two long names could name one table): shorten it",
            part.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_fold_to_lower_case_and_print_plain() {
        let t = Ident::parse("MySchema.Preds").unwrap();
        assert_eq!((t.schema(), t.name()), (Some("myschema"), "preds"));
        assert_eq!(t.to_string(), "myschema.preds");
        assert_eq!(Ident::new("preds").unwrap().to_string(), r#""preds""#);
        assert_eq!(Ident::parse(r#"s."T""#).unwrap().to_string(), r#""s"."T""#);
    }

    #[test]
    fn quoted_parts_keep_case_dots_and_doubled_quotes() {
        let t = Ident::parse(r#""My ""Big"" Schema"."a.b""#).unwrap();
        assert_eq!(t.schema(), Some(r#"My "Big" Schema"#));
        assert_eq!(t.name(), "a.b");
        assert_eq!(t.to_string(), r#""My ""Big"" Schema"."a.b""#);
        assert_eq!(Ident::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn a_literal_name_is_quoted_whatever_it_holds() {
        let c = Ident::new(r#"x"; DROP TABLE t; --"#).unwrap();
        assert_eq!(c.to_string(), r#""x""; DROP TABLE t; --""#);
        assert!(Ident::new("").is_err());
        assert!(Ident::new("a\0b").is_err());
    }

    #[test]
    fn bad_table_names_are_refused_with_an_example() {
        for bad in [
            "", "a.", ".a", "a.b.c", "t; DROP", "1t", r#""open"#, r#""a"b"#,
        ] {
            let e = Ident::parse(bad).unwrap_err().to_string();
            assert!(e.contains("plain identifier"), "{bad:?}: {e}");
        }
        for bad in [r#""a""#, "a b", "a.b.c", "é"] {
            let e = Ident::parse_plain(bad).unwrap_err().to_string();
            assert!(e.contains("plain identifier"), "{bad:?}: {e}");
        }
        assert_eq!(
            Ident::parse_plain("public.t").unwrap().to_string(),
            "public.t"
        );
    }

    #[test]
    fn a_suffix_names_a_companion_table() {
        let t = Ident::parse("s.results").unwrap().with_suffix("_info");
        assert_eq!(t.to_string(), "s.results_info");
        let odd = Ident::parse("s.results").unwrap().with_suffix(" x");
        assert_eq!(odd.to_string(), r#""s"."results x""#);
    }
}
