#!/usr/bin/env python3
"""Two big slides to time tissue detection (issue 28, item 5):

    python benches/tissue/make_timing_slides.py OUT_DIR
    /usr/bin/time -v target/release/plip -q tiles OUT_DIR/pyramid_100k.svs -o a.png
    /usr/bin/time -v target/release/plip -q tiles OUT_DIR/single_400mp.tiff -o b.png

pyramid_100k.svs: 102400 x 81920 px at 0.25 µm/px, levels 1, 4, 16, 64 (Aperio layout,
JPEG). The detector reads the 16 µm/px level (1600 x 1280), rendered with the
benchmark's stains (H&E, pale stroma, a blue pen stroke); the finer levels repeat two
solid tiles (glass, tissue) following the same layout, so the file stays ~150 MB.

single_400mp.tiff: 20480 x 20480 px (419 MP) at 0.25 µm/px, one tiled JPEG level with
resolution tags (a generic TIFF); every 256-px tile is textured tissue or glass, so
detection decodes all 6,400 of them.
"""

import os
import sys

import numpy as np
import tifffile

sys.path.insert(0, os.path.dirname(__file__))
import make_and_score as bench  # noqa: E402

T = 256
JPEG = dict(photometric="rgb", compression="jpeg", compressionargs={"level": 80}, metadata=None)


def layout_render(w, h, mpp, seed, inks=("blue",)):
    spec = dict(stain="he", glass=(242, 241, 243), inks=list(inks), pale=0.35, fat=0.1, mpp=mpp)
    rng = np.random.default_rng(seed)
    region, ink = bench.layout(spec, h // bench.GT, w // bench.GT, rng)
    img = bench.render(spec, w, h, region, ink, bench.textures(), rng)
    return img, region


def pyramid(out):
    w0, h0 = 102400, 81920
    # level 16 (4 µm/px) rendered, level 64 box-averaged from it
    l16, _ = layout_render(w0 // 16, h0 // 16, 4.0, 1)
    l64 = bench.box(l16, 4)
    tissue16 = l16.astype(np.int32).sum(2) < 3 * 225  # coarse: where l16 is not glass
    glass_t = np.full((T, T, 3), (242, 241, 243), np.uint8)
    tissue_t = np.full((T, T, 3), (215, 160, 200), np.uint8)

    def solid_tiles(d):
        lw, lh = w0 // d, h0 // d
        f = 16 / d  # level-16 pixels per pixel of this level
        for r in range(-(-lh // T)):
            for c in range(-(-lw // T)):
                y = min(int((r * T + T / 2) * f), tissue16.shape[0] - 1)
                x = min(int((c * T + T / 2) * f), tissue16.shape[1] - 1)
                yield tissue_t if tissue16[y, x] else glass_t

    desc = (f"Aperio Image Library v12.0.0\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({T}x{T}) JPEG/RGB "
            f"Q=80|AppMag = 40|MPP = 0.25")
    path = os.path.join(out, "pyramid_100k.svs")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(solid_tiles(1), shape=(h0, w0, 3), dtype=np.uint8, tile=(T, T), description=desc,
                 **JPEG)
        tw.write(solid_tiles(4), shape=(h0 // 4, w0 // 4, 3), dtype=np.uint8, tile=(T, T),
                 description=f"{w0 // 4}x{h0 // 4}", **JPEG)
        for lv in (l16, l64):
            tw.write(lv, tile=(T, T), description=f"{lv.shape[1]}x{lv.shape[0]}", **JPEG)
    print(path, os.path.getsize(path) // 2**20, "MiB")


def single(out):
    side = 20480
    # a 4096 px rendered tile bank at 0.25 µm/px, cut into 256-px tiles
    bank, _ = layout_render(4096, 4096, 0.25, 2, inks=())
    tiles = [bank[y:y + T, x:x + T] for y in range(0, 4096, T) for x in range(0, 4096, T)]
    tissue = [t for t in tiles if t.astype(np.int32).sum(2).mean() < 3 * 228]
    glass = [t for t in tiles if t.astype(np.int32).sum(2).mean() >= 3 * 236] or [bank[:T, :T]]
    rng = np.random.default_rng(3)
    field = bench.smooth_field((side // T, side // T), 4, rng)
    yy, xx = np.mgrid[0:side // T, 0:side // T]
    env = 1.0 - 3.0 * ((xx / (side // T) - 0.5) ** 2 + (yy / (side // T) - 0.5) ** 2)
    is_tissue = field + 2 * env > 1.2

    def gen():
        for r in range(side // T):
            for c in range(side // T):
                pool = tissue if is_tissue[r, c] else glass
                yield pool[(r * 31 + c * 17) % len(pool)]

    path = os.path.join(out, "single_400mp.tiff")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(gen(), shape=(side, side, 3), dtype=np.uint8, tile=(T, T),
                 resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER", **JPEG)
    print(path, os.path.getsize(path) // 2**20, "MiB", f"{is_tissue.mean():.2f} tissue tiles")


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    pyramid(out)
    single(out)
