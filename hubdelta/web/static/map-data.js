// The map's data: the packed points of layout.bin and the hover index over them; and JSON from /api.

export const problem = (res, body) =>
  new Error(body.error ? `${body.error}${body.fix ? ` (fix: ${body.fix})` : ""}` : res.statusText);

export async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw problem(res, body);
  return body;
}

// A space's layout as the page drew it, and the questions about its points. Point numbers only mean something
// in one layout version, so every question carries the version drawn (v=); the server answers 409 once the map
// was recomputed, and then the layout is loaded again (meta and points, one load however many questions hit the
// 409), the listeners redraw, and the question is asked once more under the new version.
export function layoutSource(api) {
  const src = { meta: null, pts: null, version: "", listeners: [] };
  let loading = null;

  // meta and layout.bin of one version: a recompute between the two requests is seen and both asked again.
  async function fetchLayout() {
    for (let tries = 0; ; tries++) {
      const meta = await getJSON(`${api}/layout`);
      if (!meta.n) return { meta, pts: unpack(new ArrayBuffer(0), 0), version: meta.version || "" };
      const res = await fetch(`${api}/layout.bin`);
      if (!res.ok) throw new Error(`layout.bin: HTTP ${res.status}`);
      const version = res.headers.get("x-layout-version") || meta.version || "";
      const buffer = await res.arrayBuffer();
      if (version === meta.version || tries >= 2) return { meta, pts: unpack(buffer, meta.n), version };
    }
  }
  async function load() {
    Object.assign(src, await fetchLayout());
    return src;
  }
  // Load again unless someone already did since `stale` was drawn; listeners see the new layout.
  async function reload(stale) {
    if (src.version !== stale) return;
    if (!loading) {
      loading = load()
        .then(() => src.listeners.forEach((fn) => fn(src)))
        .finally(() => (loading = null));
    }
    await loading;
  }
  // GET `${api}${path}` about the layout drawn: {res, body, version} (the version the answer is about).
  async function ask(path) {
    for (let tries = 0; ; tries++) {
      const version = src.version;
      const sep = path.includes("?") ? "&" : "?";
      const res = await fetch(`${api}${path}${sep}v=${encodeURIComponent(version)}`, {
        headers: { Accept: "application/json" },
      });
      if (res.status === 409 && tries === 0) {
        await reload(version);
        continue;
      }
      return { res, body: await res.json().catch(() => ({})), version };
    }
  }
  // The JSON answer, or an Error with the server's message and fix.
  async function askJSON(path) {
    const { res, body, version } = await ask(path);
    if (!res.ok) throw problem(res, body);
    return { body, version };
  }
  return Object.assign(src, { load, ask, askJSON, onReload: (fn) => src.listeners.push(fn) });
}

export function unpack(buffer, n) {
  if (buffer.byteLength !== n * 13) throw new Error(`layout.bin holds ${buffer.byteLength} bytes, not ${n * 13}`);
  return {
    x: new Float32Array(buffer, 0, n),
    y: new Float32Array(buffer, 4 * n, n),
    cluster: new Int32Array(buffer, 8 * n, n),
    isNew: new Uint8Array(buffer, 12 * n, n),
  };
}

// ---- the hover index: a uniform grid over the bounds, built once (counting sort, no per-point objects) -----

export function buildGrid(x, y, n, b) {
  const g = Math.max(1, Math.min(1024, Math.ceil(Math.sqrt(n / 4)))); // ~4 points a cell on average
  const sx = g / (b[2] - b[0] || 1);
  const sy = g / (b[3] - b[1] || 1);
  const cellOf = (px, py) => {
    const cx = Math.min(g - 1, Math.max(0, Math.floor((px - b[0]) * sx)));
    const cy = Math.min(g - 1, Math.max(0, Math.floor((py - b[1]) * sy)));
    return cy * g + cx;
  };
  const start = new Int32Array(g * g + 1);
  const cell = new Int32Array(n);
  for (let i = 0; i < n; i++) start[(cell[i] = cellOf(x[i], y[i])) + 1]++;
  for (let c = 0; c < g * g; c++) start[c + 1] += start[c];
  const fill = start.slice(0, g * g);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[fill[cell[i]]++] = i;

  // The point nearest (px, py) within r (data units), or -1; ties go to the lower index.
  function nearest(px, py, r) {
    const x0 = Math.max(0, Math.floor((px - r - b[0]) * sx));
    const x1 = Math.min(g - 1, Math.floor((px + r - b[0]) * sx));
    const y0 = Math.max(0, Math.floor((py - r - b[1]) * sy));
    const y1 = Math.min(g - 1, Math.floor((py + r - b[1]) * sy));
    let best = -1;
    let bestD = r * r;
    for (let cy = y0; cy <= y1; cy++) {
      for (let c = cy * g + x0, end = cy * g + x1; c <= end; c++) {
        for (let k = start[c]; k < start[c + 1]; k++) {
          const i = order[k];
          const dx = x[i] - px;
          const dy = y[i] - py;
          const d = dx * dx + dy * dy;
          if (d < bestD || (d === bestD && i < best)) {
            bestD = d;
            best = i;
          }
        }
      }
    }
    return best;
  }
  return { nearest };
}
