// plip serve's page. No dependencies but OpenSeadragon (vendored, served by plip,
// loaded only for the slide viewer). Every name from the index is put on the
// page with textContent or as an attribute value, never as HTML, and the CSP
// allows only same-origin scripts.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// The query: what the address bar carries, plus an uploaded image (which it cannot).
const state = {
  q: "",
  terms: [], // {sign: "add"|"sub", w: number, text: string}
  likes: [], // {w: number, id: string, label: string}
  under: "",
  threshold: "",
  top: "24",
  bySlide: false,
  image: null, // {blob, name, url}
};

let seq = 0; // answers to older requests are dropped
let inflight = null;
let debounce = null;

function fmtW(w) {
  return String(Math.round(w * 1000) / 1000);
}

function toParams(withTop) {
  const p = new URLSearchParams();
  if (state.q.trim()) p.set("q", state.q);
  for (const t of state.terms) p.append(t.sign, t.w === 1 ? t.text : `${fmtW(t.w)}:${t.text}`);
  for (const l of state.likes) p.append("like", l.w === 1 ? l.id : `${fmtW(l.w)}:${l.id}`);
  if (state.under.trim()) p.set("under", state.under.trim());
  if (state.threshold !== "") p.set("threshold", state.threshold);
  if (withTop || state.top !== "24") p.set("top", state.top);
  if (state.bySlide) p.set("by_slide", "1");
  return p;
}

function fromUrl() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.terms = [];
  for (const sign of ["add", "sub"]) {
    for (const raw of p.getAll(sign)) {
      const [w, text] = splitWeight(raw);
      if (text.trim()) state.terms.push({ sign, w: Math.abs(w), text });
    }
  }
  state.likes = p.getAll("like").map((raw) => {
    const [w, id] = splitWeight(raw);
    return { w, id, label: labels.get(id) || "" };
  });
  state.under = p.get("under") || "";
  state.threshold = p.get("threshold") || "";
  state.top = p.get("top") || "24";
  state.bySlide = p.get("by_slide") === "1";
  state.image = null;
}

// The same rule as the server: a prefix without spaces before the first ':' is a weight.
function splitWeight(raw) {
  const i = raw.indexOf(":");
  if (i > 0 && !/\s/.test(raw.slice(0, i)) && isFinite(Number(raw.slice(0, i)))) {
    return [Number(raw.slice(0, i)), raw.slice(i + 1)];
  }
  return [1, raw];
}

const labels = new Map(); // item id -> path, for the chips of "more like this"

function syncControls() {
  $("q").value = state.q;
  $("under").value = state.under;
  $("threshold").value = state.threshold;
  const top = $("top");
  if (![...top.options].some((o) => o.value === state.top)) top.append(el("option", "", state.top));
  top.value = state.top;
  $("byslide").checked = state.bySlide;
  renderTerms();
}

function renderTerms() {
  const ul = $("terms");
  ul.replaceChildren();
  const chip = (cls, label, onRemove, img) => {
    const li = el("li", "chip " + cls);
    if (img) {
      const i = el("img");
      i.src = img;
      i.alt = "";
      li.append(i);
    }
    li.append(el("span", "chip-label", label));
    const x = el("button", "chip-x", "×");
    x.type = "button";
    x.title = "Remove this term";
    x.setAttribute("aria-label", "Remove " + label);
    x.addEventListener("click", onRemove);
    li.append(x);
    ul.append(li);
  };
  if (state.image) {
    chip("img", "image: " + state.image.name, () => { state.image = null; changed(true); }, state.image.url);
  }
  state.likes.forEach((l, i) => {
    const sign = l.w < 0 ? "−" : "+";
    const what = l.label || "item " + l.id;
    chip(l.w < 0 ? "sub" : "add", `${sign} ${fmtW(Math.abs(l.w))}× like ${what}`,
      () => { state.likes.splice(i, 1); changed(true); }, "/api/thumb/" + encodeURIComponent(l.id));
  });
  state.terms.forEach((t, i) => {
    const sign = t.sign === "sub" ? "−" : "+";
    chip(t.sign, `${sign} ${fmtW(t.w)}× ${t.text}`, () => { state.terms.splice(i, 1); changed(true); });
  });
  ul.hidden = ul.childElementCount === 0;
}

function hasQuery() {
  return state.q.trim() !== "" || state.terms.some((t) => t.sign === "add") || state.likes.length > 0 || state.image;
}

// Something in the query changed: update the address bar, then search.
function changed(now, push) {
  closeViewer();
  renderTerms();
  const p = toParams(false).toString();
  const url = p ? "/?" + p : "/";
  if (url !== location.pathname + location.search) {
    history[push ? "pushState" : "replaceState"](null, "", url);
  }
  clearTimeout(debounce);
  if (now) search();
  else debounce = setTimeout(search, 250);
}

async function api(url, opts) {
  const res = await fetch(url, Object.assign({ credentials: "same-origin" }, opts || {}));
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = { error: `the server answered ${res.status} without JSON` };
  }
  if (res.status === 401) {
    await askToken();
    return api(url, opts);
  }
  if (!res.ok) throw new Error(body.error || `error ${res.status}`);
  return body;
}

async function search() {
  const mine = ++seq;
  if (inflight) inflight.abort();
  if (!hasQuery()) {
    inflight = null;
    $("results").replaceChildren();
    showMessage(welcome, "hint");
    $("status").textContent = infoLine;
    document.title = "plip search";
    return;
  }
  inflight = new AbortController();
  const p = toParams(true);
  document.body.classList.add("busy");
  try {
    const opts = { signal: inflight.signal };
    if (state.image) {
      opts.method = "POST";
      opts.body = state.image.blob;
    }
    const r = await api("/api/search?" + p.toString(), opts);
    if (mine !== seq) return;
    render(r);
  } catch (e) {
    if (mine !== seq || e.name === "AbortError") return;
    $("results").replaceChildren();
    showMessage(e.message, "error");
  } finally {
    if (mine === seq) document.body.classList.remove("busy");
  }
}

function showMessage(text, kind) {
  const m = $("message");
  m.className = "message " + (kind || "");
  m.textContent = text;
  m.hidden = !text;
}

// A result card for item `id` and its thumbnail button.
function card(cls, id, path, title, label) {
  labels.set(id, path);
  const li = el("li", cls);
  li.dataset.id = id;
  const btn = el("button", "thumb");
  btn.type = "button";
  btn.title = title;
  btn.setAttribute("aria-label", label);
  return [li, btn];
}

function render(r) {
  const ol = $("results");
  ol.replaceChildren();
  if (r.slides) return renderSlides(r);
  const n = r.hits.length;
  $("status").textContent = `${n} of ${r.images.toLocaleString()} images · commit ${r.generation} · ${r.took_ms} ms`;
  document.title = (state.q.trim() || "plip") + " · plip search";
  showMessage(n ? "" : "No matches. Lower the minimum score, widen the folder, or try other words.", "hint");
  for (const h of r.hits) {
    const [li, more] = card("card", h.id, h.path, "More like this", `More like ${h.path} (rank ${h.rank}, score ${h.score.toFixed(3)})`);
    const img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = "";
    img.src = h.thumb;
    img.addEventListener("error", () => more.classList.add("broken"), { once: true });
    more.append(img);
    if (h.kind === "slide") {
      li.classList.add("tile");
      more.title = "Open in the slide viewer";
      more.setAttribute("aria-label", `Open ${h.path} at ${h.x},${h.y} (rank ${h.rank}, score ${h.score.toFixed(3)})`);
      more.addEventListener("click", () => openSlide(h.id));
    } else {
      more.addEventListener("click", () => moreLike(h));
    }
    const meta = el("div", "meta");
    const top = el("div", "line");
    top.append(el("span", "rank", "#" + h.rank), el("span", "score", h.score.toFixed(3)));
    const plus = el("button", "mini", "+");
    plus.type = "button";
    plus.title = "Add this image to the query (+)";
    plus.addEventListener("click", () => addItem(h, 1));
    const minus = el("button", "mini", "−");
    minus.type = "button";
    minus.title = "Subtract this image from the query (−)";
    minus.addEventListener("click", () => addItem(h, -1));
    top.append(plus, minus);
    const cut = h.path.lastIndexOf("/");
    const name = el("div", "name", h.path.slice(cut + 1));
    const dir = el("div", "dir", cut >= 0 ? h.path.slice(0, cut + 1) : "./");
    name.title = dir.title = h.path;
    meta.append(top, name, dir);
    if (h.kind === "slide") {
      const like = el("button", "mini", "≈");
      like.type = "button";
      like.title = "More like this tile";
      like.addEventListener("click", () => moreLike(h));
      top.append(like);
      meta.append(el("div", "tilepos", `@ ${h.x},${h.y} · ${h.w}×${h.h} px`));
    }
    li.append(more, meta);
    ol.append(li);
  }
  // Chips of items that came from the address bar get their names now.
  if (state.likes.some((l) => !l.label && labels.has(l.id))) {
    for (const l of state.likes) l.label = l.label || labels.get(l.id) || "";
    renderTerms();
  }
}

// By-slide view: one card per slide, its thumbnail with the best tile boxed.
function renderSlides(r) {
  const ol = $("results");
  const n = r.slides.length;
  $("status").textContent = `${n} slides · commit ${r.generation} · ${r.took_ms} ms`;
  document.title = (state.q.trim() || "plip") + " · plip slides";
  showMessage(n ? "" : "No slides match (this index may hold no slide tiles).", "hint");
  for (const s of r.slides) {
    const [li, open] = card("card slide", s.best_id, s.path, "Open at the best tile", `Open ${s.path} (rank ${s.rank}, score ${s.score.toFixed(3)})`);
    const frame = el("span", "frame");
    const W = s.slide_width || 1, H = s.slide_height || 1;
    frame.style.aspectRatio = `${W} / ${H}`;
    if (W >= H) frame.style.width = "100%";
    else frame.style.height = "100%";
    const img = el("img");
    img.alt = "";
    img.loading = "lazy";
    img.src = s.thumb;
    img.addEventListener("error", () => open.classList.add("broken"), { once: true });
    const box = el("span", "hitbox");
    box.style.left = (100 * s.best.x / W) + "%";
    box.style.top = (100 * s.best.y / H) + "%";
    box.style.width = (100 * s.best.w / W) + "%";
    box.style.height = (100 * s.best.h / H) + "%";
    frame.append(img, box);
    open.append(frame);
    open.addEventListener("click", () => openSlide(s.best_id));
    const meta = el("div", "meta");
    const top = el("div", "line");
    top.append(el("span", "rank", "#" + s.rank), el("span", "score", s.score.toFixed(3)));
    const cut = s.path.lastIndexOf("/");
    const name = el("div", "name", s.path.slice(cut + 1));
    name.title = s.path;
    meta.append(top, name, el("div", "tilepos", `${s.tiles} tiles · best ${s.best.score.toFixed(3)} @ ${s.best.x},${s.best.y}`));
    li.append(open, meta);
    ol.append(li);
  }
}

// The slide viewer: /slide/TILE_ID?QUERY, a URL that can be shared.
function openSlide(id) {
  const p = toParams(false);
  p.delete("by_slide");
  const q = p.toString();
  location.assign("/slide/" + id + (q ? "?" + q : ""));
}

let viewer = null; // {osd, item}
let osdLoading = null;

function loadOsd() {
  if (window.OpenSeadragon) return Promise.resolve();
  if (!osdLoading) {
    osdLoading = new Promise((resolve, reject) => {
      const sc = document.createElement("script");
      sc.src = "/vendor/openseadragon/openseadragon.min.js";
      sc.onload = resolve;
      sc.onerror = () => reject(new Error("could not load the slide viewer's script"));
      document.head.append(sc);
    });
  }
  return osdLoading;
}

async function showViewer(id) {
  $("results").replaceChildren();
  $("viewer").hidden = false;
  document.body.dataset.viewer = "loading";
  try {
    const item = await api("/api/item/" + encodeURIComponent(id));
    if (item.kind !== "slide") throw new Error("this item is not a tile of a slide");
    $("vname").textContent = item.path;
    $("vinfo").textContent = `tile @ ${item.x},${item.y} · ${item.w}×${item.h} px (level ${item.level}, ${item.mpp.toFixed(3)} µm/px) · slide ${item.slide_width}×${item.slide_height} px`;
    document.title = item.path + " · plip viewer";
    $("heat").disabled = !hasQuery();
    $("heat").parentElement.title = hasQuery() ? "Colour every tile of this slide by its score for the query" : "Search for something first";
    await loadOsd();
    const osd = window.OpenSeadragon({
      element: $("osd"),
      tileSources: item.dzi,
      showNavigationControl: false,
      crossOriginPolicy: false,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.5,
      gestureSettingsMouse: { clickToZoom: false },
    });
    viewer = { osd, item, heat: null };
    osd.addHandler("open", () => {
      const vp = osd.viewport;
      const r = vp.imageToViewportRectangle(item.x, item.y, item.w, item.h);
      const box = el("div", "hitbox");
      box.id = "hitbox";
      box.title = "The hit";
      osd.addOverlay({ element: box, location: r });
      vp.fitBounds(new window.OpenSeadragon.Rect(r.x - r.width, r.y - r.height, 3 * r.width, 3 * r.height), true);
      document.body.dataset.viewer = "open";
      const tiled = osd.world.getItemAt(0);
      const done = () => { if (tiled.getFullyLoaded()) document.body.dataset.viewer = "drawn"; };
      tiled.addHandler("fully-loaded-change", done);
      done();
      if ($("heat").checked) toggleHeat();
      drawOverlay();
    });
    osd.addHandler("open-failed", (ev) => showMessage("The slide could not be opened: " + (ev.message || "error"), "error"));
  } catch (e) {
    $("viewer").hidden = true;
    showMessage(e.message, "error");
    document.body.dataset.viewer = "failed";
  }
}

function closeViewer() {
  if (!viewer && $("viewer").hidden) return;
  if (viewer) viewer.osd.destroy();
  viewer = null;
  $("viewer").hidden = true;
  $("legend").hidden = true;
  delete document.body.dataset.viewer;
}

// matplotlib's viridis at 0, 1/8, ..., 1 (as `plip heatmap` draws it).
const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
function viridis(t) {
  const f = Math.min(1, Math.max(0, t || 0)) * 8;
  const i = Math.min(7, Math.floor(f));
  const a = f - i;
  const c = VIRIDIS[i].map((p, k) => Math.round(p + a * (VIRIDIS[i + 1][k] - p)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

async function toggleHeat() {
  if (!viewer) return;
  const on = $("heat").checked;
  if (viewer.heat) {
    viewer.osd.removeOverlay(viewer.heat);
    viewer.heat = null;
  }
  $("legend").hidden = true;
  if (!on || !hasQuery()) return;
  const v = viewer;
  const p = toParams(false);
  p.delete("top");
  p.delete("by_slide");
  let hm;
  try {
    hm = await api(`/api/slide/${encodeURIComponent(v.item.slide_id)}/heatmap?${p}`);
  } catch (e) {
    showMessage(e.message, "error");
    return;
  }
  if (viewer !== v || !$("heat").checked) return;
  const W = hm.slide_width, H = hm.slide_height;
  const k = Math.min(1, 2048 / Math.max(W, H));
  const c = el("canvas", "heat");
  c.id = "heatmap";
  c.width = Math.max(1, Math.round(W * k));
  c.height = Math.max(1, Math.round(H * k));
  const g = c.getContext("2d");
  const span = hm.max - hm.min;
  for (const t of hm.tiles) {
    g.fillStyle = viridis(span > 0 ? (t.score - hm.min) / span : 1);
    g.fillRect(t.x * k, t.y * k, t.w * k, t.h * k);
  }
  v.osd.addOverlay({ element: c, location: v.osd.viewport.imageToViewportRectangle(0, 0, W, H) });
  v.heat = c;
  const bar = $("lbar");
  const bg = bar.getContext("2d");
  for (let x = 0; x < bar.width; x++) {
    bg.fillStyle = viridis(x / (bar.width - 1));
    bg.fillRect(x, 0, 1, bar.height);
  }
  $("lmin").textContent = hm.min.toFixed(3);
  $("lmax").textContent = hm.max.toFixed(3);
  $("legend").hidden = false;
  $("legend").title = `${hm.tiles.length} tiles; cosine ${hm.min.toFixed(4)} (dark) to ${hm.max.toFixed(4)} (yellow)`;
}

// A GeoJSON overlay (issue 31): a file the user picks or drops on the viewer, read in
// the browser. Polygons and MultiPolygons are drawn in level-0 pixels: filled by
// their classification's colour, else by their first measurement on viridis, else
// outlined; holes are cut out (even-odd fill).
let overlay = null; // {name, features, measurement, min, max}

function loadOverlay(file) {
  if (!file) return;
  const r = new FileReader();
  r.onload = () => {
    let v;
    try {
      v = JSON.parse(r.result);
    } catch (e) {
      showMessage(`${file.name} is not JSON: ${e.message}`, "error");
      return;
    }
    const features = v.type === "FeatureCollection" ? v.features : v.type === "Feature" ? [v] : Array.isArray(v) ? v : null;
    if (!features) {
      showMessage(`${file.name} is not a GeoJSON FeatureCollection`, "error");
      return;
    }
    const first = features.map((f) => Object.keys(f?.properties?.measurements || {})[0]).find(Boolean);
    const values = first ? features.map((f) => f?.properties?.measurements?.[first]).filter((x) => typeof x === "number") : [];
    overlay = { name: file.name, features, measurement: first,
      min: Math.min(...values), max: Math.max(...values) };
    $("gjon").disabled = false;
    $("gjon").checked = true;
    $("gjload").textContent = file.name;
    drawOverlay();
  };
  r.readAsText(file);
}

function drawOverlay() {
  if (!viewer) return;
  if (viewer.gj) {
    viewer.osd.removeOverlay(viewer.gj);
    viewer.gj = null;
  }
  if (!overlay || !$("gjon").checked) return;
  const W = viewer.item.slide_width, H = viewer.item.slide_height;
  const k = Math.min(1, 4096 / Math.max(W, H));
  const c = el("canvas", "geojson");
  c.id = "geojson";
  c.width = Math.max(1, Math.round(W * k));
  c.height = Math.max(1, Math.round(H * k));
  const g = c.getContext("2d");
  const span = overlay.max - overlay.min;
  let drawn = 0;
  for (const f of overlay.features) {
    const geom = f?.geometry;
    const polys = geom?.type === "Polygon" ? [geom.coordinates] : geom?.type === "MultiPolygon" ? geom.coordinates : [];
    const props = f?.properties || {};
    const col = props.classification?.color;
    const m = overlay.measurement && props.measurements?.[overlay.measurement];
    let fill = null;
    if (Array.isArray(col) && col.length === 3) fill = `rgba(${col[0]},${col[1]},${col[2]},0.45)`;
    else if (typeof m === "number") fill = viridis(span > 0 ? (m - overlay.min) / span : 1);
    g.beginPath();
    for (const rings of polys) {
      for (const ring of rings || []) {
        ring.forEach(([x, y], i) => (i ? g.lineTo(x * k, y * k) : g.moveTo(x * k, y * k)));
        g.closePath();
      }
    }
    if (fill) {
      g.fillStyle = fill;
      g.fill("evenodd");
    }
    g.strokeStyle = Array.isArray(col) ? `rgb(${col[0]},${col[1]},${col[2]})` : "rgba(0,0,0,.6)";
    g.lineWidth = Math.max(1, 2 * k * 4);
    g.stroke();
    if (polys.length) drawn++;
  }
  viewer.osd.addOverlay({ element: c, location: viewer.osd.viewport.imageToViewportRectangle(0, 0, W, H) });
  viewer.gj = c;
  c.dataset.features = String(drawn);
  $("gjon").parentElement.title = `${overlay.name}: ${drawn} shape(s)` +
    (overlay.measurement ? `, coloured by "${overlay.measurement}" ${overlay.min.toFixed(4)} (dark) to ${overlay.max.toFixed(4)} (yellow)` : "");
}

function moreLike(h) {
  state.q = "";
  state.terms = [];
  state.likes = [{ w: 1, id: h.id, label: h.path }];
  state.image = null;
  syncControls();
  changed(true, true);
  window.scrollTo(0, 0);
}

function addItem(h, w) {
  state.likes.push({ w, id: h.id, label: h.path });
  changed(true, true);
}

function setImage(file) {
  if (!file) return;
  if (state.image) URL.revokeObjectURL(state.image.url);
  state.image = { blob: file, name: file.name || "pasted image", url: URL.createObjectURL(file) };
  state.likes = [];
  changed(true, true);
}

// Token sign-in: the cookie set by /api/login lets <img> load thumbnails too.
let asking = null;
function askToken() {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const d = $("login");
    const f = $("loginform");
    const submit = async (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      const ok = await login(t);
      if (ok) {
        f.removeEventListener("submit", submit);
        d.close();
        asking = null;
        resolve();
      } else {
        $("loginerror").textContent = "That token was not accepted.";
      }
    };
    f.addEventListener("submit", submit);
    d.showModal();
    $("token").focus();
  });
  return asking;
}

async function login(token) {
  const res = await fetch("/api/login", { method: "POST", headers: { Authorization: "Bearer " + token } });
  return res.ok;
}

// Grid navigation with the arrow keys.
function cards() {
  return [...document.querySelectorAll("#results .card .thumb")];
}
function columns(list) {
  if (list.length < 2) return 1;
  const y = list[0].getBoundingClientRect().top;
  const i = list.findIndex((b) => b.getBoundingClientRect().top > y + 1);
  return i < 0 ? list.length : i;
}

document.addEventListener("keydown", (ev) => {
  const a = document.activeElement;
  const typing = a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  if (ev.key === "/" && !typing) {
    ev.preventDefault();
    $("q").focus();
    $("q").select();
    return;
  }
  if (ev.key === "Escape" && a === $("q")) {
    state.q = "";
    $("q").value = "";
    changed(true);
    return;
  }
  const list = cards();
  if (!list.length || typing && a !== $("q")) return;
  const at = list.indexOf(a);
  if (a === $("q") && ev.key === "ArrowDown") {
    ev.preventDefault();
    list[0].focus();
    return;
  }
  if (at < 0) return;
  const cols = columns(list);
  const go = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols }[ev.key];
  if (go !== undefined) {
    ev.preventDefault();
    const next = at + go;
    if (next < 0 && ev.key === "ArrowUp") $("q").focus();
    else list[Math.max(0, Math.min(list.length - 1, next))].focus();
    return;
  }
  const card = a.closest(".card");
  const h = { id: card.dataset.id, path: labels.get(card.dataset.id) || "" };
  if (ev.key === "+" || ev.key === "=") addItem(h, 1);
  if (ev.key === "-" || ev.key === "−") addItem(h, -1);
});

// Drag and drop anywhere, paste, and the file picker.
let dragDepth = 0;
document.addEventListener("dragenter", (ev) => {
  if (![...(ev.dataTransfer?.types || [])].includes("Files")) return;
  dragDepth++;
  $("drop").hidden = false;
});
document.addEventListener("dragleave", () => {
  if (--dragDepth <= 0) { dragDepth = 0; $("drop").hidden = true; }
});
document.addEventListener("dragover", (ev) => ev.preventDefault());
document.addEventListener("drop", (ev) => {
  ev.preventDefault();
  dragDepth = 0;
  $("drop").hidden = true;
  const f = ev.dataTransfer?.files?.[0];
  // A GeoJSON file dropped on an open slide is an overlay, not a query.
  if (viewer && f && /\.(geo)?json$/i.test(f.name)) loadOverlay(f);
  else setImage(f);
});
document.addEventListener("paste", (ev) => {
  const f = [...(ev.clipboardData?.files || [])].find((x) => x.type.startsWith("image/"));
  if (f) setImage(f);
});

let welcome = "Type to search the index by words, drop an image, or pick one.";
let infoLine = "";

function init() {
  $("search").addEventListener("submit", (ev) => { ev.preventDefault(); changed(true); });
  $("q").addEventListener("input", () => { state.q = $("q").value; changed(false); });
  $("pick").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => { setImage($("file").files[0]); $("file").value = ""; });
  $("under").addEventListener("input", () => { state.under = $("under").value; changed(false); });
  $("threshold").addEventListener("input", () => { state.threshold = $("threshold").value; changed(false); });
  $("top").addEventListener("change", () => { state.top = $("top").value; changed(true); });
  $("byslide").addEventListener("change", () => { state.bySlide = $("byslide").checked; changed(true, true); });
  $("heat").addEventListener("change", toggleHeat);
  $("gjload").addEventListener("click", () => $("gjfile").click());
  $("gjfile").addEventListener("change", () => { loadOverlay($("gjfile").files[0]); $("gjfile").value = ""; });
  $("gjon").addEventListener("change", drawOverlay);
  $("vback").addEventListener("click", () => {
    const q = location.search;
    location.assign("/" + q);
  });
  $("vlike").addEventListener("click", () => { if (viewer) location.assign("/?like=" + viewer.item.id); });
  $("termform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("term").value;
    const w = Number($("weight").value);
    if (!text.trim()) return;
    state.terms.push({ sign: $("sign").value, w: isFinite(w) && w > 0 ? w : 1, text });
    $("term").value = "";
    changed(true);
  });
  window.addEventListener("popstate", () => { fromUrl(); syncControls(); search(); });
  const slide = /^\/slide\/([0-9a-f]{16})$/.exec(location.pathname);

  const m = /^#token=(.+)$/.exec(location.hash);
  const ready = m ? login(decodeURIComponent(m[1])) : Promise.resolve(true);
  ready.then(() => {
    if (m) history.replaceState(null, "", location.pathname + location.search);
    api("/api/info").then((info) => {
      infoLine = `${info.images.toLocaleString()} images · commit ${info.generation}`;
      welcome = `${info.images.toLocaleString()} images indexed with ${info.model}. ` +
        "Type to search by words, drop an image, or pick one. Click a result for more like it.";
      const dl = $("folders");
      for (const f of info.folders) {
        const o = el("option");
        o.value = f.path;
        o.label = `${f.path} (${f.images})`;
        dl.append(o);
      }
      if (!hasQuery() && !slide) search();
      else if (!$("status").textContent) $("status").textContent = infoLine;
    }).catch(() => {});
    fromUrl();
    syncControls();
    if (slide) showViewer(slide[1]);
    else search();
  });
}

init();
