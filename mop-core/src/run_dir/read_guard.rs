//! Which tables `[output] table` may replace: a run drops and rewrites
//! `<table>`, `<table>_info` and `<table>_summary`, so the name decides
//! what is lost when the run ends.
//!
//! - A table the run reads (`source.table`, the relations of `source.sql`
//!   and of a validation query, `grid.table`) is never replaced, whatever
//!   `replace` says: [`check_not_read`] compares names when the
//!   configuration is read, and the runner (`mop_runner::output_guard`) asks the output
//!   database which tables the run's queries scan (so a view over the
//!   training table counts too).
//! - Another existing table is replaced only if hopper wrote it — the
//!   result tables carry a `COMMENT ON TABLE` starting with [`MARKER`] — or
//!   the configuration says `replace = true`.
//!
//! Both are checked before anything trains (and again just before the
//! tables are replaced, when the run ends), so a refused name costs no
//! epoch; the message says what to change.

use crate::error::{Error, Result};

/// How the comment on every result table starts.
pub const MARKER: &str = "hopper results";

/// The comment the runner puts on every result table it writes.
pub fn marker_comment(table: &str) -> String {
    format!(
        "{MARKER} of mop train (output.table = {table}); the next run with that name replaces it"
    )
}

/// The three tables `output.table = table` writes.
pub fn output_tables(table: &str) -> [String; 3] {
    [
        table.to_string(),
        format!("{table}_info"),
        format!("{table}_summary"),
    ]
}

/// A relation name as PostgreSQL resolves it: parts lower-cased unless
/// quoted; the schema, if given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name {
    /// The schema, where the name gives one.
    pub schema: Option<String>,
    /// The relation's name.
    pub name: String,
}

impl Name {
    fn from_parts(mut parts: Vec<String>) -> Option<Self> {
        let name = parts.pop()?;
        Some(Self {
            schema: parts.pop(),
            name,
        })
    }

    /// `criteo`, `public.criteo`, `"Criteo"` as written in a configuration.
    pub fn parse(text: &str) -> Option<Self> {
        let tokens = lex(text);
        let mut parts = Vec::new();
        let mut iter = tokens.iter();
        while let Some(Token::Ident(p)) = iter.next() {
            parts.push(p.clone());
            match iter.next() {
                Some(Token::Punct('.')) => continue,
                None => return Self::from_parts(parts),
                Some(_) => return None,
            }
        }
        None
    }

    /// Whether both could name one table: the same name, and the same
    /// schema where both give one (an unqualified name may resolve to any).
    pub fn may_be(&self, other: &Name) -> bool {
        self.name == other.name
            && match (&self.schema, &other.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Refuses an `output.table` whose tables the run reads by name; the
/// message names the setting that reads it.
/// `reads` are the relations the run names, each with the setting that
/// names it ([`RunConfig::read_names`](crate::run_config::RunConfig::read_names)).
pub fn check_not_read(table: &str, reads: &[(String, Name)]) -> Result<()> {
    let outputs: Vec<Name> = output_tables(table)
        .iter()
        .filter_map(|t| Name::parse(t))
        .collect();
    for (setting, name) in reads {
        if let Some(out) = outputs.iter().find(|o| o.may_be(name)) {
            return Err(reads_it(table, &out.to_string(), setting));
        }
    }
    Ok(())
}

/// The refusal of an `output.table` whose table `out` the run reads by `what`.
pub fn reads_it(table: &str, out: &str, what: &str) -> Error {
    Error::Config(format!(
        "output.table = {table:?} would drop {out}, which this run reads ({what}): \
         the results would replace the data; choose another output.table \
         (replace = true does not change this)"
    ))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// An identifier or keyword, lower-cased unless it was quoted.
    Ident(String),
    /// Any other single character outside literals and comments.
    Punct(char),
    /// A string, number or other literal.
    Literal,
}

/// The relations a query names after `FROM` or `JOIN` (a lexer, not a
/// parser: literals, quoted identifiers and comments are skipped as
/// PostgreSQL skips them; a function call or subquery in `FROM` is not a
/// relation, its own `FROM` is found in turn).
pub fn relations(sql: &str) -> Vec<Name> {
    const NOT_ALIAS: &[&str] = &[
        "where",
        "join",
        "inner",
        "left",
        "right",
        "full",
        "cross",
        "natural",
        "on",
        "using",
        "group",
        "order",
        "limit",
        "offset",
        "union",
        "except",
        "intersect",
        "having",
        "window",
        "fetch",
        "for",
        "tablesample",
        "outer",
        "lateral",
    ];
    let tokens = lex(sql);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = matches!(&tokens[i], Token::Ident(k) if k == "from" || k == "join");
        i += 1;
        if !starts {
            continue;
        }
        // A comma-separated list of relations, each with an optional alias.
        loop {
            while matches!(tokens.get(i), Some(Token::Ident(k)) if k == "only" || k == "lateral") {
                i += 1;
            }
            let mut parts = Vec::new();
            while let Some(Token::Ident(p)) = tokens.get(i) {
                parts.push(p.clone());
                i += 1;
                if tokens.get(i) == Some(&Token::Punct('.')) {
                    i += 1;
                } else {
                    break;
                }
            }
            if parts.is_empty() || tokens.get(i) == Some(&Token::Punct('(')) {
                break; // a subquery or a function
            }
            out.extend(Name::from_parts(parts));
            if matches!(tokens.get(i), Some(Token::Ident(k)) if k == "as") {
                i += 1;
            }
            if matches!(tokens.get(i), Some(Token::Ident(k)) if !NOT_ALIAS.contains(&k.as_str())) {
                i += 1;
            }
            if tokens.get(i) == Some(&Token::Punct('(')) {
                // Column aliases.
                while i < tokens.len() && tokens[i] != Token::Punct(')') {
                    i += 1;
                }
                i += 1;
            }
            if tokens.get(i) == Some(&Token::Punct(',')) {
                i += 1;
            } else {
                break;
            }
        }
    }
    out
}

/// PostgreSQL's tokens, as far as telling relation names apart needs.
fn lex(sql: &str) -> Vec<Token> {
    let s: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_alphabetic() || c == '_';
    let ident_char = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' {
            // An E'…' string takes backslash escapes.
            let escapes = i > 0
                && matches!(s[i - 1], 'e' | 'E')
                && matches!(out.last(), Some(Token::Ident(e)) if e == "e");
            if escapes {
                out.pop();
            }
            i += 1;
            while i < s.len() {
                // A backslash escape (in E'…') or a doubled quote: two characters.
                let escaped = escapes && s[i] == '\\';
                if escaped || (s[i] == '\'' && s.get(i + 1) == Some(&'\'')) {
                    i += 2;
                } else if s[i] == '\'' {
                    break;
                } else {
                    i += 1;
                }
            }
            i += 1;
            out.push(Token::Literal);
        } else if c == '"' {
            let mut name = String::new();
            i += 1;
            while i < s.len() {
                if s[i] == '"' && s.get(i + 1) == Some(&'"') {
                    name.push('"');
                    i += 2;
                } else if s[i] == '"' {
                    break;
                } else {
                    name.push(s[i]);
                    i += 1;
                }
            }
            i += 1;
            out.push(Token::Ident(name));
        } else if c == '$' && next.is_some_and(|n| n == '$' || ident_start(n)) {
            // $tag$ … $tag$ (a `$1` parameter is not one).
            let mut j = i + 1;
            while j < s.len() && s[j] != '$' && ident_char(s[j]) {
                j += 1;
            }
            if s.get(j) != Some(&'$') {
                out.push(Token::Punct('$'));
                i += 1;
                continue;
            }
            let tag: String = s[i..=j].iter().collect();
            let body = j + 1;
            let rest: String = s[body..].iter().collect();
            i = match rest.find(&tag) {
                Some(end) => body + rest[..end].chars().count() + tag.chars().count(),
                None => s.len(),
            };
            out.push(Token::Literal);
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
            out.push(Token::Ident(
                s[start..i].iter().collect::<String>().to_lowercase(),
            ));
        } else if c.is_ascii_digit() {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
            out.push(Token::Literal);
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_config::RunConfig;

    fn names(sql: &str) -> Vec<String> {
        relations(sql).iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn relations_after_from_and_join_are_found_and_literals_are_not() {
        assert_eq!(names("SELECT * FROM criteo"), ["criteo"]);
        assert_eq!(
            names("select a.x from Public.Clicks AS a JOIN \"Odd\"\"Name\" b ON a.id = b.id"),
            ["public.clicks", "Odd\"Name"]
        );
        assert_eq!(
            names("SELECT * FROM a x, b AS y (c1, c2), ONLY c"),
            ["a", "b", "c"]
        );
        assert_eq!(
            names("SELECT * FROM (SELECT id FROM inner_t) s LEFT OUTER JOIN t2 USING (id)"),
            ["inner_t", "t2"]
        );
        assert_eq!(
            names(
                "SELECT 'FROM fake', $$ FROM fake2 $$, $q$FROM fake3$q$, E'\\' FROM fake4' \
                 -- FROM fake5\n /* FROM /* nested */ fake6 */ FROM real_t WHERE x = $1"
            ),
            ["real_t"]
        );
        assert!(names("SELECT * FROM generate_series(1, 10) g").is_empty());
    }

    fn config(source: &str, output: &str) -> std::result::Result<RunConfig, String> {
        RunConfig::parse(&format!(
            "[source]\nflight = \"grpc+tcp://h:1\"\n{source}\n\
             [grid]\narch = [{{ kind = \"log_reg\" }}]\nlr = [0.1]\nbatch_size = [8]\n\
             input = {{ kind = \"criteo\" }}\n\
             [output]\ndatabase = \"postgresql://h/db\"\n{output}\n"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn an_output_table_the_run_reads_is_refused_whatever_replace_says() {
        for (source, output, setting) in [
            ("table = \"criteo\"", "table = \"criteo\"", "source.table"),
            (
                "table = \"public.criteo\"",
                "table = \"CRITEO\"",
                "source.table",
            ),
            (
                "table = \"criteo_info\"",
                "table = \"criteo\"",
                "source.table",
            ),
            (
                "sql = \"SELECT * FROM clicks c JOIN users u USING (id)\"",
                "table = \"users\"\nreplace = true",
                "source.sql",
            ),
            (
                "table = \"t\"\nvalidation = { sql = \"SELECT * FROM held_out\" }",
                "table = \"held_out\"",
                "source.validation.sql",
            ),
        ] {
            let e = config(source, output).unwrap_err();
            assert!(
                e.contains(setting) && e.contains("choose another output.table"),
                "{source} / {output}: {e}"
            );
        }
        // Other names, other schemas, and words inside literals are fine.
        for (source, output) in [
            ("table = \"criteo\"", "table = \"criteo_models\""),
            ("table = \"a.criteo\"", "table = \"b.criteo\""),
            (
                "sql = \"SELECT 'criteo' FROM clicks\"",
                "table = \"criteo\"",
            ),
        ] {
            config(source, output).unwrap_or_else(|e| panic!("{source} / {output}: {e}"));
        }
    }

    #[test]
    fn an_output_table_whose_companions_postgresql_would_cut_is_refused() {
        // 56 bytes: <table>_summary has 64, one past what PostgreSQL keeps.
        let long = "t".repeat(56);
        let e = config("table = \"src\"", &format!("table = \"{long}\"")).unwrap_err();
        assert!(e.contains("_summary") && e.contains("63"), "{e}");
        config(
            "table = \"src\"",
            &format!("table = \"{}\"", "t".repeat(55)),
        )
        .unwrap();
    }

    #[test]
    fn result_tables_need_a_database() {
        let e = RunConfig::parse(
            "[source]\nflight = \"grpc+tcp://h:1\"\ntable = \"t\"\n\
             [grid]\narch = [{ kind = \"log_reg\" }]\nlr = [0.1]\nbatch_size = [8]\n\
             input = { kind = \"criteo\" }\n[output]\ntable = \"t_models\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("output.database"), "{e}");
    }
}
