"""PLIP image-text retrieval for histopathology, from Python.

The same engine as the ``plip`` command (a Rust extension, not a second
implementation): embeddings are bit for bit those of ``plip embed``, searches
rank as ``plip search`` does, and ``index`` is ``plip index``, with the same
crash-safe commits.

    import plip_retrieval as pr
    m = pr.Model("vinid/plip")                  # a Hub id or a local folder
    E = m.embed_images(["a.png", "b.jpg"])     # (N, D) float32, unit rows
    T = m.embed_text(["tumor tissue"])
    pr.index("./slides", index=".plip")          # the run's summary, as a dict
    hits = pr.Index(".plip").search("tumor tissue", top=10)

Paths in search results are absolute. Long calls release the GIL, and Ctrl-C
(a notebook's interrupt) stops them after the current batch with
``KeyboardInterrupt``; an interrupted ``index`` has committed what it embedded.
Errors are ``FileNotFoundError`` (a missing image, folder, model folder or
index), ``ValueError`` (a bad argument) or :class:`Error` (anything the engine
refuses: a corrupt or locked index, another model, an undecodable image), with
the messages the command line prints.

PLIP is a research model: its outputs are not medical advice and must not be
used for diagnosis. It was trained on English text only: write queries in
English.
"""

import numbers
import os
import warnings

from . import _native
from ._native import DEFAULT_MODEL, Error

__all__ = ["DEFAULT_MODEL", "Error", "Index", "Model", "index"]
__version__ = _native.__version__

# How many of an index run's warnings are shown through `warnings`; all of them
# are in the returned summary.
_SHOWN_WARNINGS = 20


def _is_path(x):
    return isinstance(x, (str, bytes, os.PathLike))


def _whole(name, x):
    """``x`` as an int, refusing what is not a whole number (``top=1.5`` is an
    error, as ``--top 1.5`` is for the CLI, not a silent 1)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, not {x!r}")
    return int(x)


def _path(x):
    return os.fsdecode(os.fspath(x))


def _to_rgb(x):
    """The pixels of an in-memory image as a C-contiguous (H, W, 3) uint8 array,
    as transformers' CLIPProcessor sees them (its ``convert_to_rgb``): a PIL
    image through ``convert("RGB")``, composited onto white first when it has
    transparency; an array as ``Image.fromarray`` reads it (an (H, W, 3) uint8
    array is RGB as it is)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == 3:
            return np.ascontiguousarray(x)
        try:
            from PIL import Image
        except ImportError:
            raise ValueError(
                f"an array of shape {x.shape} and dtype {x.dtype} needs Pillow "
                "(pip install pillow) to be read as Image.fromarray reads it; "
                "or give an (H, W, 3) uint8 RGB array"
            ) from None
        x = Image.fromarray(x)
    if hasattr(x, "convert") and hasattr(x, "getbands"):
        if "A" in x.getbands() or x.info.get("transparency") is not None:
            from PIL import Image

            rgba = x.convert("RGBA")
            x = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(x.convert("RGB"))
    raise TypeError(
        f"cannot embed a {type(x).__name__}: give a file path, a PIL image "
        "or an (H, W, 3) uint8 array"
    )


class Model:
    """PLIP (or another CLIP checkpoint in the same layout), loaded once.

    ``model`` is a Hugging Face repo id (resolved through the Hugging Face cache,
    honouring HF_HOME and HF_HUB_OFFLINE) or a local model folder, exactly as
    ``plip --model``; ``None`` is ``vinid/plip``. ``precision`` is the image
    tower's arithmetic, as ``plip --precision``: ``"auto"`` (bf16 where this CPU
    runs it faster, measured once and cached; text stays f32), ``"f32"`` or
    ``"bf16"``.
    """

    def __init__(self, model=None, *, precision="auto"):
        if isinstance(model, Model):
            self._native = model._native
        else:
            self._native = _native.Model(None if model is None else _path(model), str(precision))

    @property
    def source(self):
        """The model as named (a folder is made absolute)."""
        return self._native.source

    @property
    def dim(self):
        """Embedding size (512 for PLIP)."""
        return self._native.dim

    def __repr__(self):
        return f"Model({self.source!r}, dim={self.dim})"

    def embed_images(self, images, *, batch_size=16):
        """Unit embeddings of images, an (N, D) float32 array, one row per input.

        Each item is a file path (read and preprocessed as ``plip embed`` does,
        with the same result to the last bit), a PIL image, or an (H, W, 3)
        uint8 RGB array (preprocessed as transformers' CLIPProcessor does with
        that PIL image). One file that cannot be decoded fails the call.
        """
        import numpy as np

        if _is_path(images) or not hasattr(images, "__iter__") or hasattr(images, "shape"):
            raise TypeError("give a list of images (paths, PIL images or arrays)")
        items = list(images)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        files = [i for i, x in enumerate(items) if _is_path(x)]
        if len(files) == len(items):
            return self._native.embed_files([_path(x) for x in items], batch_size)
        if not files:
            return self._native.embed_arrays(items, _to_rgb, batch_size)
        # A mixed list: files and in-memory images are embedded apart, then placed.
        others = [i for i, x in enumerate(items) if not _is_path(x)]
        out = np.empty((len(items), self.dim), dtype=np.float32)
        out[files] = self._native.embed_files([_path(items[i]) for i in files], batch_size)
        out[others] = self._native.embed_arrays([items[i] for i in others], _to_rgb, batch_size)
        return out

    def embed_text(self, texts):
        """Unit embeddings of prompts (English), an (N, D) float32 array."""
        if isinstance(texts, str):
            raise TypeError("give a list of prompts, e.g. embed_text(['tumor tissue'])")
        return self._native.embed_text(list(texts))


def index(
    dirs=None,
    *,
    index=None,
    model=None,
    rebuild=False,
    batch_size=16,
    commit_every=256,
    mpp=None,
    tile=None,
    min_tissue=None,
    slide_mpp=None,
    precision="auto",
    keep_artifacts=None,
    threads=None,
    decode_memory=None,
):
    """Indexes image folders (or files) as ``plip index`` does, and returns the
    summary it prints, as a dict: ``added``, ``updated``, ``removed``,
    ``unchanged``, ``skipped`` (counts), ``embedded``, ``seconds``,
    ``images_per_second``, ``interrupted``, ``index`` (the folder, absolute),
    ``skipped_files`` (``path``, ``reason``) and ``warnings``.

    ``dirs``: a folder, a list of them, or ``None`` to scan every folder indexed
    before. ``index``: the index folder (default: the nearest ``.plip`` upward,
    else ``./.plip``). ``model``: as for :class:`Model` (default: the index's
    own model, else ``vinid/plip``). Work is committed every ``commit_every``
    images or 30 s; Ctrl-C commits what is done and raises KeyboardInterrupt.
    Whole slides are tiled with ``mpp``, ``tile``, ``min_tissue``, ``slide_mpp``
    and ``keep_artifacts`` (the flags of the same names; ``None`` keeps the
    index's). ``precision`` is as for :class:`Model`; the summary's
    ``precision`` says what was chosen and why. ``threads`` runs this call on a
    pool of that many threads (default: all cores); ``decode_memory`` bounds the
    decoded pixels in flight, in MiB (default 1024), as ``--decode-memory``.
    """
    if dirs is None:
        dirs = []
    elif _is_path(dirs):
        dirs = [dirs]
    if isinstance(model, Model):
        model = model.source
    summary = _native.index(
        [_path(d) for d in dirs],
        None if index is None else _path(index),
        None if model is None else _path(model),
        bool(rebuild),
        _whole("batch_size", batch_size),
        _whole("commit_every", commit_every),
        None if mpp is None else float(mpp),
        None if tile is None else _whole("tile", tile),
        None if min_tissue is None else float(min_tissue),
        None if slide_mpp is None else float(slide_mpp),
        str(precision),
        None if keep_artifacts is None else bool(keep_artifacts),
        None if threads is None else _whole("threads", threads),
        None if decode_memory is None else _whole("decode_memory", decode_memory),
    )
    shown = summary["warnings"][:_SHOWN_WARNINGS]
    for w in shown:
        warnings.warn(f"plip: {w}", stacklevel=2)
    if len(summary["warnings"]) > len(shown):
        warnings.warn(
            f"plip: {len(summary['warnings']) - len(shown)} more warnings in the "
            "summary's 'warnings'",
            stacklevel=2,
        )
    return summary


class Index:
    """A committed index, opened for search (a snapshot: :meth:`reload` sees
    later commits).

    ``path``: the index folder (default: the nearest ``.plip`` in the current
    folder or above). ``model``: a :class:`Model`, a repo id or a folder
    (default: the model that built the index, loaded on the first search that
    needs it).
    """

    def __init__(self, path=None, *, model=None):
        self._args = (path, model)
        if not isinstance(model, Model) and model is not None:
            model = _path(model)
        elif isinstance(model, Model):
            model = model._native
        self._ix = _native.NativeIndex(None if path is None else _path(path), model)

    def reload(self):
        """Opens the index's last commit again."""
        self.__init__(self._args[0], model=self._args[1])

    @property
    def dir(self):
        """The index folder."""
        return os.fspath(self._ix.dir)

    @property
    def model(self):
        """The model that queries are embedded with."""
        return self._ix.model

    @property
    def dim(self):
        """Embedding size."""
        return self._ix.dim

    def __len__(self):
        return len(self._ix)

    def __repr__(self):
        return f"Index({self.dir!r}, images={len(self)}, model={self.model!r})"

    def search(
        self,
        query=None,
        *,
        image=None,
        vector=None,
        add=(),
        subtract=(),
        templates=(),
        top=10,
        threshold=None,
        under=None,
        ef=None,
        by_slide=False,
    ):
        """The ``top`` nearest indexed images, best first, as a list of dicts
        with the fields of ``plip search --json``: ``rank`` (from 1), ``score``
        (cosine, rounded to 6 decimals) and ``path`` (absolute).

        ``query``: words (English) or an image file, as ``plip search QUERY``.
        ``image``: an image file, a PIL image or an (H, W, 3) uint8 array.
        ``vector``: a query embedding of length D, e.g. a row of
        :meth:`Model.embed_text`. ``add``/``subtract``: terms as ``--add`` and
        ``--subtract`` take them (``"2:lymphocytes"``, ``"./ref.png"``).
        Every term is normalized, weighted, summed and normalized again.
        ``templates``, ``threshold``, ``under`` and ``ef`` are the flags of the
        same names. A tile of a whole slide also has ``x``, ``y``, ``w``, ``h``
        (level-0 pixels), ``level`` and ``mpp``.

        ``by_slide=True`` ranks whole slides as ``--by-slide`` does: dicts with
        ``rank``, ``score`` (the mean of the slide's best tile scores), ``path``,
        ``tiles`` (how many were scored), ``best`` (the best tile: ``x``, ``y``,
        ``w``, ``h``, ``level``, ``mpp``, ``score``) and ``top_tiles``.
        """
        import numpy as np

        if isinstance(add, str) or isinstance(subtract, str) or isinstance(templates, str):
            raise TypeError("add, subtract and templates take lists of strings")
        vectors = []
        if query is not None and not _is_path(query):
            # An in-memory image as the query.
            if image is not None:
                raise TypeError("give the query image either as query or as image=, not both")
            image, query = query, None
        if image is not None and not _is_path(image):
            handle = self._ix.model_handle()
            vectors.append((1.0, handle.embed_arrays([image], _to_rgb, 1)[0]))
            image = None
        if vector is not None:
            v = np.asarray(vector, dtype=np.float32)
            if v.ndim == 2 and v.shape[0] == 1:
                v = v[0]
            if v.ndim != 1:
                raise ValueError(f"vector must be 1-D (length {self.dim}), not of shape {v.shape}")
            vectors.append((1.0, np.ascontiguousarray(v)))
        if query is None and image is None and not vectors and not add:
            raise ValueError("give a query: text, image=..., vector=... or add=[...]")
        return self._ix.search(
            None if query is None else _path(query),
            None if image is None else _path(image),
            [str(a) for a in add],
            [str(s) for s in subtract],
            [str(t) for t in templates],
            vectors,
            _whole("top", top),
            None if threshold is None else float(threshold),
            None if under is None else _path(under),
            None if ef is None else _whole("ef", ef),
            bool(by_slide),
        )

    def search_slides(
        self,
        slide,
        *,
        top=10,
        score=None,
        include_self=False,
        group_by=None,
        under=None,
        threshold=None,
        details=False,
    ):
        """The slides most like ``slide``, best first, as ``plip search --image
        SLIDE --json`` ranks them (docs/slide-retrieval.md): a list of dicts with
        ``rank``, ``score``, ``path`` (absolute), ``tiles`` (the slide's tiles in
        the index) and ``matches``: its best tile pairs, each ``{"query": {x, y,
        w, h}, "found": {x, y, w, h}, "score"}`` (level-0 pixels of each slide).

        ``slide``: a whole-slide file, or ``"SLIDE@X,Y,W,H"`` for a region of
        one. Its stored tiles are used when the index holds it; otherwise it is
        tiled with the index's tiling and embedded now. ``score``: ``"mean"`` or
        ``"bag"`` (default: mean for a slide, bag for a region). The query slide
        is left out unless ``include_self``; ``group_by``, a CSV ``slide,patient``,
        leaves out the query's patient. ``under`` and ``threshold`` filter as in
        :meth:`search`. ``details=True`` returns ``(slides, info)``, where
        ``info`` says what the CLI says on stderr: ``query_tiles``,
        ``embedded_now``, ``score``, ``mosaic``, ``excluded`` and
        ``unknown_in_groups``.
        """
        import json

        if not _is_path(slide):
            raise TypeError("slide is a path to a whole slide (or 'SLIDE@X,Y,W,H')")
        if score is not None and score not in ("mean", "bag"):
            raise ValueError(f"score is 'mean' or 'bag', not {score!r}")
        lines, info = self._ix.search_slides(
            _path(slide),
            _whole("top", top),
            score,
            bool(include_self),
            None if group_by is None else _path(group_by),
            None if under is None else _path(under),
            None if threshold is None else float(threshold),
        )
        slides = [json.loads(line) for line in lines]
        if info["unknown_in_groups"]:
            n = len(info["unknown_in_groups"])
            warnings.warn(f"{n} slide(s) of group_by are not in the index (ignored)", stacklevel=2)
        return (slides, info) if details else slides
