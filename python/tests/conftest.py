"""Shared fixtures: the tiny random-weight fixture model and images of the
repository (fixtures/), and the `plip` console script of the installed wheel,
for comparing the Python API with the command line."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "model"
IMAGES = ROOT / "fixtures" / "images"
GOLDEN = Path(__file__).resolve().parent / "golden"

# Before any fixture: session-scoped ones (the shared `model`) are made before the
# autouse fixture below runs, and on a CPU where bf16 wins, `precision="auto"` would
# give them bf16 embeddings, off the f32 goldens.
os.environ["PLIP_PRECISION_AUTO"] = "f32"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # Nothing here may reach the network, and no test may read a user's index.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PLIP_INDEX", raising=False)
    monkeypatch.delenv("PLIP_MODEL", raising=False)
    # `precision="auto"` answers f32 on every machine, so that embeddings compare
    # with the f32 goldens (test_precision.py covers both of auto's answers).
    monkeypatch.setenv("PLIP_PRECISION_AUTO", "f32")


@pytest.fixture(scope="session")
def model():
    import plip_retrieval as pr

    return pr.Model(MODEL)


@pytest.fixture(scope="session")
def image_paths():
    return sorted(str(p) for p in IMAGES.iterdir())


def plip(*args, cwd=None, check=True):
    """Runs the wheel's `plip` command; returns the completed process."""
    exe = shutil.which("plip")
    assert exe, "the wheel's `plip` console script is not on PATH"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([exe, *map(str, args)], cwd=cwd, env=env, capture_output=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p


def plip_json_lines(*args, cwd=None):
    out = plip(*args, cwd=cwd).stdout.decode()
    return [json.loads(line) for line in out.splitlines()]
