"""The kernel's completions on a `%llm` / `%%llm` line: after an option that takes a value, only its usual
values (or file and folder names for a path option), suppressing IPython's other matchers, whose Python
names and magics would otherwise follow them in every frontend's list (JupyterLab merges the kernel's
reply with its own extension's items)."""

import functools
import re

# Options whose value is a file or folder: completed with IPython's own file matcher.
PATH_OPTIONS = {
    "--data",
    "--eval-data",
    "--output-dir",
    "--resume",
    "--runs-dir",
    "--accelerate-config",
    "--config",
    "--tokenizer",
}
_LINE = re.compile(r"^\s*%%?llm\s+(?P<rest>.*)$")


@functools.cache
def _spec() -> dict:
    from .magics import command_spec

    return command_spec()


def value_position(line: str) -> tuple[str, str, str] | None:
    """(command, option, fragment) when the cursor at the end of `line` is on an option's value, else None."""
    match = _LINE.match(line)
    if not match:
        return None
    rest = match["rest"]
    words = rest.split()
    done = words if not rest or rest[-1].isspace() else words[:-1]
    fragment = "" if done is words else words[-1]
    if len(done) < 2:
        return None
    command, option = done[0], done[-1]
    takes_value = option in _spec()["options"].get(command, []) and option not in _spec()["flags"].get(command, [])
    return (command, option, fragment) if takes_value else None


def values(command: str, option: str, fragment: str) -> list[str]:
    """The option's usual values that start with the fragment (none for free values such as --lr: IPython
    then keeps its other matchers' items, as it suppresses them only for a matcher that has some)."""
    known = _spec()["details"].get(command, {}).get(option, {}).get("values") or []
    return [v for v in known if v.startswith(fragment)]


def register(ipython) -> None:
    """Add the matcher to the kernel's completer (IPython 8.6+'s matcher API; older ones are left as they are)."""
    try:
        from IPython.core.completer import SimpleCompletion, context_matcher
    except ImportError:
        return
    completer = ipython.Completer

    @context_matcher()
    def llm_values(context):
        position = value_position(context.text_until_cursor.split("\n")[-1])
        if position is None:
            return {"completions": [], "suppress": False}
        command, option, fragment = position
        names = values(command, option, fragment)
        if option in PATH_OPTIONS:
            files = completer.file_matcher(context)
            names += [c.text for c in files["completions"] if c.text not in names]
        return {"completions": [SimpleCompletion(n, type="value") for n in names], "suppress": True}

    if not any(getattr(m, "__qualname__", "").endswith("llm_values") for m in completer.custom_matchers):
        completer.custom_matchers.append(llm_values)
