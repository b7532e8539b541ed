// plip serve's page. No dependencies. Every name from the index is put on the
// page with textContent or as an attribute value, never as HTML, and the CSP
// allows only this file as script.
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

function render(r) {
  const ol = $("results");
  ol.replaceChildren();
  const n = r.hits.length;
  $("status").textContent = `${n} of ${r.images.toLocaleString()} images · commit ${r.generation} · ${r.took_ms} ms`;
  document.title = (state.q.trim() || "plip") + " · plip search";
  showMessage(n ? "" : "No matches. Lower the minimum score, widen the folder, or try other words.", "hint");
  for (const h of r.hits) {
    labels.set(h.id, h.path);
    const li = el("li", "card");
    li.dataset.id = h.id;
    const more = el("button", "thumb");
    more.type = "button";
    more.title = "More like this";
    more.setAttribute("aria-label", `More like ${h.path} (rank ${h.rank}, score ${h.score.toFixed(3)})`);
    const img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = "";
    img.src = h.thumb;
    img.addEventListener("error", () => more.classList.add("broken"), { once: true });
    more.append(img);
    more.addEventListener("click", () => moreLike(h));
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
    li.append(more, meta);
    ol.append(li);
  }
  // Chips of items that came from the address bar get their names now.
  if (state.likes.some((l) => !l.label && labels.has(l.id))) {
    for (const l of state.likes) l.label = l.label || labels.get(l.id) || "";
    renderTerms();
  }
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
  setImage(ev.dataTransfer?.files?.[0]);
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
      if (!hasQuery()) search();
      else if (!$("status").textContent) $("status").textContent = infoLine;
    }).catch(() => {});
    fromUrl();
    syncControls();
    search();
  });
}

init();
