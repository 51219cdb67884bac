// The status bar item and the runs side panel. Both render an ISnapshot sent by the kernel.
import { Widget } from '@lumino/widgets';
import { formatParameters, ISnapshot, shortModelName, statusText } from './magic';

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

function element(tag: string, className: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class RunsPanel extends Widget {
  constructor(private onStop: () => void) {
    super();
    this.id = 'llm-magics-panel';
    this.addClass('llm-panel');
    this.title.label = 'LLM';
    this.title.caption = 'llm-magics: model and runs';
    this.render(null);
  }

  render(snapshot: ISnapshot | null): void {
    const node = this.node;
    node.replaceChildren();
    if (!snapshot || !snapshot.status.model) {
      node.append(
        element('p', 'llm-empty', 'No model loaded in this kernel. Run %load_ext llm_magics and %llm load default.')
      );
      return;
    }
    const s = snapshot.status;
    const card = element('div', 'llm-card');
    card.append(element('h3', 'llm-card-title', shortModelName(s.model!)));
    const rows: [string, string][] = [
      ['kind', s.kind || '?'],
      ['parameters', `${formatParameters(s.parameters)} (${formatParameters(s.trainable_parameters)} trainable)`],
      ['dtype', s.dtype || '?'],
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
      stop.addEventListener('click', () => this.onStop());
      active.append(stop);
      node.append(active);
    }

    node.append(element('h3', 'llm-runs-title', `Runs (${snapshot.runs.length})`));
    const list = element('ul', 'llm-runs');
    for (const run of [...snapshot.runs].reverse()) {
      const item = element('li', 'llm-run');
      const loss =
        run.final_loss !== null ? `loss ${run.initial_loss?.toFixed(3)} → ${run.final_loss.toFixed(3)}` : 'no steps';
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
      item.append(element('div', 'llm-run-loss', loss + (metrics ? ` · ${metrics}` : '')));
      if (run.checkpoint) {
        item.append(element('div', 'llm-run-checkpoint', `checkpoint: ${run.checkpoint}`));
      }
      list.append(item);
    }
    node.append(list);
  }
}
