//! `plip serve` under load, through its HTTP API, on an index of 100k images:
//! query latency p50/p99 with 16 concurrent clients, requests per second,
//! thumbnail latency cold and cached, 200 simultaneous requests, and the
//! server's RSS before, after 10,000 and after 20,000 requests.
//!
//!     python3 fixtures/generate.py tiny-512 target/plip-bench/tiny-512
//!     cargo bench --bench serve                        # 100k images, tiny-512
//!     PLIP_BENCH_N=20000 PLIP_BENCH_MODEL=DIR cargo bench --bench serve
//!
//! As in `benches/cold_search.rs`, the index holds clustered unit vectors under
//! file names (embedding 100k real images would take hours on two cores and
//! does not change what search does), written through `IndexWriter` with the
//! model's real fingerprint. The first 64 entries name real image files (the
//! fixtures, copied), so thumbnails are made by the real decoder. Queries are
//! distinct texts ("tumor tissue 17"), so each one runs the text tower: the
//! server's text cache does not flatter the numbers. The model is tiny-512
//! (tiny towers with 512-d embeddings): the scan over 100k 512-d vectors is
//! real, the text tower is much cheaper than PLIP's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plip::Index;

#[path = "common/mod.rs"]
mod common;
use common::clustered;

const REAL: usize = 64;

fn main() {
    let Some(n) = common::bench_size(100_000) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some((model, embedder)) = common::bench_model(
        "target/plip-bench/tiny-512",
        "tiny-512 target/plip-bench/tiny-512",
    ) else {
        return;
    };
    let info = embedder.info().clone();
    let work = root.join(format!("target/plip-bench/serve-{n}-{}", info.dim));
    let index_dir = work.join(".plip");
    let reusable = Index::open(&index_dir)
        .map(|i| i.len() == n && i.model() == &info)
        .unwrap_or(false);
    if !reusable {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("slides/real")).unwrap();
        eprintln!("building a {n}-image index in {} (once)", work.display());
        let fixtures: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures/images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let vectors = clustered(n, info.dim, 11);
        common::write_index(&index_dir, &info, &vectors, |i| {
            if i < REAL {
                let src = &fixtures[i % fixtures.len()];
                let name = format!("real/{i:03}.{}", src.extension().unwrap().to_string_lossy());
                std::fs::copy(src, work.join("slides").join(&name)).unwrap();
                format!("slides/{name}")
            } else {
                format!("slides/case{:03}/tile{i:06}.jpg", i % 500)
            }
        });
    }
    let thumbs = work.join("thumb-cache");
    let _ = std::fs::remove_dir_all(&thumbs);

    let mut child = Command::new(env!("CARGO_BIN_EXE_plip"))
        .current_dir(&work)
        .args([
            "--quiet",
            "--model",
            &model.to_string_lossy(),
            "serve",
            "--port",
            "0",
        ])
        .args(["--thumb-cache", &thumbs.to_string_lossy()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("plip serve: listening on http://")
        .trim_end_matches('/')
        .to_string();
    let pid = child.id();

    // Warm-up: page cache, allocator, first queries.
    for i in 0..50 {
        get(&addr, &format!("/api/search?q=warm+up+{i}&top=10"));
    }
    let rss_before = rss_kib(pid);

    // Thumbnails: cold (decoded and written to the disk cache), then cached.
    let hits = get(
        &addr,
        &format!("/api/search?under=slides/real&q=tissue&top={REAL}"),
    );
    let thumbs_urls: Vec<String> = serde_json::from_slice::<serde_json::Value>(&hits.1).unwrap()
        ["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["thumb"].as_str().unwrap().to_string())
        .collect();
    let time = |url: &str| {
        let t = Instant::now();
        let (status, _) = get(&addr, url);
        assert_eq!(status, 200, "{url}");
        t.elapsed().as_secs_f64() * 1e3
    };
    let cold: Vec<f64> = thumbs_urls.iter().map(|u| time(u)).collect();
    let cached: Vec<f64> = thumbs_urls.iter().map(|u| time(u)).collect();

    // Two rounds of 10,000 searches from 16 clients, every query text distinct:
    // latency per round, and the RSS after each (the first round fills the text
    // cache and the allocator's per-thread arenas; the second shows whether
    // memory still grows).
    let total = 10_000;
    let round = |offset: usize| {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (addr, next) = (addr.clone(), next.clone());
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break lat;
                        }
                        let t = Instant::now();
                        let q = format!("/api/search?q=tumor+tissue+{}&top=10", offset + i);
                        let (status, _) = get(&addr, &q);
                        assert_eq!(status, 200);
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                })
            })
            .collect();
        let mut lat: Vec<f64> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        let wall = started.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        (lat, wall, rss_kib(pid))
    };
    let rounds = [round(0), round(total)];
    let rss_after = rounds[1].2;

    // 200 requests at once.
    let burst: Vec<_> = (0..200)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, &format!("/api/search?q=burst+{i}&top=10")).0)
        })
        .collect();
    let ok = burst
        .into_iter()
        .map(|t| t.join().ok())
        .filter(|s| *s == Some(200))
        .count();
    let rss_end = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "index: {n} images, {}-d, model {}",
        info.dim,
        model.display()
    );
    for (r, (lat, wall, _)) in rounds.iter().enumerate() {
        println!(
            "search round {}, 16 clients, {total} distinct text queries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.0} requests/s",
            r + 1,
            pct(lat, 50.0),
            pct(lat, 99.0),
            lat.last().unwrap(),
            total as f64 / wall
        );
    }
    let (mut cold, mut cached) = (cold, cached);
    cold.sort_by(f64::total_cmp);
    cached.sort_by(f64::total_cmp);
    println!(
        "thumbnail ({} fixture images): cold p50 {:.1} ms (max {:.1}), cached p50 {:.2} ms (max {:.2})",
        cold.len(),
        pct(&cold, 50.0),
        cold.last().unwrap(),
        pct(&cached, 50.0),
        cached.last().unwrap()
    );
    println!("200 simultaneous requests: {ok} answered 200");
    println!(
        "server RSS: {:.1} MiB after warm-up and thumbnails, {:.1} MiB after 10,000 searches, {:.1} MiB after 20,000, {:.1} MiB after the burst",
        rss_before as f64 / 1024.0,
        rounds[0].2 as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
}

fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&buf[9..12]).parse().unwrap();
    (status, buf[head_end + 4..].to_vec())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
