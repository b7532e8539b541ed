//! The server's accept loop: hyper's HTTP/1.1 connections over the app, with
//! the limits that keep one client from exhausting the process.
//!
//! Guarantees:
//! - an `accept()` error (out of file descriptors, a connection reset before it
//!   was taken) never stops the server: it waits a moment and accepts again;
//! - at most [`Limits::max_connections`] connections are open at once (by
//!   default half the open-file limit, at most 1,024); more wait in the kernel's
//!   backlog until one closes;
//! - a client has [`Limits::header_timeout`] to send a request's headers, on a
//!   new connection and between requests on a kept-alive one, so idle and slow
//!   sockets are closed instead of piling up; an upload body has
//!   [`UPLOAD_TIMEOUT`] (see `api`);
//! - on Ctrl-C or SIGTERM the listener closes at once, open connections finish
//!   their requests for at most [`SHUTDOWN_GRACE`], and then are dropped, even
//!   one that holds half a request; a second signal stops waiting at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Time a client has to send a request's headers (and an idle kept-alive
/// connection to send the next request) unless `--header-timeout` says otherwise.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an uploaded query image has to arrive in full.
pub(crate) const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long open connections may finish their requests after Ctrl-C.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Upper bound of the default connection cap.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// The connection limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// The default connection cap: half the soft open-file limit (the other half
/// is for slides, thumbnails and the index), at least 8, at most
/// [`MAX_CONNECTIONS`].
pub(crate) fn default_max_connections() -> usize {
    (open_file_limit() / 2).clamp(8, MAX_CONNECTIONS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn open_file_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn open_file_limit() -> usize {
    1024
}

/// Serves `app` on `listener` until `shutdown` completes, then closes with the
/// deadline described above. `second` completes on a second signal.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    second: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut warned = false;
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors (or memory): the pending connection
                // stays in the backlog; try again once something has closed.
                if !warned {
                    eprintln!(
                        "plip: warning: cannot accept a connection: {e}; the server keeps \
                         running and retries (raise `ulimit -n` or lower --max-connections)"
                    );
                    warned = true;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {},
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing.clone();
        let header_timeout = limits.header_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
        () = second => {}
    }
    // Dropping the set aborts what is still open.
    conns.abort_all();
}

/// Errors of one connection (it was reset before it was taken), not of the
/// listener: accept the next one at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}
