import {
  completeMagic,
  completionHelp,
  formatParameters,
  isLlmCell,
  statusText,
  tokenizeMagicLine,
  ISnapshot
} from '../src/magic';

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
    status: { model: 'default (SmolLM2-135M-Instruct.Q4_1.gguf)', device: 'cpu', process_memory_mb: 1234.4 },
    runs: [],
    active: null
  };
  it('shows model, device and memory', () => {
    expect(statusText(snapshot)).toBe('LLM: default · cpu · RAM 1234 MB');
  });
  it('shows an active run', () => {
    const training = { ...snapshot, active: { kind: 'train', step: 40, total_steps: 100, loss: 1.23456 } };
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
