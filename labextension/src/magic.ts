// Pure functions about %llm / %%llm text: highlighting tokens, completion and status text.
// Kept free of JupyterLab imports so jest tests them directly.
import commandSpec from './commands.json';
import { Curve, IRun, ISnapshot, MESSAGE_SOURCE, ToPage } from './protocol';

/** Each sub-command's long options. */
export const COMMANDS: Record<string, string[]> = commandSpec.options;
/** Each sub-command's options that take no value. */
export const FLAGS: Record<string, string[]> = commandSpec.flags;
/** Sub-commands whose free text (a prompt, a message) may follow the options on the line. */
export const FREE_TEXT: string[] = commandSpec.free_text;
/** Each sub-command's help. */
export const COMMAND_HELP: Record<string, string> = commandSpec.commands;
/** Each sub-command's options: their help (with the default) and usual values, from llm_magics/options.py. */
export const DETAILS: Record<string, Record<string, { help: string; values?: string[] }>> = commandSpec.details;

/** The help shown beside a completion item: a sub-command's, an option's of `command`, or for a value of
 * `option` that option's help (it names what each value means). */
export function completionHelp(command: string | undefined, label: string, option?: string): string | undefined {
  if (command === undefined) {
    return COMMAND_HELP[label];
  }
  return DETAILS[command]?.[option ?? label]?.help;
}

export type TokenType = 'magic' | 'command' | 'option' | 'value' | 'text' | 'unknown';

export interface IToken {
  from: number;
  to: number;
  type: TokenType;
}

/** Whether a cell is a %%llm cell (the magic must be its first line). */
export function isLlmCell(text: string): boolean {
  return /^%%llm(\s|$)/.test(text);
}

/** Tokens of a `%llm ...` / `%%llm ...` line, with offsets inside the line. As in the magics, the options
 * are read shell-style up to the first token that is neither an option nor an option's value (or `--`);
 * for the commands with free text the rest of the line is one 'text' token. */
export function tokenizeMagicLine(line: string): IToken[] {
  const match = /^(\s*)(%%?llm)(?=\s|$)/.exec(line);
  if (!match) {
    return [];
  }
  const tokens: IToken[] = [];
  const start = match[1].length;
  tokens.push({ from: start, to: start + match[2].length, type: 'magic' });
  const word = /(?:"[^"]*"?|'[^']*'?|[^\s"']+)+/g; // a shell word: quoted parts stay whole
  word.lastIndex = start + match[2].length;
  let command: string | null = null;
  let wantsValue = false;
  let part: RegExpExecArray | null;
  while ((part = word.exec(line)) !== null) {
    const text = part[0];
    const from = part.index;
    const to = from + text.length;
    if (command === null && !text.startsWith('-')) {
      command = text;
      tokens.push({ from, to, type: text in COMMANDS ? 'command' : 'unknown' });
    } else if (wantsValue) {
      tokens.push({ from, to, type: 'value' });
      wantsValue = false;
    } else if (text.startsWith('-') && text !== '--') {
      const name = text.split('=')[0];
      const known = name === '--help' || (command !== null && (COMMANDS[command] || []).includes(name));
      tokens.push({ from, to, type: known ? 'option' : 'unknown' });
      wantsValue = !text.includes('=') && name !== '--help' && !(FLAGS[command || ''] || []).includes(name);
    } else if (command !== null && FREE_TEXT.includes(command)) {
      const textFrom = text === '--' ? from + 2 + /^\s*/.exec(line.slice(from + 2))![0].length : from;
      if (textFrom < line.trimEnd().length) {
        tokens.push({ from: textFrom, to: line.trimEnd().length, type: 'text' });
      }
      break;
    } else {
      tokens.push({ from, to, type: 'value' });
    }
  }
  return tokens;
}

/** Completion candidates for the text before the cursor on a magic line, or null if none apply: sub-commands,
 * then the sub-command's options, or after an option its usual values. `command` is set past the sub-command,
 * `option` on an option's value (file names for a path option come from the kernel: llm_magics/completer.py). */
export function completeMagic(
  before: string
): { start: number; items: string[]; command?: string; option?: string } | null {
  const match = /^(\s*%%?llm)(\s+.*)?$/.exec(before);
  if (!match) {
    return null;
  }
  const rest = match[2] || '';
  const words = rest.trim().length ? rest.trim().split(/\s+/) : [];
  const typingNew = rest.length === 0 || /\s$/.test(rest);
  const current = typingNew ? '' : words[words.length - 1];
  const start = before.length - current.length;
  const done = typingNew ? words : words.slice(0, -1);
  if (rest.length === 0) {
    return null; // the cursor is right after "%%llm": wait for a space
  }
  if (done.length === 0) {
    return { start, items: Object.keys(COMMANDS).filter(c => c.startsWith(current)) };
  }
  const command = done[0];
  const options = COMMANDS[command];
  if (!options) {
    return null;
  }
  const previous = done[done.length - 1];
  const wantsValue =
    done.length > 1 &&
    previous.startsWith('--') &&
    !previous.includes('=') &&
    options.includes(previous) &&
    !(FLAGS[command] || []).includes(previous);
  if (wantsValue) {
    const values = DETAILS[command]?.[previous]?.values;
    return values ? { start, items: values.filter(v => v.startsWith(current)), command, option: previous } : null;
  }
  if (!current.startsWith('-') && current !== '') {
    return null;
  }
  return { start, items: options.filter(o => o.startsWith(current) && !done.includes(o)), command };
}

/** Our message in a kernel's iopub message (a comm_open or comm_msg whose data says it is ours), else null.
 * A reloaded page reads the kernel's pushes this way before it knows the comm they come on. */
export function ourMessage(msg: { header: { msg_type: string }; content: unknown }): ToPage | null {
  if (msg.header.msg_type !== 'comm_open' && msg.header.msg_type !== 'comm_msg') {
    return null;
  }
  const data = (msg.content as { data?: { source?: string; type?: string } } | null)?.data;
  if (!data || data.source !== MESSAGE_SOURCE || (data.type !== 'status' && data.type !== 'history')) {
    return null;
  }
  return data as ToPage;
}

/** A run's line in the panel: its status, then its losses (the eval losses as measured). */
export function runSummary(run: IRun): string {
  const parts: string[] = [];
  if (run.final_loss !== null) {
    parts.push(`loss ${run.initial_loss?.toFixed(3)} → ${run.final_loss.toFixed(3)}`);
  } else {
    parts.push('no steps');
  }
  if (run.final_eval_loss !== undefined && run.final_eval_loss !== null) {
    const at = run.eval_step !== undefined && run.eval_step !== null ? ` (step ${run.eval_step})` : '';
    parts.push(`eval ${run.final_eval_loss.toFixed(3)}${at}`);
    if (run.best_eval_loss !== undefined && run.best_eval_loss !== null && run.best_eval_loss < run.final_eval_loss) {
      parts.push(`best ${run.best_eval_loss.toFixed(3)}`);
    }
  }
  return parts.join(' · ');
}

/** SVG path data ("M x y L x y ...") of curves drawn in a width × height box, all on the same scales
 * (the steps' and the values' ranges over every curve), y growing upwards. */
export function curvePaths(curves: Curve[], width: number, height: number, pad = 4): string[] {
  const points = curves.flat();
  if (!points.length) {
    return curves.map(() => '');
  }
  const xs = points.map(p => p[0]);
  const ys = points.map(p => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => pad + (x1 > x0 ? ((x - x0) / (x1 - x0)) * (width - 2 * pad) : (width - 2 * pad) / 2);
  const sy = (y: number) => pad + (y1 > y0 ? ((y1 - y) / (y1 - y0)) * (height - 2 * pad) : (height - 2 * pad) / 2);
  const round = (v: number) => Math.round(v * 10) / 10;
  return curves.map(curve => curve.map(([x, y], i) => `${i ? 'L' : 'M'}${round(sx(x))} ${round(sy(y))}`).join(' '));
}

export function shortModelName(name: string): string {
  const base = name.split(' (')[0];
  const parts = base.split('/');
  return parts[parts.length - 1] || base;
}

/** The status bar text: model · device · memory · training progress. */
export function statusText(snapshot: ISnapshot | null): string {
  if (!snapshot || !snapshot.status.model) {
    return '';
  }
  const s = snapshot.status;
  const memory =
    s.gpu_memory_mb !== undefined
      ? `GPU ${Math.round(s.gpu_memory_mb)} MB`
      : s.process_memory_mb !== undefined
        ? `RAM ${Math.round(s.process_memory_mb)} MB`
        : '';
  const parts = [`LLM: ${shortModelName(s.model!)}`, s.device || '', memory];
  if (snapshot.active) {
    const a = snapshot.active;
    parts.push(`${a.kind} ${a.step}/${a.total_steps} loss ${a.loss.toFixed(3)}`);
  }
  return parts.filter(p => p).join(' · ');
}

export function formatParameters(count: number | undefined): string {
  if (count === undefined) {
    return '?';
  }
  return count >= 1e9
    ? `${(count / 1e9).toFixed(2)}B`
    : count >= 1e6
      ? `${(count / 1e6).toFixed(1)}M`
      : `${(count / 1e3).toFixed(1)}K`;
}
