// Attention views for llm-magics: head view, model view (layers x heads grid), matrix view, logit lens.
// Plain DOM + canvas/SVG, no CDN: everything ships inside the Python package. Colours come from
// JupyterLab's CSS variables (with fallbacks elsewhere), so light and dark themes both read well.
//
// Never a stale picture: the kernel sends a layer's maps together with `shown_layer` / `shown_head`. Until
// they equal the selection (`layer` / `head`), the head and matrix views show a busy state, not the
// previous layer's data; the label always names the data that is drawn.
const SVG = "http://www.w3.org/2000/svg";
// Per-head colours, as bertviz's head view (d3's category10, then two more).
const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#ad494a"];
const STYLE = `
.llm-attention { --llm-fg: var(--jp-ui-font-color1, #1f1f1f); --llm-fg-dim: var(--jp-ui-font-color2, #555);
  --llm-bg: var(--jp-layout-color0, #fff); --llm-bg2: var(--jp-layout-color1, #fff);
  --llm-border: var(--jp-border-color1, #bdbdbd); --llm-accent: var(--jp-brand-color1, #1976d2);
  --llm-select: var(--jp-warn-color2, #ffb74d);
  color: var(--llm-fg); background: var(--llm-bg); font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: 12px; padding: 6px; position: relative; }
.llm-attention select, .llm-attention button { color: var(--llm-fg); background: var(--llm-bg2);
  border: 1px solid var(--llm-border); border-radius: 3px; font-size: 12px; padding: 1px 4px; }
.llm-attention .llm-toolbar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 6px; }
.llm-attention .llm-label { font-weight: 600; }
.llm-attention .llm-info { min-height: 16px; color: var(--llm-fg-dim); margin-top: 4px; }
.llm-attention .llm-mono { font-family: var(--jp-code-font-family, monospace); font-size: 11px; }
.llm-attention .llm-busy-note { display: none; padding: 24px; color: var(--llm-fg-dim); }
.llm-attention.llm-busy .llm-body { visibility: hidden; }
.llm-attention.llm-busy .llm-busy-note { display: block; position: absolute; left: 12px; top: 44px; }
.llm-attention .llm-token { cursor: pointer; white-space: pre; overflow: hidden; border-radius: 2px; }
.llm-attention .llm-token:hover, .llm-attention .llm-token.llm-hover { outline: 1px solid var(--llm-accent); }
.llm-attention .llm-token.llm-selected { background: var(--llm-select); color: #000; }
.llm-attention .llm-chip { display: inline-block; width: 14px; height: 14px; border-radius: 3px; cursor: pointer;
  border: 2px solid transparent; vertical-align: middle; }
.llm-attention .llm-chip.llm-active { border-color: var(--llm-fg); }
.llm-attention .llm-axis-label { position: absolute; white-space: pre; overflow: hidden; color: var(--llm-fg); }
.llm-attention .llm-viewport { position: absolute; overflow: hidden; border: 1px solid var(--llm-border); cursor: crosshair; }
.llm-attention .llm-region { position: absolute; border: 1px dashed var(--llm-fg); background: rgba(128,128,128,0.15); pointer-events: none; }
.llm-attention .llm-scroll { overflow: auto; border: 1px solid var(--llm-border); }
.llm-attention .llm-sticky { position: sticky; background: var(--llm-bg); z-index: 1; }
.llm-attention .llm-lens-cell { padding: 1px 4px; white-space: pre; overflow: hidden; max-width: 70px; text-align: center; cursor: default; }
.llm-attention .llm-lens th { font-weight: 400; white-space: pre; padding: 1px 4px; }
`;

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function bytes(model, name) {
  const value = model.get(name);
  if (!value) return new Uint8Array(0);
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value.buffer) return new Uint8Array(value.buffer, value.byteOffset || 0, value.byteLength);
  return new Uint8Array(value);
}

function floats(model, name) {
  const b = bytes(model, name);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function shortToken(t, length = 16) {
  return JSON.stringify(t).slice(1, -1).replace(/\\u0120|Ġ/g, "·").replace(/ /g, "·").slice(0, length) || "∅";
}

// A CSS colour (variables resolved against `root`) as [r, g, b].
function cssColour(root, value, fallback) {
  if (!root.isConnected) return fallback;  // not in the page yet: nothing to resolve the variables against
  const probe = el("span", { style: { color: value, display: "none" } });
  root.append(probe);
  const parts = getComputedStyle(probe).color.match(/[\d.]+/g);
  probe.remove();
  return parts ? parts.slice(0, 3).map(Number) : fallback;
}

function palette(root) {
  return { bg: cssColour(root, "var(--llm-bg)", [255, 255, 255]), accent: cssColour(root, "var(--llm-accent)", [25, 118, 210]) };
}

const blend = (a, b, t) => a.map((x, i) => Math.round(x + (b[i] - x) * t));

// Fill an image with value (0..255, share of the row max) -> background..accent on a square-root scale.
function paint(canvas, data, rows, cols, colours) {
  canvas.width = cols; canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(cols, rows);
  const { bg, accent } = colours;
  for (let i = 0; i < rows * cols; i++) {
    const s = Math.sqrt(data[i] / 255);
    image.data[4 * i] = bg[0] + (accent[0] - bg[0]) * s;
    image.data[4 * i + 1] = bg[1] + (accent[1] - bg[1]) * s;
    image.data[4 * i + 2] = bg[2] + (accent[2] - bg[2]) * s;
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

// Black or white, whichever reads better on an [r, g, b] background (WCAG contrast).
function textOn(rgb) {
  const linear = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  return (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) ? "#000" : "#fff";
}

function legend(colours, caption) {
  const bar = el("canvas", { class: "llm-legend", width: 140, height: 10, style: { border: "1px solid var(--llm-border)", verticalAlign: "middle" } });
  const ramp = new Uint8Array(140).map((_, i) => Math.round((i / 139) ** 2 * 255));  // squared: sqrt undoes it
  paint(bar, ramp, 1, 140, colours);
  bar.style.width = "140px"; bar.style.height = "10px";
  return el("div", { class: "llm-legend-row", style: { display: "flex", gap: "6px", alignItems: "center", marginTop: "4px" } },
    ["0", bar, "1", el("span", { style: { color: "var(--llm-fg-dim)" } }, [caption])]);
}

function render({ model, el: root }) {
  root.classList.add("llm-attention");
  root.append(el("style", {}, [STYLE]));
  const toolbar = el("div", { class: "llm-toolbar" });
  const body = el("div", { class: "llm-body" });
  const busyNote = el("div", { class: "llm-busy-note" });
  const info = el("div", { class: "llm-info" });
  root.append(toolbar, body, busyNote, info);
  let hover = null;  // {side: "query"|"key", index}
  const zoom = { r0: 0, c0: 0, span: 0 };  // matrix view: the square of the matrix in sight

  const set = (changes) => { for (const [k, v] of Object.entries(changes)) model.set(k, v); model.save_changes(); };
  const viewSelect = el("select", { class: "llm-view", onchange: (e) => set({ view: e.target.value }) },
    [["head", "head view"], ["model", "model view"], ["matrix", "matrix view"], ["lens", "logit lens"]].map(([v, t]) => el("option", { value: v }, [t])));
  const layerSelect = el("select", { class: "llm-layer", onchange: (e) => set({ layer: +e.target.value }) });
  const headSelect = el("select", { class: "llm-head", onchange: (e) => set({ head: +e.target.value }) });
  const label = el("span", { class: "llm-label" });
  const chips = el("span", { class: "llm-chips" });
  toolbar.append(viewSelect, el("span", {}, ["layer"]), layerSelect, el("span", {}, ["head"]), headSelect, chips, label);

  function fillSelects() {
    const L = model.get("num_layers"), H = model.get("num_heads");
    if (layerSelect.options.length !== L) layerSelect.replaceChildren(...Array.from({ length: L }, (_, i) => el("option", { value: i }, [String(i)])));
    if (headSelect.options.length !== H + 1) headSelect.replaceChildren(el("option", { value: -1 }, ["all (mean)"]), ...Array.from({ length: H }, (_, i) => el("option", { value: i }, [String(i)])));
    layerSelect.value = model.get("layer"); headSelect.value = model.get("head"); viewSelect.value = model.get("view");
  }

  const headName = (h) => (h < 0 ? "mean of heads" : `head ${h}`);
  const ready = () => model.get("shown_layer") === model.get("layer") && model.get("shown_head") === model.get("head");

  // The shown layer's maps: index of a head (-1 = mean) in the weights, or -1 when it was not sent.
  function maps() {
    const n = model.get("tokens").length, w = bytes(model, "weights"), peaks = floats(model, "row_peaks");
    const heads = model.get("weight_heads");
    return { n, heads, map: (h) => { const k = heads.indexOf(h); return k < 0 ? null : w.subarray(k * n * n, (k + 1) * n * n); },
      peak: (h, i) => peaks[heads.indexOf(h) * n + i] };
  }

  function headChips() {
    const H = model.get("num_heads"), head = model.get("head"), perHead = model.get("weight_heads").length > 1;
    const all = el("button", { class: "llm-chip-all", title: "all heads", onclick: () => set({ head: -1 }) }, ["all"]);
    chips.replaceChildren(all, ...Array.from({ length: H }, (_, h) => el("span", {
      class: "llm-chip" + (h === head ? " llm-active" : ""), title: `head ${h}: click to show only this head`,
      style: { background: HEAD_COLOURS[h % HEAD_COLOURS.length], opacity: head < 0 && !perHead ? 0.4 : 1 },
      onclick: () => set({ head: h === head ? -1 : h }) })));
  }

  function headView() {
    const tokens = model.get("tokens"), { n, heads, map } = maps();
    const rowHeight = 18, width = 560, column = 150, height = n * rowHeight + 4;
    const selected = model.get("selected_token"), head = model.get("head");
    const wrap = el("div", { class: "llm-scroll llm-head-view", style: { width: width + 20 + "px", maxHeight: "480px" } });
    const inner = el("div", { style: { position: "relative", height: height + "px", width: width + "px" } });
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    Object.assign(svg.style, { position: "absolute", left: "0", top: "0", pointerEvents: "none" });
    inner.append(svg);
    // Which maps to draw, each in its head's colour: every head when "all" was sent per head, else one.
    const drawn = head >= 0 ? [[head, HEAD_COLOURS[head % HEAD_COLOURS.length]]]
      : heads.length > 1 ? heads.filter((h) => h >= 0).map((h) => [h, HEAD_COLOURS[h % HEAD_COLOURS.length]])
        : [[-1, "var(--llm-accent)"]];
    const fixedSource = selected >= 0 ? selected : n <= 40 ? -1 : n - 1;
    const lefts = [], rights = [];

    function drawLines() {
      svg.replaceChildren();
      const source = hover && hover.side === "query" ? hover.index : fixedSource;
      const pairs = [];  // [query, key]
      if (hover && hover.side === "key") { for (let i = 0; i < n; i++) pairs.push([i, hover.index]); }
      else for (const i of source >= 0 ? [source] : [...Array(n).keys()]) for (let j = 0; j < n; j++) pairs.push([i, j]);
      const scale = drawn.length > 1 ? 0.8 : 1;
      for (const [h, colour] of drawn) {
        const w = map(h);
        if (!w) continue;
        for (const [i, j] of pairs) {
          const v = w[i * n + j];
          if (v < 10) continue;
          const line = document.createElementNS(SVG, "line");
          line.setAttribute("x1", column); line.setAttribute("y1", i * rowHeight + rowHeight / 2);
          line.setAttribute("x2", width - column); line.setAttribute("y2", j * rowHeight + rowHeight / 2);
          line.setAttribute("stroke", colour); line.setAttribute("stroke-opacity", (scale * v / 255).toFixed(3));
          line.setAttribute("stroke-width", 2); line.setAttribute("class", "llm-line"); line.dataset.head = h;
          svg.append(line);
        }
      }
      lefts.forEach((node, i) => node.classList.toggle("llm-hover", !!hover && hover.side === "query" && hover.index === i));
      rights.forEach((node, i) => node.classList.toggle("llm-hover", !!hover && hover.side === "key" && hover.index === i));
      info.textContent = hover ? `${hover.side === "query" ? "attention from" : "attention into"} ${shortToken(tokens[hover.index])} (${hover.index})`
        : source >= 0 ? `lines from ${shortToken(tokens[source])} (${source}); hover a token for its lines, click to keep it`
          : "hover a token for its lines, click to keep it; right column shaded by attention rollout";
      return source;
    }

    const rollout = model.get("rollout"), peak = Math.max(...rollout, 1e-9), sinks = model.get("sinks");
    const hoverOn = (side, index) => () => { hover = { side, index }; drawLines(); };
    tokens.forEach((t, i) => {
      const left = el("div", { class: "llm-token llm-query" + (i === selected ? " llm-selected" : ""),
        title: "click: keep this token's lines", style: { position: "absolute", left: "0", width: column - 6 + "px", textAlign: "right", top: i * rowHeight + "px", lineHeight: rowHeight + "px" },
        onclick: () => set({ selected_token: i === selected ? -1 : i }), onmouseenter: hoverOn("query", i) }, [shortToken(t)]);
      // Key tokens are shaded by attention rollout (the explanation of the prediction).
      const shade = rollout.length === n ? `rgba(255,140,0,${(0.4 * rollout[i] / peak).toFixed(3)})` : "";
      const right = el("div", { class: "llm-token llm-key",
        title: rollout.length === n ? `rollout into ${model.get("rollout_target")}: ${rollout[i].toFixed(4)}${sinks.includes(i) ? " (attention sink, dropped)" : ""}` : "",
        style: { position: "absolute", left: width - column + 6 + "px", width: column - 6 + "px", top: i * rowHeight + "px", lineHeight: rowHeight + "px", background: shade },
        onmouseenter: hoverOn("key", i) }, [shortToken(t)]);
      lefts.push(left); rights.push(right);
      inner.append(left, right);
    });
    inner.addEventListener("mouseleave", () => { if (hover) { hover = null; drawLines(); } });
    wrap.append(inner);
    const source = drawLines();
    // Open where the lines are: the source token's row in the middle of the scroll box.
    requestAnimationFrame(() => { wrap.scrollTop = Math.max(0, (source >= 0 ? source : 0) * rowHeight - wrap.clientHeight / 2); });
    return wrap;
  }

  function matrixView() {
    const tokens = model.get("tokens"), { n, map, peak } = maps(), head = model.get("head");
    const w = map(head) || new Uint8Array(n * n);
    const colours = palette(root);
    if (!zoom.span || zoom.span > n) Object.assign(zoom, { r0: 0, c0: 0, span: n });
    const size = Math.min(640, Math.max(320, n * 16)), margin = 110;
    const frame = el("div", { class: "llm-matrix-frame", style: { position: "relative", width: margin + size + 4 + "px", height: margin + size + 4 + "px" } });
    const viewport = el("div", { class: "llm-viewport", style: { left: margin + "px", top: margin + "px", width: size + "px", height: size + "px" } });
    const canvas = el("canvas", { class: "llm-matrix" });
    paint(canvas, w, n, n, colours);
    Object.assign(canvas.style, { position: "absolute", left: "0", top: "0", width: size + "px", height: size + "px", transformOrigin: "0 0" });
    const region = el("div", { class: "llm-region", style: { display: "none" } });
    viewport.append(canvas, region);
    const axes = el("div", { class: "llm-axes llm-mono" });
    frame.append(axes, viewport);
    const resetButton = el("button", { class: "llm-reset-zoom", onclick: () => { Object.assign(zoom, { r0: 0, c0: 0, span: n }); place(); } }, ["reset zoom"]);

    function place() {
      const k = n / zoom.span, cell = size / zoom.span;
      canvas.style.transform = `translate(${-zoom.c0 * cell}px, ${-zoom.r0 * cell}px) scale(${k})`;
      canvas.style.imageRendering = cell >= 1 ? "pixelated" : "auto";
      const step = Math.max(1, Math.ceil(zoom.span / Math.floor(size / 13)));
      const labels = [];
      for (let i = Math.ceil(zoom.r0 / step) * step; i < zoom.r0 + zoom.span && i < n; i += step) {
        labels.push(el("div", { class: "llm-axis-label llm-row-label", "data-index": i, title: `query ${i}: ${JSON.stringify(tokens[i])}`,
          style: { left: "0", width: margin - 6 + "px", textAlign: "right", top: margin + (i - zoom.r0 + 0.5) * cell - 7 + "px", lineHeight: "14px" } }, [shortToken(tokens[i], 14)]));
      }
      for (let j = Math.ceil(zoom.c0 / step) * step; j < zoom.c0 + zoom.span && j < n; j += step) {
        labels.push(el("div", { class: "llm-axis-label llm-col-label", "data-index": j, title: `key ${j}: ${JSON.stringify(tokens[j])}`,
          style: { top: "0", height: margin - 6 + "px", left: margin + (j - zoom.c0 + 0.5) * cell - 7 + "px", width: "14px", writingMode: "vertical-rl", transform: "rotate(180deg)", textAlign: "left", lineHeight: "14px" } }, [shortToken(tokens[j], 14)]));
      }
      axes.replaceChildren(...labels);
      resetButton.style.visibility = zoom.span < n ? "visible" : "hidden";
    }
    const at = (e) => { const r = viewport.getBoundingClientRect(); return [zoom.r0 + ((e.clientY - r.top) / size) * zoom.span, zoom.c0 + ((e.clientX - r.left) / size) * zoom.span]; };
    const clamp = () => { zoom.span = Math.min(n, Math.max(Math.min(8, n), zoom.span)); zoom.r0 = Math.min(Math.max(0, zoom.r0), n - zoom.span); zoom.c0 = Math.min(Math.max(0, zoom.c0), n - zoom.span); };
    viewport.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [r, c] = at(e), factor = e.deltaY < 0 ? 0.8 : 1.25, old = zoom.span;
      zoom.span = old * factor; clamp();
      zoom.r0 = r - (r - zoom.r0) * (zoom.span / old); zoom.c0 = c - (c - zoom.c0) * (zoom.span / old); clamp(); place();
    }, { passive: false });
    let drag = null;
    viewport.addEventListener("mousedown", (e) => { e.preventDefault(); drag = { start: at(e), x: e.clientX, y: e.clientY, pan: e.shiftKey, zoom: { ...zoom } }; });
    viewport.addEventListener("mousemove", (e) => {
      const [r, c] = at(e), i = Math.floor(r), j = Math.floor(c);
      if (i >= 0 && j >= 0 && i < n && j < n) {
        const v = w[i * n + j] / 255, p = peak(head, i);
        info.textContent = `query ${shortToken(tokens[i])} (${i}) → key ${shortToken(tokens[j])} (${j}): ${(v * p).toFixed(4)} (${(100 * v).toFixed(0)}% of the row's max ${p.toFixed(3)})`;
      }
      if (!drag) return;
      const cell = size / drag.zoom.span;
      if (drag.pan) { zoom.r0 = drag.zoom.r0 - (e.clientY - drag.y) / cell; zoom.c0 = drag.zoom.c0 - (e.clientX - drag.x) / cell; clamp(); place(); return; }
      const vr = viewport.getBoundingClientRect();
      Object.assign(region.style, { display: "block", left: Math.min(drag.x, e.clientX) - vr.left + "px", top: Math.min(drag.y, e.clientY) - vr.top + "px",
        width: Math.abs(e.clientX - drag.x) + "px", height: Math.abs(e.clientY - drag.y) + "px" });
    });
    const finish = (e) => {
      if (!drag) return;
      region.style.display = "none";
      if (!drag.pan && Math.max(Math.abs(e.clientX - drag.x), Math.abs(e.clientY - drag.y)) > 4) {
        const [r, c] = at(e);
        zoom.r0 = Math.min(drag.start[0], r); zoom.c0 = Math.min(drag.start[1], c);
        zoom.span = Math.max(Math.abs(r - drag.start[0]), Math.abs(c - drag.start[1])); clamp(); place();
      }
      drag = null;
    };
    viewport.addEventListener("mouseup", finish);
    viewport.addEventListener("mouseleave", finish);
    viewport.addEventListener("dblclick", () => { Object.assign(zoom, { r0: 0, c0: 0, span: n }); place(); });
    place();
    info.textContent = "rows: queries, columns: keys · wheel or drag a region to zoom, shift-drag to pan, double-click to reset";
    return el("div", {}, [frame, el("div", { style: { display: "flex", gap: "12px", alignItems: "center" } },
      [legend(colours, "attention as a share of its row's max (√ scale)"), resetButton])]);
  }

  function modelView() {
    const L = model.get("num_layers"), H = model.get("num_heads"), t = model.get("thumbnail_size"), thumbs = bytes(model, "thumbnails");
    const colours = palette(root);
    const box = el("div", { class: "llm-scroll llm-model-view", style: { maxHeight: "min(560px, 70vh)", maxWidth: "100%", display: "inline-block" } });
    const grid = el("div", { class: "llm-grid", style: { display: "grid", gridTemplateColumns: `64px repeat(${H}, 44px)`, gap: "3px", alignItems: "center", padding: "2px" } });
    grid.append(el("div", { class: "llm-sticky", style: { top: "0", left: "0", zIndex: 2 } }, ["layer ╲ head"]),
      ...Array.from({ length: H }, (_, h) => el("div", { class: "llm-sticky llm-col-title", style: { top: "0", textAlign: "center" } }, [String(h)])));
    for (let l = 0; l < L; l++) {
      grid.append(el("div", { class: "llm-sticky llm-row-title", style: { left: "0", textAlign: "right", paddingRight: "6px" } }, [`layer ${l}`]));
      for (let h = 0; h < H; h++) {
        const canvas = el("canvas", { class: "llm-thumb", title: `layer ${l}, head ${h}: click to open`, "data-layer": l, "data-head": h,
          style: { cursor: "pointer", border: "1px solid var(--llm-border)", width: "40px", height: "40px" } });
        if (thumbs.length) paint(canvas, thumbs.subarray((l * H + h) * t * t, (l * H + h + 1) * t * t), t, t, colours);
        canvas.style.width = "40px"; canvas.style.height = "40px";
        canvas.addEventListener("click", () => set({ layer: l, head: h, view: "matrix" }));
        grid.append(canvas);
      }
    }
    box.append(grid);
    info.textContent = "every layer × head, pooled; click a cell to open it in the matrix view";
    return el("div", {}, [box, legend(colours, "pooled attention, share of the row's max (√ scale)")]);
  }

  function lensView() {
    const lens = model.get("lens"), tokens = model.get("tokens"), error = model.get("lens_error");
    if (error) return el("div", { class: "llm-lens-error" }, [error]);
    const { bg, accent } = palette(root);
    const limit = 256, start = Math.max(0, tokens.length - limit);
    const table = el("table", { class: "llm-lens llm-mono", style: { borderCollapse: "collapse" } });
    const header = el("tr", {}, [el("th", { class: "llm-sticky", style: { top: "0", left: "0", zIndex: 2 } }, ["after →"]),
      ...tokens.slice(start).map((t, p) => el("th", { class: "llm-sticky llm-lens-input", style: { top: "0" }, title: `position ${start + p}` }, [shortToken(t, 10)]))]);
    table.append(header);
    lens.rows.forEach((name, r) => {
      const row = el("tr", {}, [el("th", { class: "llm-sticky", style: { left: "0", textAlign: "right" } }, [name + (r === lens.rows.length - 1 ? " (output)" : "")])]);
      for (let p = start; p < tokens.length; p++) {
        const guesses = lens.tokens[r][p], probs = lens.probs[r][p], q = probs[0];
        const top5 = guesses.map((g, k) => `${JSON.stringify(g)} ${probs[k].toFixed(3)}`).join("\n");
        row.append(el("td", { class: "llm-lens-cell", "data-row": r, "data-position": p, title: `${name}, after ${JSON.stringify(tokens[p])}:\n${top5}`,
          style: { background: `rgb(${blend(bg, accent, Math.sqrt(q)).join(",")})`, color: textOn(blend(bg, accent, Math.sqrt(q))) },
          onmouseenter: () => { info.textContent = `${name} · after ${shortToken(tokens[p])} (${p}): ` + guesses.map((g, k) => `${shortToken(g)} ${probs[k].toFixed(3)}`).join(", "); } },
        [shortToken(guesses[0], 8)]));
      }
      table.append(row);
    });
    info.textContent = "each cell: that layer's likeliest next token after the column's token, read through the final norm and unembedding; shade = probability; hover for the top 5";
    const box = el("div", { class: "llm-scroll", style: { maxHeight: "min(620px, 75vh)", maxWidth: "100%" } }, [table]);
    return el("div", {}, [box, legend({ bg, accent }, "probability of the top guess (√ scale)"),
      start ? el("div", {}, [`showing the last ${limit} of ${tokens.length} positions (Session.lens(text) has them all)`]) : ""]);
  }

  function redrawBody() {
    const view = model.get("view");
    body.replaceChildren(view === "model" ? modelView() : view === "matrix" ? matrixView() : view === "lens" ? lensView() : headView());
  }

  function draw() {
    fillSelects();
    const view = model.get("view"), layer = model.get("layer"), head = model.get("head");
    const needsLayer = view === "head" || view === "matrix";
    const busy = (needsLayer && !ready()) || (view === "lens" && !model.get("lens_error") && !(model.get("lens").rows || []).length);
    root.classList.toggle("llm-busy", busy);
    layerSelect.disabled = headSelect.disabled = !needsLayer;
    chips.style.display = view === "head" ? "" : "none";
    const n = model.get("tokens").length;
    if (busy) {
      // The label names what is being computed; nothing of the previous layer stays in sight.
      label.textContent = view === "lens" ? "computing the logit lens…" : `computing layer ${layer} · ${headName(head)}…`;
      label.dataset.layer = ""; busyNote.textContent = label.textContent;
      return;
    }
    if (view === "head") headChips();
    hover = null;
    redrawBody();
    // Label and drawing come from the same data: shown_layer / shown_head.
    const shownLayer = model.get("shown_layer"), shownHead = model.get("shown_head");
    body.dataset.layer = needsLayer ? shownLayer : ""; body.dataset.head = needsLayer ? shownHead : "";
    label.dataset.layer = needsLayer ? shownLayer : "";
    label.textContent = needsLayer ? `layer ${shownLayer} · ${headName(shownHead)} · ${n} tokens`
      : view === "lens" ? `logit lens · ${n} tokens` : `model view · ${model.get("num_layers")} layers × ${model.get("num_heads")} heads`;
  }

  let pending = false;
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } };
  for (const name of ["weights", "shown_layer", "shown_head", "layer", "head", "view", "selected_token", "thumbnails", "tokens", "lens", "lens_error"]) {
    // A new selection is drawn at once (busy until its data arrives); the data itself on the next frame.
    model.on("change:" + name, name === "layer" || name === "head" || name === "view" ? draw : schedule);
  }
  // Canvases take their colours from the theme: repaint when JupyterLab switches it.
  const observer = new MutationObserver(schedule);
  observer.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  // The first draw may happen before the output is attached: repaint once it is in the page.
  let attached = root.isConnected;
  const sized = new ResizeObserver(() => { if (!attached && root.isConnected) { attached = true; schedule(); } });
  sized.observe(root);
  draw();
  return () => { observer.disconnect(); sized.disconnect(); };
}
export default { render };
