"""The registry of dataset sources: each source module registers its :class:`DataSource` here.

``netstudio.data`` imports the bundled source modules (which register themselves) when the
package is imported; adding a source is one module that subclasses
:class:`netstudio.data.base.DataSource` and calls :func:`register`. ``core`` looks sources up
here by name and never imports a source module.
"""

from __future__ import annotations

import threading

from netstudio.data.base import DEFAULT_PARAMS, DataSource, SourceSpec
from netstudio.errors import DataError

_lock = threading.Lock()
_SOURCES: dict[str, DataSource] = {}
#: name → SourceSpec of every registered source, in registration order (kept in step by register)
SOURCES: dict[str, SourceSpec] = {}
#: name → the params that matter for that source (cache keys; the UI may hide the others)
SOURCE_PARAMS: dict[str, tuple[str, ...]] = {}


def register(source: DataSource, *, replace: bool = False) -> DataSource:
    """Add ``source`` under ``source.name``; a second source with the same name is an error unless ``replace``."""
    unknown = [k for k in source.params if k not in DEFAULT_PARAMS]
    if unknown or "source" not in source.params:
        raise ValueError(f"data source {source.name!r}: params must include 'source' and come from the "
                         f"Dataset node's params (unknown: {unknown})")
    with _lock:
        if source.name in _SOURCES and not replace:
            raise ValueError(f"data source {source.name!r} is already registered")
        _SOURCES[source.name] = source
        SOURCES[source.name] = source.spec
        SOURCE_PARAMS[source.name] = tuple(source.params)
    return source


def unregister(name: str) -> None:
    """Remove a source (tests register temporary ones)."""
    with _lock:
        _SOURCES.pop(name, None)
        SOURCES.pop(name, None)
        SOURCE_PARAMS.pop(name, None)


def get(name: str) -> DataSource:
    """The source registered under ``name``; DataError naming the choices otherwise."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise DataError(f"Dataset: unknown source {name!r}", hint="choose one of " + ", ".join(_SOURCES)) from None


def names() -> tuple[str, ...]:
    """Every registered source name, in registration order (the Dataset node's choices)."""
    return tuple(_SOURCES)


def all_sources() -> tuple[DataSource, ...]:
    return tuple(_SOURCES.values())


def split_sources() -> tuple[str, ...]:
    """Sources whose samples are split by val_fraction/seed (the others bring their own split)."""
    return tuple(n for n, s in _SOURCES.items() if s.uses_split)


def sources_with_param(param: str) -> tuple[str, ...]:
    """Sources for which the Dataset param ``param`` matters (e.g. "path", "resize")."""
    return tuple(n for n, s in _SOURCES.items() if param in s.params)
