#!/usr/bin/env bash
# --precision auto against forced f32 and bf16 (issue 29). Not a timed test: run by hand,
# numbers go in BENCHMARKS.md with the CPU's model name.
#
#   benches/precision.sh [photos|slide|all]   (env: MODEL, THREADS, ROUNDS, PHOTOS, SIDE, PY, BIN)
#
# photos: `plip index` on benches/photos (256 JPEGs, make them with benches/make_photos.py),
#         whole process, fresh index each run, the three precisions in alternating rounds.
# slide:  `plip index --min-tissue 0` on a generated 20x slide (benches/make_slide.py), the
#         three precisions, then the Python route (OpenSlide + Pillow + CLIPProcessor +
#         CLIPModel, benches/slides_reference.py) in f32 and under torch's bf16 autocast,
#         all in alternating rounds; tiles/s of each whole process.
# The auto runs use a warm calibration cache (the first auto run of a CPU measures once).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "${MODEL:-fixtures/full-size}")
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-3}
PHOTOS=$(realpath "${PHOTOS:-benches/photos}")
SIDE=${SIDE:-4480}
PY=${PY:-/work/venv-ref/bin/python}
BIN=$(realpath -m "${BIN:-target/release/plip}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
what=${1:-all}
[ -x "$BIN" ] || cargo build --release --bin plip
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores; $THREADS threads); bf16 in hardware: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no)"
export PLIP_CACHE_DIR="$W/cache"
"$BIN" -q --model "$MODEL" --index "$W/warm" index "$PHOTOS/photo0000.jpg" >/dev/null
"$BIN" --model "$MODEL" --index "$W/warm" info | sed -n 's/^ *last run: */auto chose: /p' | head -1

run_plip() {  # $1 precision, $2 input, extra args...
  local p=$1 input=$2; shift 2
  rm -rf "$W/idx"
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" -q --threads "$THREADS" --model "$MODEL" --index "$W/idx" --precision "$p" \
    index "$input" --batch-size 16 "$@"
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.2f}')"
}

if [[ $what == photos || $what == all ]]; then
  n=$(ls "$PHOTOS" | wc -l)
  echo "--- photos: $n files, whole process seconds per round (f32 / bf16 / auto)"
  for r in $(seq "$ROUNDS"); do
    a=$(run_plip f32 "$PHOTOS"); b=$(run_plip bf16 "$PHOTOS"); c=$(run_plip auto "$PHOTOS")
    echo "round $r: f32 $a s, bf16 $b s, auto $c s | bf16 = $(python3 -c "print(f'{$a/$b:.2f}')")x f32, auto/bf16 time = $(python3 -c "print(f'{$c/$b:.3f}')")"
  done
fi

if [[ $what == slide || $what == all ]]; then
  "$PY" benches/make_slide.py "$W/s.svs" --side "$SIDE" --pyramid >/dev/null
  mkdir -p "$W/slide" && mv "$W/s.svs" "$W/slide/"
  echo "--- slide: ${SIDE}x${SIDE} at 0.5 um/px, every grid tile, tiles/s per round"
  for r in $(seq "$ROUNDS"); do
    line="round $r:"
    for p in f32 bf16 auto; do
      t=$(run_plip "$p" "$W/slide" --min-tissue 0)
      n=$("$BIN" --model "$MODEL" --index "$W/idx" info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"])')
      line="$line plip $p $(python3 -c "print(f'{$n/$t:.1f}')"),"
    done
    f=$("$PY" benches/slides_reference.py "$W/slide/s.svs" "$MODEL" "$THREADS" | sed -n 's/.* = \([0-9.]*\) tiles.*/\1/p')
    g=$(PLIP_REF_AUTOCAST=bf16 "$PY" benches/slides_reference.py "$W/slide/s.svs" "$MODEL" "$THREADS" | sed -n 's/.* = \([0-9.]*\) tiles.*/\1/p')
    echo "$line python f32 $f, python bf16-autocast $g (tiles/s; $n tiles)"
  done
fi
