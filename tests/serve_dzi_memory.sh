#!/bin/bash
# Issue 27, item 5: time and peak RSS of `plip serve` for coarse Deep Zoom tiles
# of a 16384 x 16384 single-level tiled JPEG TIFF (no pyramid), which made
# OpenSlide-style tiling read level 0 whole (1.9 GB for one tile).
#
# Usage: tests/serve_dzi_memory.sh PLIP_BINARY WORKDIR [LEVEL...]   (default levels: 8 7 0 11)
# Needs python3 with numpy, tifffile and imagecodecs (pip install them), curl.
# Prints each tile request's time and the server's peak RSS (VmHWM) after it.
set -eu
BIN=$(realpath "$1"); WORK=$2; shift 2
LEVELS=${*:-8 7 0 11}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK/data" && cd "$WORK"
export PLIP_MODEL=$REPO/fixtures/model HF_HUB_OFFLINE=1
if [ ! -f data/big.tif ]; then
python3 - data/big.tif <<'PY'
# Glass with one textured pink "tissue" patch (8 x 8 tiles), 0.5 um/px.
import sys, numpy as np, tifffile
N, T = 16384, 256
rng = np.random.default_rng(0)
def tiles():
    for ty in range(N // T):
        for tx in range(N // T):
            if tx < 8 and ty < 8:
                base = np.array([200, 120, 170]) + rng.integers(-40, 40, (T, T, 1))
                yield np.clip(base, 0, 255).astype(np.uint8)
            else:
                yield np.full((T, T, 3), 242, np.uint8)
tifffile.imwrite(sys.argv[1], tiles(), shape=(N, N, 3), dtype=np.uint8, tile=(T, T),
                 photometric="rgb", compression="jpeg", compressionargs={"level": 80},
                 resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH", metadata=None)
PY
fi
[ -d .plip ] || "$BIN" index data
rm -rf thumbs out.txt
"$BIN" serve --port 0 --thumb-cache thumbs --index .plip >out.txt 2>err.txt &
PID=$!
for _ in $(seq 300); do grep -q listening out.txt 2>/dev/null && break; sleep 0.2; done
ADDR=$(sed -n 's#.*http://\(.*\)/#\1#p' out.txt)
SID=$(curl -s "http://$ADDR/api/search?q=tissue&top=1" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["hits"][0]["slide_id"])')
echo "slide $SID; before any tile: $(grep VmHWM /proc/$PID/status)"
for L in $LEVELS; do
  curl -s -m 900 -o /dev/null -w "level $L tile 0_0: status %{http_code} time %{time_total}s\n" \
    "http://$ADDR/api/slide/${SID}_files/$L/0_0.jpeg"
  echo "  peak RSS so far: $(grep VmHWM /proc/$PID/status)"
done
kill -INT $PID; wait $PID
