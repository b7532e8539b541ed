#!/usr/bin/env python3
"""Makes benches/photos: 256 JPEGs of 1024x1024 cut from real photographs.

The photographs are scikit-image's sample data (public domain or CC0 images shipped
in the scikit-image wheel: astronaut, coffee, chelsea, rocket, ...). Each output is a
random crop of one of them, resized to 1024x1024 with Pillow's bicubic filter and
saved at JPEG quality 90. Deterministic (seeded). Not committed: run it before
benches/compare.sh or the end-to-end bench.

    pip download --no-deps -d /tmp/skimage-wheel scikit-image   # or pip install it
    python3 benches/make_photos.py [OUT_DIR] [COUNT] [SIZE]
"""
import glob
import io
import os
import random
import subprocess
import sys
import tempfile
import zipfile

from PIL import Image

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "photos")
count = int(sys.argv[2]) if len(sys.argv) > 2 else 256
size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024

wheels = glob.glob("/tmp/skimage-wheel/scikit_image-*.whl")
if not wheels:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                    "/tmp/skimage-wheel", "scikit-image"], check=True)
    wheels = glob.glob("/tmp/skimage-wheel/scikit_image-*.whl")
photos = []
with zipfile.ZipFile(wheels[0]) as z:
    for name in sorted(z.namelist()):
        if name.startswith("skimage/data/") and name.lower().endswith((".png", ".jpg", ".jpeg")):
            im = Image.open(io.BytesIO(z.read(name)))
            if im.mode in ("RGB", "RGBA") and min(im.size) >= 256:
                photos.append(im.convert("RGB"))
assert photos, "no photographs found in the scikit-image wheel"
rng = random.Random(0)
os.makedirs(out, exist_ok=True)
for i in range(count):
    im = photos[i % len(photos)]
    w, h = im.size
    c = rng.randint(min(w, h) // 2, min(w, h))
    x, y = rng.randint(0, w - c), rng.randint(0, h - c)
    im.crop((x, y, x + c, y + c)).resize((size, size), Image.BICUBIC).save(
        os.path.join(out, f"photo{i:04d}.jpg"), quality=90)
print(f"wrote {count} JPEGs of {size}x{size} from {len(photos)} photographs to {out}")
