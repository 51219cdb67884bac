// The status bar item and the runs side panel. Both render an ISnapshot sent by the kernel.
import { Widget } from '@lumino/widgets';
import { curvePaths, formatParameters, runSummary, shortModelName, statusText } from './magic';
import { Curve, IRunCurves, ISnapshot } from './protocol';

export class StatusItem extends Widget {
  constructor(onClick: () => void) {
    super();
    this.addClass('llm-status-item');
    this.node.title = 'llm-magics: the model in this kernel (click for runs)';
    this.node.addEventListener('click', onClick);
    this.render(null);
  }

  render(snapshot: ISnapshot | null): void {
    const text = statusText(snapshot);
    this.node.textContent = text;
    this.node.style.display = text ? '' : 'none';
    this.node.classList.toggle('llm-training', !!snapshot?.active);
  }
}

const SVG = 'http://www.w3.org/2000/svg';

/** A small inline chart (no plotly, no CDN): the curves on shared scales, with the loss range as text. */
export function chart(curves: [Curve, string][], width = 260, height = 90): HTMLElement {
  const box = element('div', 'llm-chart');
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  const paths = curvePaths(
    curves.map(c => c[0]),
    width,
    height
  );
  curves.forEach(([, className], i) => {
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', paths[i]);
    path.setAttribute('class', className);
    svg.append(path);
  });
  box.append(svg);
  const values = curves.flatMap(c => c[0].map(p => p[1]));
  if (values.length) {
    box.append(
      element('div', 'llm-chart-range', `${Math.min(...values).toFixed(3)} – ${Math.max(...values).toFixed(3)}`)
    );
  }
  return box;
}

function element(tag: string, className: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class RunsPanel extends Widget {
  private curves = new Map<string, IRunCurves>(); // the runs clicked open, by id
  private snapshot: ISnapshot | null = null;

  constructor(
    private onStop: () => void,
    private onPlot: (runId: string) => void
  ) {
    super();
    this.id = 'llm-magics-panel';
    this.addClass('llm-panel');
    this.title.label = 'LLM';
    this.title.caption = 'llm-magics: model and runs';
    this.render(null);
  }

  /** A run's curves came (the answer to a click): draw them under the run. */
  showCurves(curves: IRunCurves): void {
    this.curves.set(curves.id, curves);
    this.render(this.snapshot);
  }

  render(snapshot: ISnapshot | null): void {
    this.snapshot = snapshot;
    const node = this.node;
    node.replaceChildren();
    if (!snapshot || !snapshot.status.model) {
      node.append(
        element('p', 'llm-empty', 'No model loaded in this kernel. Run %load_ext llm_magics and %llm load default.')
      );
    } else {
      this.renderModel(snapshot);
    }
    if (snapshot && snapshot.runs.length) {
      this.renderRuns(snapshot);
    }
  }

  private renderModel(snapshot: ISnapshot): void {
    const node = this.node;
    const s = snapshot.status;
    const card = element('div', 'llm-card');
    card.append(element('h3', 'llm-card-title', shortModelName(s.model!)));
    const rows: [string, string][] = [
      ['kind', s.kind || '?'],
      ['parameters', `${formatParameters(s.parameters)} (${formatParameters(s.trainable_parameters)} trainable)`],
      ['dtype', s.dtype || '?'],
      ['quantization', (s.quantization || 'none').split(' (')[0]],
      ['device', s.device || '?'],
      ['context', s.context_length ? `${s.context_length} tokens` : '?']
    ];
    const table = element('table', 'llm-card-table');
    for (const [key, value] of rows) {
      const tr = element('tr', '');
      tr.append(element('th', '', key), element('td', '', value));
      table.append(tr);
    }
    card.append(table);
    node.append(card);

    if (snapshot.active) {
      const a = snapshot.active;
      const active = element('div', 'llm-active');
      active.append(element('span', '', `${a.kind}: step ${a.step}/${a.total_steps}, loss ${a.loss.toFixed(4)} `));
      const stop = element('button', 'jp-mod-styled jp-mod-warn llm-stop', 'Stop') as HTMLButtonElement;
      stop.title = 'Stop after the current step (keeps the model and the last checkpoint)';
      stop.addEventListener('click', () => {
        stop.disabled = true; // one interrupt: a second one would stop mid-step
        this.onStop();
      });
      active.append(stop);
      if (a.loss_curve && a.loss_curve.length > 1) {
        active.append(chart([[a.loss_curve, 'llm-chart-loss']]));
      }
      node.append(active);
    }
  }

  private renderRuns(snapshot: ISnapshot): void {
    const node = this.node;
    node.append(element('h3', 'llm-runs-title', `Runs (${snapshot.runs.length})`));
    const list = element('ul', 'llm-runs');
    for (const run of [...snapshot.runs].reverse()) {
      const item = element('li', 'llm-run');
      const loss = runSummary(run);
      const metrics = Object.entries(run.metrics || {})
        .map(([k, v]) => `${k} ${Number(v).toFixed(3)}`)
        .join(', ');
      item.append(
        element(
          'div',
          'llm-run-head',
          `#${run.index + 1} ${run.kind}: ${run.steps}/${run.total_steps} steps${run.interrupted ? ' (stopped)' : ''}`
        )
      );
      if (run.status) {
        item.append(element('div', 'llm-run-status', run.status));
      }
      item.append(element('div', 'llm-run-loss', loss + (metrics ? ` · ${metrics}` : '')));
      if (run.checkpoint) {
        item.append(element('div', 'llm-run-checkpoint', `checkpoint: ${run.checkpoint}`));
      }
      const id = run.id;
      if (id) {
        item.title = `${id}: click to plot its loss`;
        item.classList.add('llm-run-plottable');
        item.addEventListener('click', () => this.onPlot(id));
        const curves = this.curves.get(id);
        if (curves?.error) {
          item.append(element('div', 'llm-run-error', curves.error));
        } else if (curves) {
          item.append(
            chart([
              [curves.loss || [], 'llm-chart-loss'],
              [curves.eval_loss || [], 'llm-chart-eval']
            ])
          );
        }
      }
      list.append(item);
    }
    node.append(list);
  }
}
