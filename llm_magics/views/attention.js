// Attention views for llm-magics: head view, model view (layers x heads grid), matrix view, logit lens.
// Plain DOM + canvas/SVG, no CDN: everything ships inside the Python package. Colours come from the shared
// theme (theme.css: JupyterLab's CSS variables), so light and dark themes both read well; its own styles are
// in attention.css.
//
// Never a stale picture: the kernel sends a layer's maps together with `shown_layer` / `shown_head`. Until
// they equal the selection (`layer` / `head`), the head and matrix views show a busy state, not the
// previous layer's data; the label always names the data that is drawn.
//
// A text longer than 512 tokens: the matrix view gets a max-pooled overview (`weights_pool` cells a pixel)
// and, once a zoom gesture settles, the kernel sends the square in sight as an exact tile (`tile`,
// `tile_box`), drawn over the overview; hover reads exact values from the tile.
import { cssColour, el, onTheme, shortToken, themed } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
// Per-head colours, as bertviz's head view (d3's category10, then two more).
const HEAD_COLOURS = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
  '#393b79',
  '#ad494a'
];

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

function palette(root) {
  return {
    bg: cssColour(root, 'var(--llm-bg)', [255, 255, 255]),
    accent: cssColour(root, 'var(--llm-accent)', [25, 118, 210])
  };
}

const blend = (a, b, t) => a.map((x, i) => Math.round(x + (b[i] - x) * t));

// Fill an image with value (0..255, share of the row max) -> background..accent on a square-root scale.
function paint(canvas, data, rows, cols, colours) {
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext('2d');
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

function hexRgb(hex) {
  return [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
}

// Black or white, whichever reads better on an [r, g, b] background (WCAG contrast).
function textOn(rgb) {
  const linear = rgb.map(c => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  return (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) ? '#000' : '#fff';
}

function legend(colours, caption) {
  const bar = el('canvas', {
    class: 'llm-legend',
    width: 140,
    height: 10,
    style: { border: '1px solid var(--llm-border)', verticalAlign: 'middle' }
  });
  const ramp = new Uint8Array(140).map((_, i) => Math.round((i / 139) ** 2 * 255)); // squared: sqrt undoes it
  paint(bar, ramp, 1, 140, colours);
  bar.style.width = '140px';
  bar.style.height = '10px';
  return el(
    'div',
    { class: 'llm-legend-row', style: { display: 'flex', gap: '6px', alignItems: 'center', marginTop: '4px' } },
    ['0', bar, '1', el('span', { style: { color: 'var(--llm-fg-dim)' } }, [caption])]
  );
}

function render({ model, el: root }) {
  themed(root, 'llm-attention');
  const toolbar = el('div', { class: 'llm-toolbar' });
  const body = el('div', { class: 'llm-body' });
  const busyNote = el('div', { class: 'llm-busy-note' });
  const info = el('div', { class: 'llm-info' });
  root.append(toolbar, body, busyNote, info);
  let hover = null; // {side: "query"|"key", index}
  const saved = model.get('zoom') || []; // matrix view: the square of the matrix in sight, kept in the model
  const zoom = saved.length === 3 ? { r0: saved[0], c0: saved[1], span: saved[2] } : { r0: 0, c0: 0, span: 0 };
  let zoomTimer = null;
  // The kernel keeps the zoom (the saved snapshot shows it): sent once a gesture has settled, as whole tokens
  // that cover every cell in sight (the exact tile drawn over it leaves no strip of the pooled overview).
  const saveZoom = n => {
    clearTimeout(zoomTimer);
    zoomTimer = setTimeout(() => {
      const r0 = Math.floor(zoom.r0),
        c0 = Math.floor(zoom.c0);
      const span = Math.min(n, Math.ceil(Math.max(zoom.r0 - r0, zoom.c0 - c0) + zoom.span));
      set({ zoom: zoom.span >= n ? [] : [Math.min(r0, n - span), Math.min(c0, n - span), span] });
    }, 400);
  };

  const set = changes => {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  };
  const viewSelect = el(
    'select',
    { class: 'llm-view', onchange: e => set({ view: e.target.value }) },
    [
      ['head', 'head view'],
      ['model', 'model view'],
      ['matrix', 'matrix view'],
      ['lens', 'logit lens']
    ].map(([v, t]) => el('option', { value: v }, [t]))
  );
  const layerSelect = el('select', { class: 'llm-layer', onchange: e => set({ layer: +e.target.value }) });
  const headSelect = el('select', { class: 'llm-head', onchange: e => set({ head: +e.target.value }) });
  const label = el('span', { class: 'llm-label' });
  const chips = el('span', { class: 'llm-chips' });
  // Controls that do nothing in a view are hidden there (layer and head in the model view and the lens).
  const layerControl = el('span', { class: 'llm-layer-control' }, ['layer ', layerSelect]);
  const headControl = el('span', { class: 'llm-head-control' }, ['head ', headSelect]);
  toolbar.append(viewSelect, layerControl, headControl, chips, label);

  function fillSelects() {
    const L = model.get('num_layers'),
      H = model.get('num_heads');
    if (layerSelect.options.length !== L)
      layerSelect.replaceChildren(...Array.from({ length: L }, (_, i) => el('option', { value: i }, [String(i)])));
    if (headSelect.options.length !== H + 1)
      headSelect.replaceChildren(
        el('option', { value: -1 }, [model.get('view') === 'head' ? 'chosen heads' : 'all (mean)']),
        ...Array.from({ length: H }, (_, i) => el('option', { value: i }, [String(i)]))
      );
    layerSelect.value = model.get('layer');
    headSelect.value = model.get('head');
    viewSelect.value = model.get('view');
  }

  // The head view with head -1 draws head_set (on opening: the layer's top 3 by attention entropy).
  function headName(h) {
    if (h >= 0) return `head ${h}`;
    const set = model.get('head_set');
    if (model.get('view') !== 'head' || !set.length || model.get('weight_heads').length < 2) return 'mean of heads';
    const top = model.get('entropy_heads');
    const same = top.length === set.length && top.every((x, i) => x === set[i]);
    return `heads ${set.join(', ')}` + (same ? ' (top 3 by attention entropy)' : '');
  }
  const pool = () => model.get('weights_pool') || 1;
  // The head view needs the exact map: a pooled overview (sent for the matrix view) is not its data.
  const ready = () =>
    model.get('shown_layer') === model.get('layer') &&
    model.get('shown_head') === model.get('head') &&
    (model.get('view') !== 'head' || pool() === 1);

  // The shown layer's maps: index of a head (-1 = mean) in the weights, or -1 when it was not sent.
  // Each map is side × side: n, or n / weights_pool for a long text's pooled overview.
  function maps() {
    const n = model.get('tokens').length,
      w = bytes(model, 'weights'),
      peaks = floats(model, 'row_peaks');
    const heads = model.get('weight_heads'),
      side = Math.ceil(n / pool());
    return {
      n,
      side,
      heads,
      map: h => {
        const k = heads.indexOf(h);
        return k < 0 ? null : w.subarray(k * side * side, (k + 1) * side * side);
      },
      peak: (h, i) => peaks[heads.indexOf(h) * n + i]
    };
  }

  // Chips: a click adds or removes that head from the drawn ones; "all" draws every head, "top 3" the
  // layer's top 3 by attention entropy.
  function headChips() {
    const H = model.get('num_heads'),
      head = model.get('head'),
      perHead = model.get('weight_heads').length > 1;
    const drawnSet = head >= 0 ? [head] : model.get('head_set');
    const toggle = h => {
      const next = drawnSet.includes(h) ? drawnSet.filter(x => x !== h) : [...drawnSet, h].sort((a, b) => a - b);
      set({ head: -1, head_set: next });
    };
    const all = el(
      'button',
      {
        class: 'llm-chip-all',
        title: 'draw every head',
        onclick: () => set({ head: -1, head_set: [...Array(H).keys()] })
      },
      ['all']
    );
    const top = el(
      'button',
      {
        class: 'llm-chip-top',
        title: "the layer's top 3 heads by attention entropy",
        onclick: () => set({ head: -1, head_set: model.get('entropy_heads') })
      },
      ['top 3']
    );
    chips.replaceChildren(
      all,
      top,
      ...Array.from({ length: H }, (_, h) => {
        const colour = HEAD_COLOURS[h % HEAD_COLOURS.length];
        return el(
          'span',
          {
            class: 'llm-chip' + (drawnSet.includes(h) ? ' llm-active' : ''),
            'data-head': h,
            title: `head ${h}: click to add or remove its lines`,
            style: {
              background: colour,
              color: textOn(hexRgb(colour)),
              opacity: !perHead && head < 0 ? 0.4 : drawnSet.includes(h) ? 1 : 0.55
            },
            onclick: () => toggle(h)
          },
          [String(h)]
        );
      })
    );
  }

  function headView() {
    const tokens = model.get('tokens'),
      { n, heads, map } = maps();
    const rowHeight = 18,
      width = 560,
      column = 150,
      height = n * rowHeight + 4;
    const selected = model.get('selected_token'),
      head = model.get('head');
    const wrap = el('div', {
      class: 'llm-scroll llm-head-view',
      style: { width: width + 20 + 'px', maxHeight: '480px' }
    });
    const inner = el('div', { style: { position: 'relative', height: height + 'px', width: width + 'px' } });
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    Object.assign(svg.style, { position: 'absolute', left: '0', top: '0', pointerEvents: 'none' });
    inner.append(svg);
    // Which maps to draw, each in its head's colour: every head when "all" was sent per head, else one.
    const chosen = model.get('head_set');
    const drawn =
      head >= 0
        ? [[head, HEAD_COLOURS[head % HEAD_COLOURS.length]]]
        : heads.length > 1
          ? heads.filter(h => h >= 0 && chosen.includes(h)).map(h => [h, HEAD_COLOURS[h % HEAD_COLOURS.length]])
          : [[-1, 'var(--llm-accent)']];
    const fixedSource = selected >= 0 ? selected : n <= 40 ? -1 : n - 1;
    const lefts = [],
      rights = [];

    function drawLines() {
      svg.replaceChildren();
      const source = hover && hover.side === 'query' ? hover.index : fixedSource;
      const pairs = []; // [query, key]
      if (hover && hover.side === 'key') {
        for (let i = 0; i < n; i++) pairs.push([i, hover.index]);
      } else
        for (const i of source >= 0 ? [source] : [...Array(n).keys()]) for (let j = 0; j < n; j++) pairs.push([i, j]);
      const scale = drawn.length > 1 ? 0.8 : 1;
      for (const [h, colour] of drawn) {
        const w = map(h);
        if (!w) continue;
        for (const [i, j] of pairs) {
          const v = w[i * n + j];
          if (v < 10) continue;
          const line = document.createElementNS(SVG, 'line');
          line.setAttribute('x1', column);
          line.setAttribute('y1', i * rowHeight + rowHeight / 2);
          line.setAttribute('x2', width - column);
          line.setAttribute('y2', j * rowHeight + rowHeight / 2);
          line.setAttribute('stroke', colour);
          line.setAttribute('stroke-opacity', ((scale * v) / 255).toFixed(3));
          line.setAttribute('stroke-width', 2);
          line.setAttribute('class', 'llm-line');
          line.dataset.head = h;
          svg.append(line);
        }
      }
      lefts.forEach((node, i) =>
        node.classList.toggle('llm-hover', !!hover && hover.side === 'query' && hover.index === i)
      );
      rights.forEach((node, i) =>
        node.classList.toggle('llm-hover', !!hover && hover.side === 'key' && hover.index === i)
      );
      info.textContent = hover
        ? `${hover.side === 'query' ? 'attention from' : 'attention into'} ` +
          `${shortToken(tokens[hover.index])} (${hover.index})`
        : source >= 0
          ? `lines from ${shortToken(tokens[source])} (${source}); hover a token for its lines, click to keep it`
          : 'hover a token for its lines, click to keep it; right column shaded by attention rollout';
      return source;
    }

    const rollout = model.get('rollout'),
      peak = Math.max(...rollout, 1e-9),
      sinks = model.get('sinks');
    const hoverOn = (side, index) => () => {
      hover = { side, index };
      drawLines();
    };
    tokens.forEach((t, i) => {
      const left = el(
        'div',
        {
          class: 'llm-token llm-query' + (i === selected ? ' llm-selected' : ''),
          title: "click: keep this token's lines",
          style: {
            position: 'absolute',
            left: '0',
            width: column - 6 + 'px',
            textAlign: 'right',
            top: i * rowHeight + 'px',
            lineHeight: rowHeight + 'px'
          },
          onclick: () => set({ selected_token: i === selected ? -1 : i }),
          onmouseenter: hoverOn('query', i)
        },
        [shortToken(t)]
      );
      // Key tokens are shaded by attention rollout (the explanation of the prediction).
      const shade = rollout.length === n ? `rgba(255,140,0,${((0.4 * rollout[i]) / peak).toFixed(3)})` : '';
      const right = el(
        'div',
        {
          class: 'llm-token llm-key',
          title:
            rollout.length === n
              ? `rollout into ${model.get('rollout_target')}: ${rollout[i].toFixed(4)}` +
                (sinks.includes(i) ? ' (attention sink, dropped)' : '')
              : '',
          style: {
            position: 'absolute',
            left: width - column + 6 + 'px',
            width: column - 6 + 'px',
            top: i * rowHeight + 'px',
            lineHeight: rowHeight + 'px',
            background: shade
          },
          onmouseenter: hoverOn('key', i)
        },
        [shortToken(t)]
      );
      lefts.push(left);
      rights.push(right);
      inner.append(left, right);
    });
    inner.addEventListener('mouseleave', () => {
      if (hover) {
        hover = null;
        drawLines();
      }
    });
    wrap.append(inner);
    const source = drawLines();
    // Open where the lines are: the source token's row in the middle of the scroll box.
    requestAnimationFrame(() => {
      wrap.scrollTop = Math.max(0, (source >= 0 ? source : 0) * rowHeight - wrap.clientHeight / 2);
    });
    return wrap;
  }

  let paintTile = null; // set while a matrix view is drawn: repaints the exact tile when it arrives
  function matrixView() {
    const tokens = model.get('tokens'),
      { n, side, map, peak } = maps(),
      head = model.get('head'),
      f = pool();
    const w = map(head) || new Uint8Array(side * side);
    const colours = palette(root);
    if (!zoom.span || zoom.span > n) Object.assign(zoom, { r0: 0, c0: 0, span: n });
    const size = Math.min(640, Math.max(320, n * 16)),
      margin = 110;
    const frame = el('div', {
      class: 'llm-matrix-frame',
      style: { position: 'relative', width: margin + size + 4 + 'px', height: margin + size + 4 + 'px' }
    });
    const viewport = el('div', {
      class: 'llm-viewport',
      style: { left: margin + 'px', top: margin + 'px', width: size + 'px', height: size + 'px' }
    });
    // The plane is the whole matrix at the view's size; zooming transforms it, with the overview and the tile.
    const plane = el('div', {
      class: 'llm-plane',
      style: {
        position: 'absolute',
        left: '0',
        top: '0',
        width: size + 'px',
        height: size + 'px',
        transformOrigin: '0 0'
      }
    });
    const canvas = el('canvas', { class: 'llm-matrix', 'data-pool': f });
    paint(canvas, w, side, side, colours);
    Object.assign(canvas.style, { position: 'absolute', left: '0', top: '0', width: '100%', height: '100%' });
    const tileCanvas = el('canvas', { class: 'llm-matrix-tile', style: { position: 'absolute', display: 'none' } });
    let tile = null; // {r0, c0, span, pool, side, data, peaks} of the tile drawn
    paintTile = () => {
      const box = model.get('tile_box');
      tile = null;
      tileCanvas.style.display = 'none';
      tileCanvas.dataset.box = '';
      if (box.length !== 6 || box[0] !== model.get('shown_layer') || box[1] !== model.get('shown_head')) return;
      const [, , r0, c0, span, tilePool] = box,
        tileSide = Math.ceil(span / tilePool);
      tile = {
        r0,
        c0,
        span,
        pool: tilePool,
        side: tileSide,
        data: bytes(model, 'tile'),
        peaks: floats(model, 'tile_peaks')
      };
      paint(tileCanvas, tile.data, tileSide, tileSide, colours);
      Object.assign(tileCanvas.style, {
        display: 'block',
        left: (100 * c0) / n + '%',
        top: (100 * r0) / n + '%',
        width: (100 * span) / n + '%',
        height: (100 * span) / n + '%',
        imageRendering: 'pixelated'
      });
      tileCanvas.dataset.box = [r0, c0, span, tilePool].join(',');
    };
    paintTile();
    plane.append(canvas, tileCanvas);
    const region = el('div', { class: 'llm-region', style: { display: 'none' } });
    viewport.append(plane, region);
    const axes = el('div', { class: 'llm-axes llm-mono' });
    frame.append(axes, viewport);
    // A token's label on the query (row) or key (column) axis: its full text on hover.
    const axisLabel = (axis, i, style) =>
      el(
        'div',
        {
          class: `llm-axis-label ${axis === 'query' ? 'llm-row-label' : 'llm-col-label'}`,
          'data-index': i,
          title: `${axis} ${i}: ${JSON.stringify(tokens[i])}`,
          style: { lineHeight: '14px', ...style }
        },
        [shortToken(tokens[i], 14)]
      );
    const resetButton = el(
      'button',
      {
        class: 'llm-reset-zoom',
        onclick: () => {
          Object.assign(zoom, { r0: 0, c0: 0, span: n });
          place();
        }
      },
      ['reset zoom']
    );

    function place() {
      const k = n / zoom.span,
        cell = size / zoom.span;
      plane.style.transform = `translate(${-zoom.c0 * cell}px, ${-zoom.r0 * cell}px) scale(${k})`;
      canvas.style.imageRendering = cell * f >= 1 ? 'pixelated' : 'auto';
      const step = Math.max(1, Math.ceil(zoom.span / Math.floor(size / 13)));
      const labels = [];
      for (let i = Math.ceil(zoom.r0 / step) * step; i < zoom.r0 + zoom.span && i < n; i += step) {
        const top = margin + (i - zoom.r0 + 0.5) * cell - 7 + 'px';
        labels.push(axisLabel('query', i, { left: '0', width: margin - 6 + 'px', textAlign: 'right', top }));
      }
      for (let j = Math.ceil(zoom.c0 / step) * step; j < zoom.c0 + zoom.span && j < n; j += step) {
        const left = margin + (j - zoom.c0 + 0.5) * cell - 7 + 'px';
        labels.push(
          axisLabel('key', j, {
            top: '0',
            height: margin - 6 + 'px',
            left,
            width: '14px',
            writingMode: 'vertical-rl',
            transform: 'rotate(180deg)',
            textAlign: 'left'
          })
        );
      }
      axes.replaceChildren(...labels);
      resetButton.style.visibility = zoom.span < n ? 'visible' : 'hidden';
      frame.dataset.zoom =
        zoom.span < n ? [Math.round(zoom.r0), Math.round(zoom.c0), Math.round(zoom.span)].join(',') : '';
      if (placed) saveZoom(n);
      placed = true;
    }
    let placed = false;
    const at = e => {
      const r = viewport.getBoundingClientRect();
      return [zoom.r0 + ((e.clientY - r.top) / size) * zoom.span, zoom.c0 + ((e.clientX - r.left) / size) * zoom.span];
    };
    const clamp = () => {
      zoom.span = Math.min(n, Math.max(Math.min(8, n), zoom.span));
      zoom.r0 = Math.min(Math.max(0, zoom.r0), n - zoom.span);
      zoom.c0 = Math.min(Math.max(0, zoom.c0), n - zoom.span);
    };
    viewport.addEventListener(
      'wheel',
      e => {
        e.preventDefault();
        const [r, c] = at(e),
          factor = e.deltaY < 0 ? 0.8 : 1.25,
          old = zoom.span;
        zoom.span = old * factor;
        clamp();
        zoom.r0 = r - (r - zoom.r0) * (zoom.span / old);
        zoom.c0 = c - (c - zoom.c0) * (zoom.span / old);
        clamp();
        place();
      },
      { passive: false }
    );
    let drag = null;
    viewport.addEventListener('mousedown', e => {
      e.preventDefault();
      drag = { start: at(e), x: e.clientX, y: e.clientY, pan: e.shiftKey, zoom: { ...zoom } };
    });
    viewport.addEventListener('mousemove', e => {
      const [r, c] = at(e),
        i = Math.floor(r),
        j = Math.floor(c);
      if (i >= 0 && j >= 0 && i < n && j < n) {
        const inTile =
          tile && tile.pool === 1 && i >= tile.r0 && j >= tile.c0 && i < tile.r0 + tile.span && j < tile.c0 + tile.span;
        if (inTile || f === 1) {
          // an exact cell
          const v = (inTile ? tile.data[(i - tile.r0) * tile.span + j - tile.c0] : w[i * n + j]) / 255;
          const p = inTile ? tile.peaks[i - tile.r0] : peak(head, i);
          info.textContent =
            `query ${shortToken(tokens[i])} (${i}) → key ${shortToken(tokens[j])} (${j}): ${(v * p).toFixed(4)} ` +
            `(${(100 * v).toFixed(0)}% of the row's max ${p.toFixed(3)})`;
        } else {
          // a pixel of the pooled overview: the strongest of its f × f cells
          const bi = Math.floor(i / f),
            bj = Math.floor(j / f),
            v = w[bi * side + bj] / 255;
          info.textContent =
            `queries ${bi * f}..${Math.min(n, bi * f + f) - 1} → keys ${bj * f}..${Math.min(n, bj * f + f) - 1}: ` +
            `up to ${(100 * v).toFixed(0)}% of a row's max ` +
            `(pooled ${f}×${f}; zoom to 512 tokens or fewer for exact cells)`;
        }
      }
      if (!drag) return;
      const cell = size / drag.zoom.span;
      if (drag.pan) {
        zoom.r0 = drag.zoom.r0 - (e.clientY - drag.y) / cell;
        zoom.c0 = drag.zoom.c0 - (e.clientX - drag.x) / cell;
        clamp();
        place();
        return;
      }
      const vr = viewport.getBoundingClientRect();
      Object.assign(region.style, {
        display: 'block',
        left: Math.min(drag.x, e.clientX) - vr.left + 'px',
        top: Math.min(drag.y, e.clientY) - vr.top + 'px',
        width: Math.abs(e.clientX - drag.x) + 'px',
        height: Math.abs(e.clientY - drag.y) + 'px'
      });
    });
    const finish = e => {
      if (!drag) return;
      region.style.display = 'none';
      if (!drag.pan && Math.max(Math.abs(e.clientX - drag.x), Math.abs(e.clientY - drag.y)) > 4) {
        const [r, c] = at(e);
        zoom.r0 = Math.min(drag.start[0], r);
        zoom.c0 = Math.min(drag.start[1], c);
        zoom.span = Math.max(Math.abs(r - drag.start[0]), Math.abs(c - drag.start[1]));
        clamp();
        place();
      }
      drag = null;
    };
    viewport.addEventListener('mouseup', finish);
    viewport.addEventListener('mouseleave', finish);
    viewport.addEventListener('dblclick', () => {
      Object.assign(zoom, { r0: 0, c0: 0, span: n });
      place();
    });
    place();
    info.textContent =
      'rows: queries, columns: keys · wheel or drag a region to zoom, shift-drag to pan, double-click to reset' +
      (f > 1 ? ` · overview pooled ${f}×${f}: zoom to 512 tokens or fewer for exact cells` : '');
    const caption =
      f > 1
        ? `attention as a share of its row's max (√ scale); each overview pixel the max of ${f}×${f} cells`
        : "attention as a share of its row's max (√ scale)";
    return el('div', {}, [
      frame,
      el('div', { style: { display: 'flex', gap: '12px', alignItems: 'center' } }, [
        legend(colours, caption),
        resetButton
      ])
    ]);
  }

  function modelView() {
    const L = model.get('num_layers'),
      H = model.get('num_heads'),
      t = model.get('thumbnail_size'),
      thumbs = bytes(model, 'thumbnails');
    const colours = palette(root);
    const box = el('div', {
      class: 'llm-scroll llm-model-view',
      style: { maxHeight: 'min(560px, 70vh)', maxWidth: '100%', display: 'inline-block' }
    });
    const grid = el('div', {
      class: 'llm-grid',
      style: {
        display: 'grid',
        gridTemplateColumns: `64px repeat(${H}, 44px)`,
        gap: '3px',
        alignItems: 'center',
        padding: '2px'
      }
    });
    grid.append(
      el('div', { class: 'llm-sticky', style: { top: '0', left: '0', zIndex: 2 } }, ['layer ╲ head']),
      ...Array.from({ length: H }, (_, h) =>
        el('div', { class: 'llm-sticky llm-col-title', style: { top: '0', textAlign: 'center' } }, [String(h)])
      )
    );
    for (let l = 0; l < L; l++) {
      grid.append(
        el(
          'div',
          { class: 'llm-sticky llm-row-title', style: { left: '0', textAlign: 'right', paddingRight: '6px' } },
          [`layer ${l}`]
        )
      );
      for (let h = 0; h < H; h++) {
        const canvas = el('canvas', {
          class: 'llm-thumb',
          title: `layer ${l}, head ${h}: click to open`,
          'data-layer': l,
          'data-head': h,
          style: { cursor: 'pointer', border: '1px solid var(--llm-border)', width: '40px', height: '40px' }
        });
        if (thumbs.length) paint(canvas, thumbs.subarray((l * H + h) * t * t, (l * H + h + 1) * t * t), t, t, colours);
        canvas.style.width = '40px';
        canvas.style.height = '40px';
        canvas.addEventListener('click', () => set({ layer: l, head: h, view: 'matrix' }));
        grid.append(canvas);
      }
    }
    box.append(grid);
    info.textContent = 'every layer × head, pooled; click a cell to open it in the matrix view';
    return el('div', {}, [box, legend(colours, "pooled attention, share of the row's max (√ scale)")]);
  }

  function lensView() {
    const lens = model.get('lens'),
      tokens = model.get('tokens'),
      error = model.get('lens_error');
    if (error) return el('div', { class: 'llm-lens-error' }, [error]);
    const { bg, accent } = palette(root);
    // The kernel reads out a window of positions (lens.start on); the buttons ask it for the next one.
    const start = lens.start || 0,
      count = lens.tokens.length ? lens.tokens[0].length : 0,
      stop = start + count;
    const table = el('table', { class: 'llm-lens llm-mono', style: { borderCollapse: 'collapse' } });
    const header = el('tr', {}, [
      el('th', { class: 'llm-sticky', style: { top: '0', left: '0', zIndex: 2 } }, ['after →']),
      ...tokens
        .slice(start, stop)
        .map((t, p) =>
          el('th', { class: 'llm-sticky llm-lens-input', style: { top: '0' }, title: `position ${start + p}` }, [
            shortToken(t, 64)
          ])
        )
    ]);
    table.append(header);
    lens.rows.forEach((name, r) => {
      const row = el('tr', {}, [
        el('th', { class: 'llm-sticky', style: { left: '0', textAlign: 'right' } }, [
          name + (r === lens.rows.length - 1 ? ' (output)' : '')
        ])
      ]);
      for (let p = start; p < stop; p++) {
        const guesses = lens.tokens[r][p - start],
          probs = lens.probs[r][p - start],
          q = probs[0];
        const top5 = guesses.map((g, k) => `${JSON.stringify(g)} ${probs[k].toFixed(3)}`).join('\n');
        row.append(
          el(
            'td',
            {
              class: 'llm-lens-cell',
              'data-row': r,
              'data-position': p,
              title: `${name}, after ${JSON.stringify(tokens[p])}:\n${top5}`,
              style: {
                background: `rgb(${blend(bg, accent, Math.sqrt(q)).join(',')})`,
                color: textOn(blend(bg, accent, Math.sqrt(q)))
              },
              onmouseenter: () => {
                info.textContent =
                  `${name} · after ${shortToken(tokens[p])} (${p}): ` +
                  guesses.map((g, k) => `${shortToken(g)} ${probs[k].toFixed(3)}`).join(', ');
              }
            },
            [shortToken(guesses[0], 64)]
          )
        );
      }
      table.append(row);
    });
    info.textContent =
      "each cell: that layer's likeliest next token after the column's token, read through the final norm and " +
      'unembedding; shade = probability; hover for the top 5';
    const box = el('div', { class: 'llm-scroll', style: { maxHeight: 'min(620px, 75vh)', maxWidth: '100%' } }, [table]);
    const move = to => () => {
      root.classList.add('llm-busy');
      busyNote.textContent = label.textContent = 'computing the logit lens…';
      set({ lens_start: Math.max(0, to) });
    };
    const pager =
      count < tokens.length
        ? el('div', { class: 'llm-lens-pager' }, [
            el(
              'button',
              { class: 'llm-lens-earlier', onclick: move(start - count), ...(start > 0 ? {} : { disabled: '' }) },
              ['← earlier']
            ),
            ' ',
            el('span', {}, [
              `positions ${start}..${stop - 1} of ${tokens.length} ` +
                '(read out as you move; Session.lens(text) has them all)'
            ]),
            ' ',
            el(
              'button',
              { class: 'llm-lens-later', onclick: move(stop), ...(stop < tokens.length ? {} : { disabled: '' }) },
              ['later →']
            )
          ])
        : '';
    return el('div', {}, [
      lens.target ? targetChart(lens.target, lens.rows) : '',
      pager,
      box,
      legend({ bg, accent }, 'probability of the top guess (√ scale)')
    ]);
  }

  // Target mode: the followed token's probability (linear) and rank (log scale, 1 at the top) per row.
  function targetChart(target, rows) {
    const w = 560,
      h = 120,
      left = 48,
      right = 12,
      top = 14,
      bottom = 18,
      R = rows.length;
    const x = r => left + (r / Math.max(1, R - 1)) * (w - left - right);
    const maxRank = Math.max(...target.ranks, 10),
      logMax = Math.log10(maxRank);
    const panel = (cls, values, y, ticks, caption) => {
      const svg = document.createElementNS(SVG, 'svg');
      svg.setAttribute('width', w);
      svg.setAttribute('height', h);
      svg.setAttribute('class', cls);
      svg.style.color = 'var(--llm-fg)';
      const text = (tx, ty, s, anchor = 'end') => {
        const t = document.createElementNS(SVG, 'text');
        t.setAttribute('x', tx);
        t.setAttribute('y', ty);
        t.setAttribute('fill', 'currentColor');
        t.setAttribute('font-size', '10');
        t.setAttribute('text-anchor', anchor);
        t.textContent = s;
        svg.append(t);
      };
      for (const [v, s] of ticks) text(left - 4, y(v) + 3, s);
      text(left, h - 4, 'embeddings', 'start');
      text(w - right, h - 4, `layer ${R - 2}`);
      text(left + 4, 10, caption, 'start');
      const line = document.createElementNS(SVG, 'polyline');
      line.setAttribute('points', values.map((v, r) => `${x(r).toFixed(1)},${y(v).toFixed(1)}`).join(' '));
      line.setAttribute('fill', 'none');
      line.setAttribute('stroke', 'var(--llm-accent)');
      line.setAttribute('stroke-width', 2);
      svg.append(line);
      values.forEach((v, r) => {
        const c = document.createElementNS(SVG, 'circle');
        c.setAttribute('cx', x(r));
        c.setAttribute('cy', y(v));
        c.setAttribute('r', 2.5);
        c.setAttribute('fill', 'var(--llm-accent)');
        c.setAttribute('class', 'llm-target-point');
        c.dataset.row = r;
        c.dataset.value = v;
        const title = document.createElementNS(SVG, 'title');
        title.textContent = `${rows[r]}: ${cls.includes('rank') ? 'rank ' + v : 'p = ' + v.toFixed(4)}`;
        c.append(title);
        svg.append(c);
      });
      return svg;
    };
    const yp = v => top + (1 - v) * (h - top - bottom);
    const yr = v => top + (Math.log10(v) / logMax) * (h - top - bottom);
    const name =
      shortToken(target.token, 64) +
      (target.pieces > 1 ? ` (first of the ${target.pieces} tokens of ${JSON.stringify(target.text)})` : '');
    return el('div', { class: 'llm-lens-target' }, [
      el('div', { class: 'llm-label' }, [
        `target ${name}: next-token probability and rank after the last position, layer by layer`
      ]),
      panel(
        'llm-target-prob',
        target.probs,
        yp,
        [
          [0, '0'],
          [1, '1']
        ],
        'probability'
      ),
      panel(
        'llm-target-rank',
        target.ranks,
        yr,
        [
          [1, '1'],
          [maxRank, String(maxRank)]
        ],
        'rank (log scale)'
      )
    ]);
  }

  function redrawBody() {
    const view = model.get('view');
    paintTile = null;
    body.replaceChildren(
      view === 'model' ? modelView() : view === 'matrix' ? matrixView() : view === 'lens' ? lensView() : headView()
    );
  }

  function draw() {
    fillSelects();
    const view = model.get('view'),
      layer = model.get('layer'),
      head = model.get('head');
    const needsLayer = view === 'head' || view === 'matrix';
    const busy =
      (needsLayer && !ready()) ||
      (view === 'lens' && !model.get('lens_error') && !(model.get('lens').rows || []).length);
    root.classList.toggle('llm-busy', busy);
    layerControl.style.display = headControl.style.display = needsLayer ? '' : 'none';
    chips.style.display = view === 'head' ? '' : 'none';
    const n = model.get('tokens').length;
    if (busy) {
      // The label names what is being computed; nothing of the previous layer stays in sight.
      label.textContent =
        view === 'lens' ? 'computing the logit lens…' : `computing layer ${layer} · ${headName(head)}…`;
      label.dataset.layer = '';
      busyNote.textContent = label.textContent;
      return;
    }
    if (view === 'head') headChips();
    hover = null;
    redrawBody();
    // Label and drawing come from the same data: shown_layer / shown_head.
    const shownLayer = model.get('shown_layer'),
      shownHead = model.get('shown_head');
    body.dataset.layer = needsLayer ? shownLayer : '';
    body.dataset.head = needsLayer ? shownHead : '';
    label.dataset.layer = needsLayer ? shownLayer : '';
    label.textContent = needsLayer
      ? `layer ${shownLayer} · ${headName(shownHead)} · ${n} tokens`
      : view === 'lens'
        ? `logit lens · ${n} tokens`
        : `model view · ${model.get('num_layers')} layers × ${model.get('num_heads')} heads`;
  }

  let pending = false;
  const schedule = () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        draw();
      });
    }
  };
  model.on('change:tile_box', () => {
    if (paintTile) paintTile();
  });
  for (const name of [
    'weights',
    'shown_layer',
    'shown_head',
    'layer',
    'head',
    'view',
    'selected_token',
    'thumbnails',
    'rollout',
    'tokens',
    'lens',
    'lens_error',
    'head_set'
  ]) {
    // A new selection is drawn at once (busy until its data arrives); the data itself on the next frame.
    model.on('change:' + name, name === 'layer' || name === 'head' || name === 'view' ? draw : schedule);
  }
  // Canvases take their colours from the theme: repaint when JupyterLab switches it, and once the output is
  // in the page (the first draw may come before).
  const stop = onTheme(root, schedule);
  draw();
  return stop;
}
export default { render };
