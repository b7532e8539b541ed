"""Model.embed_images / embed_text against `plip embed` (bit for bit), and the
errors a caller can catch."""

import numpy as np
import pytest

import plip_retrieval as pr
from conftest import MODEL, plip


def test_files_equal_plip_embed_to_the_last_bit(model, image_paths, tmp_path):
    E = model.embed_images(image_paths)
    plip("--model", MODEL, "embed", *image_paths, "-o", tmp_path / "e.npy")
    cli = np.load(tmp_path / "e.npy")
    assert E.dtype == np.float32 and E.shape == (len(image_paths), model.dim)
    assert np.array_equal(E, cli)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-6)


def test_text_equals_plip_embed_text(model, tmp_path):
    prompts = ["tumor tissue", "necrosis", "An H&E image patch of lymphocytes."]
    T = model.embed_text(prompts)
    args = [a for p in prompts for a in ("--text", p)]
    plip("--model", MODEL, "embed", *args, "-o", tmp_path / "t.npy")
    assert np.array_equal(T, np.load(tmp_path / "t.npy"))


def test_arrays_come_from_rust_without_a_copy(model, image_paths):
    E = model.embed_images(image_paths[:2])
    # NumPy does not own the buffer: it is the Vec the engine filled.
    assert not E.flags.owndata and E.flags.c_contiguous


def test_path_like_and_mixed_inputs_keep_their_order(model, image_paths):
    from pathlib import Path

    from PIL import Image

    files = model.embed_images([Path(p) for p in image_paths[:3]])
    pil = Image.open(image_paths[1]).convert("RGB")
    mixed = model.embed_images([image_paths[0], pil, Path(image_paths[2])])
    assert np.array_equal(mixed[0], files[0]) and np.array_equal(mixed[2], files[2])
    assert float(mixed[1] @ files[1]) > 0.999


def test_errors_are_python_exceptions_with_the_cli_messages(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png is not a file"):
        model.embed_images([str(tmp_path / "missing.png")])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(pr.Error, match="cannot embed .*bad.png"):
        model.embed_images([str(bad)])
    with pytest.raises(ValueError, match="text number 2 is empty"):
        model.embed_text(["tumor", "  "])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.embed_images([np.zeros((0, 4, 3), np.uint8)])
    with pytest.raises(TypeError):
        model.embed_images([object()])
    from conftest import ROOT

    with pytest.raises(ValueError, match="is a whole slide"):
        model.embed_images([str(ROOT / "fixtures" / "slides" / "aperio_rgb.svs")])
    with pytest.raises(FileNotFoundError, match="model folder ./no/such/model does not exist"):
        pr.Model("./no/such/model")
    assert issubclass(pr.Error, Exception)


def test_the_gil_is_released_while_embedding(model, image_paths):
    import threading

    done = threading.Event()

    def work():
        model.embed_images(image_paths * 8)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    spins = 0
    while not done.is_set():
        spins += 1
    t.join()
    # Holding the GIL would have kept this thread from running at all.
    assert spins > 1000
