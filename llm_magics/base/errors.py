"""The one exception type for user mistakes: the magics print its message as one line."""


class LLMError(Exception):
    """A problem the user can fix (bad option, missing file, no model loaded...)."""


def no_model(action: str) -> LLMError:
    return LLMError(f"no model loaded: run `%llm load default` (or `minilm`, a path, a hub id) before {action}")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError, both mean 'ask for less'."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message)
