//! Unit tests.

use super::*;

pub(crate) fn model(dim: usize) -> ModelInfo {
    ModelInfo {
        source: "test".into(),
        fingerprint: "fp".into(),
        dim,
        family: ModelFamily::HfClip,
    }
}

pub(crate) fn entry(path: &str) -> FileEntry {
    FileEntry {
        path: path.into(),
        size: 1,
        mtime_ns: 2,
        crc32: 3,
        region: None,
    }
}

fn unit(seed: u32, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim)
        .map(|i| ((seed * 31 + i as u32 * 17) % 13) as f32 - 6.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

#[test]
fn commit_then_open_finds_rows_and_hides_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
    for i in 0..5 {
        w.add(entry(&format!("img{i}.png")), &unit(i, 8));
    }
    w.commit().unwrap();
    w.remove("img1.png");
    w.add(entry("img2.png"), &unit(40, 8));
    w.commit().unwrap();
    drop(w);
    let index = Index::open(&idx).unwrap();
    // img0, img3, img4 and the replaced img2; img1 is gone.
    assert_eq!(index.len(), 4);
    let hits = index.search(&unit(40, 8), 10, 64, None);
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[0].path, "img2.png");
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    assert!(hits.iter().all(|h| h.path != "img1.png"));
    assert_eq!(hits.iter().filter(|h| h.path == "img2.png").count(), 1);
}

#[test]
fn second_writer_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let _w = IndexWriter::open(&idx, &model(4), false).unwrap();
    let err = IndexWriter::open(&idx, &model(4), false).err().unwrap();
    assert!(matches!(err, StoreError::Locked(..)), "{err}");
}

#[test]
fn different_model_is_refused_unless_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
    w.add(entry("a.png"), &unit(1, 4));
    w.commit().unwrap();
    drop(w);
    let mut other = model(4);
    other.fingerprint = "other".into();
    // Same source, other files: the model changed under its name.
    let err = IndexWriter::open(&idx, &other, false).err().unwrap();
    assert!(matches!(err, StoreError::ModelChanged { .. }), "{err}");
    other.source = "another/model".into();
    let err = IndexWriter::open(&idx, &other, false).err().unwrap();
    assert!(matches!(err, StoreError::ModelMismatch { .. }), "{err}");
    let mut w = IndexWriter::open(&idx, &other, true).unwrap();
    w.commit().unwrap();
    drop(w);
    assert_eq!(Index::open(&idx).unwrap().len(), 0);
}

#[test]
fn segment_vectors_are_used_in_place_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
    w.add(entry("a.png"), &unit(1, 4));
    w.add(entry("b.png"), &unit(2, 4));
    w.commit().unwrap();
    drop(w);
    let index = Index::open(&idx).unwrap();
    let seg = &index.segments[0];
    if cfg!(all(unix, target_endian = "little")) {
        assert!(matches!(seg.vectors, Matrix::Mapped { .. }));
    }
    let mut want = unit(1, 4);
    want.extend(unit(2, 4));
    assert_eq!(&*seg.vectors, &want[..]);
    drop(index);
    // A damaged header is caught on the mapping path too.
    let vec = idx.join(&manifest_segments(&idx)[0]);
    let mut bytes = fs::read(&vec).unwrap();
    bytes[0] ^= 1;
    fs::write(&vec, &bytes).unwrap();
    let err = Index::open(&idx).err().unwrap();
    assert!(err.to_string().contains("bad magic"), "{err}");
}

/// The `.vec` file names of the committed segments.
fn manifest_segments(idx: &Path) -> Vec<String> {
    Manifest::load(idx)
        .unwrap()
        .segments
        .iter()
        .map(|s| s.vec.name.clone())
        .collect()
}

#[test]
fn corrupt_files_give_errors_that_suggest_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
    w.add(entry("a.png"), &unit(1, 4));
    w.commit().unwrap();
    drop(w);
    let vec = fs::read_dir(&idx)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".vec"))
        .unwrap()
        .path();
    let mut bytes = fs::read(&vec).unwrap();
    bytes[14] ^= 0x10;
    fs::write(&vec, &bytes).unwrap();
    let err = Index::open(&idx).err().unwrap();
    assert!(err.to_string().contains("--rebuild"), "{err}");
    fs::write(&vec, &bytes[..10]).unwrap();
    assert!(matches!(
        Index::open(&idx).err().unwrap(),
        StoreError::Corrupt { .. }
    ));
    fs::write(
        idx.join(MANIFEST),
        b"{\"format\":\"plip-index\",\"version\":99}",
    )
    .unwrap();
    assert!(matches!(
        Index::open(&idx).err().unwrap(),
        StoreError::Incompatible { .. }
    ));
    fs::write(idx.join(MANIFEST), b"garbage").unwrap();
    assert!(matches!(
        Index::open(&idx).err().unwrap(),
        StoreError::Corrupt { .. }
    ));
}

#[test]
fn graph_segments_store_links_only_and_search_like_exact() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let dim = 8;
    let mut w = IndexWriter::open(&idx, &model(dim), false).unwrap();
    w.set_hnsw_min_rows(200);
    let n = 250u32;
    for i in 0..n {
        w.add(entry(&format!("{i:04}.png")), &unit(i * 7 + 1, dim));
    }
    w.commit().unwrap();
    w.compact().unwrap();
    w.remove("0003.png");
    w.commit().unwrap();
    drop(w);
    let exact = Index::open(&idx).unwrap();
    let graphs = Index::open_with_graphs(&idx).unwrap();
    let seg = &graphs.segments[0];
    assert!(seg.ann.is_some(), "compaction built a graph");
    assert!(
        seg.vectors.is_empty(),
        "vectors are held once, by the graph"
    );
    let base = seg.record.hnsw_basename.as_deref().unwrap();
    assert!(
        AnnGraph::load(&idx, base).is_err(),
        "the graph file holds no copy of the vectors"
    );
    for q in 0..20 {
        let query = unit(q * 5 + 3, dim);
        let want = exact.search(&query, 10, 64, None);
        assert_eq!(graphs.search(&query, 10, 64, None), want);
        assert!(want.iter().all(|h| h.path != "0003.png"));
    }
}

#[test]
fn compaction_keeps_results_and_drops_dead_files() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
    for i in 0..6 {
        w.add(entry(&format!("{i}.png")), &unit(i, 8));
        w.commit().unwrap();
    }
    w.remove("3.png");
    w.commit().unwrap();
    let before = Index::open(&idx).unwrap().search(&unit(2, 8), 10, 64, None);
    w.compact().unwrap();
    drop(w);
    let index = Index::open(&idx).unwrap();
    assert_eq!(index.stats().segments, 1);
    assert_eq!(index.search(&unit(2, 8), 10, 64, None), before);
    let files = fs::read_dir(&idx).unwrap().count();
    assert_eq!(
        files, 5,
        "MANIFEST, lock, last-run.json, one .vec, one .meta"
    );
}

mod precision;

#[test]
fn nan_in_manifest_is_refused_and_the_previous_commit_stays() {
    // issue 27: serde_json writes NaN as null, and such a manifest no longer reads.
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join(".plip");
    let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
    w.add(entry("a.png"), &unit(1, 4));
    w.commit().unwrap();
    // Built from JSON so that fields added later with serde defaults need no edit here.
    let mut record: SlideRecord = serde_json::from_value(serde_json::json!({
        "vendor": "aperio", "width": 10, "height": 10, "levels": 1,
        "mpp": 0.25, "mpp_source": "aperio-description", "level": 0,
        "tiles_kept": 0, "tiles_total": 0,
        "tiling": {"mpp": 0.5, "tile": 224, "min_tissue": 0.5},
        "complete": true, "size": 1, "mtime_ns": 2, "crc32": 3
    }))
    .unwrap();
    record.tiling.mpp = f64::NAN;
    w.set_slide_record("s.svs", record);
    w.add(entry("b.png"), &unit(2, 4));
    let err = w.commit().unwrap_err();
    assert!(matches!(err, StoreError::RefusedCommit { .. }), "{err:#}");
    assert!(
        err.to_string().contains("previous commit is intact"),
        "{err}"
    );
    drop(w);
    let index = Index::open(&idx).unwrap();
    assert_eq!(
        index.len(),
        1,
        "the previous commit still opens and holds a.png"
    );
}

#[test]
fn model_family_is_optional_in_the_manifest_and_round_trips() {
    // Written before families existed (and still, for hf-clip): no "family" key.
    let old = r#"{"source":"vinid/plip","fingerprint":"fp","dim":512}"#;
    let info: ModelInfo = serde_json::from_str(old).unwrap();
    assert_eq!(info.family, ModelFamily::HfClip);
    assert_eq!(serde_json::to_string(&info).unwrap(), old);
    let oc = ModelInfo {
        family: ModelFamily::OpenClip,
        ..info.clone()
    };
    let text = serde_json::to_string(&oc).unwrap();
    assert!(text.contains(r#""family":"open_clip""#), "{text}");
    assert_eq!(serde_json::from_str::<ModelInfo>(&text).unwrap(), oc);
    // Two families never pass for the same model: their files differ.
    assert!(!info.same_model(&ModelInfo {
        fingerprint: "other".into(),
        ..oc
    }));
    let future = r#"{"source":"x","fingerprint":"fp","dim":512,"family":"conch"}"#;
    assert!(serde_json::from_str::<ModelInfo>(future).is_err());
}
