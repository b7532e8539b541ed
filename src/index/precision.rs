//! Which arithmetic (`--precision`) embedded an index's rows, recorded per
//! segment, so that `plip info` can say whether an index holds f32 rows, bf16
//! rows, or both.
//!
//! Guarantees: an index written before precisions were recorded reads as f32
//! (it was); an f32 segment's record is unchanged (the field is absent), so an
//! index written only in f32 stays byte-compatible with earlier plip. Mixing
//! precisions needs no rebuild: bf16 embeddings are within cosine 0.999 of
//! f32 ones, which keeps rankings, so the model guard ignores precision; a
//! compaction that merges segments of different precisions records the new
//! segment as mixed.

use super::*;
use crate::backend::cpu::Precision;

/// The label of a segment compacted from rows of different precisions.
pub(crate) const MIXED: &str = "mixed";

/// The recorded value for rows embedded in `p`: absent for f32.
pub(crate) fn record_label(p: Precision) -> Option<String> {
    (p != Precision::F32).then(|| p.as_str().to_string())
}

/// The precision of a segment's rows, as recorded.
pub(crate) fn segment_label(r: &SegmentRecord) -> &str {
    r.precision.as_deref().unwrap_or(Precision::F32.as_str())
}

/// The recorded value for a segment made of rows with these labels: the one
/// label when they all agree, else [`MIXED`].
pub(crate) fn merged_label<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let labels: BTreeSet<&str> = labels.into_iter().collect();
    match labels.iter().next() {
        None => None,
        Some(&one) if labels.len() == 1 => {
            (one != Precision::F32.as_str()).then(|| one.to_string())
        }
        Some(_) => Some(MIXED.to_string()),
    }
}

/// The precision of an index's live rows: `f32`, `bf16`, `mixed`, or `none`
/// when it holds no rows.
pub(crate) fn index_precision(segments: &[Segment]) -> String {
    let live = segments
        .iter()
        .filter(|s| s.record.rows > s.deleted.len())
        .map(|s| segment_label(&s.record));
    merged_label(live)
        .or_else(|| {
            segments
                .iter()
                .any(|s| s.record.rows > s.deleted.len())
                .then(|| Precision::F32.as_str().to_string())
        })
        .unwrap_or_else(|| "none".to_string())
}
