#!/usr/bin/env bash
# Whole-slide benchmarks (issue 17). Not a timed test: run by hand, numbers go in reports.
#
#   benches/slides.sh [speed|rss|tissue|all]   (env: MODEL, THREADS, SIDE, ROUNDS, PY, SLIDEPY)
#
# speed:  tiles/s of `plip index` on a generated 20x slide (every grid tile, --min-tissue 0)
#         vs benches/slides_reference.py (OpenSlide read_region + Pillow + CLIPProcessor +
#         CLIPModel, batch 16), same threads, same model, whole process each.
# rss:    peak RSS (/usr/bin/time -v) of `plip index` on a 400-MP single-level slide
#         (20000 x 20000) with the model in MODEL; tissue only in an ellipse, so it embeds
#         the kept tiles and streams the rest.
# tissue: the 100k x 80k pyramid tissue-detection timing (a unit test that prints it).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "${MODEL:-fixtures/full-size}")
THREADS=${THREADS:-$(nproc)}
SIDE=${SIDE:-4480}
PY=${PY:-/work/venv-ref/bin/python}          # torch + transformers
SLIDEPY=${SLIDEPY:-/work/venv-slide/bin/python}  # tifffile + openslide
export OPENSLIDE_SITE=${OPENSLIDE_SITE:-$($SLIDEPY -c 'import site; print(site.getsitepackages()[0])')}
BIN=$(realpath -m "${BIN:-target/release/plip}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
what=${1:-all}

[ -x "$BIN" ] || cargo build --release --bin plip

if [[ $what == speed || $what == all ]]; then
  mkdir -p "$W/speed"
  $SLIDEPY benches/make_slide.py "$W/speed/s.svs" --side "$SIDE" --pyramid
  # Alternating rounds (plip, then the Python route), each a whole process from a fresh
  # index; the ratio of each round's pair, then the median (this VM's speed drifts).
  for round in $(seq "${ROUNDS:-3}"); do
    start=$(date +%s.%N)
    (cd "$W" && PLIP_MODEL="$MODEL" "$BIN" --threads "$THREADS" -q \
        index speed --rebuild --min-tissue 0 --batch-size 16)
    end=$(date +%s.%N)
    n=$(cd "$W" && PLIP_MODEL="$MODEL" "$BIN" info --json | \
        python3 -c 'import json,sys; print(json.load(sys.stdin)["images"])')
    plip_rate=$(python3 -c "print($n/($end-$start))")
    echo "round $round plip: $n tiles in $(python3 -c "print(f'{$end-$start:.1f}')") s = $plip_rate tiles/s ($THREADS threads)"
    ref=$($PY benches/slides_reference.py "$W/speed/s.svs" "$MODEL" "$THREADS")
    echo "round $round $ref"
    ref_rate=$(sed -n 's/.* = \([0-9.]*\) tiles\/s.*/\1/p' <<<"$ref")
    echo "$plip_rate $ref_rate" >> "$W/rates"
  done
  python3 - "$W/rates" <<'PY'
import statistics, sys
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
ratios = [p / r for p, r in pairs]
print("plip / python route per round:", " ".join(f"{x:.2f}x" for x in ratios),
      f"| median {statistics.median(ratios):.2f}x")
PY
fi

if [[ $what == rss || $what == all ]]; then
  mkdir -p "$W/rss"
  $SLIDEPY benches/make_slide.py "$W/rss/big.svs" --side 20000
  (cd "$W" && PLIP_MODEL="$MODEL" /usr/bin/time -v "$BIN" --threads "$THREADS" \
      -q index rss 2> "$W/time.txt") || true
  grep -E "Maximum resident|Elapsed" "$W/time.txt"
  (cd "$W" && PLIP_MODEL="$MODEL" "$BIN" info | grep big.svs)
fi

if [[ $what == tissue || $what == all ]]; then
  cargo test --release --lib tissue_detection_on_100k_pyramid_is_fast -- --nocapture 2>&1 | \
    grep 100000x80000
fi
