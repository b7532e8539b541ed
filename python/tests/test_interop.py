"""Feature files for slide-level pipelines (issue 31): `plip export --format trident`
and `--format clam` read back with h5py, the reader TRIDENT and CLAM use, against
`plip embed SLIDE --jsonl` and `plip search --json`."""

import json
import shutil

import numpy as np
import pytest

from conftest import MODEL, ROOT, plip, plip_json_lines

h5py = pytest.importorskip("h5py")
SLIDES = ROOT / "fixtures" / "slides"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    d = tmp_path_factory.mktemp("interop")
    (d / "s").mkdir()
    for n in ["aperio_rgb.svs", "generic.tiff"]:
        shutil.copy(SLIDES / n, d / "s" / n)
    plip("--model", MODEL, "index", "s", "--index", d / ".plip", "-q", cwd=d)
    return d


def embed_rows(d, slide):
    return plip_json_lines("--model", MODEL, "embed", f"s/{slide}", "--jsonl", cwd=d)


def test_trident_h5_holds_the_embeddings_and_attributes(indexed):
    d = indexed
    plip("--index", d / ".plip", "export", "--format", "trident", "out", cwd=d)
    with h5py.File(d / "out" / "aperio_rgb.h5", "r") as f:
        feats, coords = f["features"], f["coords"]
        assert feats.dtype == np.float32 and coords.dtype == np.int64
        assert coords.shape == (feats.shape[0], 2) and feats.shape[1] == 16
        a = dict(coords.attrs)
        assert a["patch_size"] == 224 and a["patch_size_level0"] == 444
        assert a["level0_magnification"] == 40 and a["target_magnification"] == 20
        assert a["overlap"] == 0 and a["name"] == "aperio_rgb"
        assert (a["level0_width"], a["level0_height"]) == (1280, 960)
        assert feats.attrs["encoder"] == "plip" and feats.attrs["name"] == "aperio_rgb"
        rows = {(r["x"], r["y"]): r["embedding"] for r in embed_rows(d, "aperio_rgb.svs")}
        got = {tuple(c): v for c, v in zip(coords[:].tolist(), feats[:])}
        assert set(got) == set(rows)
        for k, v in got.items():
            np.testing.assert_allclose(v, np.asarray(rows[k], dtype=np.float32), atol=1e-6)
    hits = plip_json_lines("--model", MODEL, "--index", d / ".plip", "search", "x", "-k", "50",
                           "--json", cwd=d)
    want = sorted((h["x"], h["y"]) for h in hits if h["path"].endswith("aperio_rgb.svs"))
    assert sorted(got) == want
    index = (d / "out" / "slides.csv").read_text().splitlines()
    assert index[0] == "slide_id,h5,path,tiles,width,height,mpp"
    assert json.loads((d / "out" / "plip-export.json").read_text())["complete"] is True


def test_clam_h5_files_in_h5_files(indexed):
    d = indexed
    plip("--index", d / ".plip", "export", "--format", "clam", "clam", cwd=d)
    with h5py.File(d / "clam" / "h5_files" / "generic.h5", "r") as f:
        assert f["features"].shape == (f["coords"].shape[0], 16)
        rows = embed_rows(d, "generic.tiff")
        np.testing.assert_allclose(
            f["features"][:], np.asarray([r["embedding"] for r in rows], dtype=np.float32),
            atol=1e-6)
        assert f["coords"][:].tolist() == [[r["x"], r["y"]] for r in rows]
