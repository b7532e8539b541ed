#!/usr/bin/env bash
# Peak memory (max RSS) of `plip index` as the folder grows: indexes the first N
# images of IMAGES_DIR into a fresh index for each N, and prints N, the peak RSS,
# the wall time and images/s.
#
#   benches/memory.sh [IMAGES_DIR] [MODEL_DIR] [N...]
#
# Defaults: benches/photos and the full-size random-weight PLIP
# (`python3 fixtures/generate.py full-size fixtures/full-size`), N = 256.
# For 100k images, make small distinct JPEGs and use tiny towers with PLIP's
# 512-d embeddings, so the stored vectors and the graph are full size but the
# run takes minutes, not hours:
#
#   python3 benches/make_photos.py /tmp/tiles 100000 256
#   python3 fixtures/generate.py tiny-512 /tmp/tiny-512
#   benches/memory.sh /tmp/tiles /tmp/tiny-512 1000 10000 100000
#
# The model's weights come on top of that: run the full-size model at 1,000
# images for the difference.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-benches/photos}
MODEL=${2:-fixtures/full-size}
shift $(($# < 2 ? $# : 2))
SIZES=("${@:-256}")
PLIP=${PLIP:-target/release/plip}
[ -x "$PLIP" ] || cargo build --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t files < <(find "$IMAGES" -type f | sort)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "folder: $IMAGES (${#files[@]} files), model: $MODEL"
printf '%8s %12s %9s %9s\n' images "peak RSS MB" "wall s" "images/s"
for n in "${SIZES[@]}"; do
    if [ "$n" -gt "${#files[@]}" ]; then
        echo "only ${#files[@]} images in $IMAGES, cannot index $n" >&2
        exit 1
    fi
    rm -rf "$work/in" "$work/idx"
    mkdir "$work/in"
    # hard links when the folder is on the same file system, else copies
    printf '%s\0' "${files[@]:0:n}" | xargs -0 cp -l -t "$work/in" 2>/dev/null ||
        printf '%s\0' "${files[@]:0:n}" | xargs -0 cp -t "$work/in"
    /usr/bin/time -f '%M %e' -o "$work/time" \
        "$PLIP" --model "$MODEL" --index "$work/idx" -q index "$work/in"
    read -r kb wall <"$work/time"
    printf '%8d %12.0f %9.1f %9.1f\n' "$n" "$(echo "$kb / 1024" | bc -l)" "$wall" \
        "$(echo "$n / $wall" | bc -l)"
done
