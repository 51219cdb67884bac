"""The one exception type for user mistakes: the magics print its message as one line."""


class LLMError(Exception):
    """A problem the user can fix (bad option, missing file, no model loaded...)."""
