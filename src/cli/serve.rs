//! `plip serve`: flags resolved into `serve::Settings`, the model loaded, then
//! the server runs until Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;

/// Flags of `plip serve`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
The page: type to search (results follow as you type), drop an image or pick one to
search by it, click a result for more like it, and add or subtract weighted terms.
The address bar carries the query (/?q=tumor&add=2:lymphocytes&top=20), so a search
can be bookmarked or shared.

The JSON API, which the page uses:
  GET  /api/search?q=TEXT&top=N         {\"hits\":[{\"rank\",\"score\",\"path\",\"id\",\"thumb\",\"kind\",\"region\"}]}
       more terms: add=[W:]TEXT, sub=[W:]TEXT, like=[W:]ID (a hit's id), template=T;
       filters: under=FOLDER (relative to the folder holding the index), threshold=S
  POST /api/search?top=N                the body is an image file; searches by it
  GET  /api/thumb/ID                    a JPEG thumbnail
  GET  /api/info                        images, commit, model, folders
Errors are JSON {\"error\": MESSAGE, \"status\": CODE} with a 4xx code when the
request is at fault. Uploads over 64 MB get 413.

The server picks up what `plip index` commits while it runs; no restart is needed.
It listens on 127.0.0.1 only, unless --host says otherwise. PLIP is a research model:
its results are not medical advice. Queries must be in English.

Examples:
  plip serve                              then open http://127.0.0.1:8080/
  plip serve --port 0                     any free port (printed on stdout)
  plip serve --host 0.0.0.0 --token \"$(openssl rand -hex 16)\"")]
pub(super) struct ServeArgs {
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on. Anything but loopback lets other machines in.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Require this bearer token on the API (`Authorization: Bearer TOKEN`;
    /// the page asks for it once and keeps it in a cookie).
    #[arg(long, env = "PLIP_SERVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Search approximately with the index's HNSW graphs, with this breadth
    /// (see `plip search --help`). By default every image is scored exactly,
    /// as `plip search` does.
    #[arg(long)]
    ef: Option<usize>,
    /// Folder for cached thumbnails [default: $XDG_CACHE_HOME/plip/thumbs or
    /// ~/.cache/plip/thumbs].
    #[arg(long, value_name = "DIR")]
    thumb_cache: Option<PathBuf>,
    /// Largest size of the on-disk thumbnail cache, in MB (oldest go first).
    #[arg(long, value_name = "MB", default_value_t = 512)]
    thumb_cache_mb: u64,
    /// Keep thumbnails in memory only.
    #[arg(long, conflicts_with = "thumb_cache")]
    no_thumb_cache: bool,
}

pub(super) fn cmd_serve(config: &Config, args: ServeArgs) -> Result<i32> {
    if let Some(t) = &args.token {
        if t.len() < 8
            || !t
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        {
            bail!(
                "--token must be at least 8 printable ASCII characters without spaces, `;` or `,`"
            );
        }
    }
    let index_dir = config.find_index()?;
    crate::index::recorded_model(&index_dir)?;
    let source = config.model_source(Some(&index_dir));
    let embedder = load_embedder(
        config,
        &source,
        Towers {
            text: true,
            vision: true,
        },
    )?;
    let thumb_cache = if args.no_thumb_cache {
        None
    } else {
        let dir = args
            .thumb_cache
            .map(|d| absolute(&config.cwd, &d))
            .or_else(default_thumb_cache);
        dir.map(|d| (d, args.thumb_cache_mb.saturating_mul(1 << 20)))
    };
    let settings = crate::serve::Settings {
        index_dir,
        addr: SocketAddr::new(args.host, args.port),
        token: args.token,
        ef: args.ef,
        thumb_cache,
        thumb_mem: 64 << 20,
        poll: Duration::from_millis(250),
        cwd: config.cwd.clone(),
        quiet: config.quiet,
    };
    crate::serve::run(settings, embedder)?;
    Ok(0)
}

fn default_thumb_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("plip").join("thumbs"))
}
