"""Inputs shared by test_parity.py and make_goldens.py (numpy only, so that the
tests need no torch and the golden script needs no pytest)."""

import numpy as np


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
