#!/usr/bin/env python3
"""Tissue-detection benchmark (issue 28): generated slides with known tissue, glass and
pen-ink regions, scored per tile for plip's detector, CLAM's fixed threshold 8 and
plip's former Otsu detector (version 1).

    pip install numpy scipy scikit-image tifffile imagecodecs
    python benches/tissue/make_and_score.py OUT_DIR [--plip target/release/plip]
        [--only NAME ...] [--keep]

Slides (Aperio-style tiled JPEG .svs, MPP in the ImageDescription, levels 1, 4, 16):
tissue is stain concentration from real textures, recombined by Beer-Lambert with the
Ruifrok-Johnston vectors that `skimage.color.rgb2hed` / `hed2rgb` use. Hematoxylin and DAB
come from colour deconvolution (`rgb2hed`) of `skimage.data.immunohistochemistry()`;
eosin stroma from the `gravel` and `grass` textures; fat is a Voronoi membrane network.
Glass is multiplied by the slide's tint and illumination, ink adds its own absorption.
Ground truth is drawn at 1/16 of level 0 (8 µm at 0.5 µm/px).

Tiles are plip's grid (224 px at 0.5 µm/px, `--min-tissue 0.5`). Per slide and
detector it reports: `missed` = share of tiles more than 80 % inside tissue (tissue not
under ink) that are not kept; `bg kept` = share of kept tiles less than 20 % tissue;
`ink kept` = share of tiles more than 50 % ink that are kept. Targets: missed <= 5 %,
bg kept <= 2 %, ink kept <= 10 %.

plip's result is the real `plip tiles SLIDE -o check.png --json`; CLAM-8 and Otsu are
computed here on the same view plip builds (the level at <= 16 µm/px, box-averaged to
8-16 µm/px): OpenCV HSV saturation, 7x7 median (replicated border), threshold
`s > 8` (CLAM, `use_otsu: False`) or `s > max(otsu(s), 8)` (plip detector v1), 4x4
closing with OpenCV's anchor, a tile kept when at least half of the mask pixel centres
in it are tissue.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import tifffile
from scipy import ndimage
from skimage import color, data

T = 256  # stored tile side
GT = 16  # ground truth is at 1/GT of level 0
# Ruifrok & Johnston absorption vectors (rows of skimage's rgb_from_hed), ln units
HEM = np.array([0.65, 0.70, 0.29])
EOS = np.array([0.07, 0.99, 0.11])
DAB = np.array([0.27, 0.57, 0.78])
HEM, EOS, DAB = (v / np.linalg.norm(v) for v in (HEM, EOS, DAB))
INKS = {
    "blue": np.array([1.25, 0.85, 0.25]),
    "green": np.array([1.0, 0.35, 0.85]),
    "red": np.array([0.12, 1.35, 1.15]),
    "black": np.array([1.7, 1.65, 1.6]),
}


# ---------------------------------------------------------------- textures


def textures(seed=0, fat_cells=40):
    """Concentration textures in 0..~1 (512x512 each); `fat_cells` Voronoi cells per
    512 x 512 fat tile."""
    ihc = data.immunohistochemistry()
    hed = color.rgb2hed(ihc)
    norm = lambda a: np.clip((a - np.percentile(a, 1)) / (np.percentile(a, 99.5) - np.percentile(a, 1)), 0, 1.5)
    h = norm(hed[..., 0])
    d = norm(hed[..., 2])
    gravel = norm(1.0 - data.gravel().astype(float) / 255)
    grass = norm(1.0 - data.grass().astype(float) / 255)
    rng = np.random.default_rng(seed)
    # fat: Voronoi cells (40 per tile: ~80 px, 40 µm at 0.5 µm/px) with 3-px membranes
    seeds = np.ones((512, 512), bool)
    for y, x in rng.integers(0, 512, (fat_cells, 2)):
        seeds[y, x] = False
    _, idx = ndimage.distance_transform_edt(seeds, return_indices=True)
    lab = idx[0] * 512 + idx[1]
    edge = (lab != np.roll(lab, 1, 0)) | (lab != np.roll(lab, 1, 1))
    fat = ndimage.binary_dilation(edge, iterations=1).astype(float)
    return {"h": h, "d": d, "gravel": gravel, "grass": grass, "fat": fat}


def tile_texture(tex, y0, h, w, seed):
    """Rows y0..y0+h of `tex` tiled over width w, each 512 block flipped/rotated."""
    out = np.empty((h, w), np.float32)
    n = tex.shape[0]
    for by in range(y0 // n, (y0 + h - 1) // n + 1):
        for bx in range((w + n - 1) // n):
            r = (by * 7919 + bx * 104729 + seed) % 8
            t = np.rot90(tex, r % 4)
            if r >= 4:
                t = t[::-1]
            ys, ye = max(by * n, y0), min((by + 1) * n, y0 + h)
            xs, xe = bx * n, min((bx + 1) * n, w)
            out[ys - y0:ye - y0, xs:xe] = t[ys - by * n:ye - by * n, : xe - xs]
    return out


def smooth_field(shape, sigma, rng):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / f.std()


# ---------------------------------------------------------------- slides


SLIDES = {
    # name: stain, glass rgb, inks, options
    "he_pale_stroma": dict(stain="he", glass=(243, 242, 244), inks=[], pale=0.45, fat=0.15),
    "ihc_counterstain": dict(stain="ihc", glass=(241, 241, 240), inks=["blue"], pale=0.5),
    "he_tinted_glass": dict(stain="he", glass=(236, 226, 188), inks=["black"], pale=0.3, fat=0.1),
    "ihc_uneven_light": dict(stain="ihc", glass=(226, 232, 244), inks=["green"], pale=0.4,
                             vignette=0.28, gradient=0.12, border=0.78),
    "he_faint": dict(stain="he", glass=(240, 239, 241), inks=["red"], pale=0.3, strength=0.35,
                     mpp=0.25, side_mm=(2.9, 2.2)),
    "he_four_inks": dict(stain="he", glass=(242, 241, 243), inks=["blue", "green", "red", "black"],
                         pale=0.3, fat=0.1),
}


def layout(spec, gh, gw, rng):
    """Ground-truth maps at 1/GT: region (0 glass, 1 cellular, 2 pale, 3 fat), ink id."""
    scale = 0.5 / spec.get("mpp", 0.5)  # GT pixels per 8 µm
    blobs = smooth_field((gh, gw), 22 * scale, rng)
    # keep a glass margin, and two or three separate tissue pieces
    yy, xx = np.mgrid[0:gh, 0:gw]
    u, v = xx / gw - 0.5, yy / gh - 0.5
    envelope = 1.2 - 3.2 * (u * u + v * v)
    tissue = blobs + envelope > 0.9
    tissue = ndimage.binary_opening(tissue, iterations=max(1, int(2 * scale)))
    sub = smooth_field((gh, gw), 14 * scale, rng)
    region = np.where(tissue, 1, 0).astype(np.uint8)
    pale_cut = np.quantile(sub[tissue], 1 - spec.get("pale", 0.3)) if tissue.any() else 0
    region[tissue & (sub > pale_cut)] = 2
    if spec.get("fat"):
        fat_cut = np.quantile(sub[tissue], spec["fat"])
        region[tissue & (sub < fat_cut)] = 3
    ink = np.zeros((gh, gw), np.uint8)
    for i, name in enumerate(spec["inks"]):
        # a marker stroke, 0.45 mm wide, wavy, in the glass margin and over the edge
        # of the tissue: top, left, bottom, right
        width = 0.45 * 1000 / (spec.get("mpp", 0.5) * GT)
        if i % 2 == 0:
            base = gh * (0.1 + 0.8 * (i // 2))
            line = base + gh * 0.05 * np.sin(xx[0] / gw * 6.0 + i)
            band = np.abs(yy - line[None, :]) < width / 2
            band &= (xx > gw * (0.12 + 0.05 * i)) & (xx < gw * (0.8 + 0.03 * i))
        else:
            base = gw * (0.08 + 0.84 * (i // 2))
            line = base + gw * 0.04 * np.sin(yy[:, 0] / gh * 5.0 + i)
            band = np.abs(xx - line[:, None]) < width / 2
            band &= (yy > gh * 0.2) & (yy < gh * 0.8)
        ink[band] = i + 1
    return region, ink


def render(spec, w, h, region, ink, tex, rng):
    """Level 0 as uint8 RGB, in strips."""
    img = np.empty((h, w, 3), np.uint8)
    glass = np.array(spec["glass"], np.float32)
    strength = spec.get("strength", 1.0)
    he = spec["stain"] == "he"
    strip = 512
    yy_all = None
    ink_noise = smooth_field((h // GT // 4 + 1, w // GT // 4 + 1), 2, rng)
    for y0 in range(0, h, strip):
        hh = min(strip, h - y0)
        reg = np.repeat(np.repeat(region[y0 // GT:(y0 + hh + GT - 1) // GT], GT, 0), GT, 1)[:hh, :w]
        ink_s = np.repeat(np.repeat(ink[y0 // GT:(y0 + hh + GT - 1) // GT], GT, 0), GT, 1)[:hh, :w]
        hx = tile_texture(tex["h"], y0, hh, w, 1)
        dx = tile_texture(tex["d"], y0, hh, w, 2)
        e1 = tile_texture(tex["gravel"], y0, hh, w, 3)
        e2 = tile_texture(tex["grass"], y0, hh, w, 4)
        fat = tile_texture(tex["fat"], y0, hh, w, 5)
        cell = reg == 1
        pale = reg == 2
        fatm = reg == 3
        if fatm.any():
            # adipocytes are whole cells: a membrane runs along the edge of fat too
            fat = np.maximum(fat, fatm & ~ndimage.binary_erosion(fatm, iterations=3, border_value=1))
        if he:
            ch = np.where(cell, 0.15 + 1.1 * hx, 0) + np.where(pale, 0.05 * hx, 0)
            ce = (np.where(cell, 0.35 + 0.5 * e1, 0) + np.where(pale, 0.10 + 0.22 * e2, 0)
                  + np.where(fatm, 0.03 + 0.9 * fat, 0))
            cd = np.zeros_like(ch)
        else:
            ch = np.where(cell, 0.2 + 0.7 * hx, 0) + np.where(pale, 0.07 + 0.3 * hx, 0)
            ce = np.zeros_like(ch)
            cd = np.where(cell, np.clip(1.6 * dx - 0.1, 0, None), 0)
        od = (ch[..., None] * HEM + ce[..., None] * EOS + cd[..., None] * DAB) * strength
        if ink_s.any():
            for i, name in enumerate(spec["inks"]):
                m = ink_s == i + 1
                if m.any():
                    iy = np.arange(y0, y0 + hh) // GT // 4
                    ix = np.arange(w) // GT // 4
                    k = 1.0 + 0.15 * ink_noise[iy][:, ix]
                    od[m] += (k[..., None] * INKS[name])[m]
        light = glass[None, None, :] * illumination(spec, w, h, y0, hh)[..., None]
        val = light * np.exp(-od) + rng.normal(0, 1.5, od.shape)
        img[y0:y0 + hh] = np.clip(np.round(val), 0, 255).astype(np.uint8)
    return img


def illumination(spec, w, h, y0, hh):
    yy, xx = np.mgrid[y0:y0 + hh, 0:w].astype(np.float32)
    u, v = xx / w - 0.5, yy / h - 0.5
    f = np.ones_like(u)
    if spec.get("vignette"):
        f *= 1.0 - spec["vignette"] * (u * u + v * v) / 0.5
    if spec.get("gradient"):
        f *= 1.0 - spec["gradient"] * (u + 0.5)
    if spec.get("border"):
        edge = np.minimum(np.minimum(xx, w - 1 - xx) / w, np.minimum(yy, h - 1 - yy) / h)
        f *= np.where(edge < 0.03, spec["border"], 1.0)
    return f


def box(img, d):
    h, w = img.shape[0] // d * d, img.shape[1] // d * d
    return img[:h, :w].reshape(h // d, d, w // d, d, 3).mean((1, 3)).round().astype(np.uint8)


def write_svs(path, img, mpp):
    h, w = img.shape[:2]
    desc = (f"Aperio Image Library v12.0.0\r\n{w}x{h} [0,0 {w}x{h}] ({T}x{T}) JPEG/RGB Q=80"
            f"|AppMag = {20 if mpp >= 0.4 else 40}|MPP = {mpp}")
    opts = dict(tile=(T, T), photometric="rgb", compression="jpeg", compressionargs={"level": 80},
                metadata=None)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(img, description=desc, **opts)
        for d in (4, 16):
            lv = box(img, d)
            tw.write(lv, description=f"{lv.shape[1]}x{lv.shape[0]}", **opts)


def make(name, spec, out, tex):
    rng = np.random.default_rng(sum(map(ord, name)))
    mpp = spec.get("mpp", 0.5)
    side_mm = spec.get("side_mm", (4.1, 3.1))
    w = int(side_mm[0] * 1000 / mpp) // T * T
    h = int(side_mm[1] * 1000 / mpp) // T * T
    region, ink = layout(spec, h // GT, w // GT, rng)
    img = render(spec, w, h, region, ink, tex, rng)
    path = os.path.join(out, name + ".svs")
    write_svs(path, img, mpp)
    np.savez_compressed(os.path.join(out, name + ".truth.npz"), region=region, ink=ink,
                        w=w, h=h, mpp=mpp)
    return path


# ---------------------------------------------------------------- detectors


def view_of(path, mpp):
    """The view plip's detector builds: level at <= 16 µm/px, box-averaged to 8-16."""
    with tifffile.TiffFile(path) as tf:
        pages = [p for p in tf.pages if p.is_tiled]
        w0 = pages[0].imagewidth
        ds = [w0 / p.imagewidth for p in pages]
        want = 16.0 / mpp
        level = max(i for i, d in enumerate(ds) if d <= want) if ds[0] <= want else 0
        lvl = pages[level].asarray()
        lmpp = mpp * ds[level]
    k = int(np.floor(16.0 / lmpp)) if lmpp < 8.0 else 1
    if k > 1:
        hh, ww = -(-lvl.shape[0] // k) * k, -(-lvl.shape[1] // k) * k
        pad = np.zeros((hh, ww, 3), np.float64)
        cnt = np.zeros((hh, ww, 1), np.float64)
        pad[: lvl.shape[0], : lvl.shape[1]] = lvl
        cnt[: lvl.shape[0], : lvl.shape[1]] = 1
        s = pad.reshape(hh // k, k, ww // k, k, 3).sum((1, 3))
        c = cnt.reshape(hh // k, k, ww // k, k, 1).sum((1, 3))
        lvl = (s / c).astype(np.uint8)  # plip's u32 sum / count truncates
    return lvl, w0 / lvl.shape[1]


def saturation(rgb):
    mx = rgb.max(2).astype(np.int32)
    mn = rgb.min(2).astype(np.int32)
    table = np.zeros(256, np.int64)
    table[1:] = np.round(255 * 4096 / np.arange(1, 256))
    return np.clip(((mx - mn) * table[mx] + 2048) >> 12, 0, 255).astype(np.uint8)


def otsu(s):
    hist = np.bincount(s.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    mu = (np.arange(256) * p).sum()
    best, t = 0.0, 0
    mu1 = q1 = 0.0
    eps = np.finfo(np.float32).eps
    for i in range(256):
        mu1 *= q1
        q1 += p[i]
        q2 = 1 - q1
        if min(q1, q2) < eps or max(q1, q2) > 1 - eps:
            continue
        mu1 = (mu1 + i * p[i]) / q1
        mu2 = (mu - q1 * mu1) / q2
        sig = q1 * q2 * (mu1 - mu2) ** 2
        if sig > best:
            best, t = sig, i
    return t


def clam_mask(view, use_otsu):
    s = ndimage.median_filter(saturation(view), size=7, mode="nearest")
    t = max(otsu(s), 8) if use_otsu else 8
    m = (s > t).astype(np.uint8)
    # OpenCV 4x4 kernel, anchor (2, 2): offsets -2..1; borders ignored
    def morph(a, dil):
        out = a.copy()
        for axis in (1, 0):
            src = out
            acc = np.zeros_like(src) if dil else np.ones_like(src)
            for d in range(-2, 2):
                sh = np.roll(src, -d, axis)
                valid = np.ones_like(src, bool)
                n = src.shape[axis]
                idx = np.arange(n) + d
                bad = (idx < 0) | (idx >= n)
                if axis == 1:
                    valid[:, bad] = False
                else:
                    valid[bad, :] = False
                sh = np.where(valid, sh, 0 if dil else 1)
                acc = np.maximum(acc, sh) if dil else np.minimum(acc, sh)
            out = acc
        return out
    return morph(morph(m, True), False)


def kept_from_mask(mask, scale, s0, cols, rows, min_tissue=0.5):
    """plip's rule: share of mask pixels whose centres fall in the tile >= min_tissue."""
    mh, mw = mask.shape
    sat = np.zeros((mh + 1, mw + 1), np.int64)
    sat[1:, 1:] = (mask == 1).cumsum(0).cumsum(1)
    kept = set()
    for r in range(rows):
        for c in range(cols):
            x, y = c * s0, r * s0
            x0 = min(max(int(np.ceil(x / scale - 0.5)), 0), mw)
            x1 = min(max(int(np.ceil((x + s0) / scale - 0.5)), 0), mw)
            y0 = min(max(int(np.ceil(y / scale - 0.5)), 0), mh)
            y1 = min(max(int(np.ceil((y + s0) / scale - 0.5)), 0), mh)
            if x1 > x0 and y1 > y0:
                n = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
                if n / ((x1 - x0) * (y1 - y0)) >= min_tissue:
                    kept.add((x, y))
    return kept


def plip_kept(plip, path, png, extra=()):
    out = subprocess.run([plip, "-q", "tiles", path, "-o", png, "--json", *extra],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"plip tiles failed on {path}:\n{out.stderr}")
    doc = json.loads(out.stdout)
    return {(t["x"], t["y"]) for t in doc["tiles"]}


# ---------------------------------------------------------------- scoring


def truth_tiles(npz, s0):
    region, ink = npz["region"], npz["ink"]
    g = s0 // GT
    rows, cols = region.shape[0] // g, region.shape[1] // g
    tissue = (region > 0) & (ink == 0)
    t = tissue[: rows * g, : cols * g].reshape(rows, g, cols, g).mean((1, 3))
    k = (ink > 0)[: rows * g, : cols * g].reshape(rows, g, cols, g).mean((1, 3))
    return t, k, cols, rows


def score(kept, t, k, s0):
    rows, cols = t.shape
    keep = np.zeros_like(t, bool)
    for (x, y) in kept:
        if y // s0 < rows and x // s0 < cols:
            keep[y // s0, x // s0] = True
    tissue_tiles = t > 0.8
    ink_tiles = k > 0.5
    missed = (tissue_tiles & ~keep).sum() / max(tissue_tiles.sum(), 1)
    bg = (keep & (t < 0.2)).sum() / max(keep.sum(), 1)
    ink_kept = (ink_tiles & keep).sum() / max(ink_tiles.sum(), 1) if ink_tiles.any() else None
    return dict(missed=missed, bg=bg, ink=ink_kept, n_tissue=int(tissue_tiles.sum()),
                n_kept=int(keep.sum()), n_ink=int(ink_tiles.sum()))


def fmt(r):
    ink = "n/a" if r["ink"] is None else f"{100 * r['ink']:.1f} %"
    ok = r["missed"] <= 0.05 and r["bg"] <= 0.02 and (r["ink"] is None or r["ink"] <= 0.10)
    return f"{100 * r['missed']:.1f} % | {100 * r['bg']:.1f} % | {ink} | {'yes' if ok else 'no'}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--plip", default="target/release/plip")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--keep", action="store_true", help="reuse slides already in OUT")
    ap.add_argument("--make-only", action="store_true", help="write the slides, score nothing")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tex = textures()
    rows_out = []
    for name, spec in SLIDES.items():
        if a.only and name not in a.only:
            continue
        path = os.path.join(a.out, name + ".svs")
        if not (a.keep and os.path.exists(path)):
            t0 = time.time()
            make(name, spec, a.out, tex)
            print(f"made {name} in {time.time() - t0:.0f} s", file=sys.stderr)
        if a.make_only:
            continue
        npz = np.load(os.path.join(a.out, name + ".truth.npz"))
        mpp = float(npz["mpp"])
        s0 = int(round(224 * 0.5 / mpp))
        t, k, cols, rows = truth_tiles(npz, s0)
        view, scale = view_of(path, mpp)
        results = {}
        results["plip v2"] = score(plip_kept(a.plip, path, os.path.join(a.out, name + ".png")),
                                   t, k, s0)
        for det, use_otsu in (("CLAM sthresh 8", False), ("plip v1 (Otsu)", True)):
            m = clam_mask(view, use_otsu)
            results[det] = score(kept_from_mask(m, scale, s0, cols, rows), t, k, s0)
        for det, r in results.items():
            rows_out.append((name, det, r))
            print(f"| {name} | {det} | {r['n_tissue']} / {r['n_ink']} | {fmt(r)} |", flush=True)
    print("\n| slide | detector | tissue / ink tiles | missed | bg kept | ink kept | targets met |")
    print("|---|---|---|---|---|---|---|")
    for name, det, r in rows_out:
        print(f"| {name} | {det} | {r['n_tissue']} / {r['n_ink']} | {fmt(r)} |")


if __name__ == "__main__":
    main()
