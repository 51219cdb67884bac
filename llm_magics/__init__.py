"""llm-magics: train, fine-tune, generate with and look inside a language model in the kernel.

In IPython/Jupyter: `%load_ext llm_magics`, then `%llm --help`.
Without IPython: `from llm_magics import Session`.
"""
from .api import Session
from .errors import LLMError
from .generation import GenerationResult, SamplingSettings
from .training import TrainResult

__version__ = "0.1.0"
__all__ = ["Session", "LLMError", "GenerationResult", "SamplingSettings", "TrainResult", "session"]

session = Session()  # the kernel's session, shared by the magics


def __getattr__(name):
    if name == "last":  # llm_magics.last: the latest result of any command
        return session.last
    raise AttributeError(f"module 'llm_magics' has no attribute {name!r}")


def load_ipython_extension(ipython):
    from .magics import LLMMagics

    ipython.register_magics(LLMMagics(ipython, session))
