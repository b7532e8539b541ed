#!/usr/bin/env python3
"""Synthetic whole slides for benches/slides.sh (issue 17), written tile by tile so that
memory stays small whatever the size.

    python benches/make_slide.py OUT.svs --side 8192 [--pyramid] [--mpp 0.5]

A tiled JPEG (quality 80, as tifffile + imagecodecs write RGB data) TIFF with an Aperio description (`MPP = 0.5`, so
20x: plip's 224-px tiles at 0.5 µm/px are read at level 0 without resampling): level 0 of
side x side pixels, and with --pyramid reduced levels at 4x and 16x. Tissue is an ellipse
covering ~40% of the slide, drawn from 8 pre-rendered 256-px H&E-like tiles (nuclei on
stroma); glass elsewhere. Needs numpy and tifffile + imagecodecs (e.g. /work/venv-slide).
"""

import argparse

import numpy as np
import tifffile

T = 256


def tiles_bank(seed=7):
    rng = np.random.default_rng(seed)
    bank = []
    for _ in range(8):
        t = np.empty((T, T, 3), np.uint8)
        t[:] = (226, 170, 205)
        t = t.astype(np.int16) + rng.integers(-12, 12, (T, T, 3))
        for _ in range(60):
            y, x = rng.integers(0, T, 2)
            r = int(rng.integers(3, 7))
            yy, xx = np.ogrid[:T, :T]
            m = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            t[m] = (90, 50, 140)
        bank.append(np.clip(t, 0, 255).astype(np.uint8))
    glass = np.full((T, T, 3), (242, 241, 243), np.uint8)
    return bank, glass


def level_tiles(w, h, bank, glass):
    for r in range((h + T - 1) // T):
        for c in range((w + T - 1) // T):
            cx = (c * T + T / 2) / w - 0.5
            cy = (r * T + T / 2) / h - 0.5
            inside = cx * cx / 0.16 + cy * cy / 0.09 < 1.0
            yield bank[(r * 31 + c * 17) % len(bank)] if inside else glass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--side", type=int, default=8192)
    ap.add_argument("--height", type=int, default=0)
    ap.add_argument("--pyramid", action="store_true")
    ap.add_argument("--mpp", type=float, default=0.5)
    a = ap.parse_args()
    w, h = a.side, a.height or a.side
    bank, glass = tiles_bank()
    desc = f"Aperio Image Library v12.0.0\r\n{w}x{h} [0,0 {w}x{h}] ({T}x{T}) JPEG/RGB Q=80|MPP = {a.mpp}"
    opts = dict(tile=(T, T), photometric="rgb", compression="jpeg", compressionargs={"level": 80})
    with tifffile.TiffWriter(a.out, bigtiff=True) as tw:
        tw.write(level_tiles(w, h, bank, glass), shape=(h, w, 3), dtype=np.uint8,
                 description=desc, metadata=None, **opts)
        if a.pyramid:
            for d in (4, 16):
                lw, lh = w // d, h // d
                small = [t[::d, ::d] for t in bank]
                sb = [np.tile(s, (d, d, 1))[:T, :T] for s in small]
                tw.write(level_tiles(lw, lh, sb, glass), shape=(lh, lw, 3), dtype=np.uint8,
                         description=f"{lw}x{lh}", metadata=None, **opts)


if __name__ == "__main__":
    main()
