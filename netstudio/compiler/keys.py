"""Cache keys of the compiler's memo tables (shape checks, per-layer tensor counts)."""

from __future__ import annotations

from typing import Any


def freeze(v: Any) -> Any:
    """A hashable copy of params/inputs (dicts and lists as sorted tuples), for cache keys."""
    if isinstance(v, dict):
        return tuple(sorted((k, freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    return v
