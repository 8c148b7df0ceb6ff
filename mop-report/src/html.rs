//! The report page: a pure function from a run's parsed files to HTML.

use std::fmt::Write as _;

use super::charts::{self, color, curve_svg, esc, gantt_svg, hex, Bar, Series};
use mop_core::run_dir::results::ModelRecord;

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
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>hopper run report: {}</title><style>{STYLE}</style></head><body>",
        esc(&run.dir.display().to_string())
    );
    let _ = write!(
        h,
        "<h1>hopper run report</h1><p class=\"lead\">{} models × {} epochs with model hopper \
         parallelism on {} trainers in {:.1} s — <code>{}</code></p>",
        r.models.len(),
        r.epochs,
        times.len(),
        r.seconds,
        esc(&run.dir.display().to_string())
    );

    // Summary.
    h.push_str("<dl class=\"summary\">");
    let mut dt = |k: &str, v: String| {
        let _ = write!(h, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    dt(
        "training data",
        format!("<code>{}</code>", esc(&r.source.sql)),
    );
    dt(
        "flight-server",
        format!("<code>{}</code>", esc(&r.source.flight)),
    );
    dt("seed", r.seed.to_string());
    dt("wall time", format!("{:.1} s", r.seconds));
    if let Some(m) = r.best() {
        dt(
            "best model",
            format!(
                "<span class=\"sw\" style=\"background:{}\"></span> model {} ({}): {} {}",
                hex(color(m.model_id)),
                m.model_id,
                esc(&short_config(m)),
                if m.val_acc().is_some() {
                    "validation accuracy"
                } else {
                    "training accuracy"
                },
                num(m.val_acc().or(m.train_acc()), 4)
            ),
        );
    }
    h.push_str("</dl>");

    leaderboard(&mut h, &board, best);
    grid(&mut h, r);
    search(&mut h, r, &run.timeline);
    curves(&mut h, run, best)?;
    schedule(&mut h, run, wall);
    timings(&mut h, &times, wall);
    locality(&mut h, run);
    h.push_str("</body></html>\n");
    Ok(h)
}

fn leaderboard(h: &mut String, board: &[&ModelRecord], best: Option<usize>) {
    h.push_str(
        "<h2>Leaderboard</h2><table><tr><th>rank</th><th>model</th><th class=\"l\">arch</th>\
         <th class=\"l\">optimizer</th><th>lr</th><th>l2</th><th>batch</th><th>epochs</th>\
         <th>train loss</th><th>train acc</th><th>val loss</th><th>val acc</th>\
         <th>train s</th><th class=\"l\">model file</th></tr>",
    );
    for (rank, m) in board.iter().enumerate() {
        let file = m
            .model_file
            .as_deref()
            .map(|f| format!("<a href=\"{0}\">{0}</a>", esc(f)))
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"model\"><span class=\"sw\" style=\"background:{}\"></span> {}</td>\
             <td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td class=\"l\">{file}</td></tr>",
            if Some(m.model_id) == best { " class=\"best\"" } else { "" },
            rank + 1,
            hex(color(m.model_id)),
            m.model_id,
            esc(&m.arch),
            esc(&optimizer_name(&m.config.optimizer)),
            short_number(m.config.lr),
            short_number(m.config.l2),
            m.config.batch_size,
            m.epochs(),
            num(m.train_loss(), 4),
            num(m.train_acc(), 4),
            num(m.val_loss(), 4),
            num(m.val_acc(), 4),
            m.seconds(),
        );
    }
    h.push_str("</table>");
}

fn grid(h: &mut String, r: &super::RunResults) {
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
    let _ = write!(
        h,
        "<h2>Grid</h2><p class=\"note\">The cross product of these lists: {} configurations{}.</p>\
         <table><tr><th class=\"l\">hyper-parameter</th><th class=\"l\">values</th></tr>",
        ms.len(),
        if product == ms.len() {
            String::new()
        } else {
            format!(" (of {product} combinations)")
        }
    );
    for (k, v) in rows {
        let _ = write!(
            h,
            "<tr><td class=\"l\"><code>{k}</code></td><td class=\"l\">{}</td></tr>",
            esc(&v.join(", "))
        );
    }
    h.push_str("</table>");
}

fn legend(h: &mut String, items: impl Iterator<Item = (usize, String)>) {
    h.push_str("<div class=\"legend\">");
    for (i, label) in items {
        let _ = write!(
            h,
            "<span class=\"item\"><span class=\"sw\" style=\"background:{}\"></span> {}</span>",
            hex(color(i)),
            esc(&label)
        );
    }
    h.push_str("</div>");
}

fn curves(h: &mut String, run: &RunFiles, best: Option<usize>) -> Result<()> {
    let r = &run.results;
    h.push_str(
        "<h2>Learning curves</h2><p class=\"note\">Per epoch, for every model: training loss and \
         accuracy are means over the epoch's rows on every partition; validation is measured after \
         the epoch on every trainer's validation rows. The best model is drawn thick.</p>",
    );
    legend(
        h,
        r.models
            .iter()
            .map(|m| (m.model_id, format!("{}: {}", m.model_id, short_config(m)))),
    );
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
    }
    h.push_str("<div class=\"curves\">");
    for (title, y, pick, unit) in wanted {
        let svg = curve_svg(title, y, &series(pick), epochs, unit)?;
        let _ = write!(
            h,
            "<div class=\"curve\" id=\"curve-{}\">{svg}</div>",
            title.replace(' ', "-")
        );
    }
    h.push_str("</div>");
    if !r.has_validation() {
        h.push_str(
            "<p class=\"note\">No validation rows: set <code>source.validation</code> in the \
             run configuration to get validation curves.</p>",
        );
    }
    Ok(())
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

/// The search: what it decided at each decision point, and how far each
/// model went.
fn search(h: &mut String, r: &super::RunResults, timeline: &[UnitRecord]) {
    let Some(s) = &r.search else {
        return;
    };
    if s.rule == mop_core::search::Rule::Full {
        return;
    }
    let _ = write!(
        h,
        "<h2>Search</h2><p class=\"note\">{}. The models trained {} model-epochs of the {} the \
         full grid over the same configurations would ({:.0}%); the units of the models it \
         stopped would have taken about {:.1} trainer-seconds, which the trainers spent on the \
         others. Decisions depend on validation accuracy and the seed only, so a resumed run takes \
         the same ones.</p>",
        esc(&s.rule.describe()),
        s.model_epochs,
        s.full_model_epochs,
        100.0 * s.model_epochs as f64 / s.full_model_epochs.max(1) as f64,
        freed_seconds(r, timeline)
    );
    // Each decision point: who reached it, who went on, who stopped there.
    h.push_str(
        "<h3>Rungs</h3><table><tr><th>after epoch</th><th>reached</th><th class=\"l\">went on \
         (validation accuracy)</th><th class=\"l\">stopped here</th></tr>",
    );
    let acc = |m: &ModelRecord, e: usize| num(m.val_acc.get(e - 1).copied().flatten(), 3);
    let chip = |m: &ModelRecord, e: usize| {
        format!(
            "<span class=\"sw\" style=\"background:{}\"></span> {} ({})",
            hex(color(m.model_id)),
            m.model_id,
            acc(m, e)
        )
    };
    for d in s.rule.decision_epochs() {
        let reached: Vec<&ModelRecord> = r.models.iter().filter(|m| m.epochs() >= d).collect();
        if reached.is_empty() {
            continue;
        }
        let on: Vec<String> = reached
            .iter()
            .filter(|m| m.epochs() > d)
            .map(|m| chip(m, d))
            .collect();
        let off: Vec<String> = reached
            .iter()
            .filter(|m| m.epochs() == d && stopped_early(m))
            .map(|m| chip(m, d))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{d}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            reached.len(),
            on.join(" &nbsp; "),
            off.join(" &nbsp; ")
        );
    }
    h.push_str("</table>");
    // How far each model went.
    h.push_str(
        "<h3>Epochs by model</h3><table><tr><th>model</th><th class=\"l\">configuration</th>\
         <th class=\"l\">epochs trained</th><th>validation accuracy</th><th class=\"l\">decision</th></tr>",
    );
    let width = 240.0 / r.epochs.max(1) as f64;
    for m in &r.models {
        let _ = write!(
            h,
            "<tr><td><span class=\"sw\" style=\"background:{}\"></span> {}</td><td class=\"l\">{}</td>\
             <td class=\"l\"><span class=\"bar\" style=\"width:{:.0}px;background:{}\"></span> {}</td>\
             <td>{}</td><td class=\"l\">{}</td></tr>",
            hex(color(m.model_id)),
            m.model_id,
            esc(&short_config(m)),
            width * m.epochs() as f64,
            hex(color(m.model_id)),
            m.epochs(),
            num(m.val_acc(), 4),
            esc(&m.stop_reason.map(|r| r.to_string()).unwrap_or_default())
        );
    }
    h.push_str("</table>");
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
fn locality(h: &mut String, run: &RunFiles) {
    let parts = &run.results.partitions;
    if parts.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Data locality</h2><table><tr><th>partition</th><th class=\"l\">trainer</th>\
         <th class=\"l\">device</th><th class=\"l\">read from</th><th class=\"l\">local</th><th>rows</th>\
         <th>read at open</th><th>read by units</th></tr>",
    );
    let (mut local_bytes, mut total_bytes) = (0u64, 0u64);
    for p in parts {
        let unit_bytes: u64 = run
            .timeline
            .iter()
            .filter(|u| u.partition == p.partition)
            .map(|u| u.bytes_read)
            .sum();
        let all = p.open_bytes + unit_bytes;
        total_bytes += all;
        if p.local {
            local_bytes += all;
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td>\
             <td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.partition,
            esc(&p.trainer),
            esc(&p.device),
            esc(&p.endpoint_hosts.join(", ")),
            if p.local { "yes" } else { "no" },
            p.rows,
            bytes(p.open_bytes),
            bytes(unit_bytes)
        );
    }
    let _ = write!(
        h,
        "</table><p class=\"note\">A partition is local when its trainer's address names the \
         host its endpoints are located at (a flight-server beside the segment, a trainer beside \
         the server): its rows never crossed the network. {} of {} Arrow bytes read were local. \
         With a cache, a partition is read once when it is opened; with <code>cache = \"none\"</code> \
         every unit reads it again.</p>",
        bytes(local_bytes),
        bytes(total_bytes)
    );
}

fn schedule(h: &mut String, run: &RunFiles, wall: f64) {
    let r = &run.results;
    h.push_str("<h2>The MOP schedule</h2>");
    if run.timeline.is_empty() {
        h.push_str(
            "<p class=\"note\">This run has no timeline.json, so there is no schedule to draw.</p>",
        );
        return;
    }
    let trainers = trainer_times(&run.timeline, r.trainers).len();
    let _ = write!(
        h,
        "<p class=\"note\">Model hopper parallelism: every trainer sits beside one partition of the \
         data and never moves it; the <em>models</em> hop. Each bar is one unit — one model trained \
         for one pass over one partition — coloured by model and labelled <code>m&lt;model&gt; · \
         e&lt;epoch&gt;</code>. A model runs on one trainer at a time and visits every partition \
         once per epoch, so every trainer stays busy with a different model. Gaps are trainers \
         waiting for a runnable model (or validating); a dark strip at a bar's foot is time spent \
         waiting for data. {} units on {trainers} trainers.{}</p>",
        run.timeline.len(),
        if r.models.iter().any(stopped_early) {
            " The search stopped some models early: ✕ marks the last unit of each. Their \
             remaining units never ran, and the trainers took the other models' units instead."
        } else {
            ""
        }
    );
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
    let rows: Vec<String> = (0..trainers).map(|t| format!("trainer {t}")).collect();
    h.push_str("<h3>By trainer</h3>");
    let _ = write!(
        h,
        "<div class=\"scroll\">{}</div>",
        gantt_svg(&rows, &bars, wall, 34.0)
    );
    legend(
        h,
        r.models
            .iter()
            .map(|m| (m.model_id, format!("model {}", m.model_id))),
    );

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
    let rows: Vec<String> = (0..models).map(|m| format!("model {m}")).collect();
    h.push_str(
        "<h3>By model</h3><p class=\"note\">The same units, one row per model, coloured by the \
         partition (trainer) they ran on: every model visits every partition once per epoch, in \
         an order of its own.</p>",
    );
    let _ = write!(
        h,
        "<div class=\"scroll\">{}</div>",
        gantt_svg(&rows, &by_model, wall, 22.0)
    );
    h.push_str("<div class=\"legend\">");
    for t in 0..trainers {
        let _ = write!(
            h,
            "<span class=\"item\"><span class=\"sw\" style=\"background:{}\"></span> partition {t} (trainer {t})</span>",
            hex(trainer_color(t))
        );
    }
    h.push_str("</div>");
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

fn timings(h: &mut String, times: &[TrainerTimes], wall: f64) {
    h.push_str(
        "<h2>Trainers</h2><table><tr><th class=\"l\">trainer</th><th>units</th><th>busy s</th>\
         <th>idle s</th><th class=\"l\">busy</th><th>data wait s</th><th>rows</th><th>rows/s busy</th></tr>",
    );
    for (i, t) in times.iter().enumerate() {
        let share = if wall > 0.0 { t.busy / wall } else { 0.0 };
        let _ = write!(
            h,
            "<tr><td class=\"l\">trainer {i}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td>\
             <td class=\"l\"><span class=\"bar\" style=\"width:{:.0}px\"></span> {:.0}%</td>\
             <td>{:.2}</td><td>{}</td><td>{:.0}</td></tr>",
            t.units,
            t.busy,
            (wall - t.busy).max(0.0),
            share.clamp(0.0, 1.0) * 120.0,
            share * 100.0,
            t.wait,
            t.samples,
            if t.busy > 0.0 {
                t.samples as f64 / t.busy
            } else {
                0.0
            }
        );
    }
    let busy: f64 = times.iter().map(|t| t.busy).sum();
    let _ = write!(
        h,
        "</table><p class=\"note\">Wall time {wall:.1} s; trainers were busy {:.0}% of it on \
         average. Idle time includes the start (opening partitions, the first read of the data), \
         validation passes and waiting for a runnable model.</p>",
        if wall > 0.0 && !times.is_empty() {
            busy / (wall * times.len() as f64) * 100.0
        } else {
            0.0
        }
    );
}
