// The map's highlights: the search box (/find), ?focus=repo, ?cluster=name and the legend. Lit points are drawn
// larger, on top, and everything else fades. Cluster names come from the index: written with textContent only.
// What is highlighted is remembered by what it is (a search text, a cluster name, a repo id), not by point
// numbers, so a reloaded layout gets the same highlight with its own numbers (refreshHighlights).

import { problem } from "./map-data.js";
import { colourOf } from "./map-gl.js";

const FIND_LIMIT = 10000; // matches a search lights up

let current = null; // {find: text} | {cluster: name, or -1: none} | {focus: repo} | null: what is lit now

function boxOf(map, indices) {
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  for (const i of indices) {
    box[0] = Math.min(box[0], map.pts.x[i]);
    box[1] = Math.min(box[1], map.pts.y[i]);
    box[2] = Math.max(box[2], map.pts.x[i]);
    box[3] = Math.max(box[3], map.pts.y[i]);
  }
  // A single point (or a tight group): show a neighbourhood a quarter of the map wide around it.
  const span = Math.max(box[2] - box[0], box[3] - box[1], (map.b[2] - map.b[0]) / 4);
  const mx = (box[0] + box[2]) / 2;
  const my = (box[1] + box[3]) / 2;
  return [mx - span / 2, my - span / 2, mx + span / 2, my + span / 2];
}

function clusterMembers(map, c) {
  const out = [];
  for (let i = 0; i < map.n; i++) if (map.pts.cluster[i] === c) out.push(i);
  return out;
}

let pressed = null; // the legend button now pressed

function unpress() {
  if (pressed) pressed.setAttribute("aria-pressed", "false");
  pressed = null;
}

function buildLegend(map, ui) {
  const sizes = new Map(map.meta.clusters.map((c) => [c.index, c.size]));
  let none = map.n;
  sizes.forEach((s) => (none -= s));
  const entries = map.meta.clusters.map((c) => [c.index, c.name, c.size]);
  if (none > 0) entries.push([-1, "no cluster", none]);
  ui.legend.replaceChildren(
    ...entries.map(([index, name, size]) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-pressed", "false");
      button.dataset.cluster = String(index);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      const [r, g, bl] = colourOf(index);
      swatch.style.backgroundColor = `rgb(${r}, ${g}, ${bl})`; // CSSOM: allowed under the page's CSP
      const label = document.createElement("span");
      label.textContent = name;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = size.toLocaleString();
      button.append(swatch, label, count);
      button.addEventListener("click", () => toggleCluster(map, ui, button, index));
      li.append(button);
      return li;
    })
  );
}

function toggleCluster(map, ui, button, index) {
  const again = pressed === button;
  unpress();
  if (again) {
    current = null;
    map.highlight(null);
    ui.findCount.textContent = "";
    return;
  }
  pressed = button;
  button.setAttribute("aria-pressed", "true");
  const members = clusterMembers(map, index);
  current = { cluster: index < 0 ? -1 : map.meta.clusters.find((c) => c.index === index).name };
  map.highlight(members);
  ui.findCount.textContent = `${members.length.toLocaleString()} in the cluster`;
}

let asked = 0; // searches started: an answer to an older one is dropped

// Light the points whose repo id contains `text` (none: no highlight); zoomTo frames them.
async function search(map, ui, text, zoomTo) {
  const mine = ++asked;
  unpress();
  current = text ? { find: text } : null;
  if (!text) {
    map.highlight(null);
    ui.findCount.textContent = "";
    return;
  }
  const { body, version } = await ui.source.askJSON(`/find?limit=${FIND_LIMIT}&q=${encodeURIComponent(text)}`);
  if (mine !== asked || version !== ui.source.version) return; // a newer search, or a newer layout, meanwhile
  const found = body.indices || [];
  map.highlight(found);
  const more = found.length >= FIND_LIMIT ? "+" : "";
  ui.findCount.textContent = `${found.length.toLocaleString()}${more} match${found.length === 1 ? "" : "es"}`;
  if (zoomTo && found.length) {
    map.fit(boxOf(map, found), 0.8);
    map.redraw();
  }
}

function wireSearch(map, ui) {
  const { findInput } = ui;
  let timer = 0;
  findInput.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => search(map, ui, findInput.value.trim(), false).catch((e) => ui.say(e.message, true)), 200);
  });
  findInput.form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    search(map, ui, findInput.value.trim(), true).catch((e) => ui.say(e.message, true));
  });
}

// ?focus=repo: that very model (its point number from /position, an exact match) lit, and centred when frame.
async function focusOn(map, ui, repo, frame) {
  const { res, body, version } = await ui.source.ask(`/position?repo=${encodeURIComponent(repo)}`);
  if (version !== ui.source.version) return; // a newer layout meanwhile: its refresh focuses again
  current = { focus: repo };
  if (res.status === 404) {
    ui.findCount.textContent = `${repo} is not on this map`;
    return;
  }
  if (!res.ok) throw problem(res, body);
  const i = body.i;
  if (!Number.isInteger(i) || i < 0 || i >= map.n) throw new Error(`the server placed ${repo} at point ${i}`);
  map.highlight([i]);
  if (frame) map.fit(boxOf(map, [i]), 1);
  ui.findCount.textContent = `${repo} is highlighted`;
}

// ?cluster=name: the cluster's points lit (its legend button pressed), and framed when frame; -1: no cluster's.
function clusterOn(map, ui, name, frame) {
  const c = name === -1 ? { index: -1 } : map.meta.clusters.find((x) => x.name === name);
  const button = c && ui.legend.querySelector(`button[data-cluster="${c.index}"]`);
  if (!button) {
    current = null;
    map.highlight(null);
    ui.findCount.textContent = `no cluster named ${name} on this map`;
    return;
  }
  toggleCluster(map, ui, button, c.index);
  if (frame) map.fit(boxOf(map, map.lit()), 0.85);
}

// The legend and the search box wired, and the page's own highlight applied.
export async function highlights(map, ui, focus, clusterName) {
  buildLegend(map, ui);
  wireSearch(map, ui);
  if (focus) await focusOn(map, ui, focus, true);
  else if (clusterName) clusterOn(map, ui, clusterName, true);
}

// After the layout was reloaded: a new legend, and the same highlight under the new point numbers (the view
// stays where the user left it).
export async function refreshHighlights(map, ui) {
  pressed = null;
  buildLegend(map, ui);
  const was = current;
  if (was && was.find) await search(map, ui, was.find, false);
  else if (was && was.focus) await focusOn(map, ui, was.focus, false);
  else if (was && was.cluster !== undefined) clusterOn(map, ui, was.cluster, false);
  else map.highlight(null);
}
