// Attention views for llm-magics: head view, model view (layers x heads grid), matrix view.
// Plain DOM + canvas/SVG, no CDN: everything ships inside the Python package.
function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v); else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
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

function shortToken(t) {
  return JSON.stringify(t).slice(1, -1).replace(/\\u0120|Ġ/g, "·").slice(0, 16) || "∅";
}

function drawMatrix(canvas, data, n, size) {
  canvas.width = n; canvas.height = n;
  canvas.style.width = size + "px"; canvas.style.height = size + "px";
  canvas.style.imageRendering = n <= size ? "pixelated" : "auto";  // upscale crisply, downscale smoothly
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(n, n);
  for (let i = 0; i < n * n; i++) {
    const v = Math.sqrt(data[i] / 255) * 255;  // sqrt: faint long-range attention stays visible
    image.data[4 * i] = 255 - v * 0.8; image.data[4 * i + 1] = 255 - v * 0.55; image.data[4 * i + 2] = 255 - v * 0.1;
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

function render({ model, el: root }) {
  root.classList.add("llm-attention");
  const toolbar = el("div", { style: { display: "flex", gap: "8px", alignItems: "center", marginBottom: "6px", fontFamily: "sans-serif", fontSize: "13px" } });
  const body = el("div", { class: "llm-attention-body", style: { position: "relative", fontFamily: "monospace", fontSize: "12px" } });
  const info = el("div", { class: "llm-attention-info", style: { fontFamily: "sans-serif", fontSize: "12px", minHeight: "16px", color: "#444" } });
  root.append(toolbar, body, info);

  const viewSelect = el("select", { class: "llm-view", onchange: (e) => { model.set("view", e.target.value); model.save_changes(); } },
    ["head", "model", "matrix"].map((v) => el("option", { value: v }, [v + " view"])));
  const layerSelect = el("select", { class: "llm-layer", onchange: (e) => { model.set("layer", +e.target.value); model.save_changes(); } });
  const headSelect = el("select", { class: "llm-head", onchange: (e) => { model.set("head", +e.target.value); model.save_changes(); } });
  toolbar.append(viewSelect, "layer", layerSelect, "head", headSelect);

  function fillSelects() {
    layerSelect.replaceChildren(...Array.from({ length: model.get("num_layers") }, (_, i) => el("option", { value: i }, [String(i)])));
    headSelect.replaceChildren(el("option", { value: -1 }, ["all (mean)"]), ...Array.from({ length: model.get("num_heads") }, (_, i) => el("option", { value: i }, [String(i)])));
    layerSelect.value = model.get("layer"); headSelect.value = model.get("head"); viewSelect.value = model.get("view");
  }

  function headView() {
    const tokens = model.get("tokens"), n = tokens.length, w = bytes(model, "weights");
    const rowHeight = 16, width = 520, height = n * rowHeight + 4;
    const selected = model.get("selected_token");
    const wrap = el("div", { style: { position: "relative", width: width + "px", height: height + "px", maxHeight: "600px", overflowY: "auto" } });
    const inner = el("div", { style: { position: "relative", height: height + "px" } });
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    svg.style.position = "absolute"; svg.style.left = "0"; svg.style.top = "0";
    inner.append(svg);
    // Lines from the selected token only (or, for short texts, from every token): stays fast at 1,024 tokens.
    const sources = selected >= 0 ? [selected] : n <= 64 ? [...Array(n).keys()] : [n - 1];
    for (const i of sources) {
      for (let j = 0; j < n; j++) {
        const v = w[i * n + j];
        if (v < 8) continue;
        const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
        line.setAttribute("x1", 150); line.setAttribute("y1", i * rowHeight + rowHeight / 2);
        line.setAttribute("x2", width - 150); line.setAttribute("y2", j * rowHeight + rowHeight / 2);
        line.setAttribute("stroke", "#1f6fd1"); line.setAttribute("stroke-opacity", (v / 255).toFixed(3)); line.setAttribute("stroke-width", 2);
        line.setAttribute("class", "llm-line");
        svg.append(line);
      }
    }
    const rollout = model.get("rollout"), peak = Math.max(...rollout, 1e-9);
    tokens.forEach((t, i) => {
      const left = el("div", { class: "llm-token llm-query", style: { position: "absolute", left: "0", width: "145px", textAlign: "right", top: i * rowHeight + "px", cursor: "pointer", background: i === selected ? "#ffe08a" : "" },
        onclick: () => { model.set("selected_token", i === selected ? -1 : i); model.save_changes(); } }, [shortToken(t)]);
      // Key tokens are shaded by attention rollout: how much the last position draws on each input.
      const shade = rollout.length === n ? `rgba(255,140,0,${(0.6 * rollout[i] / peak).toFixed(3)})` : "";
      const right = el("div", { class: "llm-token llm-key", title: rollout.length === n ? `rollout ${rollout[i].toFixed(4)}` : "", style: { position: "absolute", left: width - 145 + "px", width: "145px", top: i * rowHeight + "px", background: shade } }, [shortToken(t)]);
      inner.append(left, right);
    });
    wrap.append(inner);
    return wrap;
  }

  function matrixView() {
    const tokens = model.get("tokens"), n = tokens.length, w = bytes(model, "weights");
    const canvas = el("canvas", { class: "llm-matrix" });
    drawMatrix(canvas, w, n, Math.min(640, Math.max(240, n * 6)));
    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect();
      const i = Math.floor(((e.clientY - r.top) / r.height) * n), j = Math.floor(((e.clientX - r.left) / r.width) * n);
      if (i >= 0 && j >= 0 && i < n && j < n) info.textContent = `${shortToken(tokens[i])} → ${shortToken(tokens[j])}: ${(w[i * n + j] / 255).toFixed(3)} (of the row's max)`;
    });
    return canvas;
  }

  function modelView() {
    const L = model.get("num_layers"), H = model.get("num_heads"), t = model.get("thumbnail_size"), thumbs = bytes(model, "thumbnails");
    const grid = el("div", { class: "llm-grid", style: { display: "grid", gridTemplateColumns: `auto repeat(${H}, 44px)`, gap: "3px", alignItems: "center" } });
    grid.append(el("div"), ...Array.from({ length: H }, (_, h) => el("div", { style: { textAlign: "center" } }, ["h" + h])));
    for (let l = 0; l < L; l++) {
      grid.append(el("div", {}, ["L" + l]));
      for (let h = 0; h < H; h++) {
        const canvas = el("canvas", { class: "llm-thumb", title: `layer ${l}, head ${h}`, style: { cursor: "pointer", border: "1px solid #ddd" } });
        if (thumbs.length) drawMatrix(canvas, thumbs.subarray((l * H + h) * t * t, (l * H + h + 1) * t * t), t, 40);
        canvas.addEventListener("click", () => { model.set("layer", l); model.set("head", h); model.set("view", "matrix"); model.save_changes(); });
        grid.append(canvas);
      }
    }
    return grid;
  }

  function draw() {
    fillSelects();
    const view = model.get("view");
    body.replaceChildren(view === "model" ? modelView() : view === "matrix" ? matrixView() : headView());
    const n = model.get("tokens").length;
    info.textContent = `${n} tokens · layer ${model.get("layer")} · head ${model.get("head") < 0 ? "mean" : model.get("head")}`;
  }
  for (const name of ["weights", "view", "selected_token", "thumbnails", "tokens"]) model.on("change:" + name, draw);
  draw();
}
export default { render };
