// Completion of %llm sub-commands and option names in notebook cells.
import { CompletionHandler, ICompletionContext, ICompletionProvider } from '@jupyterlab/completer';
import { completeMagic, completionHelp } from './magic';

export class LlmCompletionProvider implements ICompletionProvider {
  readonly identifier = 'llm-magics:completer';
  // ahead of the kernel's: JupyterLab merges both lists, ours first, dropping the kernel's same labels, so
  // ours keep their help; the kernel adds file names after path options (llm_magics/completer.py)
  readonly rank = 1100;

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
        type: reply.option ? 'value' : label.startsWith('--') ? 'option' : 'command',
        documentation: completionHelp(reply.command, label, reply.option)
      }))
    };
  }
}
