"""llm-magics: train, fine-tune, generate with and look inside a language model in the kernel.

In IPython/Jupyter: `%load_ext llm_magics`, then `%llm --help`.
Without IPython: `from llm_magics import Session`.
"""

import sys as _sys

if getattr(_sys.modules.get("IPython"), "get_ipython", lambda: None)() is not None:
    # %load_ext: the first import of torch and transformers takes seconds; say so before it starts.
    from .base.status import before_first_import

    before_first_import("transformers", "llm-magics: loading torch and transformers…")

import logging as _logging

# transformers imports torchao (our --quantize library) when it is installed, and torchao's and torch's
# import-time warnings (CUDA-only extensions a CPU build cannot load) would land in every notebook's stderr.
_import_loggers = {name: _logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")}
_import_levels = {name: logger.level for name, logger in _import_loggers.items()}
for _logger in _import_loggers.values():
    _logger.setLevel(_logging.ERROR)
from . import views  # noqa: E402, F401  (registers how results draw themselves: base/drawing.py)
from .api import Session  # noqa: E402
from .base.errors import LLMError  # noqa: E402
from .generation import GenerationResult, SamplingSettings  # noqa: E402
from .training import TrainResult  # noqa: E402

for _name, _logger in _import_loggers.items():
    _logger.setLevel(_import_levels[_name])

__version__ = "0.1.0"
__all__ = ["Session", "LLMError", "GenerationResult", "SamplingSettings", "TrainResult", "session"]

session = Session()  # the kernel's session, shared by the magics


def __getattr__(name):
    if name == "last":  # llm_magics.last: the latest result of any command
        return session.last
    raise AttributeError(f"module 'llm_magics' has no attribute {name!r}")


def _jupyter_labextension_paths():
    """Where JupyterLab finds the prebuilt extension (labextension/ builds into llm_magics/labextension)."""
    return [{"src": "labextension", "dest": "llm-magics"}]


bridge = None  # the JupyterLab extension's kernel side, set when the IPython extension loads


def load_ipython_extension(ipython):
    global bridge
    from .frontend import FrontendBridge
    from .magics import LLMMagics

    if bridge is None:
        bridge = FrontendBridge(session)
        ipython.events.register("post_run_cell", bridge.after_cell)
        session.step_listeners.append(bridge.on_step)
        bridge.open()
    ipython.register_magics(LLMMagics(ipython, session))
    from .base.cells import register
    from .completer import register as register_completer

    register(ipython)
    register_completer(ipython)
