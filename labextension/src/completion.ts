// Completion of %llm sub-commands and option names in notebook cells.
import { CompletionHandler, ICompletionContext, ICompletionProvider } from '@jupyterlab/completer';
import { completeMagic, completionHelp } from './magic';

export class LlmCompletionProvider implements ICompletionProvider {
  readonly identifier = 'llm-magics:completer';
  readonly rank = 1100; // ahead of the kernel's own completions on magic lines

  async isApplicable(context: ICompletionContext): Promise<boolean> {
    return !!context.editor;
  }

  async fetch(request: CompletionHandler.IRequest): Promise<CompletionHandler.ICompletionItemsReply> {
    const lineStart = request.text.lastIndexOf('\n', request.offset - 1) + 1;
    const before = request.text.slice(lineStart, request.offset);
    const reply = completeMagic(before);
    if (!reply) {
      return { start: request.offset, end: request.offset, items: [] };
    }
    return {
      start: lineStart + reply.start,
      end: request.offset,
      items: reply.items.map(label => ({
        label,
        type: label.startsWith('--') ? 'option' : reply.command ? 'value' : 'command',
        documentation: completionHelp(reply.command, label)
      }))
    };
  }
}
