#!/usr/bin/env python3
"""The Python route for one slide (issue 17 "Speed"): OpenSlide read_region + Pillow +
CLIPProcessor + CLIPModel, batch 16, every whole 224-px grid tile at 0.5 µm/px (what
`plip index --min-tissue 0` embeds). Prints tiles/s of the whole process.

    python benches/slides_reference.py SLIDE MODEL_DIR THREADS

PLIP_REF_AUTOCAST=bf16 runs the model under torch.autocast("cpu", dtype=torch.bfloat16)
(torch's own bf16 route), for the comparison with `--precision bf16|auto`.

Needs torch + transformers (venv-ref) and openslide-python + openslide-bin; set
OPENSLIDE_SITE to another venv's site-packages when they live there (benches/slides.sh).
"""

import os
import sys
import time

t_start = time.perf_counter()
if os.environ.get("OPENSLIDE_SITE"):
    sys.path.append(os.environ["OPENSLIDE_SITE"])

import openslide  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPModel, CLIPProcessor  # noqa: E402


def main():
    slide_path, model_dir, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    proc = CLIPProcessor.from_pretrained(model_dir)
    s = openslide.OpenSlide(slide_path)
    mpp = float(s.properties[openslide.PROPERTY_NAME_MPP_X])
    tile = 224
    s0 = round(tile * 0.5 / mpp)
    level = s.get_best_level_for_downsample(s0 / tile)
    read_px = round(s0 / s.level_downsamples[level])
    w, h = s.dimensions
    coords = [(c * s0, r * s0) for r in range(h // s0) for c in range(w // s0)]
    n = 0
    autocast = os.environ.get("PLIP_REF_AUTOCAST") == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, len(coords), 16):
            imgs = []
            for x, y in coords[i:i + 16]:
                im = s.read_region((x, y), level, (read_px, read_px)).convert("RGB")
                if im.size != (tile, tile):
                    im = im.resize((tile, tile), Image.BICUBIC)
                imgs.append(im)
            pv = proc(images=imgs, return_tensors="pt")["pixel_values"]
            f = model.get_image_features(pixel_values=pv)
            f = f if torch.is_tensor(f) else f.pooler_output
            torch.nn.functional.normalize(f, dim=-1)
            n += len(imgs)
    el = time.perf_counter() - t_start
    what = "python route, bf16 autocast" if autocast else "python route"
    print(f"{what}: {n} tiles in {el:.1f} s = {n / el:.2f} tiles/s ({threads} threads)")


if __name__ == "__main__":
    main()
