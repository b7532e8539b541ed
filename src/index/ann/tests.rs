//! Unit tests.

use std::fs;

use super::*;
use std::collections::HashSet;

/// splitmix64: tiny seeded PRNG for reproducible test data.
pub(super) struct Rng(u64);
impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Standard normal (Box-Muller).
    pub(super) fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

#[test]
fn code_dot_is_the_same_on_every_instruction_set() {
    let mut rng = Rng::new(12);
    for len in [0, 1, 15, 31, 32, 33, 100, 512, 515] {
        let q: Vec<f32> = (0..len).map(|_| rng.gauss()).collect();
        let c: Vec<i8> = (0..len).map(|_| rng.below(256) as u8 as i8).collect();
        let (qc, cc) = dot_i8_portable(&q, &c);
        let want_qc: f64 = q.iter().zip(&c).map(|(x, &y)| *x as f64 * y as f64).sum();
        let want_cc: f64 = c.iter().map(|&y| y as f64 * y as f64).sum();
        assert!(
            (qc as f64 - want_qc).abs() <= 1e-3 * (1.0 + want_qc.abs()),
            "len {len}"
        );
        assert_eq!(cc as f64, want_cc, "len {len}: integers, exact in f32");
        let (aq, ac) = dot_i8(&q, &c);
        assert!((aq - qc).abs() <= 1e-3 * (1.0 + qc.abs()), "len {len}");
        assert_eq!(ac, cc, "len {len}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn prefetch_levels_are_the_intrinsic_hints() {
    assert_eq!(TO_L1, std::arch::x86_64::_MM_HINT_T0);
    assert_eq!(TO_L2, std::arch::x86_64::_MM_HINT_T1);
}

#[test]
fn encode_rounds_to_the_nearest_step() {
    let mut rng = Rng::new(13);
    for len in [1, 7, 16, 33, 512] {
        let row: Vec<f32> = (0..len).map(|_| rng.gauss() * 0.05).collect();
        let mut code = vec![0u8; len];
        encode(&row, &mut code);
        let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, &c) in row.iter().zip(&code) {
            let want = (x * (127.0 / max)).round_ties_even();
            assert_eq!(c as i8 as f32, want, "len {len}, x {x}");
        }
        assert!(code.iter().any(|&c| c as i8 == 127 || c as i8 == -127));
    }
    let mut code = [1u8; 20];
    encode(&[0.0; 20], &mut code);
    assert_eq!(code, [0; 20]);
    encode(&[-1.0, 0.5, 0.25, -0.0], &mut code[..4]);
    assert_eq!(
        code[..4].iter().map(|&c| c as i8).collect::<Vec<_>>(),
        [-127, 64, 32, 0]
    );
}

#[test]
fn all_finite_finds_every_nan_and_infinity() {
    let mut v = vec![0.5f32; 10_000];
    assert!(all_finite(&v) && all_finite(&[]));
    for (i, bad) in [
        (0, f32::NAN),
        (4095, f32::INFINITY),
        (9999, f32::NEG_INFINITY),
    ] {
        let keep = v[i];
        v[i] = bad;
        assert!(!all_finite(&v), "{i}");
        v[i] = keep;
    }
    assert!(all_finite(&[
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -0.0,
        1e-45
    ]));
}

#[test]
fn codes_approximate_the_cosine() {
    let dim = 512;
    let data = clustered(300, dim, 5, 0.8, 21);
    let codes = Codes::new(&data, dim).unwrap();
    let mut worst = 0f32;
    for (i, q) in data.chunks_exact(dim).enumerate().take(20) {
        for (j, v) in data.chunks_exact(dim).enumerate() {
            let exact = UnitCosine.eval(q, v);
            worst = worst.max((codes.distance(q, j as u32) - exact).abs());
        }
        // a row's own code is (nearly) its nearest
        assert!(
            codes.distance(q, i as u32) < 2e-3,
            "{}",
            codes.distance(q, i as u32)
        );
    }
    assert!(worst < 5e-3, "worst code distance error {worst}");
    // zero rows (not unit, but must not give NaN)
    let zero = Codes::new(&[0.0; 8], 8).unwrap();
    assert_eq!(zero.distance(&[1.0; 8], 0), 1.0);
}

#[test]
fn coded_walk_is_on_by_default_and_survives_save_and_clone() {
    let data = clustered(50, 16, 3, 0.5, 2);
    let mut g = AnnGraph::build(&data, 16, &small_params()).unwrap();
    assert!(g.coded_walk());
    let dir = tempfile::tempdir().unwrap();
    g.save(dir.path(), "g").unwrap();
    let loaded = AnnGraph::load(dir.path(), "g").unwrap();
    assert!(loaded.coded_walk());
    assert_eq!(loaded.codes, g.codes);
    let copy = g.clone();
    assert!(copy.coded_walk() && copy == g);
    g.set_coded_walk(false);
    assert!(!g.coded_walk() && copy != g);
    g.set_coded_walk(true);
    assert!(g.coded_walk() && copy == g);
    let empty = AnnGraph::build(&[], 16, &small_params()).unwrap();
    assert!(empty.coded_walk());
    assert!(empty.search(&data[..16], 3, 10, None).is_empty());
    empty.save(dir.path(), "empty").unwrap();
    let loaded = AnnGraph::load(dir.path(), "empty").unwrap();
    assert!(loaded.coded_walk() && loaded.codes == empty.codes);
}

pub(super) fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` unit vectors around `clusters` random unit centres; the noise
/// vector has expected norm `spread` before normalization.
pub(super) fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut centres = vec![0f32; clusters * dim];
    for c in centres.chunks_exact_mut(dim) {
        c.iter_mut().for_each(|x| *x = rng.gauss());
        normalize(c);
    }
    let sigma = spread / (dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    for row in out.chunks_exact_mut(dim) {
        let c = rng.below(clusters);
        let centre = &centres[c * dim..(c + 1) * dim];
        for (x, m) in row.iter_mut().zip(centre) {
            *x = m + sigma * rng.gauss();
        }
        normalize(row);
    }
    out
}

pub(super) fn recall_at(
    g: &AnnGraph,
    data: &[f32],
    queries: &[f32],
    dim: usize,
    k: usize,
    ef: usize,
) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for q in queries.chunks_exact(dim) {
        let truth: HashSet<usize> = exact_search(data, dim, q, k, None)
            .iter()
            .map(|h| h.id)
            .collect();
        let got = g.search(q, k, ef, None);
        found += got.iter().filter(|h| truth.contains(&h.id)).count();
        total += truth.len();
    }
    found as f64 / total as f64
}

fn small_params() -> AnnParams {
    // keep dev-profile tests fast (our crate is built without optimization)
    AnnParams {
        max_connections: 12,
        ef_construction: 40,
        parallel_insert: false,
    }
}

fn assert_sorted(hits: &[Hit]) {
    for w in hits.windows(2) {
        assert_eq!(rank_cmp(&w[0], &w[1]), std::cmp::Ordering::Less, "{hits:?}");
    }
}

#[test]
fn is_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<AnnGraph>();
    check::<AnnError>();
}

#[test]
fn distance_never_negative_or_nan() {
    let mut v = vec![0.0f32; 512];
    let mut rng = Rng::new(1);
    v.iter_mut().for_each(|x| *x = rng.gauss());
    normalize(&mut v);
    let d = UnitCosine.eval(&v, &v);
    assert!((0.0..1e-5).contains(&d));
    let mut w = v.clone();
    w.iter_mut().for_each(|x| *x *= 1.001); // dot > 1
    assert_eq!(UnitCosine.eval(&v, &w), 0.0);
    let nan = vec![f32::NAN; 512];
    assert_eq!(UnitCosine.eval(&v, &nan), 2.0);
    // dot matches a naive f64 sum
    let naive: f64 = v.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
    assert!((dot(&v, &w) as f64 - naive).abs() < 1e-5);
    assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
}

#[test]
fn exact_search_matches_full_sort() {
    for &(n, dim) in &[(0usize, 3usize), (1, 3), (37, 5), (40_000, 4)] {
        let mut data = clustered(n, dim, 7, 0.6, 42 + n as u64);
        // ties: duplicate a few rows
        if n > 10 {
            let r: Vec<f32> = data[..dim].to_vec();
            data[5 * dim..6 * dim].copy_from_slice(&r);
            data[9 * dim..10 * dim].copy_from_slice(&r);
        }
        let q: Vec<f32> = if n > 0 {
            data[..dim].to_vec()
        } else {
            vec![0.5; dim]
        };
        let allow_odd = |id: usize| id % 2 == 1;
        for allow in [None, Some(&allow_odd as &(dyn Fn(usize) -> bool + Sync))] {
            let mut all: Vec<Hit> = data
                .chunks_exact(dim)
                .enumerate()
                .filter(|(i, _)| allow.is_none_or(|f| f(*i)))
                .map(|(id, r)| Hit {
                    id,
                    score: 1.0 - (1.0 - dot(r, &q)).clamp(0.0, 2.0),
                })
                .collect();
            sort_hits(&mut all);
            for k in [0, 1, 3, 10, 100, n + 5] {
                let got = exact_search(&data, dim, &q, k, allow);
                assert_eq!(got, all[..k.min(all.len())].to_vec(), "n={n} k={k}");
            }
        }
    }
    assert!(exact_search(&[1.0, 0.0], 2, &[1.0], 1, None).is_empty());
    assert!(exact_search(&[1.0, 0.0], 0, &[], 1, None).is_empty());
}

#[test]
fn exact_search_many_equals_one_search_per_query() {
    for &(n, dim) in &[(37usize, 5usize), (40_000, 4)] {
        let data = clustered(n, dim, 7, 0.6, 9 + n as u64);
        let queries: Vec<Vec<f32>> = (0..5)
            .map(|i| data[i * 3 * dim..(i * 3 + 1) * dim].to_vec())
            .chain([vec![f32::NAN; dim], vec![1.0; dim + 1]])
            .collect();
        let odd = |id: usize| id % 2 == 1;
        let low = |id: usize| id < n / 3;
        let filters: Vec<RowFilter<'_>> = (0..queries.len())
            .map(|i| match i % 3 {
                0 => None,
                1 => Some(&odd as &(dyn Fn(usize) -> bool + Sync)),
                _ => Some(&low as &(dyn Fn(usize) -> bool + Sync)),
            })
            .collect();
        let qs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        for k in [1, 10, n + 5] {
            let many = exact_search_many(&data, dim, &qs, k, &filters);
            assert_eq!(many.len(), qs.len());
            for (i, got) in many.iter().enumerate() {
                assert_eq!(
                    got,
                    &exact_search(&data, dim, qs[i], k, filters[i]),
                    "n={n} k={k} q={i}"
                );
            }
            assert!(
                many[5].is_empty() && many[6].is_empty(),
                "bad queries give nothing"
            );
            assert_eq!(many[0].len(), k.min(n));
        }
    }
}

/// The oracle test: HNSW top-10 vs exact top-10 on clustered data, plus
/// findability of every point (one build, to keep dev-profile tests fast).
#[test]
fn recall_and_findability_at_default_ef() {
    let (n, nq, dim) = (2000, 100, 64);
    let all = clustered(n + nq, dim, 20, 1.0, 7);
    let (data, queries) = all.split_at(n * dim);
    let t = std::time::Instant::now();
    let g = AnnGraph::build(data, dim, &small_params()).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    assert_eq!(g.len(), n);
    let stats = g.build_stats().unwrap();
    assert_eq!(stats.unfindable_after_repair, 0, "{stats:?}");
    let mut g = g;
    for coded in [false, true] {
        g.set_coded_walk(coded);
        let r = recall_at(&g, data, queries, dim, 10, DEFAULT_EF_SEARCH);
        let r10 = recall_at(&g, data, queries, dim, 10, 10);
        eprintln!(
            "n={n} dim={dim} coded={coded}: build {build_s:.2}s, recall@10 {r:.4} at ef={DEFAULT_EF_SEARCH}, {r10:.4} at ef=10"
        );
        assert!(r >= 0.95, "recall@10 = {r}, coded walk {coded}");
        for q in queries.chunks_exact(dim).take(10) {
            let hits = g.search(q, 10, DEFAULT_EF_SEARCH, None);
            assert_eq!(hits.len(), 10);
            assert_sorted(&hits);
            // scores are the exact ones, whatever the walk read
            let exact = exact_search(data, dim, q, n, None);
            for h in &hits {
                let e = exact.iter().find(|e| e.id == h.id).unwrap();
                assert_eq!(h.score.to_bits(), e.score.to_bits());
            }
        }
        let missing: Vec<usize> = (0..n)
            .into_par_iter()
            .filter(|&i| {
                let q = &data[i * dim..(i + 1) * dim];
                !g.search(q, 10, REPAIR_EF, None).iter().any(|h| h.id == i)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "unfindable (coded walk {coded}): {missing:?}"
        );
    }
}

#[test]
fn duplicates_do_not_panic_and_are_all_found() {
    let dim = 32;
    let others = clustered(300, dim, 5, 0.8, 3);
    let dup = others[..dim].to_vec();
    // 50 identical copies interleaved with other vectors
    let mut data = Vec::new();
    let mut dup_ids = Vec::new();
    for (i, row) in others.chunks_exact(dim).enumerate() {
        if i % 6 == 0 && dup_ids.len() < 50 {
            dup_ids.push(data.len() / dim);
            data.extend_from_slice(&dup);
        }
        data.extend_from_slice(row);
    }
    while dup_ids.len() < 50 {
        dup_ids.push(data.len() / dim);
        data.extend_from_slice(&dup);
    }
    let mut g = AnnGraph::build(&data, dim, &small_params()).unwrap();
    // others[0] equals dup too, so 51 exact copies in total
    let copies: HashSet<usize> = data
        .chunks_exact(dim)
        .enumerate()
        .filter(|(_, r)| *r == &dup[..])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(copies.len(), 51);
    for coded in [false, true] {
        g.set_coded_walk(coded);
        for k in [51, 60, 100] {
            for ef in [1, DEFAULT_EF_SEARCH] {
                let hits = g.search(&dup, k, ef, None);
                assert_eq!(hits.len(), k);
                let got: HashSet<usize> = hits.iter().map(|h| h.id).collect();
                assert!(copies.is_subset(&got), "k={k} ef={ef}");
                assert_sorted(&hits);
            }
        }
        // k = 50 of 51 tied copies: ties are broken by id
        let hits = g.search(&dup, 50, DEFAULT_EF_SEARCH, None);
        let mut expect: Vec<usize> = copies.iter().copied().collect();
        expect.sort();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), expect[..50]);
        assert!(hits
            .iter()
            .all(|h| h.score == hits[0].score && h.score > 0.9999));
        // every copy searched by its own vector is found with k >= #copies
        for &i in &dup_ids {
            let hits = g.search(&data[i * dim..(i + 1) * dim], 51, 64, None);
            assert!(hits.iter().any(|h| h.id == i));
        }
    }
}

#[test]
fn filter_hides_ids_and_still_returns_k() {
    let (n, dim) = (1000, 32);
    let data = clustered(n, dim, 10, 0.8, 5);
    let mut g = AnnGraph::build(&data, dim, &small_params()).unwrap();
    for coded in [false, true] {
        g.set_coded_walk(coded);
        let q = &data[..dim];
        let even = |id: usize| id.is_multiple_of(2);
        let only5 = |id: usize| id % 200 == 3; // ids 3, 203, ..., 803
        let none = |_: usize| false;
        let near = |id: usize| id != 0; // hide the query itself
        for ef in [1, 10, DEFAULT_EF_SEARCH, 500] {
            let hits = g.search(q, 10, ef, Some(&even));
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.id % 2 == 0));
            assert_sorted(&hits);

            let hits = g.search(q, 10, ef, Some(&only5));
            let ids: Vec<usize> = hits.iter().map(|h| h.id).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, vec![3, 203, 403, 603, 803]);
            assert_eq!(hits, exact_search(&data, dim, q, 10, Some(&only5)));

            assert!(g.search(q, 10, ef, Some(&none)).is_empty());

            let hits = g.search(q, 10, ef, Some(&near));
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.id != 0));
        }
        // heavy filtering (99% hidden) still gives k exact-quality results
        let sparse = |id: usize| id % 100 == 7;
        let hits = g.search(q, 10, DEFAULT_EF_SEARCH, Some(&sparse));
        assert_eq!(hits, exact_search(&data, dim, q, 10, Some(&sparse)));
    }
}

#[test]
fn edge_cases_never_panic() {
    let dim = 8;
    // empty
    let g = AnnGraph::build(&[], dim, &AnnParams::default()).unwrap();
    assert!(g.is_empty());
    assert!(g.search(&[0.0; 8], 10, 10, None).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let files = g.save(dir.path(), "empty").unwrap();
    assert_eq!(files, vec![dir.path().join("empty.ann")]);
    let g2 = AnnGraph::load(dir.path(), "empty").unwrap();
    assert!(g2.is_empty() && g2.dim() == dim);
    assert!(g2.search(&[0.0; 8], 10, 10, None).is_empty());

    // one point
    let mut v = vec![0f32; dim];
    v[3] = 1.0;
    let mut g = AnnGraph::build(&v, dim, &AnnParams::default()).unwrap();
    for coded in [false, true] {
        g.set_coded_walk(coded);
        for (k, ef) in [(1, 1), (10, 1), (10, 100), (0, 10)] {
            let hits = g.search(&v, k, ef, None);
            assert_eq!(hits.len(), k.min(1));
            if k > 0 {
                assert_eq!(hits[0], Hit { id: 0, score: 1.0 });
            }
        }
        assert!(g.search(&v, 10, 10, Some(&|_| false)).is_empty());
    }
    g.save(dir.path(), "one").unwrap();
    let g2 = AnnGraph::load(dir.path(), "one").unwrap();
    assert_eq!(g2.search(&v, 5, 5, None), vec![Hit { id: 0, score: 1.0 }]);

    // k > n, ef < k, k = 0, wrong query dimension, NaN query
    let data = clustered(20, dim, 3, 0.5, 9);
    let mut g = AnnGraph::build(&data, dim, &AnnParams::default()).unwrap();
    for coded in [false, true] {
        g.set_coded_walk(coded);
        let q = &data[..dim];
        let hits = g.search(q, 100, 1, None);
        assert_eq!(hits.len(), 20);
        assert_eq!(hits.iter().map(|h| h.id).collect::<HashSet<_>>().len(), 20);
        assert_eq!(hits, exact_search(&data, dim, q, 100, None));
        assert_eq!(g.search(q, 10, 0, None).len(), 10);
        assert!(g.search(q, 0, 10, None).is_empty());
        assert!(g.search(&q[1..], 5, 10, None).is_empty());
        let nan = vec![f32::NAN; dim];
        assert!(g.search(&nan, 5, 10, None).is_empty());
        assert!(exact_search(&data, dim, &nan, 5, None).is_empty());
    }
}

#[test]
fn invalid_input_is_an_error() {
    let p = AnnParams::default();
    assert!(AnnGraph::build(&[1.0], 0, &p).is_err());
    assert!(AnnGraph::build(&[1.0, 0.0, 0.0], 2, &p).is_err());
    assert!(AnnGraph::build(&[f32::NAN, 0.0], 2, &p).is_err());
    assert!(AnnGraph::build(&[0.0, 0.0], 2, &p).is_err());
    assert!(AnnGraph::build(&[3.0, 4.0], 2, &p).is_err());
    assert!(AnnGraph::build(&[0.6, 0.8], 2, &p).is_ok());
    // absurd parameters are clamped, not fatal (hnsw_rs exits above 256)
    let wild = AnnParams {
        max_connections: 1000,
        ef_construction: 0,
        parallel_insert: true,
    };
    let g = AnnGraph::build(&[0.6, 0.8, 0.8, 0.6], 2, &wild).unwrap();
    assert_eq!(g.params().max_connections, 255);
    let dir = tempfile::tempdir().unwrap();
    g.save(dir.path(), "wild").unwrap();
    assert!(
        AnnGraph::load(dir.path(), "wild")
            .unwrap()
            .params()
            .parallel_insert
    );
    for bad in ["", ".hidden", "a/b", "a\\b"] {
        assert!(matches!(
            g.save(dir.path(), bad),
            Err(AnnError::InvalidPath(_))
        ));
        assert!(AnnGraph::load(dir.path(), bad).is_err());
    }
    assert!(matches!(
        g.save(&dir.path().join("nope"), "x"),
        Err(AnnError::InvalidPath(_))
    ));
    assert!(matches!(
        AnnGraph::load(dir.path(), "nope"),
        Err(AnnError::Missing(_))
    ));
}

#[test]
fn links_only_files_load_with_their_vectors_and_only_with_them() {
    let (n, dim) = (300, 16);
    let data = clustered(n, dim, 4, 0.8, 5);
    let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let links = g.save_links(dir.path(), "links").unwrap();
    let full = g.save(dir.path(), "full").unwrap();
    let size = |p: &PathBuf| fs::metadata(p).unwrap().len();
    assert_eq!(
        size(&full[0]) - size(&links[0]),
        (n * dim * 4 - 4) as u64,
        "the vectors are replaced by their CRC32"
    );
    let mut want = g.clone();
    want.stats = None;
    for base in ["links", "full"] {
        let l = AnnGraph::load_with_vectors(dir.path(), base, data.clone()).unwrap();
        assert!(l == want, "{base}");
        // shared: the graph reads the owner's memory, not a copy
        let shared: Arc<Vec<f32>> = Arc::new(data.clone());
        let l = AnnGraph::load_with_shared_vectors(dir.path(), base, shared.clone()).unwrap();
        assert!(l == want, "{base}");
        assert_eq!(l.vectors().as_ptr(), shared.as_ptr());
        assert_eq!(l.search(&data[..dim], 1, 16, None)[0].id, 0);
        let mut other = data.clone();
        other[7] = -other[7];
        assert!(matches!(
            AnnGraph::load_with_vectors(dir.path(), base, other),
            Err(AnnError::Corrupt { .. })
        ));
        assert!(matches!(
            AnnGraph::load_with_vectors(dir.path(), base, data[dim..].to_vec()),
            Err(AnnError::Corrupt { .. })
        ));
        let mut bad = data.clone();
        bad[3] = f32::INFINITY;
        assert!(matches!(
            AnnGraph::load_with_shared_vectors(dir.path(), base, Arc::new(bad)),
            Err(AnnError::Corrupt { .. })
        ));
    }
    assert!(matches!(
        AnnGraph::load(dir.path(), "links"),
        Err(AnnError::Corrupt { .. })
    ));
}

#[test]
fn save_load_roundtrip_is_identical() {
    let (n, dim) = (600, 32);
    let data = clustered(n + 30, dim, 8, 0.8, 21);
    let (data, queries) = data.split_at(n * dim);
    let g = AnnGraph::build(data, dim, &small_params()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = g.save(dir.path(), "idx").unwrap();
    assert_eq!(files, vec![dir.path().join("idx.ann")]);
    // no temporary leftovers
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let l = AnnGraph::load(dir.path(), "idx").unwrap();
    assert_eq!(l.build_stats(), None);
    let mut g_cmp = g.clone();
    g_cmp.stats = None;
    assert!(l == g_cmp, "loaded graph differs");
    let odd = |id: usize| id % 2 == 1;
    for q in queries.chunks_exact(dim) {
        for ef in [10, DEFAULT_EF_SEARCH] {
            assert_eq!(g.search(q, 10, ef, None), l.search(q, 10, ef, None));
            assert_eq!(
                g.search(q, 10, ef, Some(&odd)),
                l.search(q, 10, ef, Some(&odd))
            );
        }
    }
    // saving again replaces the file in place, same name
    assert_eq!(l.save(dir.path(), "idx").unwrap(), files);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    let l2 = AnnGraph::load(dir.path(), "idx").unwrap();
    assert!(l2 == l);
    // the graph is usable from another thread and outlives the files
    drop(dir);
    let h = std::thread::spawn(move || l2.search(&[0.0; 32], 3, 10, None).len());
    assert_eq!(h.join().unwrap(), 3);
}

/// Recomputes the trailing CRC, so that the structural checks (not the
/// checksum) have to catch the damage.
fn reseal(path: &Path) {
    let mut b = fs::read(path).unwrap();
    if b.len() < 4 {
        return;
    }
    let body = b.len() - 4;
    let crc = crc32fast::hash(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, b).unwrap();
}

#[test]
fn corrupt_files_are_errors_not_panics() {
    let (n, dim) = (300, 8);
    let data = clustered(n, dim, 4, 0.8, 31);
    let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
    assert!(!g.upper.is_empty(), "test needs upper layers");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = g.save(d, "idx").unwrap().remove(0);
    let orig = fs::read(&path).unwrap();
    let q = &data[..dim];
    let reference = g.search(q, 10, 64, None);
    let check_err = |what: &str| {
        let r = AnnGraph::load(d, "idx");
        assert!(matches!(r, Err(AnnError::Corrupt { .. })), "{what}: {r:?}");
    };
    // truncations, with and without a matching checksum
    let mut cuts: Vec<usize> = vec![0, 1, 3, 4, 8, 12, 20, 60, orig.len() - 5, orig.len() - 1];
    let mut rng = Rng::new(7);
    cuts.extend((0..30).map(|_| rng.below(orig.len())));
    for cut in cuts {
        fs::write(&path, &orig[..cut]).unwrap();
        check_err(&format!("cut at {cut}"));
        reseal(&path);
        check_err(&format!("cut at {cut}, resealed"));
    }
    // random bit flips: the checksum catches every one; with a matching
    // checksum, the structural checks must still prevent any panic
    let mut loaded_after_reseal = 0;
    for trial in 0..300 {
        let mut b = orig.clone();
        let flips = 1 + trial % 3;
        for _ in 0..flips {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        if b == orig {
            continue;
        }
        fs::write(&path, &b).unwrap();
        check_err(&format!("trial {trial}"));
        reseal(&path);
        if let Ok(l) = AnnGraph::load(d, "idx") {
            loaded_after_reseal += 1;
            let _ = l.search(q, 10, 64, None);
            let _ = l.search(q, 10, 64, Some(&|id: usize| id.is_multiple_of(3)));
        }
    }
    eprintln!(
        "bit-flipped files that pass structure checks once resealed: {loaded_after_reseal}/300"
    );
    // trailing garbage, empty file, wrong magic, future version
    let mut b = orig.clone();
    b.splice(b.len() - 4..b.len() - 4, [0u8; 8]);
    fs::write(&path, &b).unwrap();
    reseal(&path);
    check_err("trailing bytes");
    let mut b = orig.clone();
    b[8] = 2;
    fs::write(&path, &b).unwrap();
    reseal(&path);
    check_err("version 2");
    fs::write(&path, b"").unwrap();
    check_err("empty");
    // error messages say what to do
    let msg = AnnGraph::load(d, "idx").unwrap_err().to_string();
    assert!(msg.contains("plip index --rebuild"), "{msg}");
    // missing
    fs::remove_file(&path).unwrap();
    let r = AnnGraph::load(d, "idx");
    assert!(matches!(r, Err(AnnError::Missing(_))), "{r:?}");
    // pristine again: loads and agrees
    fs::write(&path, &orig).unwrap();
    let l = AnnGraph::load(d, "idx").unwrap();
    assert_eq!(l.search(q, 10, 64, None), reference);
}
