//! `plip serve`: a local web app and JSON API over the index, from the same
//! binary, with every asset embedded (no CDN, no network).
//!
//! The model is loaded once and answers queries concurrently on tokio's
//! blocking pool (bounded, so a burst of requests queues instead of piling up
//! threads); the index is reopened when `plip index` commits (`state::watch`).
//! Safety: the listener is loopback unless asked otherwise; on loopback the
//! Host header must be a loopback name (a DNS-rebinding guard); `--token` puts
//! `/api/` behind a bearer token; files are reached only through item ids that
//! the index names, never through a path in the request; uploads are capped at
//! [`app::MAX_BODY`]; the page builds every name with `textContent` under a
//! script-src 'self' CSP; `listen` caps connections, times out slow headers
//! and idle connections, survives accept() errors and stops within a deadline.
//! A tile of a whole slide is an item of its own (its id hashes the path and
//! the region), its hit carries `kind: "slide"` and its
//! region, and its thumbnail is the tile read by plip's slide reader; the page
//! opens it in an OpenSeadragon viewer (vendored, embedded) over Deep Zoom
//! tiles that the same reader renders, with the query's heatmap over the
//! slide's stored tile embeddings.
//!
//! Layout, lowest first (a file imports only files above it in this list):
//! `thumbs` the thumbnails, `dzi` the Deep Zoom pyramid, `ids` item and slide
//! ids, `snapshot` one commit with its id lookups, `batch` answers concurrent
//! searches in shared passes over the index, `state` the shared
//! model/index/caches and the commit watcher, `params` parses the query string,
//! `listen` the accept loop. The web app is in rooms over them: `app` the
//! handlers' shared state, error type and blocking-pool runner; `host` the Host
//! checks; `auth` the guard, token and login; `assets` the page (`assets/`,
//! `assets/vendor/` OpenSeadragon); `search` `/api/search` and `/api/info`;
//! `items` items and thumbnails; `slides` the slide viewer's routes; `like`
//! "more slides like this" (a slide as the query, through `app::slides_like`); `api`
//! merges the rooms' `routes()` and adds the middleware.

mod api;
mod app;
mod assets;
mod auth;
mod batch;
mod dzi;
mod host;
mod ids;
mod items;
mod like;
mod listen;
mod params;
mod search;
mod slides;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;
mod thumbs;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::embed::Embedder;
use crate::preprocess::DecodeLimits;

/// Resolved settings of `plip serve`.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The index folder.
    pub index_dir: PathBuf,
    /// Address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// Bearer token for `/api/`.
    pub token: Option<String>,
    /// Load HNSW graphs and search them with this breadth.
    pub ef: Option<usize>,
    /// On-disk thumbnail cache folder and byte budget.
    pub thumb_cache: Option<(PathBuf, u64)>,
    /// Memory for cached thumbnails, in bytes.
    pub thumb_mem: usize,
    /// How often the manifest is checked for a new commit.
    pub poll: Duration,
    /// Current directory (printed paths are relative to it).
    pub cwd: PathBuf,
    /// No startup summary.
    pub quiet: bool,
    /// Connection limits (header timeout, connection cap).
    pub limits: Limits,
}

pub(crate) use listen::{default_max_connections, Limits, HEADER_TIMEOUT};
// For the test that `plip serve --help` states these limits.
#[cfg(test)]
pub(crate) use {
    app::MAX_BODY,
    dzi::MAX_TILE_READ,
    listen::{MAX_CONNECTIONS, SHUTDOWN_GRACE, UPLOAD_TIMEOUT},
    params::MAX_TOP,
};

/// Makes `dir` the thumbnail cache's folder, or says why it cannot be (a folder
/// of other files): checked before the model loads, so a wrong `--thumb-cache`
/// fails at once and nothing in it is touched.
pub(crate) fn claim_thumb_cache(dir: &std::path::Path) -> Result<()> {
    thumbs::claim_dir(dir).map_err(anyhow::Error::msg)
}

/// Loads the model and index, listens, and serves until Ctrl-C or SIGTERM.
pub(crate) fn run(s: Settings, embedder: Embedder) -> Result<()> {
    let with_graphs = s.ef.is_some();
    let snap = state::open_checked(&s.index_dir, with_graphs, &embedder)?;
    let loopback = s.addr.ip().is_loopback();
    if !loopback {
        eprintln!(
            "plip: warning: serving on {}, reachable from other machines: anyone who can reach it can \
             search the index and see its images{}",
            s.addr,
            if s.token.is_some() {
                " (with the token)"
            } else {
                "; set --token to require a bearer token"
            }
        );
    }
    let images = snap.index.len();
    let generation = snap.generation;
    let thumbs = thumbs::Thumbs::new(s.thumb_mem, s.thumb_cache.clone(), DecodeLimits::default());
    let state = Arc::new(state::State::new(
        embedder,
        snap,
        thumbs,
        s.ef.unwrap_or(crate::index::ann::DEFAULT_EF_SEARCH),
        s.cwd.clone(),
        s.token.clone(),
        loopback,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = state::watch(
        state.clone(),
        s.index_dir.clone(),
        with_graphs,
        s.poll,
        stop.clone(),
        s.quiet,
    );
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(app::MAX_BLOCKING)
        .thread_name("plip-serve")
        // Timers too: hyper's header timeout, the accept loop's back-off after
        // an accept() error, and the shutdown deadline all sleep.
        .enable_all()
        .build()
        .context("starting the server's threads")?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(s.addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}; is another server using the port? (try --port 0)",
                    s.addr
                )
            })?;
        let local = listener.local_addr()?;
        let shown = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], local.port()))
            }
            _ => local,
        };
        // The first line on stdout is the address, for scripts and tests.
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "plip serve: listening on http://{shown}/")?;
            out.flush()?;
        }
        if !s.quiet {
            eprintln!(
                "plip: serving {images} images (commit {generation}) from {}; Ctrl-C stops",
                s.index_dir.display()
            );
        }
        listen::serve(
            listener,
            api::router(state.clone()),
            s.limits,
            shutdown_signal(),
            shutdown_signal(),
        )
        .await;
        anyhow::Ok(())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    // In-flight blocking work (a long thumbnail) is not waited for.
    rt.shutdown_timeout(Duration::from_secs(2));
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
