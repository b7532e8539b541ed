//! `plip eval`: retrieval recall, zero-shot classification, linear probe, HNSW quality;
//! with several `--model`, the same evaluation per model and one comparison table.

use super::*;

use crate::eval::compare;

pub(super) fn cmd_eval(config: &Config, cmd: EvalCommand) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    if let EvalCommand::Ann(a) = &cmd {
        if config.models.len() > 1 {
            bail!("`plip eval ann` measures the index's graph: it takes no --model");
        }
        let index = open_index(config)?;
        crate::eval::run::ann(
            &index,
            a.queries,
            a.k.max(1),
            a.json,
            a.html.as_deref(),
            &mut out,
        )?;
        return Ok(0);
    }
    if matches!(
        cmd,
        EvalCommand::SlideRetrieval(_) | EvalCommand::SlideZeroShot(_)
    ) {
        if config.models.len() > 1 {
            bail!(
                "the slide evals read the index's tile embeddings, made by one model; to \
                 compare models, build one index per model (--index) and run each"
            );
        }
        return slide_eval(config, cmd, &mut out);
    }
    let (json, html) = match &cmd {
        EvalCommand::Retrieval(a) => (a.json, a.html.as_deref()),
        EvalCommand::ZeroShot(a) => (a.json, a.html.as_deref()),
        EvalCommand::LinearProbe(a) => (a.json, a.html.as_deref()),
        _ => unreachable!("handled above"),
    };
    if config.models.len() <= 1 {
        let source = config.model_source(config.find_index().ok().as_deref());
        run_one(config, &cmd, &source, json, html, &mut out)?;
        return Ok(0);
    }
    // Several models: each one's --json report, then one table. The embedding
    // cache is per model, so adding a model embeds only for that model.
    let mut columns = Vec::new();
    for source in &config.models {
        let mut buf = Vec::new();
        let family = run_one(config, &cmd, source, true, None, &mut buf)?;
        let report = serde_json::from_slice(&buf)
            .with_context(|| format!("reading the report of model `{source}`"))?;
        columns.push(compare::Column {
            model: source.clone(),
            family,
            report,
        });
    }
    let name = cmd_name(&cmd);
    if json {
        serde_json::to_writer_pretty(&mut out, &compare::to_json(name, &columns))?;
        writeln!(out)?;
    } else {
        compare::print_table(&mut out, name, &columns)?;
    }
    if let Some(page) = html {
        compare::write_html(page, name, &columns)?;
    }
    Ok(0)
}

fn cmd_name(cmd: &EvalCommand) -> &'static str {
    match cmd {
        EvalCommand::Retrieval(_) => "retrieval",
        EvalCommand::ZeroShot(_) => "zero-shot",
        EvalCommand::LinearProbe(_) => "linear-probe",
        EvalCommand::Ann(_) => "ann",
        EvalCommand::SlideRetrieval(_) => "slide-retrieval",
        EvalCommand::SlideZeroShot(_) => "slide-zero-shot",
    }
}

/// Runs `cmd` (not `ann`) with the model `source`, writing its report to `out`;
/// returns the model's family.
fn run_one(
    config: &Config,
    cmd: &EvalCommand,
    source: &str,
    json: bool,
    html: Option<&Path>,
    out: &mut impl Write,
) -> Result<&'static str> {
    use crate::eval::run;
    let cache_dir = |dir: &Option<PathBuf>, off: bool| {
        if off {
            None
        } else {
            dir.clone().or_else(run::default_cache_dir)
        }
    };
    let towers = match cmd {
        EvalCommand::LinearProbe(_) => Towers::VISION,
        _ => Towers::BOTH,
    };
    let e = load_embedder(config, source, towers)?;
    match cmd {
        EvalCommand::Retrieval(a) => {
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            run::retrieval(
                &e,
                &mut images,
                &a.pairs,
                &crate::eval::DEFAULT_KS,
                json,
                html,
                out,
            )?;
        }
        EvalCommand::ZeroShot(a) => {
            let mut images = run::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            let templates =
                crate::eval::prompts::resolve_templates(&a.template_sets, &a.templates)?;
            run::zero_shot(
                &e,
                &mut images,
                &a.dir,
                a.labels.as_deref(),
                &templates,
                json,
                html,
                out,
            )?;
        }
        EvalCommand::LinearProbe(a) => {
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
                    json,
                    html,
                },
                out,
            )?;
        }
        EvalCommand::Ann(_) | EvalCommand::SlideRetrieval(_) | EvalCommand::SlideZeroShot(_) => {
            unreachable!("run on the index")
        }
    }
    Ok(e.info().family.name())
}

/// `plip eval slide-retrieval` and `slide-zero-shot`: over the index's tile embeddings.
fn slide_eval(config: &Config, cmd: EvalCommand, out: &mut impl Write) -> Result<i32> {
    let index = open_index(config)?;
    match cmd {
        EvalCommand::SlideRetrieval(a) => {
            use crate::eval::slides::command;
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
                out,
            )?;
        }
        EvalCommand::SlideZeroShot(a) => {
            use crate::eval::slides::zero_shot;
            let templates =
                crate::eval::prompts::resolve_templates(&a.template_sets, &a.templates)?;
            let source = config.model_source(Some(index.dir()));
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
                out,
            )?;
        }
        _ => unreachable!("only the slide evals"),
    }
    Ok(0)
}
