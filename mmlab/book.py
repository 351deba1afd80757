"""Small helpers for the chapter notebooks."""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Make ``value`` citable in the prose as ``{glue:text}`name``` (myst-nb).

    Outside a book build (in Colab, say) myst-nb may be absent; then the value
    is simply returned, so the notebook runs the same.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars: glue formats plain Python numbers
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - depends on the environment
        return value
    _glue(name, value, display=display)
    return value
