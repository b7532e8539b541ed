#!/usr/bin/env bash
# `plip serve` in a real browser: Debian's headless Chromium loads the page the
# way a person would, and the checks below read the DOM it rendered.
#
#   apt-get install chromium && bash tests/serve_browser.sh [OUT_DIR]
#
# 1. /?q=… : the debounced search runs and renders result cards with
#    thumbnails; the file `<img src=x onerror=alert(1)>.png` shows as text,
#    and no element was made from its name.
# 2. /?like=ID : what a click on a result ("more like this") navigates to;
#    the clicked image comes back first with score 1.000.
# 3. Screenshots of both (1440x900, a laptop screen) go to OUT_DIR
#    [default: target/serve-browser]; look at them.
# 4. tests/serve_click.py drives Chromium over the DevTools pipe and CLICKS:
#    an image result (more like this), a slide tile (the OpenSeadragon viewer,
#    zoomed to the boxed hit, then the heatmap toggle), "More slides like this"
#    (a found slide beside the viewed one, matched tiles boxed on both), and the
#    by-slide view.
# Exits 0 when every check passes, 1 when one fails, and 77 (skipped, said
# loudly) when there is no chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  echo "SKIPPED: serve_browser.sh needs Debian's chromium (apt-get install chromium)" >&2
  exit 77
fi
out=$(realpath -m "${1:-target/serve-browser}")
mkdir -p "$out"
cargo build --quiet
plip=${CARGO_TARGET_DIR:-$PWD/target}/debug/plip
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/slides/colon" "$work/slides/lung"
cp fixtures/images/*.png fixtures/images/*.jpg "$work/slides/colon/"
cp fixtures/images/*.tif fixtures/images/*.webp fixtures/images/*.bmp fixtures/images/*.gif "$work/slides/lung/"
evil='<img src=x onerror=alert(1)>.png'
cp fixtures/images/png_rgb_224x224.png "$work/slides/$evil"
mkdir -p "$work/wsi"
cp fixtures/slides/aperio_ycbcr.svs fixtures/slides/aperio_rgb.svs fixtures/slides/generic.tiff "$work/wsi/"
repo=$PWD
cd "$work"
export PLIP_MODEL="$OLDPWD/fixtures/model" HF_HUB_OFFLINE=1
"$plip" --quiet index slides wsi
"$plip" --quiet serve --port 0 --no-thumb-cache >"$work/addr" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/addr" && break; sleep 0.1; done
base=$(sed -n 's/^plip serve: listening on \(http:[^ ]*\)\/$/\1/p' "$work/addr")
[ -n "$base" ] || { echo "FAIL: the server did not start:"; cat "$work/serve.log"; exit 1; }

browse() { # URL OUT.png -> the rendered DOM on stdout
  chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-sync \
    --disable-background-networking --disable-component-update --hide-scrollbars \
    --user-data-dir="$work/profile" --window-size=1440,900 \
    --virtual-time-budget=8000 --run-all-compositor-stages-before-draw \
    --screenshot="$2" "$1" >/dev/null 2>&1
  chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-sync \
    --disable-background-networking --disable-component-update \
    --user-data-dir="$work/profile" --window-size=1440,900 \
    --virtual-time-budget=8000 --dump-dom "$1" 2>/dev/null
}
fails=0
check() { # NAME COMMAND...
  if "${@:2}"; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi
}

dom=$(browse "$base/?q=tumor%20tissue&top=24&under=slides" "$out/search.png")
printf '%s' "$dom" >"$out/search.html"
count() { grep -o "$1" <<<"$2" | wc -l || true; }
cards=$(count '<li class="card"' "$dom")
check "the typed query renders 15 result cards (got $cards)" test "$cards" -eq 15
check "every card has a thumbnail from the API" test "$(count 'src="/api/thumb/[0-9a-f]\{16\}"' "$dom")" -eq 15
check "the status line names the commit" grep -Eq 'commit [0-9]+' <<<"$dom"
check "the evil file name is shown as text" grep -qF '&lt;img src=x onerror=alert(1)&gt;.png' <<<"$dom"
check "no element was made from a file name" bash -c '! grep -qiE "<img[^>]*src=\"?x\"?[ >]|onerror=\"alert" <<<"$1"' _ "$dom"
check "the search box holds the query from the URL" grep -q 'tumor tissue' <<<"$dom"

id=$( (grep -o 'data-id="[0-9a-f]\{16\}"><button class="thumb"[^>]*aria-label="More like slides/colon/jpeg_rgb_640x480_q90.jpg' <<<"$dom" || true) | head -1 | cut -d'"' -f2)
check "the results include slides/colon/jpeg_rgb_640x480_q90.jpg" test -n "$id"
dom2=$(browse "$base/?like=$id" "$out/more-like-this.png")
printf '%s' "$dom2" >"$out/more-like-this.html"
first=$( (grep -o '<li class="card" data-id="[0-9a-f]*"' <<<"$dom2" || true) | head -1 | cut -d'"' -f4)
check "more like this: the clicked image comes back first" test "$first" = "$id"
check "more like this: scored 1.000" grep -q '<span class="score">1.000</span>' <<<"$dom2"
check "more like this: shown as a query chip" grep -q 'like slides/colon/jpeg_rgb_640x480_q90.jpg\|like item '"$id" <<<"$dom2"
dom3=$(browse "$base/?q=a&top=0" "$out/error.png")
check "a bad query shows the server's message" grep -q 'class="message error"[^>]*>`top` must be' <<<"$dom3"
echo "clicking through the page (tests/serve_click.py):"
# A QuPath GeoJSON of every tile of the slide the viewer opens, for the overlay check.
"$plip" --quiet heatmap wsi/aperio_ycbcr.svs "tumor tissue" "fat" --geojson "$work/heatmap.geojson"
export PLIP_GEOJSON="$work/heatmap.geojson"
if python3 "$repo/tests/serve_click.py" "$base" "$out"; then echo "ok: every click check"; else echo "FAIL: a click check"; fails=$((fails + 1)); fi
check "the server logged no panic" bash -c '! grep -qi panick "$1"' _ "$work/serve.log"
echo "screenshots: $out/*.png"
[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all browser checks passed"
