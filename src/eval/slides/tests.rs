//! The slide retrieval figures against hand-worked examples and against the goldens of
//! an independent Python implementation (`fixtures/slide_metrics.py`).

use super::metrics::*;

#[test]
fn majority_vote_ties_go_to_the_best_ranked_label() {
    // labels 1 and 2 both twice in the top 5; 2 is ranked first
    assert_eq!(majority_vote(&[2, 1, 1, 2, 0], 5), Some(2));
    assert_eq!(majority_vote(&[1, 2, 2, 1, 0], 5), Some(1));
    // a clear majority wins whatever its rank
    assert_eq!(majority_vote(&[0, 1, 1, 1, 0], 5), Some(1));
    // at 3: 0,1,1 -> 1
    assert_eq!(majority_vote(&[0, 1, 1, 0, 0], 3), Some(1));
    // three-way tie at 3: the first
    assert_eq!(majority_vote(&[4, 3, 2], 3), Some(4));
    // fewer retrieved than k: vote over what there is
    assert_eq!(majority_vote(&[3, 3], 5), Some(3));
    assert_eq!(majority_vote(&[], 5), None);
}

#[test]
fn ap_at_5_is_sish_sum_of_precisions_over_five() {
    // correct at ranks 1 and 3: (1/1 + 2/3) / 5
    let ap = ap_at_k(&[7, 0, 7, 1, 2], 7, 5);
    assert!((ap - (1.0 + 2.0 / 3.0) / 5.0).abs() < 1e-12, "{ap}");
    // all five correct: 1
    assert_eq!(ap_at_k(&[1; 5], 1, 5), 1.0);
    // one correct, first: 0.2 (SISH divides by k, not by the correct count)
    assert!((ap_at_k(&[1, 0, 0, 0, 0], 1, 5) - 0.2).abs() < 1e-12);
    // none correct, and ranks past 5 do not count
    assert_eq!(ap_at_k(&[0, 0, 0, 0, 0, 1], 1, 5), 0.0);
}

#[test]
fn a_hand_worked_report() {
    // class a: q0 retrieves a,b,a,b,a (top1 ok, MV3 a ok, MV5 a ok)
    //          q1 retrieves b,a,b,a,b (top1 wrong, MV3 b wrong, MV5 b wrong)
    // class b: q2 retrieves b,b,a,a,a (top1 ok, MV3 b ok, MV5 a wrong)
    let classes = vec!["a".to_string(), "b".to_string()];
    let truth = [0, 0, 1];
    let retrieved = vec![
        vec![0, 1, 0, 1, 0],
        vec![1, 0, 1, 0, 1],
        vec![1, 1, 0, 0, 0],
    ];
    let r = slide_retrieval(&truth, &retrieved, &classes).unwrap();
    assert_eq!(r.queries, 3);
    assert!((r.top1 - 2.0 / 3.0).abs() < 1e-12);
    assert!((r.mv3 - 2.0 / 3.0).abs() < 1e-12);
    assert!((r.mv5 - 1.0 / 3.0).abs() < 1e-12);
    let ap0 = (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 5.0;
    let ap1 = (1.0 / 2.0 + 2.0 / 4.0) / 5.0;
    let ap2 = (1.0 + 1.0) / 5.0;
    assert!((r.map5 - (ap0 + ap1 + ap2) / 3.0).abs() < 1e-12);
    // MV@5 votes: a, b, a. class a: tp 1, predicted 2, support 2 -> F1 0.5;
    // class b: tp 0 -> F1 0. Macro 0.25.
    assert!((r.per_class[0].f1 - 0.5).abs() < 1e-12);
    assert_eq!(r.per_class[1].f1, 0.0);
    assert!((r.macro_f1_mv5 - 0.25).abs() < 1e-12);
    assert!((r.per_class[0].map5 - (ap0 + ap1) / 2.0).abs() < 1e-12);
}

#[test]
fn no_query_is_an_error_not_a_division_by_zero() {
    let e = slide_retrieval(&[], &[], &["a".into()]).unwrap_err();
    assert!(e.to_string().contains("nothing to evaluate"), "{e}");
}

#[test]
fn figures_match_the_python_goldens() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/golden/slide_retrieval.json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for (n, case) in cases.iter().enumerate() {
        let k = case["classes"].as_u64().unwrap() as usize;
        let classes: Vec<String> = (0..k).map(|c| c.to_string()).collect();
        let list = |v: &serde_json::Value| -> Vec<usize> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        };
        let truth = list(&case["truth"]);
        let retrieved: Vec<Vec<usize>> = case["retrieved"]
            .as_array()
            .unwrap()
            .iter()
            .map(list)
            .collect();
        let r = slide_retrieval(&truth, &retrieved, &classes).unwrap();
        let e = &case["expected"];
        let close = |a: f64, b: &serde_json::Value, what: &str| {
            assert!(
                (a - b.as_f64().unwrap()).abs() < 1e-12,
                "case {n} {what}: {a} vs {b}"
            );
        };
        for (what, v) in [
            ("top1", r.top1),
            ("mv3", r.mv3),
            ("mv5", r.mv5),
            ("map5", r.map5),
            ("macro_f1_mv5", r.macro_f1_mv5),
        ] {
            close(v, &e[what], what);
        }
        let pc = e["per_class"].as_array().unwrap();
        assert_eq!(pc.len(), r.per_class.len(), "case {n}");
        for (c, x) in r.per_class.iter().zip(pc) {
            assert_eq!(c.class, x["class"].to_string(), "case {n}");
            assert_eq!(c.queries as u64, x["queries"].as_u64().unwrap());
            for (what, v) in [
                ("top1", c.top1),
                ("mv3", c.mv3),
                ("mv5", c.mv5),
                ("map5", c.map5),
                ("precision", c.precision),
                ("recall", c.recall),
                ("f1", c.f1),
            ] {
                close(v, &x[what], what);
            }
        }
    }
}
