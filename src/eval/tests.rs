//! Unit tests.

use super::metrics::{direction_report, median, RecallAt};
use super::*;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn ids(n: usize) -> Vec<u64> {
    (0..n as u64).collect()
}

#[test]
fn dot_matches_naive() {
    let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
    let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
    assert_eq!(dot(&[], &[]), 0.0);
}

#[test]
fn perfect_retrieval() {
    let e: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            unit(&[
                (i == 0) as u8 as f32,
                (i == 1) as u8 as f32,
                (i == 2) as u8 as f32,
                (i == 3) as u8 as f32,
            ])
        })
        .collect();
    let r = retrieval(&e, &e, &ids(4), &ids(4), &[1, 5]).unwrap();
    for d in [&r.text_to_image, &r.image_to_text] {
        assert_eq!(d.ranks, vec![1; 4]);
        assert_eq!(
            d.recall[0],
            RecallAt {
                k: 1,
                recall: 1.0,
                k_exceeds_candidates: false
            }
        );
        assert_eq!(
            d.recall[1],
            RecallAt {
                k: 5,
                recall: 1.0,
                k_exceeds_candidates: true
            }
        );
        assert_eq!((d.mean_rank, d.median_rank), (1.0, 1.0));
    }
}

#[test]
fn single_pair() {
    let r = retrieval(
        &[vec![1.0f32, 0.0]],
        &[vec![0.0f32, 1.0]],
        &[9],
        &[9],
        &DEFAULT_KS,
    )
    .unwrap();
    assert_eq!(r.n, 1);
    for d in [&r.text_to_image, &r.image_to_text] {
        assert_eq!(d.ranks, vec![1]);
        assert!(d
            .recall
            .iter()
            .all(|x| x.recall == 1.0 && x.k_exceeds_candidates));
        assert_eq!((d.mean_rank, d.median_rank), (1.0, 1.0));
    }
}

#[test]
fn constant_embeddings_score_worst_not_best() {
    let e = vec![unit(&[1.0, 2.0, 3.0]); 5];
    let r = retrieval(&e, &e, &ids(5), &ids(5), &[1, 4, 5, 10]).unwrap();
    for d in [&r.text_to_image, &r.image_to_text] {
        assert_eq!(d.ranks, vec![5; 5]);
        let rec: Vec<(f64, bool)> = d
            .recall
            .iter()
            .map(|x| (x.recall, x.k_exceeds_candidates))
            .collect();
        assert_eq!(
            rec,
            vec![(0.0, false), (0.0, false), (1.0, true), (1.0, true)]
        );
    }
    // ...unless everything is the same item
    let r = retrieval(&e, &e, &[7; 5], &[7; 5], &[1]).unwrap();
    assert_eq!(r.text_to_image.ranks, vec![1; 5]);
}

#[test]
fn duplicates_are_matches() {
    // pairs (A,x) (A,y) (B,y) (C,z): image A twice, caption y twice
    let a = unit(&[1.0, 0.0, 0.0]);
    let b = unit(&[0.0, 1.0, 0.0]);
    let c = unit(&[0.0, 0.0, 1.0]);
    let images = vec![a.clone(), a.clone(), b.clone(), c.clone()];
    // captions chosen so that every caption scores image A highest
    let x = unit(&[1.0, 0.1, 0.2]);
    let y = unit(&[1.0, 0.5, 0.0]);
    let z = unit(&[1.0, 0.0, 0.5]);
    let captions = vec![x, y.clone(), y, z];
    let r = retrieval(
        &images,
        &captions,
        &[1, 1, 2, 3],
        &[10, 11, 11, 12],
        &[1, 2],
    )
    .unwrap();
    // text->image: x -> {A} at positions 0,1 -> rank 1; y (pairs 1, 2) -> images {A, B}
    // -> rank 1; z -> {C}: A (twice) beats it -> rank 3
    assert_eq!(r.text_to_image.ranks, vec![1, 1, 1, 3]);
    // image->text: A -> captions {x, y} = pairs 0, 1, 2; B -> {y}; C -> {z}
    // B . y = 0.447 vs x 0.098, z 0 -> rank 1; C . z = 0.447 vs x 0.195, y 0 -> rank 1
    assert_eq!(r.image_to_text.ranks, vec![1, 1, 1, 1]);
}

#[test]
fn ties_with_non_matches_count_against() {
    // two different captions with the same embedding: each image ties the other's caption
    let images = vec![unit(&[1.0, 0.2]), unit(&[1.0, -0.2])];
    let captions = vec![unit(&[1.0, 0.0]), unit(&[1.0, 0.0])];
    let r = retrieval(&images, &captions, &ids(2), &ids(2), &[1]).unwrap();
    assert_eq!(r.image_to_text.ranks, vec![2, 2]);
    // and each caption scores both (different) images the same
    assert_eq!(r.text_to_image.ranks, vec![2, 2]);
}

#[test]
fn median_is_numpy_median() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    let d = direction_report(vec![1, 2, 3, 10], &[2]);
    assert_eq!(
        (d.mean_rank, d.median_rank, d.recall[0].recall),
        (4.0, 2.5, 0.5)
    );
}

#[test]
fn many_queries_cross_blocks() {
    // more than one query block; a rotation so that query i's best non-match is known
    let n = 150;
    let e: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let t = i as f32 / n as f32 * std::f32::consts::PI; // half circle: distinct
            vec![t.cos(), t.sin()]
        })
        .collect();
    let r = retrieval(&e, &e, &ids(n), &ids(n), &DEFAULT_KS).unwrap();
    assert_eq!(r.text_to_image.ranks, vec![1; n]);
    assert_eq!(r.image_to_text.ranks, vec![1; n]);
    assert!(!r.text_to_image.recall[3].k_exceeds_candidates);
}

#[test]
fn retrieval_rejects_bad_input() {
    let e = vec![vec![1.0f32, 0.0]];
    let none: Vec<Vec<f32>> = vec![];
    assert_eq!(
        retrieval(&none, &none, &[], &[], &[1]),
        Err(EvalError::Empty("images"))
    );
    assert!(matches!(
        retrieval(&e, &none, &[0], &[0], &[1]),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        retrieval(&e, &e, &[0], &[], &[1]),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert_eq!(retrieval(&e, &e, &[0], &[0], &[0]), Err(EvalError::ZeroK));
    let bad = vec![vec![1.0f32, 0.0, 0.0]];
    assert!(matches!(
        retrieval(&e, &bad, &[0], &[0], &[1]),
        Err(EvalError::Dimension { .. })
    ));
    let nan = vec![vec![f32::NAN, 0.0]];
    assert!(matches!(
        retrieval(&e, &nan, &[0], &[0], &[1]),
        Err(EvalError::NonFinite { .. })
    ));
}

#[test]
fn ensemble_is_renormalised_mean() {
    let e = ensemble(&[vec![2.0f32, 0.0], vec![0.0, 3.0]]).unwrap();
    let s = std::f32::consts::FRAC_1_SQRT_2;
    assert!((e[0] - s).abs() < 1e-7 && (e[1] - s).abs() < 1e-7);
    assert_eq!(ensemble(&[vec![0.6f32, 0.8]]).unwrap(), vec![0.6, 0.8]);
    assert!(matches!(
        ensemble(&[vec![1.0f32, 0.0], vec![-1.0, 0.0]]),
        Err(EvalError::ZeroNorm { .. })
    ));
    assert!(matches!(
        ensemble(&[vec![0.0f32, 0.0]]),
        Err(EvalError::ZeroNorm { .. })
    ));
    assert_eq!(
        ensemble::<Vec<f32>>(&[]),
        Err(EvalError::Empty("template embeddings"))
    );
}

#[test]
fn prediction_ties_go_to_lowest_class() {
    let classes = vec![vec![1.0f32, 0.0], vec![0.0, 1.0], vec![0.0, 1.0]];
    let images = vec![vec![0.0f32, 1.0], unit(&[1.0, 1.0]), vec![1.0, 0.0]];
    assert_eq!(predict(&images, &classes).unwrap(), vec![1, 0, 0]);
}

#[test]
fn class_without_items_and_never_predicted() {
    // classes: a, b (no items, predicted once), c (items, never predicted), d (nothing)
    let r =
        classification_report(&[0, 0, 2, 2], &[0, 1, 0, 0], &names(&["a", "b", "c", "d"])).unwrap();
    assert_eq!(
        r.confusion,
        vec![vec![1, 1, 0, 0], vec![0; 4], vec![2, 0, 0, 0], vec![0; 4]]
    );
    assert_eq!(r.accuracy, 0.25);
    let a = &r.per_class[0];
    assert_eq!(
        (a.precision, a.recall, a.f1, a.support),
        (1.0 / 3.0, 0.5, 0.4, 2)
    );
    for k in 1..4 {
        let m = &r.per_class[k];
        assert_eq!((m.precision, m.recall, m.f1), (0.0, 0.0, 0.0), "{}", m.name);
    }
    assert_eq!(r.per_class[1].support, 0);
    assert_eq!(r.macro_f1, 0.1);
    assert_eq!(r.weighted_f1, 0.2);
    assert_eq!(r.weighted_recall, r.accuracy);
    let mut out = Vec::new();
    print_classification_table(&mut out, &r).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("no items (recall and F1 counted as 0): b, d"),
        "{out}"
    );
    assert!(
        out.contains("never predicted (precision counted as 0): c, d"),
        "{out}"
    );
}

#[test]
fn zero_shot_end_to_end() {
    let classes = vec![
        ensemble(&[vec![1.0f32, 0.0, 0.0], unit(&[1.0, 0.1, 0.0])]).unwrap(),
        ensemble(&[vec![0.0f32, 1.0, 0.0]]).unwrap(),
        ensemble(&[vec![0.0f32, 0.0, 1.0]]).unwrap(),
    ];
    let images = vec![
        unit(&[0.9, 0.1, 0.0]),
        unit(&[0.1, 0.9, 0.0]),
        unit(&[0.8, 0.0, 0.3]),
    ];
    let r = zero_shot(&images, &[0, 1, 2], &classes, &names(&["x", "y", "z"])).unwrap();
    assert_eq!(
        r.confusion,
        vec![vec![1, 0, 0], vec![0, 1, 0], vec![1, 0, 0]]
    );
    assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-15);
    assert!(matches!(
        zero_shot(&images, &[0, 1, 3], &classes, &names(&["x", "y", "z"])),
        Err(EvalError::ClassOutOfRange {
            what: "label",
            index: 2,
            class: 3,
            classes: 3
        })
    ));
    assert!(matches!(
        zero_shot(&images, &[0, 1], &classes, &names(&["x", "y", "z"])),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        zero_shot(&images, &[0, 1, 2], &classes, &names(&["x", "y"])),
        Err(EvalError::LengthMismatch { .. })
    ));
}

#[test]
fn ann_recall_cases() {
    let exact = vec![vec![1, 2, 3], vec![4, 5]];
    let approx = vec![vec![3, 2, 9, 1], vec![5, 5]];
    // k = 3: 2/3 and 1/2 (5 counted once)
    assert!((ann_recall(&exact, &approx, 3).unwrap() - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-15);
    // k = 1: {1} vs {3} -> 0; {4} vs {5} -> 0
    assert_eq!(ann_recall(&exact, &approx, 1).unwrap(), 0.0);
    assert_eq!(ann_recall(&exact, &exact, 10).unwrap(), 1.0);
    assert_eq!(
        ann_recall(&[vec![], vec![7u64]], &[vec![1], vec![7]], 5).unwrap(),
        1.0
    );
    assert!(ann_recall::<u64>(&[vec![]], &[vec![]], 5).is_err());
    assert_eq!(ann_recall(&exact, &approx, 0), Err(EvalError::ZeroK));
}

#[test]
fn percentile_is_numpy_linear() {
    let v = [15.0, 20.0, 35.0, 40.0, 50.0];
    assert_eq!(percentile(&v, 40.0), Some(29.0)); // h = 1.6: 20 + 0.6 * 15
    assert_eq!(percentile(&v, 0.0), Some(15.0));
    assert_eq!(percentile(&v, 100.0), Some(50.0));
    assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), Some(2.5));
    assert_eq!(percentile(&[2.5], 99.0), Some(2.5));
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&v, 100.5), None);
    let s = latency_summary(&[4.0, 1.0, 2.0, 3.0]).unwrap();
    assert_eq!((s.n, s.mean, s.p50, s.max), (4, 2.5, 2.5, 4.0));
    assert!((s.p99 - 3.97).abs() < 1e-12);
    assert!(latency_summary(&[]).is_none());
}

#[test]
fn retrieval_table_flags_large_k() {
    let e = vec![unit(&[1.0, 0.0]), unit(&[0.0, 1.0])];
    let r = retrieval(&e, &e, &ids(2), &ids(2), &[1, 5]).unwrap();
    let mut out = Vec::new();
    print_retrieval_table(&mut out, &r).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("recall@5 (only 2 candidates)"), "{out}");
    assert!(!out.contains("recall@1 (only"), "{out}");
    assert!(out.contains("median rank"), "{out}");
    let one = retrieval(&e[..1], &e[..1], &[0], &[0], &[1]).unwrap();
    let mut out = Vec::new();
    print_retrieval_table(&mut out, &one).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("recall@1 (only 1 candidate) "));
}

#[test]
fn reports_serialize() {
    let e = vec![unit(&[1.0, 0.0]), unit(&[0.0, 1.0])];
    let r = retrieval(&e, &e, &ids(2), &ids(2), &[1]).unwrap();
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(
        j["text_to_image"]["recall"][0]["k_exceeds_candidates"],
        false
    );
    let c = classification_report(&[0], &[0], &names(&["a"])).unwrap();
    assert_eq!(
        serde_json::to_value(&c).unwrap()["per_class"][0]["support"],
        1
    );
}

#[test]
fn ann_recall_counts_ties_with_the_true_neighbours_as_hits() {
    // Five identical vectors: exact search returns ids 0..3, the graph 2..5.
    let exact = vec![vec![(0, 1.0f32), (1, 1.0), (2, 1.0)]];
    let approx = vec![vec![(2, 1.0f32), (3, 1.0), (4, 1.0)]];
    assert_eq!(
        ann_recall(&[vec![0, 1, 2]], &[vec![2, 3, 4]], 3).unwrap(),
        1.0 / 3.0
    );
    assert_eq!(ann_recall_with_ties(&exact, &approx, 3).unwrap(), 1.0);
    // A worse score is still a miss, and an id counts once.
    let approx = vec![vec![(2, 1.0f32), (2, 1.0), (9, 0.5)]];
    assert_eq!(ann_recall_with_ties(&exact, &approx, 3).unwrap(), 1.0 / 3.0);
}
