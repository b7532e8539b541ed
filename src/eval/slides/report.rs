//! The text tables of `plip eval slide-retrieval` and `slide-zero-shot`.

use std::io::{self, Write};

use super::command::SlideRetrievalRun;

/// Headline figures, per-class figures, the classes set apart and the worst queries.
pub(crate) fn print_slide_retrieval(w: &mut impl Write, r: &SlideRetrievalRun) -> io::Result<()> {
    let m = &r.report;
    writeln!(
        w,
        "slide retrieval: {} queries of {} labelled slides ({}, {} scoring)",
        m.queries, r.slides, r.protocol, r.slide_score
    )?;
    for (k, v) in [
        ("top-1 accuracy", m.top1),
        ("MV@3 accuracy", m.mv3),
        ("MV@5 accuracy", m.mv5),
        ("mAP@5 (SISH)", m.map5),
        ("macro F1 of MV@5", m.macro_f1_mv5),
    ] {
        writeln!(w, "{k:<18}  {v:.4}")?;
    }
    let cw = m
        .per_class
        .iter()
        .map(|c| c.class.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(w)?;
    writeln!(
        w,
        "{:<cw$}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>8}",
        "class", "queries", "top-1", "MV@3", "MV@5", "mAP@5", "F1(MV@5)"
    )?;
    for c in &m.per_class {
        writeln!(
            w,
            "{:<cw$}  {:>7}  {:>6.4}  {:>6.4}  {:>6.4}  {:>6.4}  {:>8.4}",
            c.class, c.queries, c.top1, c.mv3, c.mv5, c.map5, c.f1
        )?;
    }
    for s in &r.set_apart {
        writeln!(
            w,
            "set apart: class {:?} {} ({})",
            s.class,
            s.reason,
            s.slides.join(", ")
        )?;
    }
    if !r.unknown_slides.is_empty() {
        writeln!(
            w,
            "left out: {} slide(s) of the CSV not in the index",
            r.unknown_slides.len()
        )?;
    }
    if !r.worst.is_empty() {
        writeln!(w, "\nworst queries (MV@5 wrong), with what they retrieved:")?;
        for q in &r.worst {
            let got: Vec<String> = q
                .retrieved
                .iter()
                .map(|x| format!("{} [{}] {:.4}", x.slide, x.label, x.score))
                .collect();
            writeln!(
                w,
                "  {} [{}] AP@5 {:.2}: {}",
                q.slide,
                q.label,
                q.ap5,
                got.join("; ")
            )?;
        }
    }
    Ok(())
}
