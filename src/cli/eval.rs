//! `plip eval`: retrieval recall, zero-shot classification, HNSW quality.

use super::*;

pub(super) fn cmd_eval(config: &Config, cmd: EvalCommand) -> Result<i32> {
    use crate::eval::run;
    let source = config.model_source(config.find_index().ok().as_deref());
    let cache_dir = |dir: &Option<PathBuf>, off: bool| {
        if off {
            None
        } else {
            dir.clone().or_else(run::default_cache_dir)
        }
    };
    let mut out = std::io::stdout().lock();
    match cmd {
        EvalCommand::Retrieval(a) => {
            let e = load_embedder(&source, Towers::BOTH)?;
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            run::retrieval(
                &e,
                &mut images,
                &a.pairs,
                &crate::eval::DEFAULT_KS,
                a.json,
                &mut out,
            )?;
        }
        EvalCommand::ZeroShot(a) => {
            let e = load_embedder(&source, Towers::BOTH)?;
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            run::zero_shot(
                &e,
                &mut images,
                &a.dir,
                a.labels.as_deref(),
                &a.templates,
                a.json,
                &mut out,
            )?;
        }
        EvalCommand::Ann(a) => {
            let index = open_index(config)?;
            run::ann(&index, a.queries, a.k.max(1), a.json, &mut out)?;
        }
    }
    Ok(0)
}
