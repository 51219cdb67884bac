"""Each anywidget view's ES module and stylesheet, composed from the files beside this one.

anywidget ships one module and one stylesheet per widget, and the page must work offline (no CDN, no
bundler at run time), so the shared parts are put together here: a widget's `import {...} from "./dom.js";`
line is replaced by dom.js's text (its `export`s dropped), and its stylesheet is theme.css followed by its
own. The files stay real modules, so ESLint and Prettier read them as they are."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).parent
LOCAL_IMPORT = re.compile(r"""^import \{[^}]*\} from ["']\./([\w-]+\.js)["'];$""", re.MULTILINE)


def _inlined(match: re.Match) -> str:
    return re.sub(r"^export ", "", (HERE / match[1]).read_text(), flags=re.MULTILINE)


def esm(name: str) -> str:
    """The widget's module `name` with the local modules it imports written in."""
    return LOCAL_IMPORT.sub(_inlined, (HERE / name).read_text())


def css(name: str) -> str:
    """The shared theme, then the widget's own stylesheet `name`."""
    return (HERE / "theme.css").read_text() + (HERE / name).read_text()
