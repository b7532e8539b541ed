#!/usr/bin/env bash
# Side by side: the Python reference route and plip on the same folder, model
# architecture and thread count, one after the other, then the ratios.
#
#   benches/compare.sh [IMAGES_DIR] [MODEL_DIR] [THREADS]
#
# Defaults: benches/photos (make it with `python3 benches/make_photos.py`), the
# full-size random-weight PLIP made by `python3 fixtures/generate.py full-size
# fixtures/full-size` (weights do not change speed), and all cores.
# Needs: pip install -r fixtures/requirements.txt; cargo build --release.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-benches/photos}
MODEL=${2:-fixtures/full-size}
THREADS=${3:-$(nproc)}
PLIP=${PLIP:-target/release/plip}
[ -x "$PLIP" ] || cargo build --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=$(find "$IMAGES" -type f | wc -l)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "folder: $IMAGES ($n files), model: $MODEL, threads: $THREADS"

echo "--- reference (transformers CLIPModel + PIL CLIPImageProcessor, batch 16)"
ref=$(python3 benches/reference.py images "$IMAGES" --model "$MODEL" --threads "$THREADS" --batch-size 16)
echo "$ref"

echo "--- plip index (batch 16)"
start=$(date +%s.%N)
RAYON_NUM_THREADS=$THREADS "$PLIP" --model "$MODEL" --threads "$THREADS" --index "$work/idx" index "$IMAGES" --batch-size 16 2>"$work/plip.err"
end=$(date +%s.%N)
cat "$work/plip.err"
plip_wall=$(echo "$end - $start" | bc -l)

python3 - "$ref" "$plip_wall" "$n" <<'PY'
import json, sys
ref = json.loads(sys.argv[1]); plip_wall = float(sys.argv[2]); n = int(sys.argv[3])
ref_wall = ref["total_s"]
print(f"whole process: reference {ref_wall:.1f} s ({n/ref_wall:.2f} images/s), "
      f"plip {plip_wall:.1f} s ({n/plip_wall:.2f} images/s), ratio {ref_wall/plip_wall:.2f}x")
print(f"reference steady state (after import and load): {ref['images_per_s']:.2f} images/s")
PY
