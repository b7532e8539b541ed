"""In-memory images (PIL images, NumPy arrays) against transformers'
CLIPProcessor + CLIPModel on the same PIL image, from goldens that
make_goldens.py computed with the reference (no torch needed here)."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import GOLDEN, IMAGES
from inputs import arrays


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "in_memory.json").read_text())


@pytest.fixture(scope="module")
def inputs():
    named = {p.name: Image.open(p) for p in sorted(IMAGES.iterdir())}
    named.update(arrays())
    return named


def test_pil_images_and_arrays_match_clipprocessor(model, golden, inputs):
    names = list(inputs)
    E = model.embed_images([inputs[n] for n in names])
    for row, n in zip(E, names):
        ref = np.asarray(golden["default"][n], dtype=np.float64)
        cos = float(row.astype(np.float64) @ ref) / np.linalg.norm(ref)
        assert cos >= 0.9999, f"{n}: cosine {cos:.6f} with CLIPProcessor"


def test_pil_images_match_the_pillow_processor_closely(model, golden, inputs):
    # Against the PIL ("slow") processor, whose resize plip reproduces exactly,
    # only float summation order is left.
    names = list(inputs)
    E = model.embed_images([inputs[n] for n in names])
    for row, n in zip(E, names):
        ref = np.asarray(golden["pil"][n], dtype=np.float32)
        assert np.abs(row - ref).max() < 1e-4, n


def test_rgb_array_equals_its_pil_image(model):
    a = arrays()["array_rgb_150x260"]
    E = model.embed_images([a, Image.fromarray(a), np.asfortranarray(a)])
    assert np.array_equal(E[0], E[1]) and np.array_equal(E[0], E[2])
