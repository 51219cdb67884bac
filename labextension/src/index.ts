import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import type { CodeCell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LlmCompletionProvider } from './completion';
import { addWidgetFallback } from './fallback';
import { llmHighlighter } from './highlight';
import { ourMessage, statusText } from './magic';
import { applyChange, IOutput, outputChange } from './mirror';
import { COMMAND_IDS, registerCommands } from './palette';
import { COMM_TARGET, IActiveRun, IDrawnReport, IHistoryRequest, ISnapshot, ISnapshotRequest } from './protocol';
import { shellStatus } from './shellstatus';
import { chart, RunsPanel, StatusItem } from './views';

// The kernel type as the notebook package sees it (one copy of @jupyterlab/services, whatever npm installed).
type KernelConnection = NonNullable<NonNullable<NotebookPanel['sessionContext']['session']>['kernel']>;
type Comm = ReturnType<KernelConnection['createComm']>;

/** This page's own comm to a kernel's llm-magics, to ask for a snapshot (at once) and for a run's curves.
 * Opened over a kernel subshell where the kernel has them (ipykernel 7), so it is answered even while a
 * cell trains; the answers come back on iopub like the kernel's pushes. */
async function openRequestComm(kernel: KernelConnection): Promise<Comm> {
  const comm = kernel.createComm(COMM_TARGET);
  await kernel.info;
  const started = (comm as unknown as { subshellStarted?: Promise<void> }).subshellStarted;
  if (kernel.supportsSubshells && started) {
    await started;
  }
  comm.open({ type: 'request', request_id: comm.commId } satisfies ISnapshotRequest);
  return comm;
}

/** A plotly FigureWidget element, as plotly's widget hands it over after its first render. */
type LivePlot = HTMLElement & {
  layout?: { meta?: unknown; datarevision?: unknown };
  on?: (name: string, handler: () => void) => void;
};

/** Call `handle` with each of our live training charts (layout.meta) as the plotly widget first draws it. */
function onOurLiveCharts(handle: (element: LivePlot) => void): void {
  document.addEventListener('plotlywidget-after-render', event => {
    const element = (event as CustomEvent<{ element?: LivePlot }>).detail?.element;
    if (element?.layout?.meta === 'llm-magics') {
      handle(element);
    }
  });
}

/** plotly's FigureWidget sizes itself before JupyterLab has laid the output out (it falls back to 700 px)
 * and autosizes again only on a window resize: give it one whenever its output's width changes (once it
 * is laid out, and later), so our live chart fills the output's width. One observer per output. */
function resizeOurLiveCharts(): void {
  const observed = new WeakSet<Element>();
  onOurLiveCharts(element => {
    const output = element.closest('.jp-OutputArea-output') ?? element.parentElement;
    if (!output || observed.has(output)) {
      return;
    }
    observed.add(output);
    let width = -1;
    new ResizeObserver(entries => {
      const now = Math.round(entries[entries.length - 1].contentRect.width);
      if (now > 0 && now !== width) {
        width = now;
        requestAnimationFrame(() => window.dispatchEvent(new Event('resize')));
      }
    }).observe(output);
  });
}

/** Tag the plotly charts of llm-magics (layout.meta) so our CSS draws their text in the theme's colours:
 * the kernel cannot know the page's theme, the page can. */
function markOurPlots(root: HTMLElement): void {
  const mark = (node: Node) => {
    const plot =
      node instanceof Element
        ? (node.closest('.js-plotly-plot') as (HTMLElement & { layout?: { meta?: unknown } }) | null)
        : null;
    if (plot && !plot.classList.contains('llm-plot') && plot.layout?.meta === 'llm-magics') {
      plot.classList.add('llm-plot');
    }
  };
  new MutationObserver(records => {
    for (const record of records) {
      record.addedNodes.forEach(mark);
    }
  }).observe(root, { childList: true, subtree: true });
}

/** A training cell this page did not start (it was reloaded, or it is a second tab): JupyterLab sends the
 * cell's outputs only to the page that ran it, so draw the kernel's progress in the cell here instead, with
 * a Stop (the click handler below interrupts the kernel). Returns the cell it follows, if any. */
function followRun(notebook: NotebookPanel, active: IActiveRun | null): CodeCell | null {
  const live = Array.from(notebook.node.querySelectorAll('.llm-cell-live'));
  if (!active?.cell_id) {
    for (const node of live) {
      node.querySelector('.llm-cell-live-text')!.textContent = 'Training ended: the runs panel has the run.';
      node.querySelector('.llm-stop-training')?.remove();
    }
    return null;
  }
  const cell = notebook.content.widgets.find(c => c.model.id === active.cell_id);
  const model = cell?.model as { executionState?: string } | undefined;
  if (!cell || cell.model.type !== 'code' || model?.executionState === 'running') {
    return null; // not in this notebook, or this page runs it and has its live chart
  }
  let node = cell.node.querySelector('.llm-cell-live') as HTMLElement | null;
  if (!node) {
    node = document.createElement('div');
    node.className = 'llm-cell-live';
    const text = document.createElement('div');
    text.className = 'llm-cell-live-text';
    const stop = document.createElement('button');
    stop.className = 'jp-mod-styled jp-mod-warn llm-stop-training';
    stop.textContent = 'Stop';
    stop.title = 'Stop after the current step (the model and checkpoint are kept)';
    const chartBox = document.createElement('div');
    chartBox.className = 'llm-cell-live-chart';
    node.append(text, stop, chartBox);
    cell.node.append(node);
  }
  node.querySelector('.llm-cell-live-text')!.textContent =
    `${active.kind}: step ${active.step}/${active.total_steps}, loss ${active.loss.toFixed(4)} (live from the kernel)`;
  node
    .querySelector('.llm-cell-live-chart')!
    .replaceChildren(chart([[active.loss_curve || [], 'llm-chart-loss']], 480, 120));
  return cell as CodeCell;
}

/** An output the kernel sent for a cell this page follows: into the cell's model (so it is saved); the
 * final chart takes the place of the live widget and of the progress drawn by followRun. */
function mirrorOutput(cell: CodeCell, msg: Parameters<typeof outputChange>[0]): void {
  const change = outputChange(msg);
  if (!change) {
    return;
  }
  const outputs = cell.model.outputs;
  const next = applyChange(outputs.toJSON() as IOutput[], change);
  outputs.clear();
  outputs.fromJSON(next as Parameters<typeof outputs.fromJSON>[0]);
  if ('replacesLive' in change && change.replacesLive) {
    cell.node.querySelector('.llm-cell-live')?.remove();
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'llm-magics:plugin',
  description: '%%llm cells, model status and runs for llm-magics',
  autoStart: true,
  requires: [INotebookTracker, IEditorExtensionRegistry],
  optional: [IStatusBar, ICompletionProviderManager, ILabShell, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    editorExtensions: IEditorExtensionRegistry,
    statusBar: IStatusBar | null,
    completions: ICompletionProviderManager | null,
    _labShell: ILabShell | null,
    palette: ICommandPalette | null
  ) => {
    editorExtensions.addExtension({
      name: 'llm-magics:highlight',
      factory: () => EditorExtensionRegistry.createImmutableExtension(llmHighlighter)
    });
    completions?.registerProvider(new LlmCompletionProvider());
    resizeOurLiveCharts();

    // The latest snapshot per kernel; the views show the current notebook's.
    const snapshots = new Map<string, ISnapshot>();
    const registered = new WeakSet<KernelConnection>();
    const currentKernel = () => tracker.currentWidget?.sessionContext.session?.kernel ?? null;

    // This page's request comm per kernel (see openRequestComm).
    const requests = new Map<string, Promise<Comm>>();
    const ask = (kernel: KernelConnection) => {
      if (!requests.has(kernel.id)) {
        const comm = openRequestComm(kernel);
        requests.set(kernel.id, comm);
        const forget = () => {
          requests.delete(kernel.id);
        };
        comm.then(c => {
          c.onClose = forget;
        }, forget);
      }
    };

    // An interrupt, not a comm message: the training loop turns it into a graceful stop after the current
    // step, whatever the kernel (a comm message may wait behind the running cell).
    // One interrupt per run: a second one would stop mid-step.
    const stopping = new Set<string>(); // kernels interrupted whose run has not ended yet
    const stop = () => {
      const kernel = currentKernel();
      if (kernel) {
        stopping.add(kernel.id);
        void kernel.interrupt();
      }
    };
    const currentSnapshot = () => {
      const kernel = currentKernel();
      return kernel ? (snapshots.get(kernel.id) ?? null) : null;
    };
    const panel = new RunsPanel(stop, runId => {
      const kernel = currentKernel();
      const comm = kernel ? requests.get(kernel.id) : undefined;
      void comm?.then(c => c.send({ type: 'history', id: runId, request_id: c.commId } satisfies IHistoryRequest));
    });
    const openPanel = () => {
      if (!panel.isAttached) {
        app.shell.add(panel, 'right', { rank: 700 });
      }
      app.shell.activateById(panel.id);
    };
    const item = new StatusItem(openPanel);
    registerCommands(app.commands, palette, {
      training: () => !!currentSnapshot()?.active && !stopping.has(currentKernel()!.id),
      stop,
      openPanel,
      showStatus: () => {
        Notification.info(statusText(currentSnapshot()) || 'llm-magics: no model loaded in this kernel', {
          autoClose: 5000
        });
      }
    });
    const refresh = () => {
      const snapshot = currentSnapshot();
      item.render(snapshot);
      app.commands.notifyCommandChanged(COMMAND_IDS.stop);
      panel.render(snapshot);
    };

    const watch = (kernel: KernelConnection | null | undefined) => {
      if (!kernel || registered.has(kernel)) {
        return;
      }
      registered.add(kernel);
      // A subshell's busy/idle is not the kernel's (see shellstatus.ts): put back the main shell's state,
      // through a private setter as there is no public one (skipped if a JupyterLab lacks it).
      let mainShell = kernel.status;
      const keepMainShellStatus = (msg: Parameters<typeof shellStatus>[0]) => {
        const status = shellStatus(msg);
        if (!status) {
          return;
        }
        const setter = (kernel as unknown as { _updateStatus?: (s: string) => void })._updateStatus;
        if (status.mainShell) {
          mainShell = status.state as typeof mainShell;
        } else if (kernel.status !== mainShell && typeof setter === 'function') {
          setter.call(kernel, mainShell);
        }
      };
      // The kernel's push comm: accepted (a refused comm is closed and logged), read below like all ours.
      kernel.registerCommTarget(COMM_TARGET, () => undefined);
      // The cells this page follows (see followRun), by the id of the request that runs them.
      const followed = new Map<string, CodeCell>();
      // Every message of ours on iopub, whichever comm and page it is for: a reloaded page or a second tab
      // gets the pushes of a cell another page started (and the outputs of the cells it follows).
      kernel.iopubMessage.connect((_, msg) => {
        keepMainShellStatus(msg);
        const parentId = (msg.parent_header as { msg_id?: string } | undefined)?.msg_id ?? '';
        const message = ourMessage(msg);
        if (!message && followed.has(parentId)) {
          if (
            msg.header.msg_type === 'status' &&
            (msg.content as { execution_state?: string }).execution_state === 'idle'
          ) {
            followed.delete(parentId); // the cell is done
          } else {
            mirrorOutput(followed.get(parentId)!, msg);
          }
        }
        if (message?.type === 'status') {
          snapshots.set(kernel.id, message);
          if (!message.active) {
            stopping.delete(kernel.id);
          }
          refresh();
          tracker.forEach(notebook => {
            if (notebook.sessionContext.session?.kernel === kernel) {
              const cell = followRun(notebook, message.active);
              if (cell && parentId) {
                followed.set(parentId, cell); // a push from the running cell: its request's id
              }
            }
          });
          ask(kernel); // llm-magics runs in this kernel: ask for the run history at once
        } else if (message?.type === 'history' && currentKernel() === kernel) {
          panel.showCurves(message);
        }
      });
      kernel.statusChanged.connect((_, status) => {
        if (status === 'restarting' || status === 'autorestarting') {
          snapshots.delete(kernel.id);
          requests.delete(kernel.id);
          stopping.delete(kernel.id);
          refresh();
        }
      });
      // A page that connects to a kernel where llm-magics already runs (a reload, a second tab): its push
      // comm is there (it opens at %load_ext), so ask for a snapshot instead of waiting for the next cell.
      void kernel
        .requestCommInfo({ target_name: COMM_TARGET })
        .then(reply => {
          if (reply.content.status === 'ok' && Object.keys(reply.content.comms).length) {
            ask(kernel);
          }
        })
        .catch(() => undefined);
    };

    tracker.widgetAdded.connect((_, notebook: NotebookPanel) => {
      addWidgetFallback(notebook.content.rendermime);
      markOurPlots(notebook.node);
      watch(notebook.sessionContext.session?.kernel);
      notebook.sessionContext.kernelChanged.connect((_, change) => {
        watch(change.newValue);
        refresh();
      });
    });
    tracker.currentChanged.connect(refresh);

    // The live training chart's Stop button: its click would queue behind the running cell, so interrupt
    // the kernel of the notebook it sits in; the training loop turns that into a stop after the step.
    document.addEventListener(
      'click',
      event => {
        const button = (event.target as HTMLElement | null)?.closest?.(
          '.llm-stop-training'
        ) as HTMLButtonElement | null;
        if (!button || button.disabled) {
          return;
        }
        const notebook = tracker.find(panel => panel.node.contains(button));
        const kernel = notebook?.sessionContext.session?.kernel;
        if (kernel) {
          button.disabled = true; // one interrupt: a second one would stop mid-step
          stopping.add(kernel.id); // (the Stop command too)
          void kernel.interrupt();
        }
      },
      true
    );

    // Each redraw of our live training chart this page has drawn, reported to its kernel (on the request
    // comm, answered beside the training cell): the kernel sends the next one only then (base/live.py), so
    // a page short of CPU is never buried under a growing queue of chart updates.
    onOurLiveCharts(element => {
      if (typeof element.on !== 'function') {
        return;
      }
      let reported = '';
      element.on('plotly_afterplot', () => {
        const revision = element.layout?.datarevision;
        const kernel = tracker.find(panel => panel.node.contains(element))?.sessionContext.session?.kernel;
        if (typeof revision !== 'string' || revision === reported || !kernel) {
          return;
        }
        reported = revision;
        const [chart, redraw] = revision.split(':');
        ask(kernel);
        void requests
          .get(kernel.id)
          ?.then(c => c.send({ type: 'drawn', chart, redraw: Number(redraw) } satisfies IDrawnReport));
      });
    });

    if (statusBar) {
      statusBar.registerStatusItem('llm-magics:status', { item, align: 'left', rank: 50 });
    }
    app.shell.add(panel, 'right', { rank: 700 });
    refresh();
  }
};

export default plugin;
