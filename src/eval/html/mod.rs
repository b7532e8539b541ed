//! `--html FILE` of every `plip eval`: one self-contained page to look at, not only tables.
//!
//! The page has no scripts and loads nothing: charts are inline SVG, thumbnails are JPEG data
//! URIs made by plip's own decoder ([`crate::output::html::thumbnail`]). Every name that comes
//! from the user (class names, file paths, captions, templates) goes through
//! [`escape`], so a folder called `<script>` is shown as text.
//!
//! * classification (zero-shot, linear probe): headline numbers, the run record, the confusion
//!   matrix as a heatmap (rows = true class, colour = share of the row, counts printed),
//!   per-class precision / recall / F1 bars, and the most confident mistakes as thumbnails
//!   with their true and predicted class;
//! * retrieval: the Recall@K curve of both directions, and the worst queries (largest rank)
//!   with their top hits, correct hits outlined.

pub(crate) mod slides;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::eval::{ClassificationReport, DirectionReport, RetrievalReport};
use crate::output::html::{escape, thumbnail};

/// A wrong prediction worth looking at.
pub(crate) struct Mistake {
    pub(crate) path: PathBuf,
    pub(crate) truth: usize,
    pub(crate) predicted: usize,
    /// The model's probability for the predicted class.
    pub(crate) confidence: f64,
}

/// One hit shown under a worst query.
pub(crate) struct Hit {
    /// Image path (image hits) or caption text (caption hits).
    pub(crate) item: String,
    pub(crate) score: f32,
    pub(crate) correct: bool,
}

/// A query with a bad rank and its top hits.
pub(crate) struct WorstQuery {
    /// Caption text (text → image) or image path (image → text).
    pub(crate) query: String,
    pub(crate) rank: usize,
    pub(crate) hits: Vec<Hit>,
}

/// Writes a page to `path` through `body` (buffered), naming the file in errors.
pub(crate) fn write_page(
    path: &std::path::Path,
    body: impl FnOnce(&mut io::BufWriter<std::fs::File>) -> io::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let file = std::fs::File::create(path)
        .with_context(|| format!("creating the report page {}", path.display()))?;
    let mut w = io::BufWriter::new(file);
    body(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("writing the report page {}", path.display()))
}

/// Most confident mistakes shown.
pub(crate) const MAX_MISTAKES: usize = 24;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}\
.nums{display:flex;gap:28px;flex-wrap:wrap;margin:12px 0}.num b{display:block;font-size:24px}\
table.meta td{padding:1px 10px 1px 0;vertical-align:top}table.meta td:first-child{color:#666}\
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{width:180px;font-size:12px}\
.card img{width:180px;height:180px;object-fit:cover;display:block;border:1px solid #ccc}\
.noimg{width:180px;height:180px;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}\
.t{color:#176a2c}.p{color:#b02a2a}.path{color:#666;word-break:break-all}\
.q{margin:14px 0}.q .grid{gap:8px}.q .card{width:130px}.q .card img,.q .noimg{width:130px;height:130px}\
.ok img{outline:3px solid #2a9d4b}.cap{border:1px solid #ccc;padding:4px;height:auto}.ok.cap{border:3px solid #2a9d4b}\
svg text{font:11px system-ui,sans-serif}";

fn head(w: &mut impl Write, title: &str) -> io::Result<()> {
    write!(
        w,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>\
<h1>{}</h1>",
        escape(title),
        escape(title)
    )
}

/// The run record (a JSON object) as a key/value table.
fn meta_table(w: &mut impl Write, meta: &serde_json::Value) -> io::Result<()> {
    let Some(obj) = meta.as_object() else {
        return Ok(());
    };
    write!(w, "<table class=\"meta\">")?;
    for (k, v) in obj {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "–".into(),
            serde_json::Value::Object(o) => o
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(" · "),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(" · "),
            other => other.to_string(),
        };
        write!(
            w,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(k),
            escape(&text)
        )?;
    }
    write!(w, "</table>")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

/// Confusion matrix heatmap (SVG): cell colour = count / row total.
pub(crate) fn confusion_svg(r: &ClassificationReport) -> String {
    let c = r.classes.len();
    let cell = (560 / c.max(1)).clamp(16, 56);
    let label_w = 190;
    // room for the longest (truncated) column label, written at -50°
    let longest = r
        .classes
        .iter()
        .map(|n| n.chars().count().min(26))
        .max()
        .unwrap_or(1);
    let top = 16 + (longest as f64 * 6.2 * 0.77) as usize;
    let (w, h) = ((label_w + cell * c + 20).max(560), top + cell * c + 40);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"confusion matrix\">"
    );
    for (j, name) in r.classes.iter().enumerate() {
        let x = label_w + j * cell + cell / 2;
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"{}\" transform=\"rotate(-50 {x} {})\"><title>{}</title>{}</text>",
            top - 6,
            top - 6,
            escape(name),
            escape(&truncate(name, 26))
        );
    }
    for (i, row) in r.confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        let y = top + i * cell;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            label_w - 6,
            y + cell / 2 + 4,
            escape(&r.classes[i]),
            escape(&truncate(&r.classes[i], 28))
        );
        for (j, &n) in row.iter().enumerate() {
            let f = if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            };
            // white → deep blue; the diagonal in green tones
            let (r0, g0, b0) = if i == j { (26, 127, 55) } else { (31, 78, 160) };
            let mix = |a: u8| (255.0 - (255.0 - a as f64) * f).round() as u8;
            let x = label_w + j * cell;
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({},{},{})\" stroke=\"#ddd\"><title>true {} → predicted {}: {n} of {total}</title></rect>",
                mix(r0),
                mix(g0),
                mix(b0),
                escape(&r.classes[i]),
                escape(&r.classes[j])
            );
            if cell >= 22 && n > 0 {
                let fill = if f > 0.55 { "#fff" } else { "#222" };
                let _ = write!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{fill}\">{n}</text>",
                    x + cell / 2,
                    y + cell / 2 + 4
                );
            }
        }
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" fill=\"#666\">columns: predicted class · rows: true class · colour: share of the row</text></svg>",
        label_w.min(w.saturating_sub(400)),
        top + cell * c + 24
    );
    s
}

/// Per-class precision / recall / F1 as grouped horizontal bars (SVG).
pub(crate) fn per_class_svg(r: &ClassificationReport) -> String {
    let label_w = 200;
    let bar_w = 420.0;
    let row_h = 34;
    let h = 30 + row_h * r.per_class.len() + 10;
    let colours = [
        ("precision", "#4c78a8"),
        ("recall", "#f58518"),
        ("F1", "#54a24b"),
    ];
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" role=\"img\" aria-label=\"per-class precision, recall and F1\">",
        label_w + bar_w as usize + 60
    );
    for (k, (name, col)) in colours.iter().enumerate() {
        let x = label_w + k * 110;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{col}\"/><text x=\"{}\" y=\"14\">{name}</text>",
            x + 16
        );
    }
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = label_w as f64 + tick * bar_w;
        let _ = write!(
            s,
            "<line x1=\"{x}\" y1=\"24\" x2=\"{x}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">{tick}</text>",
            h - 12,
            h - 1
        );
    }
    for (i, m) in r.per_class.iter().enumerate() {
        let y = 28 + i * row_h;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{} (support {})</title>{}</text>",
            label_w - 6,
            y + 16,
            escape(&m.name),
            m.support,
            escape(&truncate(&m.name, 28))
        );
        for (k, (v, (what, col))) in [m.precision, m.recall, m.f1]
            .iter()
            .zip(colours)
            .enumerate()
        {
            let _ = write!(
                s,
                "<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"8\" fill=\"{col}\"><title>{} {what} {v:.3}</title></rect>",
                y + 3 + k * 9,
                v * bar_w,
                escape(&m.name)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" fill=\"#444\">{:.2}</text>",
            label_w as f64 + m.f1 * bar_w + 4.0,
            y + 3 + 2 * 9 + 8,
            m.f1
        );
    }
    s.push_str("</svg>");
    s
}

/// Recall@K for K = 1..=min(n, 100) in both directions (SVG line chart).
pub(crate) fn recall_curve_svg(r: &RetrievalReport) -> String {
    let kmax = r.n.clamp(1, 100);
    let (w, h, left, bottom, top) = (640.0, 300.0, 50.0, 40.0, 20.0);
    let pw = w - left - 20.0;
    let ph = h - bottom - top;
    let x_of = |k: usize| {
        if kmax == 1 {
            left
        } else {
            left + (k - 1) as f64 / (kmax - 1) as f64 * pw
        }
    };
    let y_of = |v: f64| top + (1.0 - v) * ph;
    let curve = |d: &DirectionReport| -> Vec<(usize, f64)> {
        let n = d.ranks.len().max(1) as f64;
        (1..=kmax)
            .map(|k| (k, d.ranks.iter().filter(|&&rk| rk <= k).count() as f64 / n))
            .collect()
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"recall at K\">"
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = y_of(tick);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#888\">{tick}</text>",
            left + pw,
            left - 6.0,
            y + 4.0
        );
    }
    let mut ks: Vec<usize> = vec![1, 5, 10, 20, 50, 100];
    ks.retain(|&k| k <= kmax);
    if !ks.contains(&kmax) && ks.last().is_some_and(|&l| kmax - l >= 3) {
        ks.push(kmax);
    }
    for k in ks {
        let x = x_of(k);
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">{k}</text>",
            top + ph + 16.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">K</text>",
        left + pw / 2.0,
        h - 4.0
    );
    for (i, (name, d, col)) in [
        ("text → image", &r.text_to_image, "#4c78a8"),
        ("image → text", &r.image_to_text, "#e45756"),
    ]
    .into_iter()
    .enumerate()
    {
        let pts = curve(d);
        let path: Vec<String> = pts
            .iter()
            .map(|&(k, v)| format!("{:.1},{:.1}", x_of(k), y_of(v)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for rec in &d.recall {
            if rec.k <= kmax {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{col}\"><title>{name} recall@{} = {:.4}</title></circle>",
                    x_of(rec.k),
                    y_of(rec.recall),
                    rec.k,
                    rec.recall
                );
            }
        }
        // bottom right: recall curves rise to the top right, so this corner stays clear
        let ly = top + ph - 28.0 + i as f64 * 16.0;
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{col}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            left + pw - 120.0,
            ly - 4.0,
            left + pw - 104.0,
            ly
        );
    }
    s.push_str("</svg>");
    s
}

fn thumb_card(w: &mut impl Write, path: &str, extra_class: &str, caption: &str) -> io::Result<()> {
    let img = match thumbnail(std::path::Path::new(path)) {
        Some(uri) => format!("<img src=\"{uri}\" alt=\"{}\">", escape(path)),
        None => "<div class=\"noimg\">unreadable</div>".to_string(),
    };
    write!(w, "<div class=\"card {extra_class}\">{img}{caption}</div>")
}

/// A classification page (zero-shot or linear probe).
pub(crate) fn write_classification(
    mut w: impl Write,
    title: &str,
    r: &ClassificationReport,
    meta: &serde_json::Value,
    extra_html: &str,
    mistakes: &[Mistake],
) -> io::Result<()> {
    head(&mut w, title)?;
    write!(
        w,
        "<div class=\"nums\"><div class=\"num\"><b>{:.4}</b>accuracy</div><div class=\"num\"><b>{:.4}</b>macro F1</div>\
<div class=\"num\"><b>{:.4}</b>weighted F1</div><div class=\"num\"><b>{}</b>images</div><div class=\"num\"><b>{}</b>classes</div></div>",
        r.accuracy, r.macro_f1, r.weighted_f1, r.n, r.classes.len()
    )?;
    meta_table(&mut w, meta)?;
    w.write_all(extra_html.as_bytes())?;
    write!(w, "<h2>Confusion matrix</h2>{}", confusion_svg(r))?;
    write!(
        w,
        "<h2>Per-class precision, recall and F1</h2>{}",
        per_class_svg(r)
    )?;
    write!(w, "<h2>Most confident mistakes</h2>")?;
    if mistakes.is_empty() {
        write!(w, "<p>No mistakes.</p>")?;
    } else {
        write!(w, "<div class=\"grid\">")?;
        for m in mistakes.iter().take(MAX_MISTAKES) {
            let p = m.path.display().to_string();
            let cap = format!(
                "<div class=\"t\">true: {}</div><div class=\"p\">predicted: {} ({:.2})</div><div class=\"path\">{}</div>",
                escape(&r.classes[m.truth]),
                escape(&r.classes[m.predicted]),
                m.confidence,
                escape(&p)
            );
            thumb_card(&mut w, &p, "", &cap)?;
        }
        write!(w, "</div>")?;
    }
    writeln!(w, "</body></html>")
}

/// A retrieval page.
pub(crate) fn write_retrieval(
    mut w: impl Write,
    r: &RetrievalReport,
    meta: &serde_json::Value,
    worst_t2i: &[WorstQuery],
    worst_i2t: &[WorstQuery],
) -> io::Result<()> {
    head(&mut w, "plip eval retrieval")?;
    let rec = |d: &DirectionReport, k: usize| {
        d.recall
            .iter()
            .find(|x| x.k == k)
            .map(|x| format!("{:.4}", x.recall))
            .unwrap_or_else(|| "–".into())
    };
    write!(
        w,
        "<div class=\"nums\"><div class=\"num\"><b>{}</b>pairs</div><div class=\"num\"><b>{}</b>text→image R@1</div>\
<div class=\"num\"><b>{}</b>text→image R@10</div><div class=\"num\"><b>{}</b>image→text R@1</div><div class=\"num\"><b>{}</b>image→text R@10</div></div>",
        r.n,
        rec(&r.text_to_image, 1),
        rec(&r.text_to_image, 10),
        rec(&r.image_to_text, 1),
        rec(&r.image_to_text, 10)
    )?;
    meta_table(&mut w, meta)?;
    write!(w, "<h2>Recall@K</h2>{}", recall_curve_svg(r))?;
    write!(w, "<h2>Worst text → image queries</h2>")?;
    for q in worst_t2i {
        write!(
            w,
            "<div class=\"q\"><div><b>“{}”</b> — rank {}</div><div class=\"grid\">",
            escape(&q.query),
            q.rank
        )?;
        for h in &q.hits {
            let cap = format!(
                "<div>{:.3}{}</div><div class=\"path\">{}</div>",
                h.score,
                if h.correct { " ✓" } else { "" },
                escape(&h.item)
            );
            thumb_card(&mut w, &h.item, if h.correct { "ok" } else { "" }, &cap)?;
        }
        write!(w, "</div></div>")?;
    }
    write!(w, "<h2>Worst image → text queries</h2>")?;
    for q in worst_i2t {
        write!(
            w,
            "<div class=\"q\"><div>rank {}</div><div class=\"grid\">",
            q.rank
        )?;
        thumb_card(
            &mut w,
            &q.query,
            "",
            &format!("<div class=\"path\">{}</div>", escape(&q.query)),
        )?;
        for h in &q.hits {
            write!(
                w,
                "<div class=\"card cap{}\">{:.3}{}<br>{}</div>",
                if h.correct { " ok" } else { "" },
                h.score,
                if h.correct { " ✓" } else { "" },
                escape(&h.item)
            )?;
        }
        write!(w, "</div></div>")?;
    }
    writeln!(w, "</body></html>")
}

/// What a retrieval page needs besides the report: the embeddings and what they are of.
pub(crate) struct RetrievalItems<'a> {
    pub(crate) images: &'a [Vec<f32>],
    pub(crate) captions: &'a [Vec<f32>],
    pub(crate) image_groups: &'a [u64],
    pub(crate) caption_groups: &'a [u64],
    pub(crate) image_paths: &'a [PathBuf],
    pub(crate) caption_texts: &'a [&'a str],
}

/// Worst queries shown per direction, and hits shown per query.
const WORST: usize = 6;
const HITS: usize = 5;

/// The `HITS` best candidates of `query`; a hit is marked correct when it is the query's own
/// pair or identical to it (same group on either side).
fn top_hits(
    query: &[f32],
    cands: &[Vec<f32>],
    is_correct: impl Fn(usize) -> bool,
    label: impl Fn(usize) -> String,
) -> Vec<Hit> {
    let mut scored: Vec<(usize, f32)> = cands
        .iter()
        .enumerate()
        .map(|(j, c)| (j, crate::vectors::dot(query, c)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
        .into_iter()
        .take(HITS)
        .map(|(j, score)| Hit {
            item: label(j),
            score,
            correct: is_correct(j),
        })
        .collect()
}

/// Indices of the `WORST` largest ranks (ties: earlier pair first), rank > 1 only, one per
/// query group (identical queries have identical results).
fn worst(ranks: &[usize], groups: &[u64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..ranks.len()).filter(|&i| ranks[i] > 1).collect();
    idx.sort_by(|&a, &b| ranks[b].cmp(&ranks[a]).then(a.cmp(&b)));
    let mut seen = std::collections::HashSet::new();
    idx.retain(|&i| seen.insert(groups[i]));
    idx.truncate(WORST);
    idx
}

/// A retrieval page with the worst queries of both directions worked out from `items`.
pub(crate) fn write_retrieval_report(
    w: impl Write,
    r: &RetrievalReport,
    meta: &serde_json::Value,
    items: &RetrievalItems,
) -> io::Result<()> {
    let same = |i: usize, j: usize| {
        i == j
            || items.image_groups[i] == items.image_groups[j]
            || items.caption_groups[i] == items.caption_groups[j]
    };
    let t2i: Vec<WorstQuery> = worst(&r.text_to_image.ranks, items.caption_groups)
        .into_iter()
        .map(|i| WorstQuery {
            query: items.caption_texts[i].to_string(),
            rank: r.text_to_image.ranks[i],
            hits: top_hits(
                &items.captions[i],
                items.images,
                |j| same(i, j),
                |j| items.image_paths[j].display().to_string(),
            ),
        })
        .collect();
    let i2t: Vec<WorstQuery> = worst(&r.image_to_text.ranks, items.image_groups)
        .into_iter()
        .map(|i| WorstQuery {
            query: items.image_paths[i].display().to_string(),
            rank: r.image_to_text.ranks[i],
            hits: top_hits(
                &items.images[i],
                items.captions,
                |j| same(i, j),
                |j| items.caption_texts[j].to_string(),
            ),
        })
        .collect();
    write_retrieval(w, r, meta, &t2i, &i2t)
}

/// Zero-shot mistakes with CLIP's probability: softmax over classes of 100 · cosine (CLIP's
/// logit scale), most confident first.
pub(crate) fn zero_shot_mistakes(
    images: &[Vec<f32>],
    labels: &[usize],
    class_embs: &[Vec<f32>],
    paths: &[PathBuf],
) -> Vec<Mistake> {
    let mut out: Vec<Mistake> = images
        .iter()
        .zip(labels)
        .zip(paths)
        .filter_map(|((img, &truth), path)| {
            let logits: Vec<f64> = class_embs
                .iter()
                .map(|c| 100.0 * crate::vectors::dot(img, c) as f64)
                .collect();
            let mut best = 0;
            for k in 1..logits.len() {
                if logits[k] > logits[best] {
                    best = k;
                }
            }
            let z: f64 = logits.iter().map(|l| (l - logits[best]).exp()).sum();
            (best != truth).then(|| Mistake {
                path: path.clone(),
                truth,
                predicted: best,
                confidence: 1.0 / z,
            })
        })
        .collect();
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out
}

/// An `eval ann` page: recall and latency per ef.
pub(crate) fn write_ann(
    mut w: impl Write,
    k: usize,
    rows: &[(usize, f64, f64, f64)],
    meta: &serde_json::Value,
) -> io::Result<()> {
    head(&mut w, "plip eval ann")?;
    meta_table(&mut w, meta)?;
    write!(
        w,
        "<h2>HNSW recall@{k} against exact search</h2><table class=\"meta\"><tr><td>ef</td><td>recall@{k}</td><td>p50 ms</td><td>p99 ms</td></tr>"
    )?;
    for (ef, recall, p50, p99) in rows {
        write!(
            w,
            "<tr><td>{ef}</td><td>{recall:.4}</td><td>{p50:.3}</td><td>{p99:.3}</td></tr>"
        )?;
    }
    writeln!(w, "</table></body></html>")
}
