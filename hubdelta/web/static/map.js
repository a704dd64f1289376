// The space map (templates/space.html): every model of a space one point, drawn with WebGL (map-gl.js), coloured
// by cluster, new models ringed; wheel zooms around the pointer, drag pans, hover names the model, click opens it.
//
// Data: GET /api/spaces/<id>/layout (n, clusters, bounds), then layout.bin (map-data.js). Repo ids are not in
// the payload: hover asks /api/spaces/<id>/points?i= for the one point under the pointer (cached). Every such
// question names the layout version drawn; when the map was recomputed meanwhile, the layout is loaded and drawn
// again and the question asked again (map-data.js's layoutSource). Everything from the index is shown with
// textContent, never parsed as HTML.
//
// For tests: canvas.dataset.points = the points the last frame drew (the vertex count given to gl.drawArrays),
// canvas.dataset.ready = "1" once the first frame with the page's highlights is drawn, and
// window.hubdeltaMap.screenOf(i) = point i's [x, y] in CSS pixels of the viewport.

import { buildGrid, layoutSource } from "./map-data.js";
import { LIT, NEW, colourOf, context, makeRenderer } from "./map-gl.js";
import { highlights, refreshHighlights } from "./map-highlight.js";

const HOVER_PX = 7; // how close (CSS px) the pointer must be to a point to pick it
const CLICK_SLOP_PX = 4; // a press that moves further is a drag, not a click

const canvas = document.getElementById("map");
const tooltip = document.getElementById("map-tooltip");
const statusLine = document.getElementById("map-status");
const source = layoutSource(`${canvas.dataset.root || ""}/api/spaces/${encodeURIComponent(canvas.dataset.space)}`);
const modelHref = (repo) => `${canvas.dataset.root || ""}/models/${repo.split("/").map(encodeURIComponent).join("/")}`;

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.hidden = !text;
  statusLine.classList.toggle("error", Boolean(isError));
}

const cache = new Map(); // point number -> {i, repo_id, cluster, new}, of the layout drawn (cleared on a reload)

// The points' ids, cluster names and newness (at most 100 a request), from the cache when known; none when the
// layout was replaced while asking (the numbers then name other models: the caller asks again if it still cares).
async function points(indices) {
  const missing = indices.filter((i) => !cache.has(i));
  for (let at = 0; at < missing.length; at += 100) {
    const { body, version } = await source.askJSON(`/points?i=${missing.slice(at, at + 100).join(",")}`);
    if (version !== source.version) return [];
    for (const p of body.points || []) cache.set(p.i, p);
  }
  return indices.map((i) => cache.get(i)).filter(Boolean);
}

// ---- the map -----------------------------------------------------------------------------------------------

async function start() {
  await source.load();
  if (!source.meta.n) {
    say("This space has no points yet: its layout is computed once it has vectors.");
    return;
  }
  const gl = context(canvas);
  if (!gl) {
    say("This browser has no WebGL: the map cannot be drawn.", true);
    return;
  }
  const map = makeMap(gl);
  map.load(source.meta, source.pts);
  const hover = wire(map);
  const ui = {
    source,
    points,
    say,
    legend: document.getElementById("map-legend"),
    findInput: document.getElementById("map-search"),
    findCount: document.getElementById("map-count"),
  };
  source.onReload(() => {
    cache.clear();
    map.load(source.meta, source.pts);
    hover.again();
    refreshHighlights(map, ui).catch((e) => say(e.message, true));
  });
  await highlights(map, ui, canvas.dataset.focus, canvas.dataset.cluster);
  expose(map);
  say("");
  map.arm();
}

// The view and the drawing; load() puts a layout in (first, and again whenever it is reloaded: the view stays).
function makeMap(gl) {
  const renderer = makeRenderer(gl);
  // The view: the data point at the canvas centre, and CSS pixels per data unit.
  const map = { meta: null, pts: null, n: 0, b: [-1, -1, 1, 1], grid: null, view: { cx: 0, cy: 0, k: 1, fitK: 1 } };
  let flags = new Uint8Array(0);
  let lit = null; // Uint32Array of lit point numbers, or null: nothing highlighted
  let queued = false;
  let armed = false; // set once the page's own highlights are applied: only then is a frame "ready"
  let fitted = false;

  const size = () => [canvas.clientWidth || 1, canvas.clientHeight || 1];
  function fit(box, pad) {
    const [w, h] = size();
    map.view.cx = (box[0] + box[2]) / 2;
    map.view.cy = (box[1] + box[3]) / 2;
    map.view.k = Math.min(w / Math.max(box[2] - box[0], 1e-9), h / Math.max(box[3] - box[1], 1e-9)) * pad;
  }
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const [w, h] = size();
    const b = map.b;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    map.view.fitK = Math.min(w / (b[2] - b[0]), h / (b[3] - b[1])) * 0.92;
  }
  function frame() {
    queued = false;
    const [w, h] = size();
    const { view } = map;
    const sx = (2 * view.k) / w;
    const sy = (2 * view.k) / h;
    const zoom = Math.min(3, Math.max(1, Math.sqrt(view.k / view.fitK)));
    const baseSize = map.n <= 2000 ? 8 : map.n <= 20000 ? 5 : map.n <= 200000 ? 3 : 2;
    const px = baseSize * zoom * (window.devicePixelRatio || 1);
    const drawn = renderer.draw([sx, sy], [-view.cx * sx, -view.cy * sy], px, lit !== null);
    if (armed) {
      if (canvas.dataset.points !== String(drawn)) canvas.dataset.points = String(drawn);
      if (!canvas.dataset.ready) canvas.dataset.ready = "1";
    }
  }
  const redraw = () => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(frame);
    }
  };
  function load(meta, pts) {
    const n = meta.n;
    const colors = new Uint8Array(4 * n);
    flags = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = colourOf(pts.cluster[i]);
      colors.set(c, 4 * i);
      colors[4 * i + 3] = 255;
      flags[i] = pts.isNew[i] ? NEW : 0;
    }
    let b = meta.bounds && meta.bounds.length === 4 ? meta.bounds.slice() : [-1, -1, 1, 1];
    if (b[2] - b[0] < 1e-9) b = [b[0] - 1, b[1], b[2] + 1, b[3]]; // one point, or a line: give it room
    if (b[3] - b[1] < 1e-9) b = [b[0], b[1] - 1, b[2], b[3] + 1];
    Object.assign(map, { meta, pts, n, b, grid: buildGrid(pts.x, pts.y, n, b) });
    lit = null; // the old numbers name other models now
    renderer.load(pts, colors, flags, n);
    resize();
    if (!fitted) fit(b, 0.92);
    fitted = true;
    redraw();
  }
  // Client (CSS px, relative to the canvas) <-> data coordinates.
  const toData = (mx, my) => {
    const [w, h] = size();
    return [map.view.cx + (mx - w / 2) / map.view.k, map.view.cy - (my - h / 2) / map.view.k];
  };
  const toScreen = (x, y) => {
    const [w, h] = size();
    return [w / 2 + (x - map.view.cx) * map.view.k, h / 2 - (y - map.view.cy) * map.view.k];
  };
  function highlight(indices) {
    for (let i = 0; i < map.n; i++) flags[i] &= NEW;
    lit = indices === null ? null : Uint32Array.from(indices);
    if (lit) for (const i of lit) flags[i] |= LIT;
    renderer.setFlags(lit || new Uint32Array(0));
    redraw();
  }
  new ResizeObserver(() => {
    resize();
    redraw();
  }).observe(canvas);
  const arm = () => {
    armed = true;
    redraw();
  };
  return Object.assign(map, { load, fit, redraw, toData, toScreen, highlight, arm, lit: () => lit });
}

// ---- hover, click, pan, zoom -------------------------------------------------------------------------------

function wire(map) {
  let hovered = -1;
  let press = null; // {x, y, cx, cy, moved} while the pointer is down
  let last = null; // the pointer's last place over the canvas

  const local = (event) => {
    const r = canvas.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  };
  function hover(mx, my) {
    const [dx, dy] = map.toData(mx, my);
    const i = map.grid.nearest(dx, dy, HOVER_PX / map.view.k);
    canvas.classList.toggle("on-point", i >= 0);
    if (i === hovered) {
      if (i >= 0) place(mx, my);
      return;
    }
    hovered = i;
    if (i < 0) {
      tooltip.hidden = true;
      return;
    }
    place(mx, my);
    fillTooltip(map, i, null);
    points([i])
      .then(([p]) => p && hovered === i && fillTooltip(map, i, p))
      .catch(() => {});
  }
  function place(mx, my) {
    tooltip.hidden = false;
    const flip = mx > canvas.clientWidth - 260; // keep the tooltip inside the map
    tooltip.style.left = `${flip ? mx - 14 - tooltip.offsetWidth : mx + 14}px`;
    tooltip.style.top = `${my + 14}px`;
  }

  canvas.addEventListener("pointerdown", (event) => {
    const [mx, my] = local(event);
    press = { x: mx, y: my, cx: map.view.cx, cy: map.view.cy, moved: false };
    last = [mx, my];
    canvas.setPointerCapture(event.pointerId);
    hover(mx, my); // a tap without a move before it still picks the point under it
  });
  canvas.addEventListener("pointermove", (event) => {
    const [mx, my] = local(event);
    last = [mx, my];
    if (press) {
      if (Math.hypot(mx - press.x, my - press.y) > CLICK_SLOP_PX) press.moved = true;
      if (press.moved) {
        canvas.classList.add("dragging");
        tooltip.hidden = true;
        map.view.cx = press.cx - (mx - press.x) / map.view.k;
        map.view.cy = press.cy + (my - press.y) / map.view.k;
        map.redraw();
        return;
      }
    }
    hover(mx, my);
  });
  canvas.addEventListener("pointerup", (event) => {
    const wasClick = press && !press.moved;
    press = null;
    canvas.classList.remove("dragging");
    if (wasClick && hovered >= 0) openModel(hovered);
    else hover(...local(event));
  });
  canvas.addEventListener("pointerleave", () => {
    last = null;
    if (!press) {
      hovered = -1;
      tooltip.hidden = true;
    }
  });
  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const [mx, my] = local(event);
      const [dx, dy] = map.toData(mx, my);
      const step = event.deltaMode === 1 ? event.deltaY * 30 : event.deltaY;
      const k = Math.min(map.view.fitK * 1e5, Math.max(map.view.fitK / 8, map.view.k * Math.exp(-step * 0.0015)));
      // Zoom around the cursor: the data point under it stays under it.
      const [w, h] = [canvas.clientWidth, canvas.clientHeight];
      map.view.k = k;
      map.view.cx = dx - (mx - w / 2) / k;
      map.view.cy = dy + (my - h / 2) / k;
      map.redraw();
      hovered = -1;
      hover(mx, my);
    },
    { passive: false }
  );
  // A reloaded layout: the point under the pointer is picked again (its number may name another model now).
  const again = () => {
    hovered = -1;
    tooltip.hidden = true;
    if (last && !press) hover(...last);
  };
  return { again };
}

function fillTooltip(map, i, info) {
  const c = map.pts.cluster[i];
  const name = c >= 0 && map.meta.clusters[c] ? map.meta.clusters[c].name : "no cluster";
  const repo = document.createElement("div");
  repo.className = "tip-repo";
  repo.textContent = info ? info.repo_id : "…";
  const line = document.createElement("div");
  line.className = "tip-cluster";
  line.textContent = info && info.cluster ? info.cluster : name;
  if (map.pts.isNew[i]) {
    const badge = document.createElement("span");
    badge.className = "tip-new";
    badge.textContent = "new";
    line.append(badge);
  }
  tooltip.replaceChildren(repo, line);
  tooltip.dataset.i = String(i);
  tooltip.dataset.repo = info ? info.repo_id : "";
}

async function openModel(i) {
  const [p] = await points([i]);
  if (p) window.location.assign(modelHref(p.repo_id));
}

// For tests (and the console): where a point is on the screen, and how many points are lit.
function expose(map) {
  window.hubdeltaMap = {
    get n() {
      return map.n;
    },
    // Point i's position in CSS pixels of the viewport (what a pointer event there would carry).
    screenOf(i) {
      const r = canvas.getBoundingClientRect();
      const [x, y] = map.toScreen(map.pts.x[i], map.pts.y[i]);
      return [r.left + x, r.top + y];
    },
    lit: () => (map.lit() ? map.lit().length : 0),
    litPoints: () => Array.from(map.lit() || []),
    cluster: (i) => map.pts.cluster[i],
  };
}

start().catch((e) => say(`The map could not be loaded: ${e.message}`, true));
