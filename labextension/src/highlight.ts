// CodeMirror 6 decorations for %llm / %%llm: the magic line by token, and the body of a %%llm cell as
// plain text (it is a prompt or data, not Python).
import { RangeSetBuilder } from '@codemirror/state';
import { Decoration, DecorationSet, EditorView, ViewPlugin, ViewUpdate } from '@codemirror/view';
import { isLlmCell, tokenizeMagicLine } from './magic';

const marks: Record<string, Decoration> = {
  magic: Decoration.mark({ class: 'cm-llm-magic' }),
  command: Decoration.mark({ class: 'cm-llm-command' }),
  option: Decoration.mark({ class: 'cm-llm-option' }),
  value: Decoration.mark({ class: 'cm-llm-value' }),
  text: Decoration.mark({ class: 'cm-llm-text' }),
  unknown: Decoration.mark({ class: 'cm-llm-unknown' })
};
const bodyLine = Decoration.line({ class: 'cm-llm-body' });

function decorate(view: EditorView): DecorationSet {
  const builder = new RangeSetBuilder<Decoration>();
  const doc = view.state.doc;
  const cellMagic = isLlmCell(doc.sliceString(0, Math.min(doc.length, 200)));
  for (let number = 1; number <= doc.lines; number++) {
    const line = doc.line(number);
    if (cellMagic && number > 1) {
      builder.add(line.from, line.from, bodyLine);
      continue;
    }
    if (line.text.indexOf('%llm') < 0) {
      continue;
    }
    for (const token of tokenizeMagicLine(line.text)) {
      builder.add(line.from + token.from, line.from + token.to, marks[token.type]);
    }
  }
  return builder.finish();
}

export const llmHighlighter = ViewPlugin.fromClass(
  class {
    decorations: DecorationSet;
    constructor(view: EditorView) {
      this.decorations = decorate(view);
    }
    update(update: ViewUpdate) {
      if (update.docChanged || update.viewportChanged) {
        this.decorations = decorate(update.view);
      }
    }
  },
  { decorations: plugin => plugin.decorations }
);
