#!/usr/bin/env python3
"""Regenerate python/tests/golden/in_memory.json: the reference embeddings of
in-memory images (PIL images and NumPy arrays) for the fixture model, which
test_parity.py compares with Model.embed_images.

Reference: transformers 5.24.0 (`CLIPProcessor` as `from_pretrained` builds it,
and the PIL "slow" `CLIPImageProcessorPil`), torch, Pillow 13.0.0, numpy; the
venv of fixtures/requirements.txt. Run from the repository root:

    /path/to/venv/bin/python python/tests/make_goldens.py

The inputs are the fixture images opened with Pillow (not converted: the
processor converts them, compositing transparency onto white) and three arrays
built here from integer arithmetic (see `arrays()`, which test_parity.py
repeats), each passed as `Image.fromarray(a)`.
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "model"
IMAGES = ROOT / "fixtures" / "images"
OUT = Path(__file__).resolve().parent / "golden" / "in_memory.json"


def arrays():
    """Deterministic test arrays: RGB (H, W, 3), RGBA (H, W, 4) and grey (H, W)."""
    y, x = np.mgrid[0:150, 0:260]
    rgb = np.stack([(x * 3 + y) % 256, (y * 5 + x // 2) % 256, (x * y // 7) % 256], -1)
    alpha = (x * 255 // 259).astype(np.uint8)
    return {
        "array_rgb_150x260": rgb.astype(np.uint8),
        "array_rgba_150x260": np.dstack([rgb.astype(np.uint8), alpha]),
        "array_grey_150x260": ((x + 2 * y) % 256).astype(np.uint8),
    }


def unit(t):
    t = t if torch.is_tensor(t) else t.pooler_output
    return torch.nn.functional.normalize(t.float(), dim=-1)[0].tolist()


@torch.no_grad()
def main():
    model = CLIPModel.from_pretrained(str(MODEL), dtype=torch.float32).eval()
    proc = CLIPProcessor.from_pretrained(str(MODEL))
    pil_proc = CLIPImageProcessorPil.from_pretrained(str(MODEL))
    inputs = {p.name: Image.open(p) for p in sorted(IMAGES.iterdir())}
    inputs.update({k: Image.fromarray(a) for k, a in arrays().items()})
    out = {"processor": type(proc.image_processor).__name__, "default": {}, "pil": {}}
    for name, im in inputs.items():
        pv = proc(images=im, return_tensors="pt")["pixel_values"]
        out["default"][name] = unit(model.get_image_features(pixel_values=pv))
        pv = pil_proc(images=im, return_tensors="pt")["pixel_values"]
        out["pil"][name] = unit(model.get_image_features(pixel_values=pv))
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} ({len(inputs)} inputs, default processor {out['processor']})")


if __name__ == "__main__":
    main()
