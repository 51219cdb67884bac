"""The generated blocks of README.md and docs/*.md: every figure and option table comes from here, never by hand.

    python3 docs/generate.py           # rewrite the blocks in place
    python3 docs/generate.py --check   # exit 1, naming the files, when a committed block differs

A block is written between two HTML comments (invisible on GitHub and in the docs site):

    <!-- generated: KEY -->
    ...what KEY gives...
    <!-- end generated -->

KEY is one of
    options                   the table of defaults (llm_magics/options.py's readme_table)
    commands                  every command's options with their help (llm_magics/options.py's COMMANDS)
    results-header            when bench/RESULTS.md was written, and which sections were re-run since
    results SCRIPT            SCRIPT's section of bench/RESULTS.md: its command, each table with its caption,
                              and the notes after the last table
    results SCRIPT table N    only the N-th table (from 1) of that section, with its caption and command
    gpu                       every bench/gpu_results/NAME.md, as saved on the lent GPU machine, under `### NAME`

tests/test_docs.py fails when a committed block differs from what this writes; docs/conf.py also fills the
blocks while Sphinx reads each page, so the site always shows the last benchmark run.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
GPU_RESULTS = ROOT / "bench" / "gpu_results"
BLOCK = re.compile(r"(<!-- generated: (?P<key>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def pages() -> list[Path]:
    """The files that may hold generated blocks."""
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(text: str) -> str:
    """`text` with every generated block rewritten from its source."""
    return BLOCK.sub(lambda m: f"{m.group(1)}{block(m.group('key').strip())}\n{m.group(4)}", text)


def block(key: str) -> str:
    words = key.split()
    if words == ["options"]:
        from llm_magics import options

        return options.readme_table()
    if words == ["commands"]:
        return commands()
    if words == ["results-header"]:
        return results_header()
    if words[0] == "results" and len(words) == 2:
        return results_section(words[1])
    if words[0] == "results" and len(words) == 4 and words[2] == "table":
        return results_section(words[1], table=int(words[3]))
    if words == ["gpu"]:
        saved = sorted(GPU_RESULTS.glob("*.md"))
        return "\n\n".join(f"### {path.stem}\n\n{path.read_text().strip()}" for path in saved)
    raise ValueError(f"unknown generated block: {key!r} (see docs/generate.py)")


def commands() -> str:
    """Each command of the registry: its one-line description and its options, as `%llm COMMAND --help`."""
    from llm_magics.options import COMMANDS

    out = []
    for command, (description, opts) in COMMANDS.items():
        out += [f"### `%llm {command}`", "", f"{_cell(description)}.", ""]
        if not opts:
            continue
        out += ["| option | what it sets |", "| --- | --- |"]
        for o in opts:
            if o.positional:
                name = f"`{(o.metavar or o.name).upper()}`"
            elif o.flags:
                name = " / ".join(f"`{flag}`" for flag in o.flags)
            else:
                name = f"`{o.flag}`"
            values = f" ({' / '.join(map(str, o.choices))})" if o.choices and o.choices != o.values else ""
            out.append(f"| {name} | {_cell(o.value_help())}{values} |")
        out.append("")
    return "\n".join(out).rstrip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_header() -> str:
    """RESULTS.md's opening lines: which command wrote it, when."""
    head = RESULTS.read_text().split("\n## ", 1)[0]
    return "\n".join(line for line in head.splitlines() if line and not line.startswith("# ")).strip()


def results_section(script: str, table: int | None = None) -> str:
    """The tables of SCRIPT's section (bench/run_all.py writes one per script: `## SCRIPT`, the command, then
    what the script printed), each with its caption (the line above it), and the notes below the last."""
    text = RESULTS.read_text()
    start = text.find(f"\n## {script}\n")
    if start < 0:
        raise ValueError(f"bench/RESULTS.md has no section for {script}: run python bench/run_all.py --only {script}")
    end = text.find("\n## ", start + 1)
    paragraphs = [p.strip() for p in text[start : end if end > 0 else None].split("\n\n")[1:] if p.strip()]
    command = paragraphs[0]
    tables = [i for i, p in enumerate(paragraphs) if _is_table(p)]
    if not tables:  # it printed no table (e.g. "skipped: no CUDA GPU")
        return "\n\n".join(paragraphs)
    chosen = tables if table is None else [tables[table - 1]]
    out = [f"Measured by {command} (`bench/RESULTS.md`):"]
    for i in chosen:
        caption = paragraphs[i - 1].splitlines()[-1] if i > 1 and not _is_table(paragraphs[i - 1]) else ""
        out += [caption, _escaped(paragraphs[i])] if caption else [_escaped(paragraphs[i])]
    if table is None:
        out += paragraphs[tables[-1] + 1 :]
    return "\n\n".join(out)


def _is_table(paragraph: str) -> bool:
    return all(line.startswith("|") for line in paragraph.splitlines())


def _escaped(table: str) -> str:
    """A table whose cells say `|x|` (an absolute value): those bars escaped, so the columns stay columns."""
    rows = table.splitlines()
    return "\n".join(
        row if set(row) <= set("|-: ") else re.sub(r"(?<= )\|(\S[^|]*?\S)\|(?= )", r"\\|\1\\|", row) for row in rows
    )


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for page in pages():
        if not page.exists():
            continue
        text = page.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(fresh)
    verb = "differ from their sources (run python3 docs/generate.py)" if check else "rewritten"
    if stale:
        print(f"{verb}: {', '.join(map(str, stale))}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
