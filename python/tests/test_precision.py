"""precision="auto" (issue 29) from Python: both of auto's answers, forced with
PLIP_PRECISION_AUTO, embed the fixture images within the parity bar of the f32
path, and the index summary says what was chosen."""

import numpy as np
import pytest

import plip_retrieval as pr
from conftest import IMAGES, MODEL


def test_both_auto_answers_and_the_summary(tmp_path, monkeypatch):
    paths = sorted(str(p) for p in IMAGES.iterdir())
    ref = pr.Model(MODEL, precision="f32").embed_images(paths)
    for answer in ("f32", "bf16"):
        monkeypatch.setenv("PLIP_PRECISION_AUTO", answer)
        got = pr.Model(MODEL).embed_images(paths)
        cos = np.sum(got * ref, axis=1)
        assert cos.min() >= 0.999, (answer, cos.min())
        s = pr.index(IMAGES, index=tmp_path / answer, model=MODEL)
        assert s["precision"] == f"{answer} (auto, forced by PLIP_PRECISION_AUTO)"


def test_unknown_precision_is_a_value_error():
    with pytest.raises(ValueError, match="auto, f32 or bf16"):
        pr.Model(MODEL, precision="fp8")
