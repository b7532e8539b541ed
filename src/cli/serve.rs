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
request is at fault.

Limits, each a 4xx error that names it: a search takes at most 32 terms (q, add, sub,
like) and 32 templates, and at most 64 text-model runs (text terms times templates);
top is at most 1000. Uploads over 64 MB get 413, and an upload must arrive within
120 s. A Deep Zoom tile may read at most 268435456 stored slide pixels (16384 x
16384); coarse levels of a slide without a pyramid come from one box-averaged
overview per slide, made once. A client has --header-timeout seconds to send a
request's headers (and an idle connection to send its next one); at most
--max-connections connections are open at once, more wait. Ctrl-C or SIGTERM stops
the server: open requests get 3 s to finish, then it exits (a second Ctrl-C: at once).

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
    /// ~/.cache/plip/thumbs]. The cache owns it: a new or empty folder (marked
    /// with a .plip-thumb-cache file); a folder of other files is refused. Only
    /// the cache's own <16 hex digits>.jpg files are ever deleted.
    #[arg(long, value_name = "DIR")]
    thumb_cache: Option<PathBuf>,
    /// Largest size of the on-disk thumbnail cache, in MB (its oldest thumbnails
    /// go first).
    #[arg(long, value_name = "MB", default_value_t = 512)]
    thumb_cache_mb: u64,
    /// Keep thumbnails in memory only.
    #[arg(long, conflicts_with = "thumb_cache")]
    no_thumb_cache: bool,
    /// Seconds a client has to send a request's headers, and an idle kept-alive
    /// connection to send its next request; then it is closed.
    #[arg(long, value_name = "SECS", default_value_t = crate::serve::HEADER_TIMEOUT.as_secs_f64(), value_parser = parse_header_timeout)]
    header_timeout: f64,
    /// Connections open at once; more wait until one closes [default: half the
    /// open-file limit (`ulimit -n`), at most 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: Option<u32>,
}

fn parse_header_timeout(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0.1 to 3600")),
    }
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
    let thumb_cache = if args.no_thumb_cache {
        None
    } else {
        let dir = args
            .thumb_cache
            .map(|d| absolute(&config.cwd, &d))
            .or_else(default_thumb_cache);
        if let Some(d) = &dir {
            crate::serve::claim_thumb_cache(d)?;
        }
        dir.map(|d| (d, args.thumb_cache_mb.saturating_mul(1 << 20)))
    };
    let source = config.model_source(Some(&index_dir));
    let embedder = load_embedder(
        config,
        &source,
        Towers {
            text: true,
            vision: true,
        },
    )?;
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
        limits: crate::serve::Limits {
            header_timeout: Duration::from_secs_f64(args.header_timeout),
            max_connections: args
                .max_connections
                .map_or_else(crate::serve::default_max_connections, |n| n as usize),
        },
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The limits `plip serve --help` states are the ones the server applies.
    #[test]
    fn serve_help_states_the_limits_the_server_applies() {
        let mut cli = super::super::Cli::command();
        let help = cli
            .find_subcommand_mut("serve")
            .expect("serve is a command")
            .render_long_help()
            .to_string();
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            format!("at most {} terms", crate::query::MAX_TERMS),
            format!("{} templates", crate::query::MAX_TERMS),
            format!("at most {} text-model runs", crate::query::MAX_PROMPTS),
            format!("top is at most {}", crate::serve::MAX_TOP),
            format!("Uploads over {} MB", crate::serve::MAX_BODY >> 20),
            format!("within {} s", crate::serve::UPLOAD_TIMEOUT.as_secs()),
            format!(
                "at most {} stored slide pixels",
                crate::serve::MAX_TILE_READ
            ),
            format!("get {} s to finish", crate::serve::SHUTDOWN_GRACE.as_secs()),
            format!("at most {}]", crate::serve::MAX_CONNECTIONS),
            format!("[default: {}]", crate::serve::HEADER_TIMEOUT.as_secs()),
        ] {
            assert!(
                flat.contains(&needle),
                "`plip serve --help` lacks {needle:?}:\n{help}"
            );
        }
    }
}
