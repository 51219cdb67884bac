// The extension's commands (palette and keyboard): stop the current kernel's training, open the runs panel,
// show the model's status. Typed structurally so jest registers them on a plain fake.
import type { JupyterFrontEnd } from '@jupyterlab/application';

export const CATEGORY = 'LLM';
export const COMMAND_IDS = { stop: 'llm-magics:stop', openPanel: 'llm-magics:open-panel', status: 'llm-magics:status' };
/** Not taken by JupyterLab's own shortcuts. */
export const STOP_KEYS = ['Accel Shift .'];

export interface ICommandActions {
  /** Whether the current notebook's kernel is training (the only time Stop has something to stop). */
  training: () => boolean;
  /** Interrupt the current kernel: the training loop turns that into a stop after the current step. */
  stop: () => void;
  openPanel: () => void;
  showStatus: () => void;
}

type Registry = Pick<JupyterFrontEnd['commands'], 'addCommand' | 'addKeyBinding'>;
type Palette = { addItem(options: { command: string; category: string }): unknown };

export function registerCommands(commands: Registry, palette: Palette | null, actions: ICommandActions): void {
  commands.addCommand(COMMAND_IDS.stop, {
    label: 'Stop LLM Training',
    caption: 'Stop the training in the current kernel after the current step (the model and checkpoint are kept)',
    isEnabled: actions.training,
    execute: () => {
      if (actions.training()) {
        actions.stop();
      }
    }
  });
  commands.addCommand(COMMAND_IDS.openPanel, {
    label: 'Open LLM Runs Panel',
    caption: 'The model in the current kernel and its runs',
    execute: actions.openPanel
  });
  commands.addCommand(COMMAND_IDS.status, {
    label: 'Show LLM Status',
    caption: 'The model, device, memory and training progress of the current kernel',
    execute: actions.showStatus
  });
  commands.addKeyBinding({ command: COMMAND_IDS.stop, keys: STOP_KEYS, selector: 'body' });
  for (const command of Object.values(COMMAND_IDS)) {
    palette?.addItem({ command, category: CATEGORY });
  }
}
