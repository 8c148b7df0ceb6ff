//! The report page: a pure function from a run's parsed files to HTML.
//!
//! The page is a `maud` template, checked when the crate compiles: every
//! spliced value (model and architecture names, the source SQL, the run
//! directory, host names — all of it user-supplied through the run
//! configuration or results.json) is escaped by the template, so no string
//! reaches the page unescaped by accident. Only two things go in verbatim
//! through `PreEscaped`: the fixed style sheet, and the charts' SVG, which
//! `plotters` and [`gantt_svg`] generate with their own text escaped.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::charts::{self, color, curve_svg, gantt_svg, hex, Bar, Rgb, Series};
use mop_core::metrics::Metric;
use mop_core::run_dir::checkpoint::Split;
use mop_core::run_dir::results::{ModelRecord, Ranked};

use super::{optimizer_name, short_number, RunFiles};
use crate::error::Result;
use mop_core::run_dir::checkpoint::UnitRecord;

const STYLE: &str = r#"
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330;
       max-width: 1240px; margin: 24px auto; padding: 0 16px; line-height: 1.45; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #e3e6ea; padding-bottom: 4px; }
p.lead { color: #4a5261; margin-top: 0; }
p.note { color: #4a5261; font-size: 14px; max-width: 980px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eceef1; text-align: right; white-space: nowrap; }
th { background: #f4f5f7; font-weight: 600; }
td.l, th.l { text-align: left; }
tr.best td { background: #fff6d6; font-weight: 600; }
code { background: #f4f5f7; padding: 1px 4px; border-radius: 3px; font-size: 12px; }
.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; }
.curves { display: grid; grid-template-columns: repeat(2, 560px); gap: 12px 24px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; margin: 8px 0 4px; }
.legend span.item { white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; border: 1px solid #eceef1; border-radius: 4px; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; font-size: 14px; }
dl.summary dt { color: #4a5261; }
dl.summary dd { margin: 0; }
.bar { display: inline-block; height: 10px; background: #3b7dd8; border-radius: 2px; vertical-align: middle; }
"#;

fn num(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".into(),
    }
}

/// `m3 · b64 lr 1e-3 l2 1e-4`: a model in a few characters.
fn short_config(m: &ModelRecord) -> String {
    format!(
        "{} {} lr {} l2 {} batch {}",
        m.arch,
        optimizer_name(&m.config.optimizer),
        short_number(m.config.lr),
        short_number(m.config.l2),
        m.config.batch_size
    )
}

/// The distinct values of one hyper-parameter, in grid order.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Busy time, units, waits and rows of one trainer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TrainerTimes {
    /// Units it ran.
    pub units: usize,
    /// Seconds running units.
    pub busy: f64,
    /// Seconds of those waiting for data.
    pub wait: f64,
    /// Rows trained.
    pub samples: u64,
    /// End of its last unit.
    pub last_end: f64,
}

/// Per-trainer totals of a timeline (`trainers` rows at least).
pub fn trainer_times(timeline: &[UnitRecord], trainers: usize) -> Vec<TrainerTimes> {
    let n = timeline
        .iter()
        .map(|u| u.partition + 1)
        .max()
        .unwrap_or(0)
        .max(trainers);
    let mut v = vec![TrainerTimes::default(); n];
    for u in timeline {
        let t = &mut v[u.partition];
        t.units += 1;
        t.busy += (u.end - u.start).max(0.0);
        t.wait += u.wait_seconds;
        t.samples += u.samples;
        t.last_end = t.last_end.max(u.end);
    }
    v
}

/// Renders the whole report.
pub fn render(run: &RunFiles) -> Result<String> {
    let r = &run.results;
    let board = r.leaderboard();
    let best = r.best().map(|m| m.model_id);
    let times = trainer_times(&run.timeline, r.trainers);
    let wall = run.timeline.iter().map(|u| u.end).fold(r.seconds, f64::max);
    let dir = run.dir.display().to_string();
    let curves = curves(run, best)?;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "hopper run report: " (dir) }
                // CSS is not HTML: escaping its quotes would break it.
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "hopper run report" }
                p.lead {
                    (r.models.len()) " models × " (r.epochs)
                    " epochs with model hopper parallelism on " (times.len()) " trainers in "
                    (format_args!("{:.1}", r.seconds)) " s — " code { (dir) }
                }
                (summary(r))
                (source_changes(r))
                (leaderboard(&board, best, r.metric))
                (grid(r))
                (search(r, &run.timeline))
                (curves)
                (schedule(run, wall))
                (timings(&times, wall))
                (locality(run))
            }
        }
    };
    let mut page = page.into_string();
    page.push('\n');
    Ok(page)
}

/// A small square of colour `c`, the key to a model (or trainer) in charts.
fn swatch(c: Rgb) -> Markup {
    html! { span.sw style={ "background:" (hex(c)) } {} }
}

/// Where the data came from, the seed, the wall time and the winner.
fn summary(r: &super::RunResults) -> Markup {
    html! {
        dl.summary {
            dt { "training data" } dd { code { (r.source.sql) } }
            dt { "flight-server" } dd { code { (r.source.flight) } }
            dt { "seed" } dd { (r.seed) }
            dt { "wall time" } dd { (format_args!("{:.1}", r.seconds)) " s" }
            dt { "ranked by" }
            dd {
                (r.metric)
                @if r.metric.higher_is_better() { " (higher is better)" } @else { " (lower is better)" }
                ", the model files hold the " (match r.keep {
                    mop_core::run_config::Keep::Last => "last epoch's weights",
                    mop_core::run_config::Keep::Best => "best epoch's weights",
                })
            }
            @if let Some(m) = r.best() {
                dt { "best model" }
                dd {
                    (swatch(color(m.model_id))) " model " (m.model_id) " (" (short_config(m)) "): "
                    @match m.kept_value(r.metric, Split::Validation) {
                        Some(v) => { "validation " (r.metric) " " (num(Some(v), 4)) }
                        None => {
                            "training " (r.metric) " "
                            (num(m.kept_value(r.metric, Split::Train), 4))
                        }
                    }
                    @if let Some(e) = m.kept_epoch { " (epoch " (e) ")" }
                }
            }
        }
    }
}

/// The partitions whose rows changed between reads while the run went on
/// (`[source] on_change = "warn"`): from there on its models did not all
/// see the same rows, which the reader of the leaderboard must know first.
fn source_changes(r: &super::RunResults) -> Markup {
    use mop_core::run_dir::reads::{split_name, ReadKind};
    if r.source_changes.is_empty() {
        return html! {};
    }
    html! {
        h2 { "Rows that changed during the run" }
        p.note {
            "These reads got other rows than the earlier reads of the same partition (another              row count or checksum), and the run went on (" code { "on_change = \"warn\"" }
            "): the models trained or validated after a change saw other rows than those before              it, so their comparison is not on equal data."
        }
        table {
            tr {
                th { "partition" } th.l { "rows" } th.l { "found by" } th { "rows before" }
                th { "rows after" } th.l { "read from" }
            }
            @for c in &r.source_changes {
                tr {
                    td { (c.partition) }
                    td.l { (split_name(c.split)) }
                    td.l {
                        @match (c.read, c.model, c.epoch) {
                            (ReadKind::Unit, Some(m), Some(e)) => { "model " (m) ", epoch " (e) }
                            (ReadKind::Validation, Some(m), Some(e)) => {
                                "validation of model " (m) " after epoch " (e)
                            }
                            _ => { "a trainer filling its cache" }
                        }
                    }
                    td { (c.rows_before) }
                    td { (c.rows_after) }
                    td.l { (c.from) }
                }
            }
        }
    }
}

fn leaderboard(board: &[&ModelRecord], best: Option<usize>, metric: Metric) -> Markup {
    // The ranking metric gets a column of its own unless it has one.
    let extra = !matches!(metric, Metric::Loss | Metric::Accuracy);
    html! {
        h2 { "Leaderboard" }
        table {
            tr {
                th { "rank" } th { "model" } th.l { "arch" } th.l { "optimizer" } th { "lr" }
                th { "l2" } th { "batch" } th { "epochs" } th { "train loss" } th { "train acc" }
                th { "val loss" } th { "val acc" }
                @if extra { th { "val " (metric) } }
                th { "kept epoch" }
                th { "train s" } th.l { "model file" }
            }
            @for (rank, m) in board.iter().enumerate() {
                tr class=[(Some(m.model_id) == best).then_some("best")] {
                    td { (rank + 1) }
                    td.model { (swatch(color(m.model_id))) " " (m.model_id) }
                    td.l { (m.arch) }
                    td.l { (optimizer_name(&m.config.optimizer)) }
                    td { (short_number(m.config.lr)) }
                    td { (short_number(m.config.l2)) }
                    td { (m.config.batch_size) }
                    td { (m.epochs()) }
                    td { (num(m.train_loss(), 4)) }
                    td { (num(m.train_acc(), 4)) }
                    td { (num(m.val_loss(), 4)) }
                    td { (num(m.val_acc(), 4)) }
                    @if extra { td { (num(m.kept_value(metric, Split::Validation), 4)) } }
                    td { (m.kept_epoch.unwrap_or(m.epochs())) }
                    td { (format_args!("{:.1}", m.seconds())) }
                    td.l {
                        @match &m.model_file {
                            Some(f) => a href=(f) { (f) },
                            None => "–",
                        }
                    }
                }
            }
        }
    }
}

fn grid(r: &super::RunResults) -> Markup {
    let ms = &r.models;
    let rows: [(&str, Vec<String>); 5] = [
        ("arch", distinct(ms.iter().map(|m| m.arch.clone()))),
        (
            "optimizer",
            distinct(ms.iter().map(|m| optimizer_name(&m.config.optimizer))),
        ),
        ("lr", distinct(ms.iter().map(|m| short_number(m.config.lr)))),
        ("l2", distinct(ms.iter().map(|m| short_number(m.config.l2)))),
        (
            "batch_size",
            distinct(ms.iter().map(|m| m.config.batch_size.to_string())),
        ),
    ];
    let product: usize = rows.iter().map(|r| r.1.len()).product();
    html! {
        h2 { "Grid" }
        p.note {
            "The cross product of these lists: " (ms.len()) " configurations"
            @if product != ms.len() { " (of " (product) " combinations)" }
            "."
        }
        table {
            tr { th.l { "hyper-parameter" } th.l { "values" } }
            @for (k, v) in &rows {
                tr { td.l { code { (k) } } td.l { (v.join(", ")) } }
            }
        }
    }
}

/// A colour key: one swatch and label per item.
fn legend(items: impl Iterator<Item = (Rgb, String)>) -> Markup {
    html! {
        div.legend {
            @for (c, label) in items {
                span.item { (swatch(c)) " " (label) }
            }
        }
    }
}

fn curves(run: &RunFiles, best: Option<usize>) -> Result<Markup> {
    let r = &run.results;
    let series = |pick: fn(&ModelRecord) -> &Vec<Option<f64>>| -> Vec<Series> {
        r.models
            .iter()
            .map(|m| Series {
                model: m.model_id,
                points: pick(m)
                    .iter()
                    .enumerate()
                    .filter_map(|(e, v)| v.map(|v| ((e + 1) as f64, v)))
                    .collect(),
                bold: Some(m.model_id) == best,
            })
            .collect()
    };
    let epochs = r
        .models
        .iter()
        .map(ModelRecord::epochs)
        .max()
        .unwrap_or(r.epochs);
    type Pick = fn(&ModelRecord) -> &Vec<Option<f64>>;
    let mut wanted: Vec<(&str, &str, Pick, bool)> = vec![
        ("training loss", "loss", |m| &m.train_loss, false),
        ("training accuracy", "accuracy", |m| &m.train_acc, true),
    ];
    if r.has_validation() {
        wanted.insert(1, ("validation loss", "loss", |m| &m.val_loss, false));
        wanted.push(("validation accuracy", "accuracy", |m| &m.val_acc, true));
        // The metrics of the run's task (`unit`: drawn on [0, 1]).
        let task: [(&str, &str, Pick, bool); 4] = [
            ("validation AUC", "AUC", |m| &m.val_auc, true),
            ("validation RMSE", "RMSE", |m| &m.val_rmse, false),
            ("validation MAE", "MAE", |m| &m.val_mae, false),
            ("validation R²", "R²", |m| &m.val_r2, false),
        ];
        wanted.extend(task);
    }
    // A metric the task has not (accuracy of a regression) draws nothing.
    wanted.retain(|(_, _, pick, _)| r.models.iter().any(|m| !pick(m).is_empty()));
    let charts = wanted
        .into_iter()
        .map(|(title, y, pick, unit)| {
            Ok((
                title.replace(' ', "-"),
                curve_svg(title, y, &series(pick), epochs, unit)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(html! {
        h2 { "Learning curves" }
        p.note {
            "Per epoch, for every model: training loss and accuracy are means over the epoch's \
             rows on every partition; validation is measured after the epoch on every trainer's \
             validation rows. The best model is drawn thick."
        }
        (legend(r.models.iter().map(|m| {
            (color(m.model_id), format!("{}: {}", m.model_id, short_config(m)))
        })))
        div.curves {
            @for (id, svg) in &charts {
                div.curve id={ "curve-" (id) } { (PreEscaped(svg)) }
            }
        }
        @if !r.has_validation() {
            p.note {
                "No validation rows: set " code { "source.validation" } " in the run \
                 configuration to get validation curves."
            }
        }
    })
}

/// Trainer-seconds the search saved: each stopped model's untrained units
/// at its own mean unit time.
fn freed_seconds(r: &super::RunResults, timeline: &[UnitRecord]) -> f64 {
    r.models
        .iter()
        .map(|m| {
            let units: Vec<&UnitRecord> =
                timeline.iter().filter(|u| u.model == m.model_id).collect();
            let mean =
                units.iter().map(|u| u.end - u.start).sum::<f64>() / units.len().max(1) as f64;
            let left = r.epochs.saturating_sub(m.stopped_at.unwrap_or(r.epochs));
            mean * (left * r.trainers) as f64
        })
        .sum()
}

/// Whether the search stopped model `m` before its budget's end.
fn stopped_early(m: &ModelRecord) -> bool {
    m.stop_reason
        .is_some_and(|r| r != mop_core::search::Reason::Finished)
}

/// Model `m` as it stood at decision epoch `e`: its swatch, id and
/// validation accuracy then.
fn chip(m: &ModelRecord, e: usize) -> Markup {
    let acc = num(m.val_acc.get(e - 1).copied().flatten(), 3);
    html! { (swatch(color(m.model_id))) " " (m.model_id) " (" (acc) ")" }
}

/// Chips side by side, a non-breaking gap between them.
fn chips<'a>(models: impl Iterator<Item = &'a ModelRecord>, e: usize) -> Markup {
    html! {
        @for (i, m) in models.enumerate() {
            @if i > 0 { " \u{a0} " }
            (chip(m, e))
        }
    }
}

/// One row of the rungs table: a decision epoch, how many models reached
/// it, and the chips of those that went on and of those stopped there.
struct Rung {
    epoch: usize,
    reached: usize,
    went_on: Markup,
    stopped: Markup,
}

/// The search: what it decided at each decision point, and how far each
/// model went.
fn search(r: &super::RunResults, timeline: &[UnitRecord]) -> Markup {
    let Some(s) = &r.search else {
        return html! {};
    };
    if s.rule == mop_core::search::Rule::Full {
        return html! {};
    }
    // Each decision point: who reached it, who went on, who stopped there.
    let rungs: Vec<Rung> = s
        .rule
        .decision_epochs()
        .into_iter()
        .filter_map(|epoch| {
            let reached: Vec<&ModelRecord> =
                r.models.iter().filter(|m| m.epochs() >= epoch).collect();
            (!reached.is_empty()).then(|| Rung {
                epoch,
                reached: reached.len(),
                went_on: chips(
                    reached.iter().copied().filter(|m| m.epochs() > epoch),
                    epoch,
                ),
                stopped: chips(
                    reached
                        .iter()
                        .copied()
                        .filter(|m| m.epochs() == epoch && stopped_early(m)),
                    epoch,
                ),
            })
        })
        .collect();
    let share = 100.0 * s.model_epochs as f64 / s.full_model_epochs.max(1) as f64;
    let width = 240.0 / r.epochs.max(1) as f64;
    html! {
        h2 { "Search" }
        p.note {
            (s.rule.describe()) ". The models trained " (s.model_epochs)
            " model-epochs of the " (s.full_model_epochs)
            " the full grid over the same configurations would ("
            (format_args!("{share:.0}"))
            "%); the units of the models it stopped would have taken about "
            (format_args!("{:.1}", freed_seconds(r, timeline)))
            " trainer-seconds, which the trainers spent on the others. Decisions depend on \
             validation accuracy and the seed only, so a resumed run takes the same ones."
        }
        h3 { "Rungs" }
        table {
            tr {
                th { "after epoch" } th { "reached" }
                th.l { "went on (validation accuracy)" } th.l { "stopped here" }
            }
            @for rung in &rungs {
                tr {
                    td { (rung.epoch) }
                    td { (rung.reached) }
                    td.l { (rung.went_on) }
                    td.l { (rung.stopped) }
                }
            }
        }
        // How far each model went.
        h3 { "Epochs by model" }
        table {
            tr {
                th { "model" } th.l { "configuration" } th.l { "epochs trained" }
                th { "validation accuracy" } th.l { "decision" }
            }
            @for m in &r.models {
                tr {
                    td { (swatch(color(m.model_id))) " " (m.model_id) }
                    td.l { (short_config(m)) }
                    td.l {
                        span.bar style={
                            "width:" (format_args!("{:.0}", width * m.epochs() as f64))
                            "px;background:" (hex(color(m.model_id)))
                        } {}
                        " " (m.epochs())
                    }
                    td { (num(m.val_acc(), 4)) }
                    td.l { @if let Some(reason) = m.stop_reason { (reason) } }
                }
            }
        }
    }
}

fn unit_title(u: &UnitRecord) -> String {
    format!(
        "model {} · epoch {} · partition {}\n{:.2}–{:.2} s ({:.2} s), {} rows, {:.2} s waiting for data{}",
        u.model,
        u.epoch + 1,
        u.partition,
        u.start,
        u.end,
        u.end - u.start,
        u.samples,
        u.wait_seconds,
        match (u.bytes_read, u.local) {
            (0, _) => String::new(),
            (b, Some(true)) => format!(", {} read locally", bytes(b)),
            (b, Some(false)) => format!(", {} read over the network", bytes(b)),
            (b, None) => format!(", {} read", bytes(b)),
        }
    )
}

/// `12.3 MiB`.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut x = b as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

/// Which trainer held each partition, where its rows came from, and how
/// many bytes crossed from flight-servers to trainers.
fn locality(run: &RunFiles) -> Markup {
    let parts = &run.results.partitions;
    if parts.is_empty() {
        return html! {};
    }
    // Each partition with the bytes its units read after it was opened.
    let rows: Vec<_> = parts
        .iter()
        .map(|p| {
            let unit_bytes: u64 = run
                .timeline
                .iter()
                .filter(|u| u.partition == p.partition)
                .map(|u| u.bytes_read)
                .sum();
            (p, unit_bytes)
        })
        .collect();
    let total_bytes: u64 = rows.iter().map(|(p, u)| p.open_bytes + u).sum();
    let local_bytes: u64 = rows
        .iter()
        .filter(|(p, _)| p.local)
        .map(|(p, u)| p.open_bytes + u)
        .sum();
    html! {
        h2 { "Data locality" }
        table {
            tr {
                th { "partition" } th.l { "trainer" } th.l { "device" } th.l { "read from" }
                th.l { "local" } th { "rows" } th { "read at open" } th { "read by units" }
            }
            @for (p, unit_bytes) in &rows {
                tr {
                    td { (p.partition) }
                    td.l { code { (p.trainer) } }
                    td.l { (p.device) }
                    td.l { (p.endpoint_hosts.join(", ")) }
                    td.l { @if p.local { "yes" } @else { "no" } }
                    td { (p.rows) }
                    td { (bytes(p.open_bytes)) }
                    td { (bytes(*unit_bytes)) }
                }
            }
        }
        p.note {
            "A partition is local when its trainer's address names the host its endpoints are \
             located at (a flight-server beside the segment, a trainer beside the server): its \
             rows never crossed the network. " (bytes(local_bytes)) " of " (bytes(total_bytes))
            " Arrow bytes read were local. With a cache, a partition is read once when it is \
             opened; with " code { "cache = \"none\"" } " every unit reads it again."
        }
    }
}

fn schedule(run: &RunFiles, wall: f64) -> Markup {
    let r = &run.results;
    if run.timeline.is_empty() {
        return html! {
            h2 { "The MOP schedule" }
            p.note { "This run has no timeline.json, so there is no schedule to draw." }
        };
    }
    let trainers = trainer_times(&run.timeline, r.trainers).len();
    // The last unit of a model the search stopped, marked ✕.
    let last_of_stopped: std::collections::HashSet<(usize, usize)> = r
        .models
        .iter()
        .filter(|m| stopped_early(m))
        .filter_map(|m| {
            run.timeline
                .iter()
                .filter(|u| u.model == m.model_id)
                .max_by(|a, b| a.end.total_cmp(&b.end))
                .map(|u| (u.model, u.partition))
        })
        .collect();
    let bars: Vec<Bar> = run
        .timeline
        .iter()
        .map(|u| {
            let last = r
                .models
                .get(u.model)
                .is_some_and(|m| m.epochs() == u.epoch + 1)
                && last_of_stopped.contains(&(u.model, u.partition));
            let x = if last { " ✕" } else { "" };
            Bar {
                row: u.partition,
                start: u.start,
                end: u.end,
                color: color(u.model),
                labels: vec![
                    format!("m{} · e{}{x}", u.model, u.epoch + 1),
                    format!("m{}\ne{}{x}", u.model, u.epoch + 1),
                    format!("m{}{x}", u.model),
                ],
                title: if last {
                    format!("{}\nthe search stopped the model here", unit_title(u))
                } else {
                    unit_title(u)
                },
                wait: u.wait_seconds,
            }
        })
        .collect();
    let trainer_rows: Vec<String> = (0..trainers).map(|t| format!("trainer {t}")).collect();

    // The same units, one row per model: each model hops across partitions.
    let models = run
        .timeline
        .iter()
        .map(|u| u.model + 1)
        .max()
        .unwrap_or(0)
        .max(r.models.len());
    let by_model: Vec<Bar> = run
        .timeline
        .iter()
        .map(|u| Bar {
            row: u.model,
            start: u.start,
            end: u.end,
            color: trainer_color(u.partition),
            labels: vec![
                format!("p{} · e{}", u.partition, u.epoch + 1),
                format!("p{}", u.partition),
            ],
            title: unit_title(u),
            wait: 0.0,
        })
        .collect();
    let model_rows: Vec<String> = (0..models).map(|m| format!("model {m}")).collect();
    html! {
        h2 { "The MOP schedule" }
        p.note {
            "Model hopper parallelism: every trainer sits beside one partition of the data and \
             never moves it; the " em { "models" } " hop. Each bar is one unit — one model \
             trained for one pass over one partition — coloured by model and labelled "
            code { "m<model> · e<epoch>" }
            ". A model runs on one trainer at a time and visits every partition once per epoch, \
             so every trainer stays busy with a different model. Gaps are trainers waiting for a \
             runnable model (or validating); a dark strip at a bar's foot is time spent waiting \
             for data. " (run.timeline.len()) " units on " (trainers) " trainers."
            @if r.models.iter().any(stopped_early) {
                " The search stopped some models early: ✕ marks the last unit of each. Their \
                 remaining units never ran, and the trainers took the other models' units instead."
            }
        }
        h3 { "By trainer" }
        div.scroll { (PreEscaped(gantt_svg(&trainer_rows, &bars, wall, 34.0))) }
        (legend(r.models.iter().map(|m| (color(m.model_id), format!("model {}", m.model_id)))))
        h3 { "By model" }
        p.note {
            "The same units, one row per model, coloured by the partition (trainer) they ran on: \
             every model visits every partition once per epoch, in an order of its own."
        }
        div.scroll { (PreEscaped(gantt_svg(&model_rows, &by_model, wall, 22.0))) }
        (legend((0..trainers).map(|t| (trainer_color(t), format!("partition {t} (trainer {t})")))))
    }
}

/// Trainers get muted colours of their own, unlike any model's.
fn trainer_color(t: usize) -> charts::Rgb {
    const T: [charts::Rgb; 8] = [
        (0x4c, 0x72, 0xb0),
        (0xdd, 0x84, 0x52),
        (0x55, 0xa8, 0x68),
        (0xc4, 0x4e, 0x52),
        (0x81, 0x72, 0xb3),
        (0x93, 0x78, 0x60),
        (0xda, 0x8b, 0xc3),
        (0x8c, 0x8c, 0x8c),
    ];
    T.get(t).copied().unwrap_or_else(|| color(t))
}

fn timings(times: &[TrainerTimes], wall: f64) -> Markup {
    let busy: f64 = times.iter().map(|t| t.busy).sum();
    let mean_share = if wall > 0.0 && !times.is_empty() {
        busy / (wall * times.len() as f64) * 100.0
    } else {
        0.0
    };
    html! {
        h2 { "Trainers" }
        table {
            tr {
                th.l { "trainer" } th { "units" } th { "busy s" } th { "idle s" } th.l { "busy" }
                th { "data wait s" } th { "rows" } th { "rows/s busy" }
            }
            @for (i, t) in times.iter().enumerate() {
                @let share = if wall > 0.0 { t.busy / wall } else { 0.0 };
                @let rate = if t.busy > 0.0 { t.samples as f64 / t.busy } else { 0.0 };
                tr {
                    td.l { "trainer " (i) }
                    td { (t.units) }
                    td { (format_args!("{:.1}", t.busy)) }
                    td { (format_args!("{:.1}", (wall - t.busy).max(0.0))) }
                    td.l {
                        span.bar style={
                            "width:" (format_args!("{:.0}", share.clamp(0.0, 1.0) * 120.0)) "px"
                        } {}
                        " " (format_args!("{:.0}", share * 100.0)) "%"
                    }
                    td { (format_args!("{:.2}", t.wait)) }
                    td { (t.samples) }
                    td { (format_args!("{rate:.0}")) }
                }
            }
        }
        p.note {
            "Wall time " (format_args!("{wall:.1}")) " s; trainers were busy "
            (format_args!("{mean_share:.0}")) "% of it on average. Idle time includes the start \
             (opening partitions, the first read of the data), validation passes and waiting for \
             a runnable model."
        }
    }
}
