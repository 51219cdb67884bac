// Which shell an iopub busy/idle is about. JupyterLab takes any of them for the kernel's status, and the
// server tracks comm_open, comm_msg and subshell requests: a subshell made, or answering a page's comm,
// while a cell trains would make the status bar say "Idle" until the cell ends.

type IopubMessage = { header: { msg_type: string }; parent_header?: object; content: unknown };

// Requests a kernel answers beside its main shell (JEP 91 subshells, on the control channel).
const SUBSHELL_REQUESTS = ['create_subshell_request', 'delete_subshell_request', 'list_subshell_request'];

/** The execution state an iopub status message reports, and whether it is about the main shell rather than
 * a subshell (a request on a comm answered beside a training cell) or a subshell's creation. Null for other
 * messages. */
export function shellStatus(msg: IopubMessage): { state: string; mainShell: boolean } | null {
  if (msg.header.msg_type !== 'status') {
    return null;
  }
  const state = (msg.content as { execution_state?: string } | null)?.execution_state;
  if (!state) {
    return null;
  }
  const parent = (msg.parent_header ?? {}) as { subshell_id?: string | null; msg_type?: string };
  const aside =
    (typeof parent.subshell_id === 'string' && parent.subshell_id !== '') ||
    SUBSHELL_REQUESTS.includes(parent.msg_type ?? '');
  return { state, mainShell: !aside };
}
