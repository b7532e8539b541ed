#!/usr/bin/env bash
# Looks at the results page the way a person would: indexes the fixture images,
# writes `plip search --html`, and screenshots it with headless Chromium (Debian's
# `chromium` package). Not part of `cargo test`, since CI machines have no browser.
#
#   apt-get install chromium && bash tests/html_screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/results-page.png}")
cargo build --quiet
plip=${CARGO_TARGET_DIR:-$PWD/target}/debug/plip
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/slides"
cp fixtures/images/* "$work/slides/"
cp fixtures/images/png_rgb_224x224.png "$work/slides/<img src=x onerror=alert(1)>.png"
cd "$work"
"$plip" --quiet --model "$OLDPWD/fixtures/model" index slides
"$plip" search "tumor <b>tissue</b>" --top 12 --html results.html >/dev/null
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --window-size=1280,1400 \
  --screenshot="$out" "file://$work/results.html" 2>/dev/null
echo "screenshot: $out"
