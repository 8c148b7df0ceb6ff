//! `[output] table` loses nothing by configuration: a run drops and
//! rewrites `<table>`, `<table>_info` and `<table>_summary` when it ends, so
//! it refuses — before it trains anything — a name that would drop the
//! table it reads (whatever `replace` says), and a table hopper did not
//! write unless `replace = true`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hopper_tests::{binary, cluster, segment_args, FlightServer};

struct Setup {
    cluster: devcluster::LocalCluster,
    server: FlightServer,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let cluster = cluster(2).await.unwrap();
    devcluster::load_criteo(&cluster, "clicks", 800, 21)
        .await
        .unwrap();
    let args = segment_args(&cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = FlightServer::start(&args).unwrap();
    Setup {
        cluster,
        server,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A run configuration named `name` reading `source` (a `[source]`
    /// line), writing the result tables `output` (an `[output]` body) to
    /// segment 0.
    fn config(&self, name: &str, source: &str, output: &str) -> (PathBuf, PathBuf) {
        let out = self.dir.path().join(name);
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[source]
flight = "{url}"
{source}

[train]
epochs = 1
seed = 1
threads = 1

[grid]
arch = [{{ kind = "log_reg" }}]
lr = [1e-2]
batch_size = [64]
input = {{ kind = "criteo", sparse = true }}

[output]
dir = "{out}"
database = "{db}"
{output}
"#,
                url = self.server.url,
                out = out.display(),
                db = self.cluster.url(0),
            ),
        )
        .unwrap();
        (path, out)
    }

    async fn scalar(&self, sql: &str) -> String {
        let row = self
            .cluster
            .client(0)
            .await
            .unwrap()
            .query_one(&format!("SELECT ({sql})::text"), &[])
            .await
            .unwrap();
        row.get::<_, Option<String>>(0).unwrap_or_default()
    }
}

fn mop_train(config: &Path) -> std::process::Output {
    Command::new(binary("mop").unwrap())
        .args(["train", "--progress", "quiet", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn refused(out: &std::process::Output, words: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run went ahead: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?} in {err}");
    }
}

#[tokio::test]
async fn an_output_table_naming_the_training_table_is_refused_before_training_and_the_table_is_kept(
) {
    let s = setup().await;
    let before = s.scalar("SELECT count(*) FROM clicks").await;

    // By name: refused when the configuration is read, replace or not.
    for (name, output) in [
        ("plain", "table = \"clicks\""),
        ("replace", "table = \"clicks\"\nreplace = true"),
    ] {
        let (config, out) = s.config(name, "table = \"clicks\"", output);
        let run = mop_train(&config);
        refused(
            &run,
            &[
                "would drop clicks",
                "source.table",
                "choose another output.table",
            ],
        );
        assert!(!out.exists(), "{name}: the run started: {out:?}");
    }
    // Through a view: the output database says which table the query scans.
    for i in 0..s.cluster.len() {
        s.cluster
            .client(i)
            .await
            .unwrap()
            .batch_execute("CREATE VIEW recent_clicks AS SELECT * FROM clicks")
            .await
            .unwrap();
    }
    let (config, out) = s.config(
        "view",
        "table = \"recent_clicks\"",
        "table = \"clicks\"\nreplace = true",
    );
    let run = mop_train(&config);
    refused(
        &run,
        &["would drop clicks", "which this run reads (source)"],
    );
    assert!(!out.exists(), "the run started: {out:?}");

    assert_eq!(s.scalar("SELECT count(*) FROM clicks").await, before);
    assert_eq!(
        s.scalar("SELECT count(*) FROM information_schema.columns WHERE table_name = 'clicks' AND column_name = 'label'")
            .await,
        "1",
        "clicks keeps its columns"
    );
}

#[tokio::test]
async fn an_unrelated_user_table_is_replaced_only_with_replace_true() {
    let s = setup().await;
    s.cluster
        .client(0)
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE precious (note text);
             INSERT INTO precious VALUES ('keep me'), ('and me');",
        )
        .await
        .unwrap();

    let (config, out) = s.config("kept", "table = \"clicks\"", "table = \"precious\"");
    let run = mop_train(&config);
    refused(
        &run,
        &["precious", "not written by hopper", "replace = true"],
    );
    assert!(!out.exists(), "the run started: {out:?}");
    assert_eq!(
        s.scalar("SELECT string_agg(note, ',' ORDER BY note) FROM precious")
            .await,
        "and me,keep me"
    );

    let (config, _) = s.config(
        "replaced",
        "table = \"clicks\"",
        "table = \"precious\"\nreplace = true",
    );
    let run = mop_train(&config);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(s.scalar("SELECT count(*) FROM precious").await, "1");
    assert_eq!(
        s.scalar("SELECT count(*) FROM precious WHERE model_id = 0")
            .await,
        "1"
    );
    for t in ["precious", "precious_info", "precious_summary"] {
        assert!(
            s.scalar(&format!(
                "SELECT obj_description('{t}'::regclass, 'pg_class')"
            ))
            .await
            .starts_with("hopper results"),
            "{t} is marked as hopper's"
        );
    }

    // Hopper's own tables are replaced by the next run without being told.
    let (config, _) = s.config("again", "table = \"clicks\"", "table = \"precious\"");
    let run = mop_train(&config);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(s.scalar("SELECT count(*) FROM precious_summary").await, "1");
}
