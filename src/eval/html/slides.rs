//! The `--html` page of `plip eval slide-retrieval`: the headline figures, the run
//! record, per-class figures as a table, the classes set apart, and the worst queries
//! (MV@5 wrong) as slide thumbnails next to the slides they retrieved, those of the
//! query's class outlined.

use std::io::{self, Write};
use std::path::Path;

use super::{escape, head, meta_table};
use crate::eval::slides::command::SlideRetrievalRun;
use crate::output::by_slide::slide_uri;

fn slide_card(
    w: &mut impl Write,
    root: &Path,
    slide: &str,
    class: &str,
    cap: &str,
) -> io::Result<()> {
    let img = match slide_uri(&root.join(slide), &[]) {
        Some(uri) => format!("<img src=\"{uri}\" alt=\"{}\">", escape(slide)),
        None => "<div class=\"noimg\">no preview</div>".to_string(),
    };
    write!(w, "<div class=\"card {class}\">{img}{cap}</div>")
}

/// Writes the page; slide paths in `r` are relative to `root`.
pub(crate) fn write_slide_retrieval(
    mut w: impl Write,
    r: &SlideRetrievalRun,
    meta: &serde_json::Value,
    root: &Path,
) -> io::Result<()> {
    head(&mut w, "plip eval slide-retrieval")?;
    let m = &r.report;
    write!(w, "<div class=\"nums\">")?;
    for (k, v) in [
        ("top-1 accuracy", m.top1),
        ("MV@3", m.mv3),
        ("MV@5", m.mv5),
        ("mAP@5 (SISH)", m.map5),
        ("macro F1 of MV@5", m.macro_f1_mv5),
    ] {
        write!(w, "<div class=\"num\"><b>{v:.4}</b>{}</div>", escape(k))?;
    }
    write!(
        w,
        "<div class=\"num\"><b>{}</b>queries ({}, {} scoring)</div></div>",
        m.queries,
        escape(r.protocol),
        escape(r.slide_score)
    )?;
    meta_table(&mut w, meta)?;
    write!(
        w,
        "<h2>Per class</h2><table class=\"meta\"><tr><td>class</td><td>queries</td><td>top-1</td>\
<td>MV@3</td><td>MV@5</td><td>mAP@5</td><td>precision</td><td>recall</td><td>F1 (MV@5)</td></tr>"
    )?;
    for c in &m.per_class {
        write!(
            w,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td>\
<td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            escape(&c.class),
            c.queries,
            c.top1,
            c.mv3,
            c.mv5,
            c.map5,
            c.precision,
            c.recall,
            c.f1
        )?;
    }
    write!(w, "</table>")?;
    for s in &r.set_apart {
        write!(
            w,
            "<p>Set apart: class <b>{}</b> {} ({}).</p>",
            escape(&s.class),
            escape(&s.reason),
            escape(&s.slides.join(", "))
        )?;
    }
    if !r.unknown_slides.is_empty() {
        write!(
            w,
            "<p>Left out, not in the index: {}</p>",
            escape(&r.unknown_slides.join(", "))
        )?;
    }
    write!(w, "<h2>Worst queries (MV@5 wrong)</h2>")?;
    if r.worst.is_empty() {
        write!(w, "<p>Every query's majority vote at 5 was right.</p>")?;
    }
    for q in &r.worst {
        write!(
            w,
            "<div class=\"q\"><div><b>{}</b> [{}] — AP@5 {:.2}</div><div class=\"grid\">",
            escape(&q.slide),
            escape(&q.label),
            q.ap5
        )?;
        let cap = format!(
            "<div>query</div><div class=\"path\">{}</div>",
            escape(&q.slide)
        );
        slide_card(&mut w, root, &q.slide, "", &cap)?;
        for h in &q.retrieved {
            let ok = h.label == q.label;
            let cap = format!(
                "<div>{:.3} <span class=\"{}\">{}</span></div><div class=\"path\">{}</div>",
                h.score,
                if ok { "t" } else { "p" },
                escape(&h.label),
                escape(&h.slide)
            );
            slide_card(&mut w, root, &h.slide, if ok { "ok" } else { "" }, &cap)?;
        }
        write!(w, "</div></div>")?;
    }
    writeln!(w, "</body></html>")
}
