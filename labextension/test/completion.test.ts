import { LlmCompletionProvider } from '../src/completion';

// What JupyterLab's completer asks our provider (the parts it reads), for the cursor at the end of `text`.
async function complete(text: string) {
  const provider = new LlmCompletionProvider();
  return provider.fetch({ text, offset: text.length } as any);
}

describe('LlmCompletionProvider', () => {
  it("lists only the option's values after it, each with the option's help", async () => {
    const reply = await complete('%%llm train --config ');
    expect(reply.items.map(i => i.label)).toEqual(['tiny', 'small', 'gpt2-124m']);
    for (const item of reply.items) {
      expect(item.type).toBe('value');
      expect(item.documentation).toContain('tiny, small, gpt2-124m or a config .json');
    }
    expect(reply.start).toBe('%%llm train --config '.length);
    const compare = await complete('x = 1\n%llm train --compare l');
    expect(compare.items.map(i => [i.label, i.type])).toEqual([['last', 'value']]);
    expect(compare.items[0].documentation).toContain('overlay earlier runs');
  });
  it('leaves a path option to the kernel (its file names) and options carry their help', async () => {
    expect((await complete('%llm train --data ./')).items).toEqual([]);
    const options = await complete('%llm train --eval-e');
    expect(options.items.map(i => [i.label, i.type])).toEqual([['--eval-every', 'option']]);
    expect(options.items[0].documentation).toBeTruthy();
    const commands = await complete('%llm ge');
    expect(commands.items.map(i => [i.label, i.type])).toEqual([['generate', 'command']]);
  });
});
