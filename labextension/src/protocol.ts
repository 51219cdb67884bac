// The messages between the kernel (llm_magics/frontend.py, over the "llm_magics" comm) and the page, and the
// records they carry: the one place the page declares them. frontend.py declares the same as TypedDicts and
// writes them to test/protocol.json (`python -m llm_magics protocol`); jest checks FIELDS below against it.

/** The comm the kernel opens, and the one a page opens to ask it. */
export const COMM_TARGET = 'llm_magics';
/** The `source` of our messages: a reloaded page reads them before it knows the comm's id. */
export const MESSAGE_SOURCE = 'llm-magics';

/** [step, value] pairs. */
export type Curve = [number, number][];

/** What the page reads of the kernel's Session.status() (it sends more). */
export interface IModelStatus {
  model: string | null;
  kind?: string;
  device?: string;
  dtype?: string;
  parameters?: number;
  trainable_parameters?: number;
  context_length?: number | null;
  weights_mb?: number;
  quantization?: string;
  gpu_memory_mb?: number;
  process_memory_mb?: number;
}

/** One run of the session, as `%llm runs` lists it. */
export interface IRun {
  index: number;
  id: string | null;
  kind: string;
  status: string;
  steps: number;
  total_steps: number;
  initial_loss: number | null;
  final_loss: number | null;
  interrupted: boolean;
  final_eval_loss: number | null;
  best_eval_loss: number | null;
  eval_step: number | null;
  checkpoint: string | null;
  output_dir: string | null;
  metrics: Record<string, number>;
  tokens_per_second: number;
}

/** The run in progress, as its last step left it. */
export interface IActiveRun {
  kind: string;
  step: number;
  total_steps: number;
  loss: number;
  loss_curve: Curve;
  cell_id: string | null;
}

/** Kernel to page, after every cell, during training and on request: what is loaded and the runs. */
export interface ISnapshot {
  type: 'status';
  source: string;
  status: IModelStatus;
  runs: IRun[];
  active: IActiveRun | null;
  reply_to?: string | null;
}

/** Kernel to page, on request: a run's curves, the answer to a click on it in the panel (or the error). */
export interface IRunCurves {
  type: 'history';
  source: string;
  id: string;
  kind?: string;
  status?: string;
  loss?: Curve;
  eval_loss?: Curve;
  error?: string;
  reply_to?: string | null;
}

/** Page to kernel, on opening its own comm: send me a snapshot. */
export interface ISnapshotRequest {
  type: 'request';
  request_id: string;
}

/** Page to kernel: send me this run's curves. */
export interface IHistoryRequest {
  type: 'history';
  id: string;
  request_id: string;
}

/** Page to kernel, while a cell trains: this page has drawn this redraw of this live chart. */
export interface IDrawnReport {
  type: 'drawn';
  chart: string;
  redraw: number;
}

export type ToPage = ISnapshot | IRunCurves;
export type ToKernel = ISnapshotRequest | IHistoryRequest | IDrawnReport;

/** Each field of T, 'required' or 'optional' as T declares it: an object of this type must name every field,
 * no other, each with its right word, so FIELDS cannot drift from the interfaces above. */
export type Fields<T> = { [K in keyof T]-?: object extends Pick<T, K> ? 'optional' : 'required' };
type ByType<M extends { type: string }> = { [N in M as N['type']]: Fields<N> };

/** The protocol as frontend.py's protocol() writes it (test/protocol.json). */
export const FIELDS: {
  comm_target: string;
  source: string;
  to_page: ByType<ToPage>;
  to_kernel: ByType<ToKernel>;
  records: { ModelStatus: Fields<IModelStatus>; RunRow: Fields<IRun>; ActiveRun: Fields<IActiveRun> };
} = {
  comm_target: COMM_TARGET,
  source: MESSAGE_SOURCE,
  to_page: {
    status: {
      type: 'required',
      source: 'required',
      status: 'required',
      runs: 'required',
      active: 'required',
      reply_to: 'optional'
    },
    history: {
      type: 'required',
      source: 'required',
      id: 'required',
      kind: 'optional',
      status: 'optional',
      loss: 'optional',
      eval_loss: 'optional',
      error: 'optional',
      reply_to: 'optional'
    }
  },
  to_kernel: {
    request: { type: 'required', request_id: 'required' },
    history: { type: 'required', id: 'required', request_id: 'required' },
    drawn: { type: 'required', chart: 'required', redraw: 'required' }
  },
  records: {
    ModelStatus: {
      model: 'required',
      kind: 'optional',
      device: 'optional',
      dtype: 'optional',
      parameters: 'optional',
      trainable_parameters: 'optional',
      context_length: 'optional',
      weights_mb: 'optional',
      quantization: 'optional',
      gpu_memory_mb: 'optional',
      process_memory_mb: 'optional'
    },
    RunRow: {
      index: 'required',
      id: 'required',
      kind: 'required',
      status: 'required',
      steps: 'required',
      total_steps: 'required',
      initial_loss: 'required',
      final_loss: 'required',
      interrupted: 'required',
      final_eval_loss: 'required',
      best_eval_loss: 'required',
      eval_step: 'required',
      checkpoint: 'required',
      output_dir: 'required',
      metrics: 'required',
      tokens_per_second: 'required'
    },
    ActiveRun: {
      kind: 'required',
      step: 'required',
      total_steps: 'required',
      loss: 'required',
      loss_curve: 'required',
      cell_id: 'required'
    }
  }
};
