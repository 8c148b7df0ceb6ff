use super::*;
use mop_core::fixture;

fn svgs(html: &str) -> Vec<&str> {
    html.split("<svg").skip(1).collect()
}

#[test]
fn a_searched_run_shows_its_rungs_and_where_models_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = fixture::searched_run(dir.path());
    let html = std::fs::read_to_string(write_report(dir.path(), None).unwrap()).unwrap();
    let stopped: Vec<_> = outcome
        .models
        .iter()
        .filter(|m| m.stop.is_some_and(|s| s.epochs < fixture::SEARCH_EPOCHS))
        .collect();
    assert!(!stopped.is_empty(), "the fixture's search stopped someone");
    let section = html
        .split("<h2>Search</h2>")
        .nth(1)
        .expect("a search section")
        .split("<h2>")
        .next()
        .unwrap();
    let trained: usize = outcome.models.iter().map(|m| m.metrics.len()).sum();
    assert!(
        section.contains(&format!(
            "trained {trained} model-epochs of the {}",
            fixture::SEARCH_MODELS * fixture::SEARCH_EPOCHS
        )),
        "{section}"
    );
    assert!(section.contains("rungs at 1, 3 epochs"), "{section}");
    // One row per rung, all six models reached the first.
    let rungs = section
        .split("<h3>Rungs</h3>")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(rungs.matches("<tr>").count(), 1 + 2, "{rungs}");
    assert!(rungs.contains("<tr><td>1</td><td>6</td>"), "{rungs}");
    for m in &stopped {
        assert!(section.contains(&m.stop.unwrap().reason.to_string()));
    }
    // The Gantt chart marks the last unit of every stopped model.
    assert_eq!(
        html.matches("the search stopped the model here").count(),
        stopped.len()
    );
    // A run without a search has no such section.
    let plain = tempfile::tempdir().unwrap();
    fixture::finished_run(plain.path(), true);
    let html = std::fs::read_to_string(write_report(plain.path(), None).unwrap()).unwrap();
    assert!(!html.contains("<h2>Search</h2>") && !html.contains("the search stopped"));
}

#[test]
fn report_has_leaderboard_curves_and_one_gantt_bar_per_unit() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = fixture::finished_run(dir.path(), true);
    let path = write_report(dir.path(), None).unwrap();
    assert_eq!(path, dir.path().join(REPORT_FILE));
    let html = std::fs::read_to_string(&path).unwrap();

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Self-contained: no scripts, stylesheets or images from elsewhere.
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("<img"));

    // Four learning curves (train/validation × loss/accuracy) and two Gantt charts.
    for title in [
        "training loss",
        "validation loss",
        "training accuracy",
        "validation accuracy",
    ] {
        let id = format!("id=\"curve-{}\"><svg", title.replace(' ', "-"));
        assert!(html.contains(&id), "no {title} chart");
    }
    let gantts = svgs(&html)
        .iter()
        .filter(|s| s.contains("class=\"gantt\""))
        .count();
    assert_eq!(gantts, 2);
    assert_eq!(svgs(&html).len(), 6);
    // Both Gantt charts have one bar per unit of the timeline.
    let units = fixture::MODELS * fixture::TRAINERS * fixture::EPOCHS;
    assert_eq!(outcome.timeline.len(), units);
    assert_eq!(html.matches("<g class=\"unit\">").count(), 2 * units);
    for t in 0..fixture::TRAINERS {
        assert!(html.contains(&format!(">trainer {t}<")));
    }

    // The locality table: one row per partition, local or not.
    let locality = html
        .split("<h2>Data locality</h2>")
        .nth(1)
        .expect("a locality section")
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(locality.matches("<tr>").count(), 1 + fixture::TRAINERS);
    assert!(locality.contains(
        "http://127.0.0.2:7000</code></td><td class=\"l\">cpu</td><td class=\"l\">127.0.0.2</td><td class=\"l\">yes"
    ));
    assert!(locality.contains(
        "http://127.0.0.3:7000</code></td><td class=\"l\">cpu</td><td class=\"l\">127.0.0.2</td><td class=\"l\">no"
    ));
    assert!(locality.contains("120.6 KiB"));

    // The leaderboard lists every model, best first, with its file.
    let board = html
        .split("<h2>Leaderboard</h2>")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    for m in 0..fixture::MODELS {
        assert!(
            board.contains(&format!("</span> {m}</td>")),
            "model {m} missing"
        );
        assert!(board.contains(&format!("models/model-{m}.safetensors")));
    }
    let first_row = board.split("<tr").nth(2).unwrap();
    assert!(
        first_row.contains("class=\"best\"") && first_row.contains("</span> 1</td>"),
        "{first_row}"
    );
    // The grid's lists.
    assert!(html.contains("1e-3, 1e-4") && html.contains("32, 256"));
    // Per-trainer timings.
    assert!(html.contains("<h2>Trainers</h2>"));
}

#[test]
fn trainer_times_add_up_the_timeline() {
    let timeline = fixture::timeline();
    let times = html::trainer_times(&timeline, fixture::TRAINERS);
    assert_eq!(times.len(), fixture::TRAINERS);
    assert_eq!(times.iter().map(|t| t.units).sum::<usize>(), timeline.len());
    let busy: f64 = timeline.iter().map(|u| u.end - u.start).sum();
    let sum: f64 = times.iter().map(|t| t.busy).sum();
    assert!((busy - sum).abs() < 1e-9);
    // Every trainer runs every model once per epoch.
    for t in &times {
        assert_eq!(t.units, fixture::MODELS * fixture::EPOCHS);
        assert!((t.wait - 0.05 * t.units as f64).abs() < 1e-9);
    }
}

#[test]
fn without_validation_the_report_says_so_and_draws_training_curves_only() {
    let dir = tempfile::tempdir().unwrap();
    fixture::finished_run(dir.path(), false);
    let html = render(&load(dir.path()).unwrap()).unwrap();
    assert!(html.contains("id=\"curve-training-loss\"><svg"));
    assert!(html.contains("id=\"curve-training-accuracy\"><svg"));
    assert!(!html.contains("curve-validation"));
    assert!(html.contains("source.validation"));
}

#[test]
fn errors_say_what_is_wrong_with_the_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = load(&missing).unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains("--dir"), "{e}");

    let e = load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not a hopper run directory"), "{e}");

    // A checkpoint but no results yet: not finished.
    fixture::checkpoint(dir.path(), 3);
    let e = load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("has not finished") && e.contains("mop status"),
        "{e}"
    );

    std::fs::write(dir.path().join(RESULTS_FILE), "{\"models\": [").unwrap();
    let e = load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("results.json") && e.contains("--resume"), "{e}");

    let e = resolve_dir(None);
    // The test runs in the crate dir, which holds no run.
    assert!(e.unwrap_err().to_string().contains("--dir"));
}

#[test]
fn html_special_characters_in_the_sql_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    fixture::finished_run(dir.path(), true);
    let mut run = load(dir.path()).unwrap();
    run.results.source.sql = "SELECT * FROM t WHERE a < 3 AND b = '<script>'".into();
    let html = render(&run).unwrap();
    assert!(!html.contains("<script>"));
    assert!(html.contains("a &lt; 3"));
}

#[test]
fn hostile_names_and_sources_come_out_escaped() {
    let dir = tempfile::tempdir().unwrap();
    fixture::finished_run(dir.path(), true);
    let mut run = load(dir.path()).unwrap();
    let hostile = "<script>alert(\"x\")</script> & 'q'";
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'q'";
    run.dir = hostile.into();
    run.results.source.sql = hostile.into();
    run.results.source.flight = hostile.into();
    for m in &mut run.results.models {
        m.arch = hostile.into();
        m.model_file = Some(hostile.into());
    }
    for p in &mut run.results.partitions {
        p.trainer = hostile.into();
        p.device = hostile.into();
        p.endpoint_hosts = vec![hostile.into()];
    }
    let html = render(&run).unwrap();
    assert!(!html.contains("<script"), "{html}");
    // Only the best model's row carries a class.
    assert!(!html.contains("class=\"\""));
    // Text and attribute values alike: the title, the summary, every
    // leaderboard row (cell, link and its href), the grid, the legend, the
    // locality table.
    let n = fixture::MODELS;
    assert!(html.contains(&format!("<title>hopper run report: {escaped}</title>")));
    assert!(html.contains(&format!("<code>{escaped}</code>")));
    assert!(html.contains(&format!("<a href=\"{escaped}\">{escaped}</a>")));
    assert!(html.matches(escaped).count() >= 2 + 3 * n + fixture::TRAINERS * 3);
}

#[test]
fn a_binary_run_ranked_by_auc_shows_its_auc_and_kept_epochs() {
    let dir = tempfile::tempdir().unwrap();
    fixture::finished_run(dir.path(), true);
    let mut run = load(dir.path()).unwrap();
    run.results.metric = mop_core::metrics::Metric::Auc;
    run.results.keep = mop_core::run_config::Keep::Best;
    for m in &mut run.results.models {
        // Model 2 has the best AUC, at its second epoch.
        let top = if m.model_id == 2 { 0.91 } else { 0.7 };
        m.val_auc = vec![Some(0.6), Some(top), Some(0.65)];
        m.kept_epoch = Some(2);
    }
    assert_eq!(
        run.results.best().map(|m| m.model_id),
        Some(1),
        "best_model as written"
    );
    run.results.best_model = None;
    assert_eq!(run.results.leaderboard()[0].model_id, 2);
    let html = render(&run).unwrap();
    assert!(
        html.contains("id=\"curve-validation-AUC\"><svg"),
        "an AUC chart"
    );
    assert!(
        !html.contains("curve-validation-RMSE"),
        "no regression chart"
    );
    let board = html
        .split("<h2>Leaderboard</h2>")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert!(board.contains("<th>val auc</th>") && board.contains("<th>kept epoch</th>"));
    let first_row = board.split("<tr").nth(2).unwrap();
    assert!(
        first_row.contains("</span> 2</td>") && first_row.contains("0.9100"),
        "{first_row}"
    );
    assert!(
        html.contains("validation auc 0.9100 (epoch 2)"),
        "the summary names it"
    );
    assert!(html.contains("auc (higher is better), the model files hold the best epoch"));
}

#[test]
fn rows_that_changed_while_the_run_went_on_are_listed_before_the_leaderboard() {
    use mop_core::run_dir::checkpoint::Split;
    use mop_core::run_dir::reads::{ReadKind, SourceChange};
    let dir = tempfile::tempdir().unwrap();
    fixture::finished_run(dir.path(), true);
    let plain = std::fs::read_to_string(write_report(dir.path(), None).unwrap()).unwrap();
    assert!(
        !plain.contains("Rows that changed"),
        "no change, no section"
    );
    // The same run had found a change in partition 1's training rows.
    let path = dir.path().join(RESULTS_FILE);
    let mut results = RunResults::read(&path).unwrap();
    results.source_changes.push(SourceChange {
        partition: 1,
        split: Split::Train,
        read: ReadKind::Unit,
        model: Some(3),
        epoch: Some(2),
        from: "endpoint 1 of the training query, at grpc+tcp://127.0.0.1:5".into(),
        rows_before: 1200,
        rows_after: 1217,
        checksum_before: 1,
        checksum_after: 2,
    });
    std::fs::write(&path, serde_json::to_vec(&results).unwrap()).unwrap();
    let html = std::fs::read_to_string(write_report(dir.path(), None).unwrap()).unwrap();
    let section = html
        .split("<h2>Rows that changed during the run</h2>")
        .nth(1)
        .expect("a section of changes")
        .split("<h2>")
        .next()
        .unwrap();
    assert!(
        section.contains("<td>1</td><td class=\"l\">training</td><td class=\"l\">model 3, epoch 2</td><td>1200</td><td>1217</td>"),
        "{section}"
    );
    assert!(html.find("Rows that changed") < html.find("<h2>Leaderboard</h2>"));
}
