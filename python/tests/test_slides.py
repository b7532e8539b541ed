"""Index.search_slides (a slide as the query, issue 32) against `plip search
--image SLIDE --json`: the same slides, scores and matched tiles, paths absolute."""

import shutil
from pathlib import Path

import pytest

import plip_retrieval as pr
from conftest import MODEL, ROOT, plip_json_lines

SLIDES = ROOT / "fixtures" / "slides"


@pytest.fixture(scope="module")
def slides_indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slides")
    (tmp / "s").mkdir()
    for n in ["aperio_rgb.svs", "aperio_ycbcr.svs", "generic.tiff", "ome.ome.tiff"]:
        shutil.copy(SLIDES / n, tmp / "s" / n)
    (tmp / "other").mkdir()
    shutil.copy(SLIDES / "lzw.tiff", tmp / "other" / "lzw.tiff")
    pr.index(tmp / "s", index=tmp / ".plip", model=MODEL)
    return tmp


def same_as_cli(got, cli, tmp):
    assert len(got) == len(cli) > 0
    for g, c in zip(got, cli):
        assert Path(g["path"]) == tmp / c["path"]
        assert Path(g["path"]).is_absolute()
        for k in ["rank", "score", "tiles", "matches"]:
            assert g[k] == c[k], (k, g, c)


@pytest.mark.parametrize(
    "kwargs,flags",
    [
        ({}, []),
        ({"score": "bag"}, ["--slide-score", "bag"]),
        ({"score": "mean", "include_self": True, "top": 2}, ["--slide-score", "mean", "--include-self", "--top", "2"]),
    ],
)
def test_search_slides_equals_plip_search_image_json(slides_indexed, kwargs, flags):
    tmp = slides_indexed
    ix = pr.Index(tmp / ".plip")
    got = ix.search_slides(tmp / "s" / "aperio_rgb.svs", **kwargs)
    cli = plip_json_lines("search", "--image", "s/aperio_rgb.svs", "--json", *flags, cwd=tmp)
    same_as_cli(got, cli, tmp)
    paths = [Path(g["path"]).name for g in got]
    assert ("aperio_rgb.svs" in paths) == bool(kwargs.get("include_self"))
    m = got[0]["matches"][0]
    assert set(m) == {"query", "found", "score"} and set(m["query"]) == {"x", "y", "w", "h"}


def test_a_slide_not_in_the_index_is_embedded_now_as_the_cli_does(slides_indexed):
    tmp = slides_indexed
    ix = pr.Index(tmp / ".plip")
    got, info = ix.search_slides(str(tmp / "other" / "lzw.tiff"), details=True)
    cli = plip_json_lines("search", "--image", "other/lzw.tiff", "--json", cwd=tmp)
    same_as_cli(got, cli, tmp)
    assert info["embedded_now"] is True and info["query_tiles"] > 0
    assert info["score"] == "mean" and info["excluded"] == []
    _, stored = ix.search_slides(tmp / "s" / "generic.tiff", details=True)
    assert stored["embedded_now"] is False
    assert [Path(p).name for p in stored["excluded"]] == ["generic.tiff"]


def test_group_by_leaves_out_the_patient(slides_indexed, tmp_path):
    tmp = slides_indexed
    csv = tmp_path / "patients.csv"
    csv.write_text("slide,patient\naperio_rgb.svs,p1\naperio_ycbcr.svs,p1\ngeneric.tiff,p2\nome.ome.tiff,p3\n")
    got = pr.Index(tmp / ".plip").search_slides(tmp / "s" / "aperio_rgb.svs", group_by=csv)
    assert sorted(Path(g["path"]).name for g in got) == ["generic.tiff", "ome.ome.tiff"]


def test_bad_slide_queries_are_refused(slides_indexed):
    tmp = slides_indexed
    ix = pr.Index(tmp / ".plip")
    with pytest.raises(ValueError, match="mean"):
        ix.search_slides(tmp / "s" / "aperio_rgb.svs", score="max")
    with pytest.raises(ValueError, match="top"):
        ix.search_slides(tmp / "s" / "aperio_rgb.svs", top=1.5)
    with pytest.raises(TypeError):
        ix.search_slides(42)
    with pytest.raises((FileNotFoundError, pr.Error), match="no such file"):
        ix.search_slides(tmp / "s" / "missing.svs")
    with pytest.raises(pr.Error, match="not one"):
        ix.search_slides(str(ROOT / "fixtures" / "images" / "png_rgb_224x224.png"))
