//! `plip serve` as a real process on an ephemeral port, driven by a tiny
//! blocking HTTP/1.1 client over `TcpStream` (no HTTP crate in the tests):
//! parity with `plip search --json`, image upload, thumbnails, traversal and
//! bad requests, the upload limit, concurrency, tokens, and a commit picked up
//! while serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{fixture_images, fixtures, TestEnv};

/// A running `plip serve`, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub(crate) fn start(env: &TestEnv, extra: &[&str]) -> Server {
        Server::spawn(env, extra, |_| {})
    }

    /// [`Server::start`], with `tweak` applied to the command before it runs.
    pub(crate) fn spawn(
        env: &TestEnv,
        extra: &[&str],
        tweak: impl FnOnce(&mut std::process::Command),
    ) -> Server {
        let cache = env.path().join(".thumbs-test");
        let mut cmd = env.plip();
        cmd.args(["serve", "--port", "0"]);
        if !extra.contains(&"--thumb-cache") {
            cmd.args(["--thumb-cache", cache.to_str().unwrap()]);
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tweak(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("plip serve: listening on http://")
            .and_then(|s| s.strip_suffix('/'))
            .unwrap_or_else(|| {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "no address on stdout: {line:?}; stderr: {}",
                    stderr.lock().unwrap()
                )
            })
            .to_string();
        Server {
            child,
            addr,
            stderr,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        request(&self.addr, "GET", path, &[], b"")
    }

    pub(crate) fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, lower-cased headers and body.
pub(crate) struct Resp {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a new connection, read to the end.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before taking the whole body.
    let _ = s.write_all(body);
    read_response(s)
}

pub(crate) fn read_response(s: TcpStream) -> Resp {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = Vec::new();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn indexed_env(names: &[String]) -> TestEnv {
    let env = TestEnv::new();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("slides", &refs);
    env.ok(&["index", "slides"]);
    env
}

pub(crate) fn all_indexed() -> TestEnv {
    indexed_env(&fixture_images())
}

pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// (rank, score, path) of each hit, from the API or from `--json` lines.
fn triples(hits: &[Value]) -> Vec<(u64, f64, String)> {
    hits.iter()
        .map(|h| {
            (
                h["rank"].as_u64().unwrap(),
                h["score"].as_f64().unwrap(),
                h["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn cli_hits(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn assert_json_error(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], status);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[test]
fn api_search_gives_what_plip_search_json_prints() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    let cases: &[(&str, &[&str])] = &[
        (
            "q=tumor+tissue&top=5",
            &["search", "tumor tissue", "--json", "--top", "5"],
        ),
        (
            "q=lymphocytes&top=14",
            &["search", "lymphocytes", "--json", "--top", "14"],
        ),
        (
            "q=tumor&add=2:lymphocytes&sub=0.5:necrosis&top=8",
            &[
                "search",
                "tumor",
                "--add",
                "2:lymphocytes",
                "--subtract",
                "0.5:necrosis",
                "--json",
                "--top",
                "8",
            ],
        ),
        (
            "q=mucus&template=An+H%26E+image+of+%7B%7D.&threshold=-0.05&top=20",
            &[
                "search",
                "mucus",
                "--template",
                "An H&E image of {}.",
                "--threshold",
                "-0.05",
                "--json",
                "--top",
                "20",
            ],
        ),
        (
            "q=tumor&under=slides&top=3",
            &[
                "search", "tumor", "--under", "slides", "--json", "--top", "3",
            ],
        ),
    ];
    for (query, args) in cases {
        let api = server.json(&format!("/api/search?{query}"));
        let hits = api["hits"].as_array().unwrap();
        let cli = cli_hits(&env.ok(args));
        assert!(!cli.is_empty(), "{query}");
        assert_eq!(triples(hits), triples(&cli), "{query}");
        for h in hits {
            let id = h["id"].as_str().unwrap();
            assert_eq!(id.len(), 16);
            assert_eq!(h["thumb"], format!("/api/thumb/{id}"));
            assert_eq!(h["kind"], "image");
            assert!(h["region"].is_null());
        }
    }
    // A folder nothing is under gives no hits, not an error.
    let none = server.json("/api/search?q=tumor&under=elsewhere");
    assert_eq!(none["hits"].as_array().unwrap().len(), 0);
    // "More like this": an item's stored vector finds the item first.
    let first = &server.json("/api/search?q=tumor&top=1")["hits"][0];
    let like = server.json(&format!(
        "/api/search?like={}&top=2",
        first["id"].as_str().unwrap()
    ));
    assert_eq!(like["hits"][0]["path"], first["path"]);
    assert!((like["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
}

#[test]
fn an_uploaded_image_finds_itself_and_non_images_are_refused() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    for name in [
        "png_rgb_224x224.png",
        "jpeg_rgb_640x480_q90.jpg",
        "tiff_rgb_260x300_raw.tif",
    ] {
        let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
        let r = request(
            &server.addr,
            "POST",
            "/api/search?top=3",
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        );
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let v = r.json();
        assert_eq!(v["hits"][0]["path"], format!("slides/{name}"));
        assert!((v["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
        // The same as `plip search --image`.
        let cli = cli_hits(&env.ok(&[
            "search",
            "--image",
            &format!("slides/{name}"),
            "--json",
            "--top",
            "3",
        ]));
        assert_eq!(triples(v["hits"].as_array().unwrap()), triples(&cli));
    }
    let r = request(
        &server.addr,
        "POST",
        "/api/search",
        &[],
        b"this is not an image",
    );
    assert_json_error(&r, 415, "not an image");
    let r = request(
        &server.addr,
        "POST",
        "/api/search",
        &[],
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\xff\xff\0\0\xff\xff\x08\x02",
    );
    assert!((400..500).contains(&r.status), "{}", r.text());
    let r = request(&server.addr, "POST", "/api/search", &[], b"");
    assert_json_error(&r, 400, "empty");
    assert_eq!(server.get("/api/info").status, 200, "still serving");
}

#[test]
fn thumbnails_are_small_jpegs_cached_and_revalidated() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    let hits = server.json("/api/search?q=tissue&top=14");
    for h in hits["hits"].as_array().unwrap() {
        let url = h["thumb"].as_str().unwrap();
        let t0 = Instant::now();
        let r = server.get(url);
        let cold = t0.elapsed();
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        let img = plip::decode_rgb(&r.body, &plip::DecodeLimits::default()).unwrap();
        assert!(
            img.width().max(img.height()) <= 320,
            "{}x{}",
            img.width(),
            img.height()
        );
        let again = server.get(url);
        assert_eq!(again.body, r.body);
        let etag = r.header("etag").unwrap().to_string();
        let not_modified = request(&server.addr, "GET", url, &[("If-None-Match", &etag)], b"");
        assert_eq!(not_modified.status, 304);
        let _ = cold;
    }
    // The on-disk cache holds them.
    let cached = std::fs::read_dir(env.path().join(".thumbs-test"))
        .unwrap()
        .count();
    assert!(cached >= 14, "{cached} files in the thumbnail cache");
}

#[test]
fn paths_in_requests_never_reach_the_file_system() {
    let env = all_indexed();
    std::fs::write(env.path().join("secret.txt"), "TOP SECRET").unwrap();
    let server = Server::start(&env, &[]);
    for path in [
        "/api/thumb/../../secret.txt",
        "/api/thumb/..%2f..%2fsecret.txt",
        "/api/thumb/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/thumb/slides%2fpng_rgb_224x224.png",
        "/api/thumb/0000000000000000",
        "/api/thumb/",
        "/../../secret.txt",
        "/secret.txt",
        "/slides/png_rgb_224x224.png",
        "/api/thumb/..\\..\\secret.txt",
        "/app.js/../../secret.txt",
        "//etc/passwd",
    ] {
        let r = server.get(path);
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: {} {}",
            r.status,
            r.text()
        );
        let text = r.text();
        assert!(
            !text.contains("TOP SECRET") && !text.contains("root:"),
            "{path}: {text}"
        );
    }
    // `like` and `under` take ids and prefixes, not paths.
    assert_json_error(
        &server.get("/api/search?like=..%2F..%2Fsecret.txt"),
        400,
        "item id",
    );
    assert_json_error(
        &server.get("/api/search?like=0000000000000000"),
        404,
        "no item",
    );
    let r = server.json("/api/search?q=a&under=..%2F..%2F");
    assert_eq!(r["hits"].as_array().unwrap().len(), 0);
    // A text term that names a file is still text.
    let as_text = server.json("/api/search?q=slides%2Fpng_rgb_224x224.png&top=1");
    assert!(as_text["hits"][0]["score"].as_f64().unwrap() < 0.999);
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_going() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    for (path, status, needle) in [
        ("/api/search", 400, "empty"),
        ("/api/search?q=", 400, "empty"),
        ("/api/search?q=%20%20", 400, "empty"),
        ("/api/search?q=a&top=0", 400, "top"),
        ("/api/search?q=a&top=-1", 400, "top"),
        ("/api/search?q=a&top=99999999999999999999999", 400, "top"),
        ("/api/search?q=a&threshold=abc", 400, "threshold"),
        ("/api/search?q=a&threshold=inf", 400, "threshold"),
        ("/api/search?q=a&bogus=1", 400, "unknown parameter"),
        ("/api/search?q=a&add=x:b", 400, "malformed weight"),
        ("/api/search?q=a&add=1:a&sub=1:a&q=", 400, "twice"),
        ("/api/search?add=1:a&sub=1:a", 400, "cancel"),
        ("/api/search?q=%ff%fe%00", 400, "NUL"),
        ("/api/nothing", 404, "no such"),
    ] {
        assert_json_error(&server.get(path), status, needle);
    }
    let long = format!("/api/search?q={}", "a".repeat(3000));
    assert_json_error(&server.get(&long), 400, "longer");
    assert_json_error(
        &request(&server.addr, "DELETE", "/api/search?q=a", &[], b""),
        405,
        "not allowed",
    );
    // Odd but valid text is searched.
    for q in [
        "%F0%9F%94%AC+%E2%80%94+%3Cscript%3E",
        "%ff%fe",
        "a%2",
        "tumor%0Atissue",
        "...",
    ] {
        let r = server.get(&format!("/api/search?q={q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
    }
    // Broken HTTP: garbage, a half request, a lying Content-Length.
    for raw in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET /api/search?q=a HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nshort",
        b"GET /api/search?q=a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.write_all(raw).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let r = server.get("/api/search?q=tumor");
    assert_eq!(
        r.status,
        200,
        "still serving after broken requests: {}",
        server.stderr()
    );
}

#[test]
fn uploads_over_64_mb_get_413() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    // Declared too large: refused before the body is read.
    let r = request(
        &server.addr,
        "POST",
        "/api/search",
        &[("Content-Length", &(64 * 1024 * 1024 + 1).to_string())],
        b"",
    );
    assert_json_error(&r, 413, "64 MB");
    // Sent in chunks without a length: cut off at the limit.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /api/search HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.addr
    )
    .unwrap();
    let chunk = vec![0x42u8; 1 << 20];
    for _ in 0..70 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let r = read_response(s);
    assert_json_error(&r, 413, "64 MB");
    assert_eq!(server.get("/api/info").status, 200);
}

#[test]
fn parallel_requests_are_all_answered_alike() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    let queries = ["tumor", "lymphocytes", "necrosis", "mucus"];
    let expected: Vec<Value> = queries
        .iter()
        .map(|q| server.json(&format!("/api/search?q={q}&top=5"))["hits"].clone())
        .collect();
    let ids: Vec<String> = expected[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["thumb"].as_str().unwrap().to_string())
        .collect();
    let addr = server.addr.clone();
    let workers: Vec<_> = (0..32)
        .map(|i| {
            let (addr, q, want, thumb) = (
                addr.clone(),
                queries[i % 4],
                expected[i % 4].clone(),
                ids[i % ids.len()].clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let r = request(&addr, "GET", &format!("/api/search?q={q}&top=5"), &[], b"");
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["hits"], want);
                    let t = request(&addr, "GET", &thumb, &[], b"");
                    assert_eq!(t.status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_commit_made_while_serving_is_searched_without_a_restart() {
    let names = fixture_images();
    let (first, later) = names.split_at(5);
    let env = indexed_env(first);
    let server = Server::start(&env, &[]);
    let before = server.json("/api/info");
    assert_eq!(before["images"], 5);
    let refs: Vec<&str> = later.iter().map(String::as_str).collect();
    env.copy_images("more", &refs);
    env.ok(&["index", "slides", "more"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = server.json("/api/info");
        if info["images"] == names.len() {
            assert!(info["generation"].as_u64() > before["generation"].as_u64());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new commit was not picked up: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = server.json(&format!("/api/search?q=tumor&top={}", names.len()));
    let paths: Vec<&str> = all["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&format!("more/{}", later[0]).as_str()),
        "{paths:?}"
    );
    let cli = cli_hits(&env.ok(&[
        "search",
        "tumor",
        "--json",
        "--top",
        &names.len().to_string(),
    ]));
    assert_eq!(triples(all["hits"].as_array().unwrap()), triples(&cli));
}

/// The tiny model copied into `env`'s `model/` folder, for a test that changes
/// its files under the same source (the same folder).
fn own_model(env: &TestEnv) -> PathBuf {
    let dir = env.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(crate::common::tiny_model()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// Changes the model's files (so its fingerprint) but not what it computes: one
/// more newline at the end of its config.
fn change_model_files(model: &Path) {
    let config = model.join("config.json");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    std::fs::write(&config, text).unwrap();
}

/// `StoreError::ModelChanged`'s words, as `plip search` says them.
fn model_changed(source: &str, index: &Path) -> String {
    format!(
        "the model `{source}` changed since the index at {} was built (its weights, tokenizer \
         or preprocessing differ); use the model that built it, or `plip index --rebuild` to \
         embed everything again",
        index.display()
    )
}

/// The stderr of a `plip serve` that must refuse to start (killed, failing the
/// test, if it serves instead).
fn serve_refused(env: &TestEnv, model: &Path) -> String {
    let mut child = env
        .plip()
        .env("PLIP_MODEL", model)
        .args(["serve", "--port", "0", "--no-thumb-cache"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plip serve started instead of refusing the index");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_model_whose_files_changed_is_refused_at_startup_and_after_a_commit() {
    let env = TestEnv::new();
    let model = own_model(&env);
    let index = std::fs::canonicalize(env.path()).unwrap().join(".plip");
    let names = fixture_images();
    let refs: Vec<&str> = names[..3].iter().map(String::as_str).collect();
    env.copy_images("slides", &refs);
    let indexed = |rebuild: bool| {
        let mut cmd = env.plip();
        cmd.env("PLIP_MODEL", &model).args(["index", "slides"]);
        if rebuild {
            cmd.arg("--rebuild");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    indexed(false);
    let server = Server::spawn(&env, &[], |c| {
        c.env("PLIP_MODEL", &model);
    });
    let before = server.json("/api/info");
    let source = before["model"].as_str().unwrap().to_string();
    // A commit by the same model source with other files: the watcher checks the
    // reopened index as startup does, says so and keeps serving the old commit.
    change_model_files(&model);
    indexed(true);
    let warning = format!(
        "plip: warning: still serving the previous commit: {}",
        model_changed(&source, &index)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.stderr().contains(&warning) {
        assert!(
            Instant::now() < deadline,
            "no warning {warning:?}: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.json("/api/info")["generation"], before["generation"]);
    drop(server);
    // At startup: the files changed again since that commit.
    change_model_files(&model);
    let err = serve_refused(&env, &model);
    assert!(err.contains(&model_changed(&source, &index)), "{err}");
}

#[test]
fn a_token_guards_the_api_and_a_foreign_host_is_refused() {
    let env = all_indexed();
    let server = Server::start(&env, &["--token", "s3cret-token"]);
    assert_json_error(&server.get("/api/search?q=tumor"), 401, "token");
    assert_json_error(&server.get("/api/thumb/0000000000000000"), 401, "token");
    let bearer = [("Authorization", "Bearer s3cret-token")];
    assert_eq!(
        request(&server.addr, "GET", "/api/search?q=tumor", &bearer, b"").status,
        200
    );
    let wrong = [("Authorization", "Bearer s3cret-tokeN")];
    assert_eq!(
        request(&server.addr, "GET", "/api/search?q=tumor", &wrong, b"").status,
        401
    );
    // The page itself holds no data and loads without the token.
    assert_eq!(server.get("/").status, 200);
    // Login sets the cookie that images use.
    let login = request(&server.addr, "POST", "/api/login", &bearer, b"");
    assert_eq!(login.status, 200);
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        request(&server.addr, "GET", "/api/info", &[("Cookie", pair)], b"").status,
        200
    );
    // DNS rebinding: a page on another name that resolves to 127.0.0.1.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(s, "GET /api/info HTTP/1.1\r\nHost: evil.example:80\r\nAuthorization: Bearer s3cret-token\r\nConnection: close\r\n\r\n").unwrap();
    assert_json_error(&read_response(s), 403, "localhost");
}

#[test]
fn the_page_is_one_self_contained_document() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    let page = server.get("/?q=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text();
    assert!(
        !html.contains("onerror"),
        "the query is not echoed into the HTML"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    for asset in ["/app.js", "/like.js", "/style.css", "/favicon.svg"] {
        let r = server.get(asset);
        assert_eq!(r.status, 200, "{asset}");
        assert!(
            !r.text().contains("https://"),
            "{asset} loads nothing from the network"
        );
    }
    for script in ["/app.js", "/like.js"] {
        assert!(
            !server.get(script).text().contains("innerHTML"),
            "{script}: names are set as text"
        );
    }
    // OpenSeadragon is vendored with its licence, and the viewer's shared URL is the page.
    let osd = server.get("/vendor/openseadragon/openseadragon.min.js");
    assert_eq!(osd.status, 200);
    assert!(osd.text().starts_with("//! openseadragon 6.1.1"));
    assert!(server
        .get("/vendor/openseadragon/LICENSE.txt")
        .text()
        .contains("Redistribution and use"));
    let viewer = server.get("/slide/0123456789abcdef?q=tumor");
    assert_eq!(viewer.status, 200);
    assert_eq!(viewer.text(), html);
    assert!(viewer.header("content-security-policy").is_some());
}

#[test]
fn listening_beyond_loopback_warns() {
    let env = all_indexed();
    let server = Server::start(&env, &["--host", "0.0.0.0"]);
    assert_eq!(server.get("/api/info").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("reachable from other machines") {
        assert!(Instant::now() < deadline, "no warning: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `s/` with two whole slides and two images, indexed.
fn slides_indexed() -> TestEnv {
    let env = TestEnv::new();
    let d = env.copy_images("s", &["jpeg_rgb_640x480_q90.jpg", "png_rgb_224x224.png"]);
    for n in ["aperio_ycbcr.svs", "generic.tiff"] {
        std::fs::copy(fixtures().join("slides").join(n), d.join(n)).unwrap();
    }
    env.ok(&["index", "s"]);
    env
}

fn a_tile_hit(server: &Server, slide: &str) -> Value {
    let api = server.json("/api/search?q=tissue&top=1000");
    api["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"] == slide)
        .unwrap_or_else(|| panic!("no tile of {slide}: {api}"))
        .clone()
}

/// A server over [`slides_indexed`] and a tile hit of `slide` (with its `slide_id`).
fn slide_server(slide: &str) -> (TestEnv, Server, Value) {
    let env = slides_indexed();
    let server = Server::start(&env, &[]);
    let tile = a_tile_hit(&server, slide);
    (env, server, tile)
}

fn jpeg_size(r: &Resp) -> (u32, u32) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let img = image::load_from_memory_with_format(&r.body, image::ImageFormat::Jpeg).unwrap();
    (img.width(), img.height())
}

#[test]
fn slide_tiles_are_items_of_their_own_with_plip_search_json_fields() {
    let env = slides_indexed();
    let server = Server::start(&env, &[]);
    let api = server.json("/api/search?q=tissue&top=1000");
    let hits = api["hits"].as_array().unwrap();
    let cli = cli_hits(&env.ok(&["search", "tissue", "--json", "--top", "1000"]));
    assert_eq!(triples(hits), triples(&cli));
    let ids: std::collections::HashSet<&str> =
        hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), hits.len(), "every tile has its own id");
    let mut tiles = 0;
    for (h, c) in hits.iter().zip(&cli) {
        for k in ["x", "y", "w", "h", "level", "mpp"] {
            assert_eq!(h.get(k), c.get(k), "{k}: {h} vs {c}");
        }
        if c.get("x").is_some() {
            tiles += 1;
            assert_eq!(h["kind"], "slide");
            for k in ["x", "y", "w", "h", "level", "mpp"] {
                assert_eq!(h["region"][k], c[k], "{k}");
            }
            let sid = h["slide_id"].as_str().unwrap();
            assert_eq!(h["dzi"], format!("/api/slide/{sid}.dzi"));
            assert!(h["slide_width"].as_u64().unwrap() > 0);
        } else {
            assert_eq!(h["kind"], "image");
            assert!(h["region"].is_null() && h.get("slide_id").is_none(), "{h}");
        }
    }
    assert!(tiles > 10, "{tiles} tiles");
    // Ids are stable across restarts.
    drop(server);
    let again = Server::start(&env, &[]);
    let api2 = again.json("/api/search?q=tissue&top=1000");
    assert_eq!(api2["hits"], api["hits"]);
    // A tile's thumbnail is its crop, read by plip's slide reader.
    let tile = a_tile_hit(&again, "s/aperio_ycbcr.svs");
    let thumb = again.get(tile["thumb"].as_str().unwrap());
    assert_eq!(jpeg_size(&thumb), (224, 224));
    // The item route names the tile, and "more like this" finds it first.
    let id = tile["id"].as_str().unwrap();
    let item = again.json(&format!("/api/item/{id}"));
    assert_eq!(
        (&item["path"], &item["x"], &item["y"]),
        (&tile["path"], &tile["x"], &tile["y"])
    );
    let like = again.json(&format!("/api/search?like={id}&top=1"));
    assert_eq!(like["hits"][0]["id"], tile["id"]);
    assert!((like["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert_json_error(&again.get("/api/item/0123456789abcdef"), 404, "no item");
}

#[test]
fn deep_zoom_tiles_are_the_slide_read_by_plip_and_bad_addresses_are_404() {
    let (_env, server, tile) = slide_server("s/aperio_ycbcr.svs");
    let sid = tile["slide_id"].as_str().unwrap();
    let dzi = server.get(&format!("/api/slide/{sid}.dzi"));
    assert_eq!(dzi.status, 200, "{}", dzi.text());
    assert_eq!(dzi.header("content-type"), Some("application/xml"));
    let xml = dzi.text();
    for want in [
        "Width=\"1990\"",
        "Height=\"1500\"",
        "TileSize=\"254\"",
        "Overlap=\"1\"",
        "Format=\"jpeg\"",
    ] {
        assert!(xml.contains(want), "{xml} lacks {want}");
    }
    // 1990x1500 halves to 1x1 in 11 steps: levels 0..=11.
    let t =
        |l: u32, c: u32, r: u32| server.get(&format!("/api/slide/{sid}_files/{l}/{c}_{r}.jpeg"));
    assert_eq!(jpeg_size(&t(11, 0, 0)), (255, 255));
    assert_eq!(jpeg_size(&t(11, 1, 1)), (256, 256));
    // The last column and row: 1990 - 7*254 = 212 and 1500 - 5*254 = 230, plus overlap.
    assert_eq!(jpeg_size(&t(11, 7, 5)), (213, 231));
    assert_eq!(
        jpeg_size(&t(10, 3, 2)),
        (995 - 3 * 254 + 1, 750 - 2 * 254 + 1)
    );
    assert_eq!(jpeg_size(&t(0, 0, 0)), (1, 1));
    // Revalidation works for tiles as for thumbnails.
    let etag = t(11, 0, 0).header("etag").unwrap().to_string();
    let again = request(
        &server.addr,
        "GET",
        &format!("/api/slide/{sid}_files/11/0_0.jpeg"),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    let no = |path: &str| assert_json_error(&server.get(path), 404, "");
    no(&format!("/api/slide/{sid}_files/12/0_0.jpeg"));
    no(&format!("/api/slide/{sid}_files/11/8_0.jpeg"));
    no(&format!("/api/slide/{sid}_files/11/0_6.jpeg"));
    no(&format!("/api/slide/{sid}_files/0/1_0.jpeg"));
    no(&format!("/api/slide/{sid}_files/11/99999999999_0.jpeg"));
    no(&format!(
        "/api/slide/{sid}_files/11/184467440737095516160_0.jpeg"
    ));
    no(&format!(
        "/api/slide/{sid}_files/99999999999999999999/0_0.jpeg"
    ));
    no(&format!("/api/slide/{sid}_files/-1/0_0.jpeg"));
    no(&format!("/api/slide/{sid}_files/11/a_b.jpeg"));
    no(&format!("/api/slide/{sid}_files/11/0_0.png"));
    no(&format!("/api/slide/{sid}/11/0_0.jpeg"));
    no("/api/slide/0123456789abcdef_files/11/0_0.jpeg");
    no("/api/slide/0123456789abcdef.dzi");
    no(&format!("/api/slide/{sid}.xml"));
    no("/api/slide/..%2F..%2Fetc%2Fpasswd.dzi");
    no("/api/slide/%2Fetc%2Fpasswd_files/0/0_0.jpeg");
    // A tile's id is not a slide's.
    no(&format!("/api/slide/{}.dzi", tile["id"].as_str().unwrap()));
    // Over HTTP too: the full-resolution Deep Zoom tile at the origin of
    // generic.tiff (768x512: levels 0..=10) holds the pixels of the indexed
    // tile there, as its thumbnail shows them (both read by plip, both JPEG).
    let api = server.json("/api/search?q=tissue&top=1000");
    let origin = api["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"] == "s/generic.tiff" && h["x"] == 0 && h["y"] == 0 && h["w"] == 224)
        .expect("generic.tiff has a tile at 0,0");
    let decode = |r: Resp| {
        assert_eq!(r.status, 200, "{}", r.text());
        image::load_from_memory(&r.body).unwrap().to_rgb8()
    };
    let dz = decode(server.get(&format!(
        "/api/slide/{}_files/10/0_0.jpeg",
        origin["slide_id"].as_str().unwrap()
    )));
    assert_eq!(dz.dimensions(), (255, 255));
    let crop = image::imageops::crop_imm(&dz, 0, 0, 224, 224).to_image();
    let thumb = decode(server.get(origin["thumb"].as_str().unwrap()));
    assert_eq!(thumb.dimensions(), (224, 224));
    let diff: u64 = crop
        .as_raw()
        .iter()
        .zip(thumb.as_raw())
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    let mean = diff as f64 / crop.as_raw().len() as f64;
    assert!(mean < 4.0, "mean abs difference {mean}");
    // The slide's thumbnail keeps its aspect ratio.
    let (w, h) = jpeg_size(&server.get(&format!("/api/slide/{sid}/thumb")));
    assert_eq!(w, 320);
    assert!((f64::from(h) - 320.0 * 1500.0 / 1990.0).abs() <= 1.0, "{h}");
    assert!(!server.stderr().to_lowercase().contains("panick"));
}

#[test]
fn the_heatmap_scores_a_slides_tiles_as_plip_search_does() {
    let (env, server, tile) = slide_server("s/generic.tiff");
    let sid = tile["slide_id"].as_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("q=tissue", &["search", "tissue"]),
        (
            "q=tumor&add=2:lymphocytes&sub=0.5:necrosis",
            &[
                "search",
                "tumor",
                "--add",
                "2:lymphocytes",
                "--subtract",
                "0.5:necrosis",
            ],
        ),
    ];
    for (query, args) in cases {
        let heat = server.json(&format!("/api/slide/{sid}/heatmap?{query}"));
        let mut args = args.to_vec();
        args.extend(["--json", "--top", "1000"]);
        let cli: Vec<Value> = cli_hits(&env.ok(&args))
            .into_iter()
            .filter(|h| h["path"] == "s/generic.tiff")
            .collect();
        let tiles = heat["tiles"].as_array().unwrap();
        assert_eq!(tiles.len(), cli.len(), "{query}");
        assert!(!tiles.is_empty());
        for c in &cli {
            let t = tiles
                .iter()
                .find(|t| t["x"] == c["x"] && t["y"] == c["y"])
                .unwrap_or_else(|| panic!("{c} not in the heatmap"));
            let (a, b) = (t["score"].as_f64().unwrap(), c["score"].as_f64().unwrap());
            assert!((a - b).abs() <= 2e-6, "{query}: {a} vs {b}");
        }
        let max = tiles
            .iter()
            .map(|t| t["score"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(heat["max"].as_f64().unwrap(), max);
    }
    assert_json_error(
        &server.get(&format!("/api/slide/{sid}/heatmap")),
        400,
        "empty",
    );
    assert_json_error(
        &server.get(&format!("/api/slide/{sid}/heatmap?q=a&top=0")),
        400,
        "top",
    );
    assert_json_error(
        &server.get("/api/slide/0123456789abcdef/heatmap?q=a"),
        404,
        "no slide",
    );
}

#[test]
fn by_slide_gives_what_plip_search_by_slide_json_prints() {
    let env = slides_indexed();
    let server = Server::start(&env, &[]);
    for (query, args) in [
        (
            "q=tissue&by_slide=1",
            vec!["search", "tissue", "--by-slide", "--json"],
        ),
        (
            "q=tumor&add=lymphocytes&by_slide=1&top=1",
            vec![
                "search",
                "tumor",
                "--add",
                "lymphocytes",
                "--by-slide",
                "--json",
                "--top",
                "1",
            ],
        ),
    ] {
        let api = server.json(&format!("/api/search?{query}"));
        let rows = api["slides"].as_array().unwrap();
        let cli = cli_hits(&env.ok(&args));
        assert_eq!(rows.len(), cli.len(), "{query}");
        for (r, c) in rows.iter().zip(&cli) {
            for k in ["rank", "score", "path", "tiles", "best"] {
                assert_eq!(r[k], c[k], "{query}: {k}");
            }
            let sid = r["slide_id"].as_str().unwrap();
            assert_eq!(r["thumb"], format!("/api/slide/{sid}/thumb"));
            let best = server.json(&format!("/api/item/{}", r["best_id"].as_str().unwrap()));
            assert_eq!((&best["x"], &best["y"]), (&c["best"]["x"], &c["best"]["y"]));
            assert_eq!(best["slide_id"], r["slide_id"]);
        }
    }
    assert_eq!(
        server.json("/api/search?q=tissue&by_slide=1")["slides"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_json_error(&server.get("/api/search?q=a&by_slide=yes"), 400, "by_slide");
}
