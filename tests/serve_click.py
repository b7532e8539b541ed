#!/usr/bin/env python3
"""Drives headless Chromium like a person over `plip serve`: types nothing, but
clicks. Chromium runs with --remote-debugging-pipe and is spoken to over the
DevTools protocol on fds 3/4 (NUL-delimited JSON), with python3's standard
library only.

    python3 tests/serve_click.py BASE_URL OUT_DIR

1. /?q=tumor tissue&under=slides : waits for the result cards, clicks an image
   card's thumbnail at its centre (Input.dispatchMouseEvent), and checks that
   the page went to "more like this" with the clicked image first at 1.000.
2. /?q=tissue&under=wsi : clicks the card of a tile of the Aperio slide, checks the viewer's URL
   (/slide/ID?q=...), waits for OpenSeadragon to draw every tile it wants,
   checks the hit box sits inside the viewer, clicks the heatmap toggle and
   checks the overlay and its legend.
3. The viewer's "More slides like this": the other slides listed with their
   matched tiles boxed; a click opens one beside the query slide, and the
   matched tiles are boxed on both viewers, inside them; then the part in
   view as the query.
4. /?q=tissue&by_slide=1 : slide cards with the best tile boxed; a click opens
   the viewer at that tile.
Screenshots of each step go to OUT_DIR. Prints ok:/FAIL: lines; exits 1 when a
check fails.
"""

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.parse

BASE, OUT = sys.argv[1].rstrip("/"), sys.argv[2]
fails = 0


def check(name, ok):
    global fails
    print(("ok: " if ok else "FAIL: ") + name, flush=True)
    if not ok:
        fails += 1


class Browser:
    def __init__(self, profile):
        to_browser_r, self.w = os.pipe()
        self.r, from_browser_w = os.pipe()
        # Moved above 3 and 4 first, so the dup2 below never maps a fd onto itself.
        hi_r, hi_w = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100
        os.dup2(to_browser_r, hi_r)
        os.dup2(from_browser_w, hi_w)

        def fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-sync", "--disable-background-networking", "--disable-component-update",
             "--hide-scrollbars", "--remote-debugging-pipe", "--user-data-dir=" + profile,
             "--window-size=1440,900", "about:blank"],
            preexec_fn=fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_browser_r, from_browser_w, hi_r, hi_w):
            os.close(fd)
        self.buf = b""
        self.errors = []  # script exceptions, console errors, CSP violations, failed loads
        self.next_id = 0
        self.session = None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Log.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": False})

    def recv(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method, params=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self.recv(deadline)
            method_ = m.get("method")
            if method_ == "Runtime.exceptionThrown":
                self.errors.append(m["params"]["exceptionDetails"].get("text", "exception"))
            elif method_ == "Runtime.consoleAPICalled" and m["params"]["type"] == "error":
                self.errors.append(str(m["params"]["args"])[:200])
            elif method_ == "Log.entryAdded" and m["params"]["entry"]["level"] == "error":
                self.errors.append(m["params"]["entry"].get("text", "")[:200])
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def js(self, expr):
        r = self.send("Runtime.evaluate",
                      {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expr):
                return True
            time.sleep(0.1)
        return False

    def go(self, url):
        self.send("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete'")

    def click(self, selector):
        """Clicks the centre of the first element matching `selector`, as a mouse does."""
        at = self.js(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return null;
            e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""")
        if not at:
            return False
        x, y = at
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
        return True

    def shot(self, name):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path = os.path.join(OUT, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def q(**params):
    return BASE + "/?" + urllib.parse.urlencode(params)


with tempfile.TemporaryDirectory() as profile:
    b = Browser(profile)
    try:
        # 1. A click on an image result: more like this.
        b.go(q(q="tumor tissue", under="slides"))
        check("results render", b.wait("document.querySelectorAll('#results .card').length > 0"))
        card = '#results .card:not(.tile)'
        clicked = b.js(f"document.querySelector({json.dumps(card)})?.dataset.id")
        check("an image card was clicked", bool(clicked) and b.click(card + " .thumb"))
        check("the click went to more like this",
              b.wait(f"location.search.includes('like={clicked}')"))
        check("the clicked image comes back first",
              b.wait(f"document.querySelector('#results .card')?.dataset.id === '{clicked}'"))
        # Waited for, not read once: when the clicked image already ranked first
        # for the text query, the check above passes before "more like this"
        # has rendered.
        check("scored 1.000",
              b.wait("document.querySelector('#results .card .score')?.textContent === '1.000'"))
        b.shot("click-more-like-this.png")

        # 2. A click on a slide tile: the viewer, zoomed to the hit, then the heatmap.
        b.go(q(q="tissue", under="wsi"))
        check("slide tiles render as cards",
              b.wait("document.querySelectorAll('#results .card.tile').length > 0"))
        # A tile of the 3-level Aperio slide, so the viewer reads more than one level.
        tile = b.js("""[...document.querySelectorAll('#results .card.tile')]
            .find(c => c.querySelector('.name').textContent === 'aperio_ycbcr.svs')?.dataset.id""")
        b.shot("slide-results.png")
        check("a slide tile card was clicked",
              bool(tile) and b.click(f'#results .card.tile[data-id="{tile}"] .thumb'))
        check("the viewer's URL names the tile and keeps the query",
              b.wait(f"location.pathname === '/slide/{tile}' && location.search.includes('q=tissue')"))
        check("OpenSeadragon drew the slide", b.wait("document.body.dataset.viewer === 'drawn'", 30))
        check("Deep Zoom tiles were fetched from plip",
              b.js("performance.getEntriesByType('resource').some(e => /_files\\/\\d+\\/\\d+_\\d+\\.jpeg$/.test(e.name))"))
        box = b.js("""(() => {
            const h = document.getElementById('hitbox'), v = document.getElementById('osd');
            if (!h || !v) return null;
            const a = h.getBoundingClientRect(), o = v.getBoundingClientRect();
            return {w: a.width, h: a.height, inside: a.left >= o.left - 1 && a.right <= o.right + 1
                    && a.top >= o.top - 1 && a.bottom <= o.bottom + 1,
                    side: Math.min(o.width, o.height)};
        })()""")
        check(f"the hit is boxed inside the viewer, zoomed to it ({box})",
              bool(box) and box["inside"] and box["w"] > 0.25 * box["side"])
        check("the hit box is above the heatmap",
              b.js("getComputedStyle(document.getElementById('hitbox')).zIndex") == "2")
        check("the page names the slide",
              b.js("document.getElementById('vname').textContent") == "wsi/aperio_ycbcr.svs")
        time.sleep(0.5)
        b.shot("viewer.png")
        check("the heatmap toggle was clicked", b.click("#heat"))
        check("the heatmap overlay is drawn", b.wait("!!document.getElementById('heatmap')"))
        check("with its legend", b.wait("!document.getElementById('legend').hidden"))
        time.sleep(0.5)
        b.shot("viewer-heatmap.png")
        check("no error message", not b.js("document.querySelector('.message.error')?.textContent"))
        # The GeoJSON overlay: `plip heatmap --geojson` of this slide, picked with the
        # file input (as a person picks it), drawn over the slide.
        geojson = os.environ.get("PLIP_GEOJSON")
        if geojson:
            b.click("#heat")
            root = b.send("DOM.getDocument")["root"]["nodeId"]
            node = b.send("DOM.querySelector", {"nodeId": root, "selector": "#gjfile"})["nodeId"]
            b.send("DOM.setFileInputFiles", {"nodeId": node, "files": [geojson]})
            with open(geojson) as f:
                want = len(json.load(f)["features"])
            check(f"the GeoJSON overlay draws its {want} tiles",
                  b.wait(f"document.getElementById('geojson')?.dataset.features === '{want}'"))
            check("the overlay toggle is on", b.js("document.getElementById('gjon').checked"))
            b.js("viewer.osd.viewport.goHome(true) && 1")
            time.sleep(0.8)
            b.shot("viewer-geojson.png")
            check("the toggle hides it", b.click("#gjon") and b.wait("!document.getElementById('geojson')"))

        # 3. More slides like this: the viewed slide as the query; a found slide opens
        # beside it with the matched tiles boxed on both.
        b.go(BASE + f"/slide/{tile}?q=tissue")
        check("the viewer opened again", b.wait("document.body.dataset.viewer === 'drawn'", 30))
        check("the More slides like this button was clicked", b.click("#vslides"))
        check("the slides like it are listed", b.wait("document.body.dataset.like === 'listed'", 30))
        listed = b.js("[...document.querySelectorAll('#llist .likeslide .name')].map(n => n.title)")
        check(f"every other slide is listed, not the query ({listed})",
              sorted(listed or []) == ["wsi/aperio_rgb.svs", "wsi/generic.tiff"])
        check("each listed slide boxes its matched tiles on its thumbnail",
              b.js("[...document.querySelectorAll('#llist .likeslide')].every(c => c.querySelectorAll('.frame .pairbox').length > 0)"))
        b.wait("[...document.querySelectorAll('#llist img')].every(i => i.complete)")
        check("the first slide was clicked", b.click("#llist .likeslide .lthumb"))
        check("it opens beside the query slide", b.wait("document.body.dataset.like === 'compared'", 30))
        boxes = b.js("""(() => {
            const n = document.querySelectorAll('#llist .likeslide.open .pair').length;
            const inside = (sel, pane) => {
                const o = document.getElementById(pane).getBoundingClientRect();
                const bs = [...document.querySelectorAll(sel)].map(e => e.getBoundingClientRect());
                return {n: bs.length, inside: bs.every(a => a.width > 2 && a.left >= o.left - 1 &&
                    a.right <= o.right + 1 && a.top >= o.top - 1 && a.bottom <= o.bottom + 1)};
            };
            return {pairs: n, q: inside('#osd .pairbox.q', 'osd'), f: inside('#osd2 .pairbox.f', 'osd2'),
                    two: document.getElementById('panes').classList.contains('two')};
        })()""")
        check(f"the matched tiles are boxed on both slides, inside each viewer ({boxes})",
              bool(boxes) and boxes["two"] and boxes["pairs"] > 0
              and boxes["q"]["n"] == boxes["pairs"] == boxes["f"]["n"]
              and boxes["q"]["inside"] and boxes["f"]["inside"])
        check("the found slide's caption names it",
              "wsi/" in (b.js("document.getElementById('fcap').textContent") or ""))
        time.sleep(0.8)
        b.shot("viewer-more-slides.png")
        check("a pair chip was clicked", b.click("#llist .likeslide.open .pair"))
        time.sleep(0.8)
        b.shot("viewer-more-slides-pair.png")
        check("the comparison closes", b.click("#fclose") and b.wait("document.getElementById('pane2').hidden"))
        check("no error message after the comparison",
              not b.js("document.querySelector('.message.error')?.textContent"))
        # The part in view as the query: the region is dashed on the slide.
        b.js("viewer.osd.viewport.goHome(true) && 1")
        b.js("""(() => { const s = document.getElementById('lwhat'); s.value = 'view';
                 s.dispatchEvent(new Event('change')); return 1; })()""")
        check("this view as the query lists the slides again",
              b.wait("document.body.dataset.like === 'listed' && document.querySelectorAll('#llist .likeslide').length === 2", 30))
        check("the query region is dashed on the slide", b.js("!!document.getElementById('qregion')"))
        check("scored by bag, as a region is", "bag" in (b.js("document.getElementById('lsum').textContent") or ""))
        b.click("#llist .likeslide .lthumb")
        b.wait("document.body.dataset.like === 'compared'", 30)
        time.sleep(0.8)
        b.shot("viewer-more-slides-view.png")

        # 4. By slide: thumbnails with the best tile boxed; a click opens the viewer.
        b.go(q(q="tissue", by_slide="1"))
        check("slide cards render", b.wait("document.querySelectorAll('#results .card.slide').length > 0"))
        check("each slide card boxes its best tile",
              b.js("[...document.querySelectorAll('#results .card.slide')].every(c => c.querySelector('.hitbox'))"))
        check("the by-slide toggle is on", b.js("document.getElementById('byslide').checked"))
        b.wait("[...document.querySelectorAll('#results .card.slide img')].every(i => i.complete)")
        b.shot("by-slide.png")
        best = b.js("document.querySelector('#results .card.slide')?.dataset.id")
        check("a slide card was clicked", bool(best) and b.click("#results .card.slide .thumb"))
        check("it opens the viewer at the best tile",
              b.wait(f"location.pathname === '/slide/{best}'")
              and b.wait("document.body.dataset.viewer === 'drawn'", 30)
              and b.js("!!document.getElementById('hitbox')"))
        time.sleep(0.5)
        b.shot("viewer-best-tile.png")
        check(f"no script errors, CSP violations or failed loads {b.errors}", not b.errors)
    finally:
        b.close()

sys.exit(1 if fails else 0)
