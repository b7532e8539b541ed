//! `plip_retrieval._native`: the Python extension over plip's library, with no
//! engine of its own.
//!
//! Every call goes to the same public functions the `plip` binary uses
//! (`plip::embed_image_files`, `plip::index_folders`, `plip::search`, ...), so a
//! vector from Python is the vector the CLI computes. The pure-Python package
//! (`plip_retrieval/__init__.py`) shapes arguments and results; this file
//! guarantees three things at the boundary:
//!
//! * **The GIL is released** while the engine works: the work runs on a worker
//!   thread and the calling thread waits without the GIL, taking it back every
//!   50 ms only to run Python's signal handlers.
//! * **Ctrl-C interrupts** a long call: a `KeyboardInterrupt` raised by those
//!   handlers sets the engine's cancel flag, the worker stops after its current
//!   batch (an index commits what it embedded, as `plip index` does on Ctrl-C),
//!   and the exception is re-raised once the worker has finished.
//! * **No panic crosses into Python**: the worker's panics are caught and become
//!   `plip_retrieval.Error`. Engine errors become `FileNotFoundError` (a missing
//!   file, folder, model folder or index) or `plip_retrieval.Error`, with the
//!   CLI's message.
//!
//! Arrays leave Rust without a copy: each result is one row-major `Vec<f32>`
//! that NumPy takes ownership of.

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray3, PyUntypedArrayMethods};
use plip::{Embedder, Index, StoreError, Towers};
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

pyo3::create_exception!(
    plip_retrieval,
    Error,
    PyException,
    "An error of plip's engine (a corrupt or locked index, a model that cannot be \
     loaded, an image that cannot be decoded), with the message the `plip` command \
     prints."
);

/// How often a waiting call takes the GIL back to check for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Turns an engine error into the Python exception a caller can catch.
fn to_pyerr(err: anyhow::Error) -> PyErr {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<PyErr>() {
            // Raised by Python code the engine called back (an image conversion).
            return Python::attach(|py| e.clone_ref(py));
        }
        if let Some(StoreError::NoIndex(_)) = cause.downcast_ref::<StoreError>() {
            return PyFileNotFoundError::new_err(format!("{err:#}"));
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            if e.kind() == std::io::ErrorKind::NotFound {
                return PyFileNotFoundError::new_err(format!("{err:#}"));
            }
            if e.kind() == std::io::ErrorKind::InvalidInput {
                return PyValueError::new_err(format!("{err:#}"));
            }
        }
    }
    Error::new_err(format!("{err:#}"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `work` on a worker thread without the GIL, polling for signals; see the
/// module docs. `work` gets the cancel flag that a `KeyboardInterrupt` sets.
fn run_blocking<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&AtomicBool) -> anyhow::Result<T> + Send,
{
    let cancel = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|s| {
        let cancel = &cancel;
        s.spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| work(cancel)));
            let _ = tx.send(outcome);
        });
        // A Receiver is not Sync; the lock lets the GIL-free closure borrow it.
        let rx = Mutex::new(rx);
        let mut signal: Option<PyErr> = None;
        let outcome = loop {
            match py.detach(|| {
                rx.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .recv_timeout(SIGNAL_POLL)
            }) {
                Ok(outcome) => break outcome,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if signal.is_none() {
                        if let Err(e) = py.check_signals() {
                            cancel.store(true, Ordering::SeqCst);
                            signal = Some(e);
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::new_err("internal error: the worker thread vanished"))
                }
            }
        };
        match outcome {
            Err(payload) => Err(Error::new_err(format!(
                "internal error (a bug in plip; please report it): {}",
                panic_message(payload.as_ref())
            ))),
            // The interrupt wins over what the cancelled work returned.
            Ok(_) if signal.is_some() => Err(signal.expect("checked")),
            Ok(result) => result.map_err(to_pyerr),
        }
    })
}

/// A row-major buffer of `rows x dim` values as a NumPy array, without a copy.
fn matrix(py: Python<'_>, flat: Vec<f32>, dim: usize) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let rows = flat.len().checked_div(dim).unwrap_or(0);
    let a = Array2::from_shape_vec((rows, dim), flat)
        .map_err(|e| Error::new_err(format!("internal error: {e}")))?;
    Ok(a.into_pyarray(py))
}

/// A model loaded with both towers, shared by every call that uses it.
#[pyclass(frozen, module = "plip_retrieval._native")]
struct Model {
    source: String,
    embedder: Arc<Embedder>,
}

#[pymethods]
impl Model {
    /// Loads `source` (a Hub id or a folder; `None` is plip's default model) in
    /// `precision` (`auto`, `f32` or `bf16`, as `--precision`).
    #[new]
    #[pyo3(signature = (source=None, precision="auto"))]
    fn new(py: Python<'_>, source: Option<String>, precision: &str) -> PyResult<Self> {
        let choice = parse_precision(precision)?;
        let source = plip::model_source(source.as_deref(), None);
        let embedder = {
            let source = source.clone();
            run_blocking(py, move |_| {
                plip::load_model_with(&source, Towers::BOTH, choice)
            })?
        };
        Ok(Model {
            source,
            embedder: Arc::new(embedder),
        })
    }

    /// The model as named (a folder is made absolute).
    #[getter]
    fn source(&self) -> String {
        self.embedder.info().source.clone()
    }

    /// Embedding size.
    #[getter]
    fn dim(&self) -> usize {
        self.embedder.dim()
    }

    /// Hash of the model's files, as recorded in an index.
    #[getter]
    fn fingerprint(&self) -> String {
        self.embedder.info().fingerprint.clone()
    }

    fn __repr__(&self) -> String {
        format!("Model({:?}, dim={})", self.source, self.embedder.dim())
    }

    /// Unit embeddings of image files, (N, D) float32, as `plip embed` computes them.
    fn embed_files<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        for p in &paths {
            if !p.is_file() {
                return Err(PyFileNotFoundError::new_err(format!(
                    "{} is not a file",
                    p.display()
                )));
            }
            if plip::is_slide(p) {
                // `plip embed` gives one row per tissue tile of a slide; rows here
                // must line up with inputs.
                return Err(PyValueError::new_err(format!(
                    "{} is a whole slide, not one image; index it with plip_retrieval.index \
                     and search its tiles, or get its tile embeddings with `plip embed`",
                    p.display()
                )));
            }
        }
        let e = self.embedder.clone();
        let flat = run_blocking(py, move |cancel| {
            plip::embed_image_files(&e, &paths, batch_size, cancel)
        })?;
        matrix(py, flat, self.embedder.dim())
    }

    /// Unit embeddings of in-memory images, (N, D) float32. `to_rgb(item)` must
    /// return a C-contiguous (H, W, 3) uint8 array; it is called one batch at a
    /// time, so only one batch of pixels is copied into Rust at once.
    fn embed_arrays<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Py<PyAny>>,
        to_rgb: Py<PyAny>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let e = self.embedder.clone();
        let count = items.len();
        let flat = run_blocking(py, move |cancel| {
            plip::embed_rgb_images(&e, count, batch_size, cancel, |range| {
                Python::attach(|py| {
                    range
                        .map(|i| rgb_image(to_rgb.bind(py), items[i].bind(py), i))
                        .collect::<PyResult<Vec<_>>>()
                })
                .map_err(anyhow::Error::from)
            })
        })?;
        matrix(py, flat, self.embedder.dim())
    }

    /// Unit embeddings of prompts, (N, D) float32.
    fn embed_text<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(PyValueError::new_err(format!(
                "text number {} is empty",
                i + 1
            )));
        }
        let e = self.embedder.clone();
        let rows = run_blocking(py, move |_| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            e.embed_texts(&refs)
        })?;
        matrix(py, rows.concat(), self.embedder.dim())
    }
}

/// Input `i`, converted by `to_rgb`, as an `RgbImage`.
fn rgb_image(
    to_rgb: &Bound<'_, PyAny>,
    item: &Bound<'_, PyAny>,
    i: usize,
) -> PyResult<image::RgbImage> {
    let converted = to_rgb.call1((item,))?;
    let a: PyReadonlyArray3<u8> = converted.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "image number {}: not an (H, W, 3) uint8 array",
            i + 1
        ))
    })?;
    let (h, w, c) = (a.shape()[0], a.shape()[1], a.shape()[2]);
    if c != 3 || h == 0 || w == 0 {
        return Err(PyValueError::new_err(format!(
            "image number {}: shape ({h}, {w}, {c}); give an (H, W, 3) RGB array with H, W > 0",
            i + 1
        )));
    }
    let too_big = || PyValueError::new_err(format!("image number {}: too large", i + 1));
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| too_big())?,
        u32::try_from(h).map_err(|_| too_big())?,
    );
    let data = match a.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => a.as_array().iter().copied().collect(),
    };
    image::RgbImage::from_raw(w32, h32, data).ok_or_else(too_big)
}

/// Indexes folders as `plip index` does; returns the summary as a dict.
#[pyfunction]
#[pyo3(signature = (dirs, index=None, model=None, rebuild=false, batch_size=16,
    commit_every=256, mpp=None, tile=None, min_tissue=None, slide_mpp=None,
    precision="auto", keep_artifacts=None, threads=None, decode_memory=None))]
#[allow(clippy::too_many_arguments)]
fn index<'py>(
    py: Python<'py>,
    dirs: Vec<PathBuf>,
    index: Option<PathBuf>,
    model: Option<String>,
    rebuild: bool,
    batch_size: usize,
    commit_every: usize,
    mpp: Option<f64>,
    tile: Option<u32>,
    min_tissue: Option<f64>,
    slide_mpp: Option<f64>,
    precision: &str,
    keep_artifacts: Option<bool>,
    threads: Option<usize>,
    decode_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let precision = parse_precision(precision)?;
    let req = plip::IndexRequest {
        dirs,
        index,
        model,
        rebuild,
        batch_size,
        commit_every,
        mpp,
        tile,
        min_tissue,
        slide_mpp,
        precision,
        keep_artifacts,
        threads,
        decode_memory,
    };
    let cancel_seen = Arc::new(Mutex::new(None));
    let report = {
        let cancel_seen = cancel_seen.clone();
        run_blocking(py, move |cancel| {
            let report = plip::index_folders(&req, cancel)?;
            *cancel_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
            Ok(report)
        })
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Interrupted: the run committed; say how far it got before re-raising.
            if let Some(r) = cancel_seen.lock().unwrap_or_else(|e| e.into_inner()).take() {
                eprintln!(
                    "plip: interrupted after {} added, {} updated; committed to {} \
                     (run again to continue)",
                    r.added,
                    r.updated,
                    r.index.display()
                );
            }
            return Err(e);
        }
    };
    let d = PyDict::new(py);
    d.set_item("index", report.index.as_os_str())?;
    d.set_item("added", report.added)?;
    d.set_item("updated", report.updated)?;
    d.set_item("removed", report.removed)?;
    d.set_item("unchanged", report.unchanged)?;
    d.set_item("skipped", report.skipped.len())?;
    d.set_item("embedded", report.embedded)?;
    let secs = report.elapsed.as_secs_f64();
    d.set_item("seconds", secs)?;
    d.set_item("images_per_second", report.embedded as f64 / secs.max(1e-9))?;
    d.set_item("interrupted", report.interrupted)?;
    let skipped = PyList::empty(py);
    for s in &report.skipped {
        let row = PyDict::new(py);
        row.set_item("path", &s.path)?;
        row.set_item("reason", &s.reason)?;
        skipped.append(row)?;
    }
    d.set_item("skipped_files", skipped)?;
    d.set_item("warnings", report.warnings)?;
    d.set_item("precision", report.precision)?;
    Ok(d)
}

/// `auto`, `f32` or `bf16`, as `--precision` takes it.
fn parse_precision(s: &str) -> PyResult<plip::PrecisionChoice> {
    s.parse().map_err(PyValueError::new_err)
}

/// A committed index, opened for search, with the model that built it loaded
/// on first use.
#[pyclass(frozen, module = "plip_retrieval._native")]
struct NativeIndex {
    dir: PathBuf,
    model_source: String,
    exact: Arc<Index>,
    with_graphs: Mutex<Option<Arc<Index>>>,
    embedder: Mutex<Option<Arc<Embedder>>>,
}

#[pymethods]
impl NativeIndex {
    /// Opens the index at `path` (`None`: the nearest `.plip` upward). `model`
    /// overrides the recorded model; a `Model` is used as it is.
    #[new]
    #[pyo3(signature = (path=None, model=None))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        model: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (model_name, given): (Option<String>, Option<Arc<Embedder>>) = match model {
            None => (None, None),
            Some(m) => match m.cast::<Model>() {
                Ok(m) => (None, Some(m.get().embedder.clone())),
                Err(_) => (Some(m.extract::<PathBuf>()?.display().to_string()), None),
            },
        };
        let (dir, exact) = run_blocking(py, move |_| {
            let dir = plip::find_index(path.as_deref())?;
            let index = Index::open(&dir)?;
            Ok((dir, index))
        })?;
        let model_source = match &given {
            Some(e) => e.info().source.clone(),
            None => plip::model_source(model_name.as_deref(), Some(&dir)),
        };
        Ok(NativeIndex {
            dir,
            model_source,
            exact: Arc::new(exact),
            with_graphs: Mutex::new(None),
            embedder: Mutex::new(given),
        })
    }

    /// The index folder.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The model searches embed queries with.
    #[getter]
    fn model(&self) -> String {
        self.model_source.clone()
    }

    /// The model that built the index, as recorded.
    #[getter]
    fn index_model(&self) -> String {
        self.exact.model().source.clone()
    }

    /// Embedding size.
    #[getter]
    fn dim(&self) -> usize {
        self.exact.model().dim
    }

    fn __len__(&self) -> usize {
        self.exact.len()
    }

    /// The query model (loaded now if no search has loaded it), checked
    /// against the index.
    fn model_handle(&self, py: Python<'_>) -> PyResult<Model> {
        let cached = self
            .embedder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let embedder = match cached {
            Some(e) => e,
            None => {
                let source = self.model_source.clone();
                let e = run_blocking(py, move |_| plip::load_model(&source, Towers::BOTH))?;
                let e = Arc::new(e);
                *self.embedder.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                e
            }
        };
        let index = self.exact.clone();
        let e = embedder.clone();
        run_blocking(py, move |_| Ok(plip::check_model(&index, &e)?))?;
        Ok(Model {
            source: embedder.info().source.clone(),
            embedder,
        })
    }

    /// Searches as `plip search` does. `query`: text or an image file;
    /// `vectors`: (weight, vector) pairs. Returns dicts with the fields of
    /// `plip search --json` (or `--by-slide --json`), paths absolute.
    #[pyo3(signature = (query, image, add, subtract, templates, vectors, top, threshold, under, ef, by_slide))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: Option<String>,
        image: Option<PathBuf>,
        add: Vec<String>,
        subtract: Vec<String>,
        templates: Vec<String>,
        vectors: Vec<(f32, PyReadonlyArray1<'py, f32>)>,
        top: usize,
        threshold: Option<f32>,
        under: Option<PathBuf>,
        ef: Option<usize>,
        by_slide: bool,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let vectors = vectors
            .iter()
            .map(|(w, v)| (*w, v.as_array().to_vec()))
            .collect();
        let req = plip::SearchRequest {
            query,
            image,
            add,
            subtract,
            templates,
            vectors,
            top,
            ef,
            threshold,
            under,
            by_slide,
        };
        // Bad numbers and terms are refused before a model or a graph is loaded.
        req.validate(self.dim()).map_err(to_pyerr)?;
        let terms = req.terms().map_err(to_pyerr)?;
        let exact = self.exact.clone();
        let graphs = ef.is_some();
        let cached_graphs = self
            .with_graphs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cached_model = self
            .embedder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let source = self.model_source.clone();
        let dir = self.dir.clone();
        let (found, loaded_graphs, loaded_model) = run_blocking(py, move |_| {
            let index = match (graphs, cached_graphs) {
                (false, _) => exact,
                (true, Some(g)) => g,
                (true, None) => Arc::new(Index::open_with_graphs(&dir)?),
            };
            let embedder = match (terms.terms.is_empty(), cached_model) {
                (true, m) => m,
                (false, Some(m)) => Some(m),
                (false, None) => Some(Arc::new(plip::load_model(&source, Towers::BOTH)?)),
            };
            let found = plip::search(&index, embedder.as_deref(), &terms, &req)?;
            Ok((found, graphs.then_some(index), embedder))
        })?;
        if let Some(g) = loaded_graphs {
            *self.with_graphs.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
        }
        if let Some(m) = loaded_model {
            *self.embedder.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        }
        into_dicts(py, found)
    }

    /// Ranks the index's slides against a slide (or `SLIDE@X,Y,W,H`) as `plip search
    /// --image SLIDE` does. Returns (slides as `--json` lines with absolute paths, a
    /// dict of what the CLI says on stderr: query tiles, score, mosaic, left out).
    #[pyo3(signature = (image, top, score, include_self, group_by, under, threshold))]
    #[allow(clippy::too_many_arguments)]
    fn search_slides<'py>(
        &self,
        py: Python<'py>,
        image: PathBuf,
        top: usize,
        score: Option<String>,
        include_self: bool,
        group_by: Option<PathBuf>,
        under: Option<PathBuf>,
        threshold: Option<f32>,
    ) -> PyResult<(Vec<String>, Bound<'py, PyDict>)> {
        let req = plip::SlideSearchRequest {
            image,
            top,
            score,
            include_self,
            group_by,
            under,
            threshold,
        };
        let index = self.exact.clone();
        let cached = self
            .embedder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let source = self.model_source.clone();
        let report = run_blocking(py, move |_| {
            let f32 = plip::PrecisionChoice::Fixed(plip::Precision::F32);
            plip::search_slides(&index, cached.as_deref(), &source, f32, &req)
        })?;
        let info = PyDict::new(py);
        info.set_item("query_tiles", report.query_tiles)?;
        info.set_item("embedded_now", report.embedded_now)?;
        info.set_item("score", report.score)?;
        info.set_item("mosaic", report.mosaic)?;
        let excluded: Vec<&std::ffi::OsStr> =
            report.excluded.iter().map(|p| p.as_os_str()).collect();
        info.set_item("excluded", excluded)?;
        info.set_item("unknown_in_groups", report.unknown_in_groups)?;
        Ok((report.slides, info))
    }
}

fn set_region(d: &Bound<'_, PyDict>, r: &plip::Region) -> PyResult<()> {
    d.set_item("x", r.x)?;
    d.set_item("y", r.y)?;
    d.set_item("w", r.w)?;
    d.set_item("h", r.h)?;
    d.set_item("level", r.level)?;
    d.set_item("mpp", r.mpp)
}

/// The dicts of `plip search --json`: rank, score, path, and a tile's region; or
/// for slides rank, score, path, tiles and the best tiles.
fn into_dicts(py: Python<'_>, found: plip::Found) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let mut out = Vec::new();
    match found {
        plip::Found::Items(hits) => {
            for h in hits {
                let d = PyDict::new(py);
                d.set_item("rank", h.rank)?;
                d.set_item("score", h.score)?;
                d.set_item("path", h.path.as_os_str())?;
                if let Some(r) = &h.region {
                    set_region(&d, r)?;
                }
                out.push(d);
            }
        }
        plip::Found::Slides { slides, .. } => {
            for s in slides {
                let d = PyDict::new(py);
                d.set_item("rank", s.rank)?;
                d.set_item("score", s.score)?;
                d.set_item("path", s.path.as_os_str())?;
                d.set_item("tiles", s.tiles)?;
                let mut tiles = Vec::new();
                for (r, score) in &s.best {
                    let t = PyDict::new(py);
                    set_region(&t, r)?;
                    t.set_item("score", score)?;
                    tiles.push(t);
                }
                if let Some(first) = tiles.first() {
                    d.set_item("best", first)?;
                }
                d.set_item("top_tiles", tiles)?;
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Runs the `plip` command line on `argv` (program name first) in this process
/// and returns its exit code. Only for the `plip` console script: indexing
/// installs its own Ctrl-C handler, as the binary does.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(move || {
        catch_unwind(AssertUnwindSafe(|| plip::main_with_args(argv))).unwrap_or_else(|p| {
            eprintln!(
                "plip: internal error (a bug; please report it): {}",
                panic_message(p.as_ref())
            );
            101
        })
    })
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    plip::tune_allocator();
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("DEFAULT_MODEL", plip::DEFAULT_MODEL)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Model>()?;
    m.add_class::<NativeIndex>()?;
    m.add_function(wrap_pyfunction!(index, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    Ok(())
}
