"""Results that draw themselves: `views/` registers how each result type is drawn, so a result from a layer
below it (a patching or attribution result) can offer `.view()` without importing upward."""

from collections.abc import Callable
from typing import Any

_DRAWERS: dict[type, Callable[..., Any]] = {}


def draws(result_type: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a view function: `@draws(PatchingResult) def patching_view(result): ...`."""

    def register(draw: Callable[..., Any]) -> Callable[..., Any]:
        _DRAWERS[result_type] = draw
        return draw

    return register


def draw(result: Any, *args: Any, **kwargs: Any) -> Any:
    """The registered view of `result` (views/ is imported with the package, so every drawer is there)."""
    for kind in type(result).__mro__:
        if kind in _DRAWERS:
            return _DRAWERS[kind](result, *args, **kwargs)
    raise TypeError(f"no view is registered for {type(result).__name__}")
