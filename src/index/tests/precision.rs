//! Unit tests of the recorded precision (`precision.rs`).

use super::*;
use crate::backend::cpu::Precision;

/// Writes `names` as one committed segment in `precision`.
fn write(idx: &Path, precision: Precision, names: &[&str]) {
    let mut w = IndexWriter::open(idx, &model(8), false)
        .unwrap()
        .with_precision(precision);
    for (i, n) in names.iter().enumerate() {
        w.add(entry(n), &unit(i as u32 + 1, 8));
    }
    w.commit().unwrap();
}

fn precision(idx: &Path) -> String {
    Index::open(idx).unwrap().stats().precision
}

#[test]
fn f32_segments_record_nothing_so_older_indexes_read_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    write(&idx, Precision::F32, &["a.png", "b.png"]);
    let manifest = fs::read_to_string(idx.join(MANIFEST)).unwrap();
    assert!(
        !manifest.contains("precision"),
        "an f32 index's manifest is unchanged: {manifest}"
    );
    assert_eq!(precision(&idx), "f32");
}

#[test]
fn bf16_rows_are_recorded_and_mixing_needs_no_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    write(&idx, Precision::Bf16, &["a.png", "b.png"]);
    assert_eq!(precision(&idx), "bf16");
    // Same model, other precision: opens without --rebuild.
    write(&idx, Precision::F32, &["c.png"]);
    assert_eq!(precision(&idx), MIXED);
    let index = Index::open(&idx).unwrap();
    assert_eq!(index.len(), 3);
    assert_eq!(index.search(&unit(1, 8), 3, 0, None).len(), 3);

    // A compaction across precisions records the merged segment as mixed.
    let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
    w.compact().unwrap();
    drop(w);
    let index = Index::open(&idx).unwrap();
    assert_eq!(index.segments.len(), 1);
    assert_eq!(index.segments[0].record.precision.as_deref(), Some(MIXED));
    assert_eq!(index.stats().precision, MIXED);
}

#[test]
fn replacing_every_bf16_row_in_f32_leaves_an_f32_index() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    write(&idx, Precision::Bf16, &["a.png"]);
    write(&idx, Precision::F32, &["a.png", "b.png"]);
    // The bf16 segment is all tombstones: only f32 rows are live.
    assert_eq!(precision(&idx), "f32");
    let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
    w.compact().unwrap();
    drop(w);
    assert_eq!(precision(&idx), "f32");
    assert!(!fs::read_to_string(idx.join(MANIFEST))
        .unwrap()
        .contains("precision"));
}

#[test]
fn compacting_bf16_segments_keeps_bf16_and_an_empty_index_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    write(&idx, Precision::Bf16, &["a.png"]);
    write(&idx, Precision::Bf16, &["b.png"]);
    let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
    w.compact().unwrap();
    drop(w);
    assert_eq!(precision(&idx), "bf16");

    let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
    w.remove("a.png");
    w.remove("b.png");
    w.commit().unwrap();
    drop(w);
    assert_eq!(precision(&idx), "none");
}
