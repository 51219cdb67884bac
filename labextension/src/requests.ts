// When this page may open its request comm to a kernel. The comm opens over a kernel subshell, and the
// server counts a comm_open's busy/idle as the kernel's own status (comm_msg it does not): opened while a
// cell trains, JupyterLab's status bar would say "Idle" for the rest of that cell. So it opens once the
// kernel is idle; meanwhile the kernel's pushes keep the status bar and the panel up to date.

/** What whenIdle reads of a kernel connection (a @lumino/signaling signal's connect/disconnect). */
export interface IStatusSource {
  readonly status: string;
  readonly statusChanged: {
    connect(slot: (sender: unknown, status: string) => void): boolean;
    disconnect(slot: (sender: unknown, status: string) => void): boolean;
  };
}

/** Resolves at once if the kernel is idle, else at its next idle status. */
export function whenIdle(kernel: IStatusSource): Promise<void> {
  if (kernel.status === 'idle') {
    return Promise.resolve();
  }
  return new Promise(resolve => {
    const slot = (_: unknown, status: string) => {
      if (status === 'idle') {
        kernel.statusChanged.disconnect(slot);
        resolve();
      }
    };
    kernel.statusChanged.connect(slot);
  });
}

type IopubMessage = { header: { msg_type: string }; parent_header?: object; content: unknown };

/** The execution state an iopub status message reports, and whether it is a subshell's (a request on our
 * comm answered beside a training cell) rather than the main shell's. Null for other messages. */
export function shellStatus(msg: IopubMessage): { state: string; subshell: boolean } | null {
  if (msg.header.msg_type !== 'status') {
    return null;
  }
  const state = (msg.content as { execution_state?: string } | null)?.execution_state;
  if (!state) {
    return null;
  }
  const subshell = (msg.parent_header as { subshell_id?: string | null } | undefined)?.subshell_id;
  return { state, subshell: typeof subshell === 'string' && subshell !== '' };
}
