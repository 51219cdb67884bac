import {
  completeMagic,
  completionHelp,
  curvePaths,
  formatParameters,
  isLlmCell,
  ourMessage,
  runSummary,
  statusText,
  tokenizeMagicLine
} from '../src/magic';
import { IRun, ISnapshot } from '../src/protocol';

describe('tokenizeMagicLine', () => {
  it('splits the magic, sub-command, options and values', () => {
    const line = '%%llm generate --temperature 0.7 --max-new-tokens 80';
    const tokens = tokenizeMagicLine(line).map(t => [line.slice(t.from, t.to), t.type]);
    expect(tokens).toEqual([
      ['%%llm', 'magic'],
      ['generate', 'command'],
      ['--temperature', 'option'],
      ['0.7', 'value'],
      ['--max-new-tokens', 'option'],
      ['80', 'value']
    ]);
  });
  it('flags unknown commands and options of another command', () => {
    const types = tokenizeMagicLine('%llm frobnicate --lora').map(t => t.type);
    expect(types).toEqual(['magic', 'unknown', 'unknown']);
    expect(tokenizeMagicLine('%%llm generate --lora').map(t => t.type)).toEqual(['magic', 'command', 'unknown']);
  });
  it('keeps the free text after the options as one text token, apostrophes included', () => {
    const line = "%llm attention --layer 3 --explain It's a dog's life, from here";
    const tokens = tokenizeMagicLine(line).map(t => [line.slice(t.from, t.to), t.type]);
    expect(tokens).toEqual([
      ['%llm', 'magic'],
      ['attention', 'command'],
      ['--layer', 'option'],
      ['3', 'value'],
      ['--explain', 'option'],
      ["It's a dog's life, from here", 'text']
    ]);
    const chat = '%llm chat --system "Answer in French." -- --not an option';
    expect(
      tokenizeMagicLine(chat)
        .map(t => [chat.slice(t.from, t.to), t.type])
        .slice(2)
    ).toEqual([
      ['--system', 'option'],
      ['"Answer in French."', 'value'],
      ['--not an option', 'text']
    ]);
  });
  it('reads positional values of commands without free text', () => {
    const types = tokenizeMagicLine('%llm load default --device cpu').map(t => t.type);
    expect(types).toEqual(['magic', 'command', 'value', 'option', 'value']);
  });
  it('ignores other lines', () => {
    expect(tokenizeMagicLine('print("%%llm")')).toEqual([]);
    expect(tokenizeMagicLine('%%llmx')).toEqual([]);
  });
});

describe('isLlmCell', () => {
  it('needs the magic on the first line', () => {
    expect(isLlmCell('%%llm train --steps 5\nsome text')).toBe(true);
    expect(isLlmCell('x = 1\n%%llm train')).toBe(false);
  });
});

describe('completeMagic', () => {
  it('completes sub-commands', () => {
    expect(completeMagic('%%llm ge')).toEqual({ start: 6, items: ['generate'] });
    expect(completeMagic('%llm ')!.items).toContain('finetune');
  });
  it('completes the options of the sub-command, not repeating used ones', () => {
    const reply = completeMagic('%%llm finetune --lora --lo')!;
    expect(reply.start).toBe(22);
    expect(reply.items).toEqual(['--lora-alpha', '--lora-r']);
  });
  it('says nothing outside magic lines', () => {
    expect(completeMagic('import os')).toBeNull();
  });
  it("completes an option's values, and nothing where any value goes", () => {
    expect(completeMagic('%%llm train --arch ')!.items).toEqual(['llama', 'gpt2']);
    expect(completeMagic('%%llm train --tokenizer d')!.items).toEqual(['default']);
    expect(completeMagic('%%llm train --lr ')).toBeNull();
    expect(completeMagic('%%llm train --from-scratch ')!.items).toContain('--config');
  });
  it('shows the help of commands and options, with their defaults', () => {
    expect(completionHelp(undefined, 'save')).toContain('save the model');
    expect(completionHelp('train', '--batch-size')).toBe('default 8');
    expect(completionHelp('generate', '--temperature')).toBe('softmax temperature (default 0.7)');
  });
});

describe('statusText', () => {
  const snapshot: ISnapshot = {
    type: 'status',
    source: 'llm-magics',
    status: { model: 'default (SmolLM2-135M-Instruct.Q4_1.gguf)', device: 'cpu', process_memory_mb: 1234.4 },
    runs: [],
    active: null
  };
  it('shows model, device and memory', () => {
    expect(statusText(snapshot)).toBe('LLM: default · cpu · RAM 1234 MB');
  });
  it('shows an active run', () => {
    const active = { kind: 'train', step: 40, total_steps: 100, loss: 1.23456, loss_curve: [], cell_id: null };
    const training = { ...snapshot, active };
    expect(statusText(training)).toContain('train 40/100 loss 1.235');
  });
  it('is empty without a model', () => {
    expect(statusText(null)).toBe('');
    expect(statusText({ ...snapshot, status: { model: null } })).toBe('');
  });
  it('formats parameter counts', () => {
    expect(formatParameters(134515008)).toBe('134.5M');
  });
});

describe('ourMessage', () => {
  const status = { type: 'status', source: 'llm-magics', status: { model: 'm' }, runs: [], active: null };
  it('reads our snapshots and curves from comm_open and comm_msg, whatever the comm', () => {
    expect(ourMessage({ header: { msg_type: 'comm_msg' }, content: { comm_id: 'x', data: status } })).toEqual(status);
    const curves = { type: 'history', source: 'llm-magics', id: 'r', loss: [[1, 2]] };
    expect(ourMessage({ header: { msg_type: 'comm_open' }, content: { data: curves } })).toEqual(curves);
  });
  it('ignores everything else: other comms, other message types, other kinds of our data', () => {
    expect(
      ourMessage({ header: { msg_type: 'comm_msg' }, content: { data: { ...status, source: 'ipywidgets' } } })
    ).toBe(null);
    expect(ourMessage({ header: { msg_type: 'comm_msg' }, content: { data: { method: 'update' } } })).toBe(null);
    expect(ourMessage({ header: { msg_type: 'stream' }, content: { data: status } })).toBe(null);
    expect(ourMessage({ header: { msg_type: 'comm_msg' }, content: { data: { ...status, type: 'other' } } })).toBe(
      null
    );
    expect(ourMessage({ header: { msg_type: 'comm_close' }, content: null })).toBe(null);
  });
});

describe('runSummary', () => {
  const run: IRun = {
    index: 0,
    id: '20261129-1',
    kind: 'train',
    status: 'stopped at step 30',
    steps: 30,
    total_steps: 40,
    initial_loss: 5.5,
    final_loss: 2.25,
    interrupted: true,
    final_eval_loss: 2.5,
    best_eval_loss: 2.4,
    eval_step: 20,
    checkpoint: null,
    output_dir: null,
    metrics: {},
    tokens_per_second: 1
  };
  it('gives the losses, the eval loss with the step it was measured at and the best one', () => {
    expect(runSummary(run)).toBe('loss 5.500 → 2.250 · eval 2.500 (step 20) · best 2.400');
  });
  it('leaves out what was not measured', () => {
    expect(runSummary({ ...run, final_eval_loss: null, best_eval_loss: null })).toBe('loss 5.500 → 2.250');
    expect(runSummary({ ...run, best_eval_loss: 2.5 })).toBe('loss 5.500 → 2.250 · eval 2.500 (step 20)');
    expect(runSummary({ ...run, final_loss: null, final_eval_loss: null })).toBe('no steps');
  });
});

describe('curvePaths', () => {
  it('maps steps and values onto the box, y upwards, every curve on the same scales', () => {
    const [loss, evalLoss] = curvePaths(
      [
        [
          [0, 4],
          [10, 2],
          [20, 0]
        ],
        [[10, 4]]
      ],
      100,
      50,
      0
    );
    expect(loss).toBe('M0 0 L50 25 L100 50');
    expect(evalLoss).toBe('M50 0');
  });
  it('draws a flat or one-point curve in the middle, and nothing for no points', () => {
    expect(curvePaths([[[3, 1]]], 100, 50, 0)).toEqual(['M50 25']);
    expect(curvePaths([[], []], 100, 50)).toEqual(['', '']);
  });
});
