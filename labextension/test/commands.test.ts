import { COMMAND_IDS, ICommandActions, registerCommands, STOP_KEYS } from '../src/palette';
import { shellStatus } from '../src/shellstatus';

type Options = { execute: () => void; isEnabled?: () => boolean; label: string };

function fakeApp() {
  const commands = new Map<string, Options>();
  const bindings: { command: string; keys: string[]; selector: string }[] = [];
  const palette: { command: string; category: string }[] = [];
  const registry = {
    addCommand: (id: string, options: Options) => commands.set(id, options),
    addKeyBinding: (binding: { command: string; keys: string[]; selector: string }) => bindings.push(binding)
  };
  return { commands, bindings, palette, registry, paletteApi: { addItem: (item: never) => palette.push(item) } };
}

describe('registerCommands', () => {
  it('puts stop, open-panel and status in the palette, stop with a shortcut, stop only while training', () => {
    const app = fakeApp();
    let training = false;
    const calls: string[] = [];
    const actions: ICommandActions = {
      training: () => training,
      stop: () => calls.push('stop'),
      openPanel: () => calls.push('panel'),
      showStatus: () => calls.push('status')
    };

    registerCommands(app.registry as any, app.paletteApi, actions);
    expect([...app.commands.keys()].sort()).toEqual(Object.values(COMMAND_IDS).sort());
    expect(app.palette.map(p => p.command).sort()).toEqual(Object.values(COMMAND_IDS).sort());
    expect(app.bindings).toEqual([{ command: 'llm-magics:stop', keys: STOP_KEYS, selector: 'body' }]);
    const stop = app.commands.get('llm-magics:stop')!;
    expect(stop.isEnabled!()).toBe(false);
    stop.execute(); // nothing to stop: no interrupt of an unrelated cell
    expect(calls).toEqual([]);
    training = true;
    expect(stop.isEnabled!()).toBe(true);
    stop.execute();
    app.commands.get('llm-magics:open-panel')!.execute();
    app.commands.get('llm-magics:status')!.execute();
    expect(calls).toEqual(['stop', 'panel', 'status']);
  });
  it('works without a palette', () => {
    const app = fakeApp();
    const noop = () => undefined;

    registerCommands(app.registry as any, null, {
      training: () => true,
      stop: noop,
      openPanel: noop,
      showStatus: noop
    });
    expect(app.commands.size).toBe(3);
  });
});

describe('shellStatus', () => {
  const status = (state: string, parent: object) => ({
    header: { msg_type: 'status' },
    parent_header: parent,
    content: { execution_state: state }
  });
  it("tells a subshell's busy/idle from the main shell's", () => {
    expect(shellStatus(status('busy', { msg_type: 'execute_request' }))).toEqual({ state: 'busy', mainShell: true });
    expect(shellStatus(status('idle', { msg_type: 'comm_open', subshell_id: 'a1' }))).toEqual({
      state: 'idle',
      mainShell: false
    });
    expect(shellStatus(status('idle', { msg_type: 'execute_request', subshell_id: null }))!.mainShell).toBe(true);
    // a subshell being made (for a comm target) while a cell trains
    expect(shellStatus(status('idle', { msg_type: 'create_subshell_request', subshell_id: null }))!.mainShell).toBe(
      false
    );
    expect(shellStatus({ header: { msg_type: 'stream' }, content: {} })).toBeNull();
  });
});
