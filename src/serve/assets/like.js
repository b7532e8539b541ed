// "More slides like this" in the slide viewer (issue 32): the viewed slide as the
// query (/api/slide/ID/like, answered as `plip search --image SLIDE --json`), the
// ranked slides in a side list, and a found slide opened beside the query slide
// with its matched tiles boxed on both, pair k in the same colour and number.
// Uses app.js's helpers ($, el, api, showMessage, loadOsd) and its `viewer`.
"use strict";

// Distinct on the dark viewer and on H&E pink; the hit box keeps cyan.
const PAIR_COLOURS = ["#ffb000", "#ff3d9a", "#7cff5a", "#b388ff", "#ff6e40"];
const like = { answer: null, open: null, osd2: null, qboxes: [], region: null }; // open: the slide shown

function pairColour(k) {
  return PAIR_COLOURS[k % PAIR_COLOURS.length];
}

async function listLikes() {
  if (!viewer) return;
  const v = viewer;
  $("likes").hidden = false;
  $("llist").replaceChildren();
  $("lsum").textContent = "Ranking the other slides…";
  document.body.dataset.like = "loading";
  const p = new URLSearchParams({ top: "20" });
  if ($("lscore").value) p.set("score", $("lscore").value);
  showRegion(v, $("lwhat").value === "view" ? inView(v) : null);
  if (like.region) p.set("region", like.region.join(","));
  let r;
  try {
    r = await api(`/api/slide/${encodeURIComponent(v.item.slide_id)}/like?${p}`);
  } catch (e) {
    $("lsum").textContent = "";
    showMessage(e.message, "error");
    document.body.dataset.like = "failed";
    return;
  }
  if (viewer !== v) return;
  like.answer = r;
  const n = r.slides.length;
  $("lsum").textContent = `${n} slide${n === 1 ? "" : "s"} · ${r.query.tiles} query tiles` +
    (r.mosaic ? ` (a mosaic of ${r.mosaic})` : "") + ` · ${r.score} · ${r.took_ms} ms`;
  if (!n) $("lsum").textContent += " · no other slide in the index";
  for (const s of r.slides) $("llist").append(likeCard(s));
  document.body.dataset.like = "listed";
}

// The level-0 region in view, clipped to the slide.
function inView(v) {
  const b = v.osd.viewport.viewportToImageRectangle(v.osd.viewport.getBounds(true));
  const W = v.item.slide_width, H = v.item.slide_height;
  const x = Math.max(0, Math.floor(b.x)), y = Math.max(0, Math.floor(b.y));
  const w = Math.min(W, Math.ceil(b.x + b.width)) - x, h = Math.min(H, Math.ceil(b.y + b.height)) - y;
  return w > 0 && h > 0 ? [x, y, w, h] : null;
}

// The query region, dashed on the query slide (none: the whole slide).
function showRegion(v, region) {
  if (like.regionBox) v.osd.removeOverlay(like.regionBox);
  like.regionBox = null;
  like.region = region;
  if (!region) return;
  const b = el("div", "qregion");
  b.id = "qregion";
  b.title = "The query: the tiles whose centre lies in this region";
  v.osd.addOverlay({ element: b, location: v.osd.viewport.imageToViewportRectangle(...region) });
  like.regionBox = b;
}

// A found slide: its thumbnail with its matched tiles boxed, rank, score, name.
function likeCard(s) {
  const li = el("li", "likeslide");
  li.dataset.slide = s.slide_id;
  const open = el("button", "lthumb");
  open.type = "button";
  open.title = "Open beside this slide, with the matched regions boxed on both";
  open.setAttribute("aria-label", `Compare with ${s.path} (rank ${s.rank}, score ${s.score.toFixed(3)})`);
  const frame = el("span", "frame");
  const W = s.slide_width || 1, H = s.slide_height || 1;
  frame.style.aspectRatio = `${W} / ${H}`;
  if (W >= H) frame.style.width = "100%";
  else frame.style.height = "100%";
  const img = el("img");
  img.alt = "";
  img.src = s.thumb;
  frame.append(img);
  s.matches.forEach((m, k) => {
    const b = el("span", "pairbox");
    b.style.left = (100 * m.found.x / W) + "%";
    b.style.top = (100 * m.found.y / H) + "%";
    b.style.width = (100 * m.found.w / W) + "%";
    b.style.height = (100 * m.found.h / H) + "%";
    b.style.borderColor = pairColour(k);
    frame.append(b);
  });
  open.append(frame);
  open.addEventListener("click", () => compare(s));
  const meta = el("div", "meta");
  const top = el("div", "line");
  top.append(el("span", "rank", "#" + s.rank), el("span", "score", s.score.toFixed(3)));
  const cut = s.path.lastIndexOf("/");
  const name = el("div", "name", s.path.slice(cut + 1));
  name.title = s.path;
  meta.append(top, name, el("div", "tilepos", `${s.tiles} tiles · ${s.matches.length} matched`));
  const pairs = el("ol", "pairs");
  s.matches.forEach((m, k) => {
    const p = el("li");
    const b = el("button", "pair");
    b.type = "button";
    b.title = `Query tile @ ${m.query.x},${m.query.y} ↔ its tile @ ${m.found.x},${m.found.y}`;
    const dot = el("span", "pairno", String(k + 1));
    dot.style.background = pairColour(k);
    b.append(dot, el("span", "", `cos ${m.score.toFixed(3)}`));
    b.addEventListener("click", () => compare(s, k));
    p.append(b);
    pairs.append(p);
  });
  meta.append(pairs);
  li.append(open, meta);
  return li;
}

// Boxes on `osd` around level-0 regions, box k numbered k + 1. Several query tiles
// can match one tile of the found slide: their numbers then sit side by side.
function pairBoxes(osd, regions, cls) {
  const seen = new Map();
  return regions.map((r, k) => {
    const at = `${r.x},${r.y},${r.w},${r.h}`;
    const slot = seen.get(at) || 0;
    seen.set(at, slot + 1);
    return pairBox(osd, r, k, cls, slot);
  });
}

function pairBox(osd, r, k, cls, slot) {
  const b = el("div", "pairbox " + cls);
  b.style.borderColor = pairColour(k);
  const n = el("span", "pairno", String(k + 1));
  n.style.background = pairColour(k);
  n.style.left = `${2 + 22 * slot}px`;
  b.title = `Pair ${k + 1}`;
  b.append(n);
  osd.addOverlay({ element: b, location: osd.viewport.imageToViewportRectangle(r.x, r.y, r.w, r.h) });
  return b;
}

// The viewport rectangle around `regions` (one of them when `only` is given), with a margin.
function around(osd, regions, only) {
  const rs = only === undefined ? regions : [regions[only]];
  const x0 = Math.min(...rs.map((r) => r.x)), y0 = Math.min(...rs.map((r) => r.y));
  const x1 = Math.max(...rs.map((r) => r.x + r.w)), y1 = Math.max(...rs.map((r) => r.y + r.h));
  const m = Math.max(x1 - x0, y1 - y0) * 0.35 + rs[0].w;
  return osd.viewport.imageToViewportRectangle(x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m);
}

// Opens `s` beside the query slide, pairs boxed on both; `pair` zooms to one pair.
async function compare(s, pair) {
  if (!viewer) return;
  const v = viewer;
  for (const li of document.querySelectorAll("#llist .likeslide")) {
    li.classList.toggle("open", li.dataset.slide === s.slide_id);
  }
  for (const b of like.qboxes) v.osd.removeOverlay(b);
  const queries = s.matches.map((m) => m.query);
  const founds = s.matches.map((m) => m.found);
  like.qboxes = pairBoxes(v.osd, queries, "q");
  if (queries.length) v.osd.viewport.fitBounds(around(v.osd, queries, pair));
  $("qcap").textContent = `${like.region ? "This view" : "This slide"} · ${v.item.path}`;
  $("qcap").hidden = false;
  $("fcap").textContent = `#${s.rank} · ${s.path} · score ${s.score.toFixed(3)} (${like.answer.score})`;
  $("pane2").hidden = false;
  $("panes").classList.add("two");
  if (like.open === s.slide_id && like.osd2) {
    if (founds.length) like.osd2.viewport.fitBounds(around(like.osd2, founds, pair));
    return;
  }
  if (like.osd2) like.osd2.destroy();
  like.open = s.slide_id;
  document.body.dataset.like = "comparing";
  await loadOsd();
  const osd2 = window.OpenSeadragon({
    element: $("osd2"),
    tileSources: s.dzi,
    showNavigationControl: false,
    crossOriginPolicy: false,
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.5,
    gestureSettingsMouse: { clickToZoom: false },
  });
  like.osd2 = osd2;
  osd2.addHandler("open", () => {
    pairBoxes(osd2, founds, "f");
    if (founds.length) osd2.viewport.fitBounds(around(osd2, founds, pair), true);
    const tiled = osd2.world.getItemAt(0);
    const done = () => { if (tiled.getFullyLoaded() && like.osd2 === osd2) document.body.dataset.like = "compared"; };
    tiled.addHandler("fully-loaded-change", done);
    done();
  });
  osd2.addHandler("open-failed", (ev) => showMessage("The slide could not be opened: " + (ev.message || "error"), "error"));
}

function closeCompare() {
  if (like.osd2) like.osd2.destroy();
  like.osd2 = null;
  like.open = null;
  if (viewer) for (const b of like.qboxes) viewer.osd.removeOverlay(b);
  like.qboxes = [];
  $("pane2").hidden = true;
  $("qcap").hidden = true;
  $("panes").classList.remove("two");
  for (const li of document.querySelectorAll("#llist .likeslide.open")) li.classList.remove("open");
  if (document.body.dataset.like) document.body.dataset.like = "listed";
}

$("vslides").addEventListener("click", listLikes);
$("lscore").addEventListener("change", () => { closeCompare(); listLikes(); });
$("lwhat").addEventListener("change", () => { closeCompare(); listLikes(); });
$("fclose").addEventListener("click", closeCompare);
$("lclose").addEventListener("click", () => {
  closeCompare();
  if (viewer) showRegion(viewer, null);
  $("likes").hidden = true;
  delete document.body.dataset.like;
});
