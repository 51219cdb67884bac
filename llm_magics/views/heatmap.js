// A heatmap for "why" views (activation patching: layers x positions or heads; attribution: output x input
// tokens). Same family as attention.js: plain DOM, no CDN, the shared theme (theme.css: JupyterLab's CSS
// variables) so light and dark themes both read well; its own styles are in heatmap.css.
// Blue for positive, orange for negative values (a colour-blind-safe pair).
// Hover names the cell and its value; a click sets `selected`, and the kernel answers with `detail`
// (a patched run's top-5 next tokens, an output token's step scores) for that cell.
import { el, shortToken, themed } from './dom.js';

const POSITIVE = [25, 118, 210],
  NEGATIVE = [230, 97, 0];

function colour(value, peak) {
  if (value === null || value === undefined || Number.isNaN(value)) return 'transparent';
  const share = Math.min(1, Math.abs(value) / (peak || 1));
  const [r, g, b] = value >= 0 ? POSITIVE : NEGATIVE;
  return `rgba(${r},${g},${b},${(0.08 + 0.92 * Math.sqrt(share)).toFixed(3)})`;
}

// The values as drawn: each row scaled to its largest |value| when `normalize` is on.
function shownValues(model) {
  const values = model.get('values');
  if (!model.get('normalize')) return values;
  return values.map(row => {
    const peak = Math.max(0, ...row.filter(v => v !== null).map(Math.abs));
    return row.map(v => (v === null || !peak ? v : v / peak));
  });
}

function render({ model, el: root }) {
  const container = themed(el('div'), 'llm-heatmap');
  const label = el('span', { class: 'llm-label' });
  const normalize = el('input', { type: 'checkbox', class: 'llm-normalize' });
  const normalizeLabel = el('label', {}, [normalize, ' normalise each row']);
  normalize.addEventListener('change', () => {
    model.set('normalize', normalize.checked);
    model.save_changes();
  });
  const toolbar = el('div', { class: 'llm-toolbar' }, [label, normalizeLabel]);
  const warning = el('div', { class: 'llm-warning' });
  const grid = el('div', { class: 'llm-grid' });
  // the colour scale's key: which colour is positive, which negative, and what the numbers are
  const swatch = rgb => el('span', { class: 'llm-swatch', style: { background: `rgb(${rgb.join(',')})` } });
  const units = el('span', { class: 'llm-legend-units' });
  const legend = el('div', { class: 'llm-legend' }, [
    swatch(POSITIVE),
    el('span', { class: 'llm-legend-positive' }, ['blue: positive']),
    ' ',
    swatch(NEGATIVE),
    el('span', { class: 'llm-legend-negative' }, ['orange: negative']),
    units
  ]);
  const info = el('div', { class: 'llm-info' });
  const detail = el('div', { class: 'llm-detail' });
  container.append(toolbar, warning, grid, legend, info, detail);
  root.append(container);

  function drawDetail() {
    const rows = model.get('detail') || [];
    detail.replaceChildren();
    if (!rows.length) return;
    detail.append(el('div', { class: 'llm-label' }, [model.get('detail_title')]));
    const table = el('table', { class: 'llm-detail-table' });
    for (const [token, prob] of rows) {
      table.append(
        el('tr', {}, [
          el('td', {}, [shortToken(token, 18)]),
          el('td', {}, [prob.toFixed(4)]),
          el('td', {}, [el('span', { class: 'llm-bar', style: { width: `${Math.round(120 * prob)}px` } })])
        ])
      );
    }
    detail.append(table);
  }

  function draw() {
    const rows = model.get('rows'),
      columns = model.get('columns'),
      notes = model.get('row_notes') || [];
    const values = shownValues(model),
      raw = model.get('values');
    const peak = model.get('normalize')
      ? 1
      : Math.max(
          1e-12,
          ...raw
            .flat()
            .filter(v => v !== null)
            .map(Math.abs)
        );
    const [selRow, selCol] = model.get('selected').length ? model.get('selected') : [-1, -1];
    label.textContent = model.get('title');
    warning.textContent = model.get('warning') ? `⚠ ${model.get('warning')}` : '';
    warning.style.display = model.get('warning') ? '' : 'none';
    const scale = model.get('normalize')
      ? 'each row scaled to its largest |value|'
      : `largest |value| ${peak.toPrecision(4)}`;
    units.textContent = ` · ${model.get('units') ? model.get('units') + '; ' : ''}${scale}`;
    normalizeLabel.style.display = model.get('normalizable') ? '' : 'none';
    normalize.checked = model.get('normalize');
    grid.style.gridTemplateColumns = `auto repeat(${columns.length}, minmax(18px, 1fr))`;
    grid.replaceChildren(el('div'));
    for (const name of columns) grid.append(el('div', { class: 'llm-col', title: name }, [shortToken(name, 24)]));
    rows.forEach((name, r) => {
      const note = notes[r] ? ` ${notes[r]}` : '';
      grid.append(el('div', { class: 'llm-row', title: name + note }, [shortToken(name, 24) + note]));
      columns.forEach((column, c) => {
        const v = values[r][c];
        const cell = el('div', {
          class: 'llm-cell' + (v === null ? ' llm-empty' : '') + (r === selRow && c === selCol ? ' llm-selected' : ''),
          'data-row': r,
          'data-col': c,
          style: { background: colour(v, peak) }
        });
        if (v !== null) {
          const text =
            `${name} · ${column}: ${raw[r][c].toFixed(4)}` +
            (model.get('normalize') ? ` (row-normalised ${v.toFixed(3)})` : '');
          cell.title = text;
          cell.addEventListener('mouseenter', () => {
            info.textContent = text;
          });
          cell.addEventListener('click', () => {
            model.set('selected', [r, c]);
            model.save_changes();
          });
        }
        grid.append(cell);
      });
    });
    if (!info.textContent) info.textContent = model.get('hint');
  }

  for (const name of ['values', 'rows', 'columns', 'normalize', 'selected', 'title', 'warning', 'units'])
    model.on('change:' + name, draw);
  model.on('change:detail', drawDetail);
  draw();
  drawDetail();
}
export default { render };
