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
built from integer arithmetic (`inputs.arrays()`, which test_parity.py
uses too), each passed as `Image.fromarray(a)`.
"""

import json
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from inputs import arrays

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "model"
IMAGES = ROOT / "fixtures" / "images"
OUT = Path(__file__).resolve().parent / "golden" / "in_memory.json"


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
