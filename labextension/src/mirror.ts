// A training cell this page follows but did not run (the page was reloaded, or it is a second tab):
// JupyterLab routes a cell's outputs only to the page that ran it, so this page copies the kernel's later
// outputs for that cell into it, as the running page would. Then the final chart and the run's summary
// are in this page's notebook, and so in the notebook it saves.

/** An nbformat output, as the cell's output model takes and gives them (toJSON, fromJSON). */
export type IOutput = { output_type: string; data?: unknown; [key: string]: unknown };
type Bundle = Record<string, unknown>;
type IopubMessage = { header: { msg_type: string }; content: unknown };

const WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json';

/** What an iopub message does to the outputs of the cell it is about: add an output, replace the live
 * widget by it (the kernel's update of the chart's display when training ends), or clear them. */
export type OutputChange = { add: IOutput; replacesLive: boolean } | { clear: true } | null;

export function outputChange(msg: IopubMessage): OutputChange {
  const c = (msg.content ?? {}) as Record<string, unknown>;
  const data = (c.data ?? {}) as Bundle;
  const metadata = (c.metadata ?? {}) as Bundle;
  switch (msg.header.msg_type) {
    case 'stream':
      return { add: { output_type: 'stream', name: c.name as string, text: c.text as string }, replacesLive: false };
    case 'display_data':
      return { add: { output_type: 'display_data', data, metadata } as IOutput, replacesLive: false };
    case 'update_display_data':
      return { add: { output_type: 'display_data', data, metadata } as IOutput, replacesLive: true };
    case 'execute_result':
      return {
        add: { output_type: 'execute_result', execution_count: c.execution_count, data, metadata } as IOutput,
        replacesLive: false
      };
    case 'error':
      return {
        add: { output_type: 'error', ename: c.ename, evalue: c.evalue, traceback: c.traceback } as IOutput,
        replacesLive: false
      };
    case 'clear_output':
      return { clear: true };
    default:
      return null;
  }
}

/** The outputs after a change: the live widget's output (a widget view, which this page cannot draw
 * without its kernel-side model) gives way to the update that replaces it. */
export function applyChange(outputs: IOutput[], change: Exclude<OutputChange, null>): IOutput[] {
  if ('clear' in change) {
    return [];
  }
  const kept = change.replacesLive
    ? outputs.filter(o => !(o.data && typeof o.data === 'object' && WIDGET_VIEW in (o.data as Bundle)))
    : outputs;
  return [...kept, change.add];
}
