//! `plip eval`: retrieval recall, zero-shot classification, linear probe, HNSW quality.

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
            let e = load_embedder(config, &source, Towers::BOTH)?;
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            run::retrieval(
                &e,
                &mut images,
                &a.pairs,
                &crate::eval::DEFAULT_KS,
                a.json,
                a.html.as_deref(),
                &mut out,
            )?;
        }
        EvalCommand::ZeroShot(a) => {
            let e = load_embedder(config, &source, Towers::BOTH)?;
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            let templates =
                crate::eval::prompts::resolve_templates(&a.template_sets, &a.templates)?;
            run::zero_shot(
                &e,
                &mut images,
                &a.dir,
                a.labels.as_deref(),
                &templates,
                a.json,
                a.html.as_deref(),
                &mut out,
            )?;
        }
        EvalCommand::LinearProbe(a) => {
            let e = load_embedder(config, &source, Towers::VISION)?;
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            let alphas = if a.alphas.is_empty() {
                crate::eval::probe::DEFAULT_ALPHAS.to_vec()
            } else {
                a.alphas.clone()
            };
            crate::eval::probe::command::linear_probe(
                &e,
                &mut images,
                &crate::eval::probe::command::Options {
                    data: &a.data,
                    test: a.test.as_deref(),
                    alphas: &alphas,
                    seed: a.seed,
                    json: a.json,
                    html: a.html.as_deref(),
                },
                &mut out,
            )?;
        }
        EvalCommand::Ann(a) => {
            let index = open_index(config)?;
            run::ann(
                &index,
                a.queries,
                a.k.max(1),
                a.json,
                a.html.as_deref(),
                &mut out,
            )?;
        }
        EvalCommand::SlideRetrieval(a) => {
            use crate::eval::slides::command;
            let index = open_index(config)?;
            command::slide_retrieval(
                &index,
                &command::RetrievalOptions {
                    labels: &absolute(&config.cwd, &a.labels),
                    score: a
                        .slide_score
                        .unwrap_or(crate::query::slide_match::SlideScore::Mean),
                    json: a.json,
                    html: a.html.as_deref(),
                },
                &mut out,
            )?;
        }
        EvalCommand::SlideZeroShot(a) => {
            use crate::eval::slides::zero_shot;
            let templates =
                crate::eval::prompts::resolve_templates(&a.template_sets, &a.templates)?;
            let index = open_index(config)?;
            let e = load_embedder(config, &source, Towers::TEXT)?;
            zero_shot::slide_zero_shot(
                &index,
                &e,
                &zero_shot::ZeroShotOptions {
                    labels: &absolute(&config.cwd, &a.labels),
                    classes: a.classes.as_deref(),
                    templates: &templates,
                    top_k: a.top_k,
                    json: a.json,
                },
                &mut out,
            )?;
        }
    }
    Ok(0)
}
