// The map's highlights: the search box (/find), ?focus=repo, ?cluster=name and the legend. Lit points are drawn
// larger, on top, and everything else fades. Cluster names come from the index: written with textContent only.

import { getJSON } from "./map-data.js";
import { colourOf } from "./map-gl.js";

const FIND_LIMIT = 10000; // matches a search lights up

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
    map.highlight(null);
    ui.findCount.textContent = "";
    return;
  }
  pressed = button;
  button.setAttribute("aria-pressed", "true");
  const members = clusterMembers(map, index);
  map.highlight(members);
  ui.findCount.textContent = `${members.length.toLocaleString()} in the cluster`;
}

async function find(ui, text, limit) {
  const body = await getJSON(`${ui.api}/find?limit=${limit}&q=${encodeURIComponent(text)}`);
  return body.indices || [];
}

function wireSearch(map, ui) {
  const { findInput, findCount } = ui;
  let timer = 0;
  let asked = 0;
  const run = async (text, zoomTo) => {
    const mine = ++asked;
    unpress();
    if (!text) {
      map.highlight(null);
      findCount.textContent = "";
      return;
    }
    const found = await find(ui, text, FIND_LIMIT);
    if (mine !== asked) return; // a newer search was typed meanwhile
    map.highlight(found);
    const more = found.length >= FIND_LIMIT ? "+" : "";
    findCount.textContent = `${found.length.toLocaleString()}${more} match${found.length === 1 ? "" : "es"}`;
    if (zoomTo && found.length) {
      map.fit(boxOf(map, found), 0.8);
      map.redraw();
    }
  };
  findInput.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => run(findInput.value.trim(), false).catch((e) => ui.say(e.message, true)), 200);
  });
  findInput.form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    run(findInput.value.trim(), true).catch((e) => ui.say(e.message, true));
  });
}


// ?focus=repo: that model lit and centred; ?cluster=name: the cluster's points lit and framed.
async function applyQuery(map, ui, focus, clusterName) {
  if (focus) {
    // /find matches substrings: ask for the candidates' ids and keep the exact one.
    const candidates = (await find(ui, focus, 100)).slice(0, 100);
    const infos = await ui.points(candidates);
    const hit = infos.find((p) => p.repo_id === focus);
    if (hit) {
      map.highlight([hit.i]);
      map.fit(boxOf(map, [hit.i]), 1);
      ui.findCount.textContent = `${focus} is highlighted`;
    } else {
      ui.findCount.textContent = `${focus} is not on this map`;
    }
  } else if (clusterName) {
    const c = map.meta.clusters.find((x) => x.name === clusterName);
    const button = c && ui.legend.querySelector(`button[data-cluster="${c.index}"]`);
    if (button) {
      toggleCluster(map, ui, button, c.index);
      map.fit(boxOf(map, map.lit()), 0.85);
    } else {
      ui.findCount.textContent = `no cluster named ${clusterName} on this map`;
    }
  }
}

// The legend and the search box wired, and the page's own highlight applied.
export async function highlights(map, ui, focus, clusterName) {
  buildLegend(map, ui);
  wireSearch(map, ui);
  await applyQuery(map, ui, focus, clusterName);
}
