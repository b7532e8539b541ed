//! `plip eval … --model A --model B`: the same evaluation run for each model, then one
//! table with a column per model (text, `--json`, `--html`). Each model's own report is
//! its `--json` document; the table holds every scalar metric in it (recall at each K,
//! ranks, accuracy, F1, split sizes), in the order the first report names them.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};

/// One model's result.
pub(crate) struct Column {
    /// What the user named (`--model`).
    pub model: String,
    /// `hf-clip` or `open_clip`.
    pub family: &'static str,
    /// The model's `--json` report.
    pub report: Value,
}

/// Keys whose values are lists or records, not headline numbers.
const SKIP: [&str; 8] = [
    "run",
    "ranks",
    "per_class",
    "confusion",
    "classes",
    "sweep",
    "templates",
    "solver",
];

/// Every scalar number in `report`, by dotted path; `recall` lists become `recall@K`.
pub(crate) fn metrics(report: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    flatten("", report, &mut out);
    out
}

fn flatten(path: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((path.to_string(), f));
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                if !SKIP.contains(&k.as_str()) {
                    flatten(&join(k), v, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if let (Some(k), Some(r)) = (
                    item.get("k").and_then(Value::as_u64),
                    item.get("recall").and_then(Value::as_f64),
                ) {
                    out.push((format!("{path}@{k}"), r));
                }
            }
        }
        _ => {}
    }
}

/// The rows of the table: each metric with its value per model (None where a
/// model's report lacks it).
fn rows(columns: &[Column]) -> Vec<(String, Vec<Option<f64>>)> {
    let per: Vec<Vec<(String, f64)>> = columns.iter().map(|c| metrics(&c.report)).collect();
    let mut names: Vec<String> = Vec::new();
    for m in &per {
        for (k, _) in m {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|k| {
            let vals = per
                .iter()
                .map(|m| m.iter().find(|(n, _)| *n == k).map(|(_, v)| *v))
                .collect();
            (k, vals)
        })
        .collect()
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// The comparison as text: a header naming each model and its family, then a row
/// per metric.
pub(crate) fn print_table(
    out: &mut impl Write,
    command: &str,
    columns: &[Column],
) -> io::Result<()> {
    writeln!(out, "plip eval {command}: {} models", columns.len())?;
    for (i, c) in columns.iter().enumerate() {
        writeln!(out, "  [{}] {} ({})", i + 1, c.model, c.family)?;
    }
    let rows = rows(columns);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(6).max(6);
    write!(out, "{:width$}", "metric")?;
    for i in 0..columns.len() {
        write!(out, " {:>10}", format!("[{}]", i + 1))?;
    }
    writeln!(out)?;
    for (k, vals) in rows {
        write!(out, "{k:width$}")?;
        for v in vals {
            write!(out, " {:>10}", fmt(v))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The comparison as one JSON document: each model's own report, in order.
pub(crate) fn to_json(command: &str, columns: &[Column]) -> Value {
    json!({
        "command": command,
        "models": columns.iter().map(|c| json!({
            "model": c.model,
            "family": c.family,
            "report": c.report,
        })).collect::<Vec<_>>(),
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The comparison as one self-contained HTML page, a column per model; the best
/// value of a row is bold where higher is better (recall, accuracy, F1, precision).
pub(crate) fn write_html(path: &Path, command: &str, columns: &[Column]) -> anyhow::Result<()> {
    super::html::write_page(path, |w| {
        writeln!(
            w,
            "<!doctype html><meta charset=utf-8><title>plip eval {command}: model comparison</title>\
             <style>body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}\
             td,th{{padding:2px 12px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
             tr:nth-child(even){{background:#f4f4f4}}th{{border-bottom:1px solid #999}}</style>\
             <h1>plip eval {command}: {} models</h1><table><tr><th>metric</th>",
            columns.len()
        )?;
        for c in columns {
            write!(
                w,
                "<th>{}<br><small>{}</small></th>",
                escape(&c.model),
                c.family
            )?;
        }
        writeln!(w, "</tr>")?;
        for (k, vals) in rows(columns) {
            let higher_better = ["recall", "accuracy", "f1", "precision"]
                .iter()
                .any(|m| k.contains(m));
            let best = vals
                .iter()
                .flatten()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            write!(w, "<tr><td>{}</td>", escape(&k))?;
            for v in vals {
                let s = fmt(v);
                if higher_better && v == Some(best) && columns.len() > 1 {
                    write!(w, "<td><b>{s}</b></td>")?;
                } else {
                    write!(w, "<td>{s}</td>")?;
                }
            }
            writeln!(w, "</tr>")?;
        }
        writeln!(w, "</table>")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_flatten_recall_lists_and_skip_records() {
        let report = json!({
            "n": 4,
            "text_to_image": {"recall": [{"k": 1, "recall": 0.5, "k_exceeds_candidates": false}],
                              "mean_rank": 1.5, "ranks": [1, 2]},
            "run": {"seed": 3},
            "per_class": [{"f1": 1.0}],
        });
        assert_eq!(
            metrics(&report),
            vec![
                ("n".to_string(), 4.0),
                ("text_to_image.mean_rank".to_string(), 1.5),
                ("text_to_image.recall@1".to_string(), 0.5),
            ]
        );
    }

    #[test]
    fn table_has_a_column_per_model() {
        let col = |m: &str, acc: f64| Column {
            model: m.into(),
            family: "hf-clip",
            report: json!({"accuracy": acc, "n": 10}),
        };
        let mut out = Vec::new();
        print_table(&mut out, "zero-shot", &[col("a", 0.5), col("b", 0.75)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("[1] a (hf-clip)"), "{text}");
        assert!(text.contains("accuracy"), "{text}");
        assert!(text.contains("0.5000") && text.contains("0.7500"), "{text}");
    }
}
