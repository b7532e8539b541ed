//! `plip serve` under adversarial clients (issue 27): the thumbnail cache never
//! deletes a user's files, running out of file descriptors does not stop the
//! server, slow and idle sockets are closed, Ctrl-C stops it within a deadline
//! even while a client holds half a request, the Host guard parses strictly,
//! and a query's text-model runs are capped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::fixtures;
use crate::serve::{all_indexed, assert_json_error, enc, read_response, request, Server};

/// Three of the user's own JPEGs in `dir`, with their bytes.
fn user_jpegs(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let src = std::fs::read(fixtures().join("images/jpeg_rgb_640x480_q90.jpg")).unwrap();
    ["holiday.jpg", "IMG_0001.jpg", "0123456789abcdef.JPG"]
        .iter()
        .map(|n| {
            let p = dir.join(n);
            std::fs::write(&p, &src).unwrap();
            (p, src.clone())
        })
        .collect()
}

fn assert_untouched(files: &[(std::path::PathBuf, Vec<u8>)]) {
    for (p, bytes) in files {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
}

#[test]
fn thumb_cache_never_deletes_user_jpegs() {
    let env = all_indexed();
    let photos = env.path().join("photos");
    let mine = user_jpegs(&photos);
    // A photo folder and the indexed folder itself, with any budget: refused
    // before anything is loaded, and nothing in them is touched.
    let indexed = env.path().join("slides");
    for dir in [&photos, &indexed] {
        for extra in [&[][..], &["--thumb-cache-mb", "0"][..]] {
            let before = std::fs::read_dir(dir).unwrap().count();
            let out = env
                .plip()
                .args([
                    "serve",
                    "--port",
                    "0",
                    "--thumb-cache",
                    dir.to_str().unwrap(),
                ])
                .args(extra)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{err}");
            assert!(err.contains(dir.to_str().unwrap()), "{err}");
            assert!(
                err.contains("--thumb-cache") && err.contains("folder"),
                "{err}"
            );
            assert_eq!(
                std::fs::read_dir(dir).unwrap().count(),
                before,
                "{}",
                dir.display()
            );
        }
    }
    assert_untouched(&mine);
    // The cache's own folder: thumbnails are written there; a user's JPEG put
    // there later survives a zero budget, which deletes every thumbnail.
    let cache = env.path().join("cache");
    let args = ["--thumb-cache", cache.to_str().unwrap()];
    {
        let server = Server::start(&env, &args);
        let hits = server.json("/api/search?q=tissue&top=3");
        for h in hits["hits"].as_array().unwrap() {
            assert_eq!(server.get(h["thumb"].as_str().unwrap()).status, 200);
        }
    }
    let thumbs = |d: &std::path::Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.len() == 20 && n.ends_with(".jpg")
            })
            .count()
    };
    assert!(thumbs(&cache) >= 1, "no thumbnail was cached");
    let dropped_in = user_jpegs(&cache);
    let zero = [args[0], args[1], "--thumb-cache-mb", "0"];
    let server = Server::start(&env, &zero);
    assert_eq!(server.get("/api/info").status, 200);
    assert_eq!(thumbs(&cache), 0, "the zero budget kept thumbnails");
    assert_untouched(&dropped_in);
}

/// Sets the open-file limit of the child to `n` (soft and hard).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fd_limit(cmd: &mut std::process::Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn running_out_of_file_descriptors_does_not_kill_the_server() {
    let env = all_indexed();
    // A connection cap above the fd limit, so accept() itself fails (EMFILE),
    // then the default cap (half the limit), which keeps accept() from failing.
    for extra in [&["--max-connections", "1000"][..], &[][..]] {
        let mut server = Server::spawn(&env, extra, |c| fd_limit(c, 96));
        let held: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect(&server.addr).ok())
            .collect();
        assert!(held.len() > 96, "only {} connections", held.len());
        if !extra.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !server.stderr().contains("cannot accept") {
                assert!(
                    Instant::now() < deadline,
                    "never out of fds: {}",
                    server.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server exited: {}",
            server.stderr()
        );
        drop(held);
        let r = request(&server.addr, "GET", "/api/search?q=tumor", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    }
}

/// Reads until the server closes the connection; `None` if it is still open
/// after `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t.elapsed()),
            Err(_) => return None,
        }
        if t.elapsed() > limit {
            return None;
        }
    }
}

#[test]
fn a_slow_client_sending_half_a_header_is_dropped_after_the_timeout() {
    let env = all_indexed();
    let server = Server::start(&env, &["--header-timeout", "1"]);
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    write!(
        slow,
        "GET /api/info HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        server.addr
    )
    .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(8)).expect("still open after 8 s");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    // An idle kept-alive connection is closed after the same time.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    write!(
        idle,
        "GET /api/info HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    )
    .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(8)).expect("idle still open");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    // Meanwhile others are served.
    assert_eq!(server.get("/api/info").status, 200);
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_server_while_a_client_holds_half_a_request() {
    let env = all_indexed();
    // The header timeout (10 s by default) is longer than the bound below.
    let mut server = Server::start(&env, &[]);
    let mut half = TcpStream::connect(&server.addr).unwrap();
    write!(
        half,
        "POST /api/search HTTP/1.1\r\nHost: {}\r\nContent-Le",
        server.addr
    )
    .unwrap();
    let mut body = TcpStream::connect(&server.addr).unwrap();
    write!(
        body,
        "POST /api/search HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000000\r\n\r\nabc",
        server.addr
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "still running 8 s after SIGINT: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "took {:?}",
        t.elapsed()
    );
    assert!(status.success(), "{status:?}: {}", server.stderr());
    drop((half, body));
}

/// One raw request (`head` without the final blank line), read to the end.
fn raw(addr: &str, head: &str) -> crate::serve::Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{head}Connection: close\r\n\r\n").unwrap();
    read_response(s)
}

#[test]
fn host_guard_refuses_bracket_suffixes_userinfo_a_second_host_and_foreign_targets() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    let a = &server.addr;
    let port = a.rsplit(':').next().unwrap();
    for host in [
        "[::1].evil.com".to_string(),
        format!("localhost:{port}@evil.com"),
        "localhost:80@evil.com".into(),
        format!("127.0.0.1:{port}.evil.com"),
    ] {
        let r = raw(a, &format!("GET /api/info HTTP/1.1\r\nHost: {host}\r\n"));
        assert_json_error(&r, 403, "localhost");
    }
    let r = raw(
        a,
        &format!("GET /api/info HTTP/1.1\r\nHost: {a}\r\nHost: evil.com\r\n"),
    );
    assert_json_error(&r, 400, "more than one Host");
    let r = raw(
        a,
        &format!("GET /api/info HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n"),
    );
    assert_json_error(&r, 400, "more than one Host");
    let r = raw(
        a,
        &format!("GET http://evil.com/api/info HTTP/1.1\r\nHost: {a}\r\n"),
    );
    assert_json_error(&r, 400, "another host");
    let r = raw(a, "GET http://evil.com/api/info HTTP/1.1\r\n");
    assert_json_error(&r, 403, "localhost");
    // An absolute target that names this server is served.
    let r = raw(
        a,
        &format!("GET http://{a}/api/info HTTP/1.1\r\nHost: {a}\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_search_with_too_many_prompts_gets_a_400_that_names_the_cap() {
    let env = all_indexed();
    let server = Server::start(&env, &[]);
    let templates: String = (0..32)
        .map(|i| format!("&template={}", enc(&format!("an image of {{}} {i}"))))
        .collect();
    let terms: String = (0..32).map(|i| format!("&add=t{i}")).collect();
    let r = server.get(&format!("/api/search?q=tumor{terms}{templates}"));
    assert_json_error(&r, 400, "at most 32 terms");
    let terms: String = (0..3).map(|i| format!("&add=t{i}")).collect();
    let r = server.get(&format!("/api/search?q=tumor{terms}{templates}"));
    assert_json_error(&r, 400, "at most 64 per request");
    let info = server.json("/api/info");
    assert_eq!(
        (info["max_terms"].as_u64(), info["max_prompts"].as_u64()),
        (Some(32), Some(64))
    );
    // One term through 32 templates is within the cap.
    let r = server.get(&format!("/api/search?q=tumor{templates}"));
    assert_eq!(r.status, 200, "{}", r.text());
}
