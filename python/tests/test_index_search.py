"""pr.index and Index.search against `plip index` / `plip search --json`."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import plip_retrieval as pr
from conftest import IMAGES, MODEL, ROOT, plip_json_lines


@pytest.fixture()
def indexed(tmp_path):
    slides = tmp_path / "slides"
    shutil.copytree(IMAGES, slides)
    summary = pr.index(slides, index=tmp_path / ".plip", model=MODEL)
    return tmp_path, summary


def test_index_returns_the_cli_summary(indexed):
    tmp, s = indexed
    n = len(list(IMAGES.iterdir()))
    assert s["added"] == n and s["embedded"] == n and s["skipped"] == 0
    assert s["updated"] == s["removed"] == s["unchanged"] == 0
    assert s["interrupted"] is False and s["skipped_files"] == []
    assert Path(s["index"]) == (tmp / ".plip")
    again = pr.index(tmp / "slides", index=tmp / ".plip")
    assert again["unchanged"] == n and again["added"] == 0


def test_text_search_equals_plip_search_json(indexed):
    tmp, _ = indexed
    ix = pr.Index(tmp / ".plip")
    assert len(ix) == len(list(IMAGES.iterdir())) and ix.dim == 16
    hits = ix.search("tumor tissue", top=5)
    cli = plip_json_lines("search", "tumor tissue", "--top", "5", "--json", cwd=tmp)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == [c["score"] for c in cli]
    assert [h["path"] for h in hits] == [str(tmp / c["path"]) for c in cli]
    assert all(os.path.isabs(h["path"]) for h in hits)


def test_search_flags_match_the_cli(indexed):
    tmp, _ = indexed
    ix = pr.Index(tmp / ".plip")
    got = ix.search("tumor", add=["2:lymphocytes"], subtract=["necrosis"], top=4,
                    templates=["An H&E image patch of {}."], threshold=-1.0)
    cli = plip_json_lines("search", "tumor", "--add", "2:lymphocytes", "--subtract", "necrosis",
                          "--template", "An H&E image patch of {}.", "--top", "4", "--json",
                          cwd=tmp)
    assert [(h["score"], h["path"]) for h in got] == [(c["score"], str(tmp / c["path"])) for c in cli]
    assert ix.search("tumor", under=tmp / "slides" / "nope", top=3) == []


def test_image_and_vector_queries(indexed, model):
    tmp, _ = indexed
    ix = pr.Index(tmp / ".plip", model=model)
    target = str(tmp / "slides" / "png_rgb_224x224.png")
    by_path = ix.search(image=target, top=3)
    assert by_path[0]["path"] == target and by_path[0]["score"] == pytest.approx(1.0, abs=1e-5)
    cli = plip_json_lines("search", "--image", target, "--top", "3", "--json", cwd=tmp)
    assert [h["score"] for h in by_path] == [c["score"] for c in cli]
    from PIL import Image

    in_memory = ix.search(image=Image.open(target), top=1)
    assert in_memory[0]["path"] == target
    T = model.embed_text(["tumor tissue"])
    assert ix.search(vector=T[0], top=5) == ix.search("tumor tissue", top=5)
    with pytest.raises(ValueError, match="holds 16-d vectors"):
        ix.search(vector=np.ones(7, np.float32))


def test_search_errors(indexed, tmp_path_factory):
    tmp, _ = indexed
    ix = pr.Index(tmp / ".plip")
    assert ix.search("tumor", by_slide=True) == []  # no slides here, as --by-slide
    with pytest.raises(ValueError):
        ix.search()
    with pytest.raises(pr.Error, match="query is empty"):
        ix.search("   ")
    with pytest.raises(FileNotFoundError, match="query image .* does not exist"):
        ix.search(image=str(tmp / "nope.png"))
    with pytest.raises(FileNotFoundError, match="no plip index"):
        pr.Index(tmp_path_factory.mktemp("empty") / ".plip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pr.index(tmp / "missing", index=tmp / ".plip")


def test_reload_sees_new_commits(indexed):
    tmp, _ = indexed
    ix = pr.Index(tmp / ".plip")
    n = len(ix)
    (tmp / "more").mkdir()
    shutil.copy(IMAGES / "png_rgb_224x224.png", tmp / "more" / "x.png")
    pr.index(tmp / "more", index=tmp / ".plip")
    assert len(ix) == n
    ix.reload()
    assert len(ix) == n + 1


def test_slide_tiles_and_by_slide_match_the_cli(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(ROOT / "fixtures" / "slides" / "aperio_rgb.svs", data / "a.svs")
    shutil.copy(ROOT / "fixtures" / "slides" / "generic.tiff", data / "b.tiff")
    shutil.copy(IMAGES / "png_rgb_224x224.png", data / "c.png")
    s = pr.index(data, index=tmp_path / ".plip", model=MODEL)
    assert s["added"] == 3 and s["skipped"] == 0, s  # two slides (their tiles) and an image
    ix = pr.Index(tmp_path / ".plip")
    hits = ix.search("tumor", top=8)
    cli = plip_json_lines("search", "tumor", "--top", "8", "--json", cwd=tmp_path)
    assert hits == [dict(c, path=str(tmp_path / c["path"])) for c in cli]
    tiles = [h for h in hits if "x" in h]
    assert tiles and all({"y", "w", "h", "level", "mpp"} <= h.keys() for h in tiles)
    slides = ix.search("tumor", by_slide=True, top=5)
    cli = plip_json_lines("search", "tumor", "--by-slide", "--top", "5", "--json", cwd=tmp_path)
    assert [s["path"] for s in slides] == [str(tmp_path / c["path"]) for c in cli]
    for got, want in zip(slides, cli):
        assert (got["rank"], got["score"], got["tiles"]) == (want["rank"], want["score"], want["tiles"])
        assert {k: got["best"][k] for k in want["best"]} == want["best"]


def test_slide_region_queries_match_the_cli(tmp_path):
    """`SLIDE@X,Y,W,H` is a region query from Python as it is for `plip search`:
    as the query, as image=, and as a weighted term; a stored tile finds itself."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(ROOT / "fixtures" / "slides" / "aperio_ycbcr.svs", data / "a.svs")
    shutil.copy(IMAGES / "png_rgb_224x224.png", data / "c.png")
    pr.index(data, index=tmp_path / ".plip", model=MODEL)
    ix = pr.Index(tmp_path / ".plip")
    tile = next(h for h in ix.search("tissue", top=20) if "x" in h)
    where = f"{tile['x']},{tile['y']},{tile['w']},{tile['h']}"
    region = f"{tile['path']}@{where}"
    cli = plip_json_lines("search", "--image", f"data/a.svs@{where}", "-k", "3", "--json", cwd=tmp_path)
    want = [dict(c, path=str(tmp_path / c["path"])) for c in cli]
    for hits in (ix.search(region, top=3), ix.search(image=region, top=3)):
        assert hits == want
        assert (hits[0]["path"], hits[0]["x"], hits[0]["y"]) == (tile["path"], tile["x"], tile["y"])
        assert hits[0]["score"] > 0.9999, hits[0]
    weighted = ix.search("tissue", add=[f"0.5:{region}"], top=3)
    cli = plip_json_lines("search", "tissue", "--add", f"0.5:data/a.svs@{where}", "-k", "3", "--json",
                          cwd=tmp_path)
    assert weighted == [dict(c, path=str(tmp_path / c["path"])) for c in cli]
    with pytest.raises(pr.Error, match="is not a file"):
        ix.search(image=str(tmp_path / "nope.svs") + "@0,0,10,10")
    with pytest.raises(pr.Error, match="width and height"):
        ix.search(f"{tile['path']}@0,0,0,10")


def test_non_integer_top_is_refused_not_truncated(indexed):
    # issue 27: top=1.5 used to mean 1 silently, where `--top 1.5` is an error.
    tmp, _ = indexed
    ix = pr.Index(tmp / ".plip")
    for bad in (1.5, "3", True):
        with pytest.raises(ValueError, match="top must be a whole number"):
            ix.search("tumor", top=bad)
    assert len(ix.search("tumor", top=np.int64(2))) == 2


def test_non_finite_tiling_values_are_refused_before_the_index_is_written(indexed):
    # issue 27: mpp=NaN used to commit a manifest that no longer opened.
    tmp, _ = indexed
    manifest = (tmp / ".plip" / "MANIFEST").read_bytes()
    for kw in (dict(mpp=float("nan")), dict(mpp=float("inf")), dict(min_tissue=5.0),
               dict(slide_mpp=0.0), dict(tile=0), dict(tile=2.5)):
        with pytest.raises(ValueError):
            pr.index(tmp / "slides", index=tmp / ".plip", **kw)
    assert (tmp / ".plip" / "MANIFEST").read_bytes() == manifest
    assert len(pr.Index(tmp / ".plip")) == len(list(IMAGES.iterdir()))


def test_threads_and_decode_memory_are_values_of_the_call(tmp_path):
    """`threads=` and `decode_memory=` apply to this call (issue 30: they used to
    be process-wide settings that only the first caller could make)."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IMAGES / "png_rgb_224x224.png", data / "a.png")
    s = pr.index(data, index=tmp_path / "one", model=MODEL, threads=1, decode_memory=64)
    assert s["added"] == 1, s
    s = pr.index(data, index=tmp_path / "two", model=MODEL, threads=2, decode_memory=2048)
    assert s["added"] == 1, s
    for kw in (dict(threads=0), dict(decode_memory=0)):
        with pytest.raises(ValueError, match="at least 1"):
            pr.index(data, index=tmp_path / "three", model=MODEL, **kw)
        assert not (tmp_path / "three").exists()
