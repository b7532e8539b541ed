#!/usr/bin/env bash
# Looks at the `plip eval --html` reports the way a person would: makes a small labelled
# data set from the fixture images (one class named like an HTML tag, to see it escaped),
# writes the linear-probe, zero-shot and retrieval pages, and screenshots each with headless
# Chromium (Debian's `chromium` package). Not part of `cargo test`: CI has no browser.
#
#   apt-get install chromium && bash tests/eval_report_screenshot.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/eval-report-shots}")
mkdir -p "$out"
cargo build --quiet
plip=${CARGO_TARGET_DIR:-$PWD/target}/debug/plip
model="$PWD/fixtures/model"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
imgs=(fixtures/images/*)
classes=("tumor" "stroma" "<b>lymph" "adipose & fat")
for i in "${!imgs[@]}"; do
  c=${classes[$((i % 4))]}
  mkdir -p "$work/data/$c"
  cp "${imgs[$i]}" "$work/data/$c/"
  cp "${imgs[$i]}" "$work/data/$c/copy_$(basename "${imgs[$i]}")"
done
{
  echo "image,caption"
  for f in fixtures/images/*; do
    b=$(basename "$f")
    echo "$b,\"an H&E image of <i>${b%.*}</i>\""
  done
} >"$work/pairs.csv"
cp fixtures/images/* "$work/"
cd "$work"
"$plip" --quiet --model "$model" eval linear-probe data --html probe.html --cache cache >/dev/null
"$plip" --quiet --model "$model" eval zero-shot data --templates pathology --html zero-shot.html --cache cache >/dev/null
"$plip" --quiet --model "$model" eval retrieval --pairs pairs.csv --html retrieval.html --cache cache >/dev/null
for page in probe zero-shot retrieval; do
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --window-size=1280,2200 \
    --screenshot="$out/$page.png" "file://$work/$page.html" 2>/dev/null
  echo "screenshot: $out/$page.png"
done
