//! Text tables of evaluation reports, written to any `impl Write`.

use super::*;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints a retrieval report as an aligned table: Recall@K rows (with "(only N candidates)"
/// where `K >= N`), mean and median rank, for both directions.
pub fn print_retrieval_table<W: Write>(w: &mut W, r: &RetrievalReport) -> io::Result<()> {
    let (t, i) = (&r.text_to_image, &r.image_to_text);
    let mut rows: Vec<(String, String, String)> = t
        .recall
        .iter()
        .zip(&i.recall)
        .map(|(a, b)| {
            let mut label = format!("recall@{}", a.k);
            if a.k_exceeds_candidates {
                label += &format!(" (only {})", plural(r.n, "candidate", "candidates"));
            }
            (
                label,
                format!("{:.4}", a.recall),
                format!("{:.4}", b.recall),
            )
        })
        .collect();
    rows.push((
        "mean rank".into(),
        format!("{:.2}", t.mean_rank),
        format!("{:.2}", i.mean_rank),
    ));
    rows.push((
        "median rank".into(),
        format!("{:.1}", t.median_rank),
        format!("{:.1}", i.median_rank),
    ));
    let (h1, h2) = ("text->image", "image->text");
    let lw = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max("metric".len());
    writeln!(
        w,
        "retrieval over {}",
        plural(r.n, "image-caption pair", "image-caption pairs")
    )?;
    writeln!(w, "{:<lw$}  {h1:>11}  {h2:>11}", "metric")?;
    for (label, a, b) in rows {
        writeln!(w, "{label:<lw$}  {a:>11}  {b:>11}")?;
    }
    Ok(())
}

/// Prints a classification report like scikit-learn's `classification_report` (per class
/// precision / recall / F1 / support, accuracy, macro and weighted averages), notes on classes
/// with no items or never predicted, and the confusion matrix.
pub fn print_classification_table<W: Write>(w: &mut W, r: &ClassificationReport) -> io::Result<()> {
    let nw = r
        .classes
        .iter()
        .map(|c| c.chars().count())
        .chain(["weighted avg".len(), "class".len()])
        .max()
        .unwrap_or(0);
    let sw = r.n.to_string().len().max("support".len());
    writeln!(
        w,
        "classification of {} into {}",
        plural(r.n, "item", "items"),
        plural(r.classes.len(), "class", "classes")
    )?;
    writeln!(
        w,
        "{:<nw$}  {:>9}  {:>9}  {:>9}  {:>sw$}",
        "class", "precision", "recall", "f1", "support"
    )?;
    for m in &r.per_class {
        writeln!(
            w,
            "{:<nw$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>sw$}",
            m.name, m.precision, m.recall, m.f1, m.support
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{:<nw$}  {:>9}  {:>9}  {:>9.4}  {:>sw$}",
        "accuracy", "", "", r.accuracy, r.n
    )?;
    for (label, p, rc, f) in [
        ("macro avg", r.macro_precision, r.macro_recall, r.macro_f1),
        (
            "weighted avg",
            r.weighted_precision,
            r.weighted_recall,
            r.weighted_f1,
        ),
    ] {
        writeln!(
            w,
            "{label:<nw$}  {p:>9.4}  {rc:>9.4}  {f:>9.4}  {:>sw$}",
            r.n
        )?;
    }
    let list = |f: &dyn Fn(usize) -> bool| -> Vec<&str> {
        (0..r.classes.len())
            .filter(|&k| f(k))
            .map(|k| r.classes[k].as_str())
            .collect()
    };
    let empty = list(&|k| r.per_class[k].support == 0);
    let never = list(&|k| r.confusion.iter().all(|row| row[k] == 0));
    if !empty.is_empty() {
        writeln!(
            w,
            "no items (recall and F1 counted as 0): {}",
            empty.join(", ")
        )?;
    }
    if !never.is_empty() {
        writeln!(
            w,
            "never predicted (precision counted as 0): {}",
            never.join(", ")
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "confusion matrix (rows = true class, columns = predicted class):"
    )?;
    let c = r.classes.len();
    let max = r.confusion.iter().flatten().copied().max().unwrap_or(0);
    let cw = max
        .to_string()
        .len()
        .max(c.saturating_sub(1).to_string().len());
    let iw = c.saturating_sub(1).to_string().len();
    let rw = iw + 1 + nw;
    write!(w, "{:rw$}", "")?;
    for k in 0..c {
        write!(w, "  {k:>cw$}")?;
    }
    writeln!(w)?;
    for (k, row) in r.confusion.iter().enumerate() {
        write!(w, "{:<rw$}", format!("{k:>iw$} {}", r.classes[k]))?;
        for v in row {
            write!(w, "  {v:>cw$}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}
