"""The ``describe``/``load`` entry points: params, caches, and dispatch through the source registry.

``describe`` runs on every graph edit, so sources answer from static facts for the
built-in sets and ``describe`` caches the rest keyed by the source's file stamp (CSV
files, image folders). ``load`` does the real work and keeps a few results in memory so
that re-training in the GUI does not reload.

Sources live in their own modules and register in :mod:`netstudio.data.registry`; this
module only looks them up by name, so it imports none of them.

Nothing here imports torch, numpy, pandas or sklearn at module level: the
editor imports this package at start-up and must stay fast.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping

from netstudio.data import registry
from netstudio.data.base import (DEFAULT_PARAMS, DatasetInfo, PreparedData, SourceSpec, file_stamp, resolve_path,
                                 split_indices, split_sizes)
from netstudio.data.registry import SOURCE_PARAMS, SOURCES
from netstudio.errors import DataError

__all__ = ["DEFAULT_PARAMS", "DatasetInfo", "PreparedData", "SourceSpec", "SOURCES", "SOURCE_PARAMS", "file_stamp",
           "resolve_path", "split_indices", "split_sizes", "normalize_params", "relevant_key", "describe", "load",
           "clear_cache", "LOAD_CACHE_SIZE", "MISSING_CHOICES", "CATEGORICAL_CHOICES"]


# ----------------------------------------------------------------------------
# Params
# ----------------------------------------------------------------------------

_NORMALIZE = ("standard", "minmax", "none")
_TASKS = ("auto", "classification", "regression")
#: CSV: what happens to rows with an empty/NA feature cell
MISSING_CHOICES = ("drop", "mean", "median", "constant")
#: CSV: how text feature columns become numbers ("ids": integer token ids for an Embedding)
CATEGORICAL_CHOICES = ("onehot", "ordinal", "ids")


# ----------------------------------------------------------------------------
# Params
# ----------------------------------------------------------------------------


def normalize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in and values coerced; raise DataError for nonsense.

    The graph passes node params as stored (maybe strings typed by a user, maybe
    from an old file), so this does not trust types.
    """
    out = dict(DEFAULT_PARAMS)
    for k in DEFAULT_PARAMS:
        if k in params and params[k] is not None:
            out[k] = params[k]
    try:
        out["source"] = str(out["source"]).strip()
        out["path"] = str(out["path"]).strip()
        out["target_column"] = str(out["target_column"]).strip()
        out["feature_columns"] = str(out["feature_columns"]).strip()
        out["task"] = str(out["task"]).strip().lower()
        out["normalize"] = str(out["normalize"]).strip().lower()
        out["missing"] = str(out["missing"]).strip().lower()
        out["categorical"] = str(out["categorical"]).strip().lower()
        out["fill_value"] = float(out["fill_value"])
        out["val_fraction"] = float(out["val_fraction"])
        out["noise"] = float(out["noise"])
        for k in ("seed", "resize", "n_samples", "n_features"):
            out[k] = int(float(out[k])) if isinstance(out[k], str) else int(out[k])
        for k in ("grayscale", "download"):
            v = out[k]
            out[k] = v.strip().lower() in ("true", "1", "yes", "on") if isinstance(v, str) else bool(v)
    except (TypeError, ValueError) as e:
        raise DataError(f"Dataset: invalid parameter value ({e})") from None
    registry.get(out["source"])  # DataError for an unknown source
    if out["normalize"] not in _NORMALIZE:
        raise DataError(f"Dataset: normalize must be one of {', '.join(_NORMALIZE)}")
    if out["missing"] not in MISSING_CHOICES:
        raise DataError(f"Dataset: missing must be one of {', '.join(MISSING_CHOICES)}")
    if out["categorical"] not in CATEGORICAL_CHOICES:
        raise DataError(f"Dataset: categorical must be one of {', '.join(CATEGORICAL_CHOICES)}")
    if not math.isfinite(out["fill_value"]):
        raise DataError("Dataset: fill_value must be a finite number")
    if out["task"] not in _TASKS:
        raise DataError(f"Dataset: task must be one of {', '.join(_TASKS)}")
    if not 0.0 <= out["val_fraction"] <= 0.9:
        raise DataError(f"Dataset: val_fraction {out['val_fraction']:g} must be between 0 and 0.9")
    if out["seed"] < 0:
        raise DataError("Dataset: seed must be ≥ 0")
    if not 0 <= out["resize"] <= 512:
        raise DataError(f"Dataset: resize {out['resize']} must be between 0 and 512")
    if not 10 <= out["n_samples"] <= 1_000_000:
        raise DataError(f"Dataset: n_samples {out['n_samples']} must be between 10 and 1000000")
    if not 1 <= out["n_features"] <= 10_000:
        raise DataError(f"Dataset: n_features {out['n_features']} must be between 1 and 10000")
    if not 0.0 <= out["noise"] <= 10.0:
        raise DataError(f"Dataset: noise {out['noise']:g} must be between 0 and 10")
    return out


def relevant_key(p: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The params that change the data of ``p['source']`` (normalized params)."""
    return tuple((k, p[k]) for k in SOURCE_PARAMS[p["source"]])


# ----------------------------------------------------------------------------
# describe / load
# ----------------------------------------------------------------------------

class _Lru:
    """A small thread-safe LRU: ``get`` refreshes a hit; ``put`` evicts the oldest while ``too_big`` says so
    (the newest entry is always kept)."""

    def __init__(self, too_big: Callable[["OrderedDict[Any, Any]"], bool]) -> None:
        self._lock = threading.Lock()
        self._items: "OrderedDict[Any, Any]" = OrderedDict()
        self._too_big = too_big

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > 1 and self._too_big(self._items):
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_DESCRIBE_CACHE_SIZE = 32
LOAD_CACHE_SIZE = 3  # a few prepared sets; MNIST-size data is ~200 MB each
LOAD_CACHE_BYTES = 2 * 1024**3  # ...and never more than this in resident tensors (the newest is always kept)
_describe_cache = _Lru(lambda items: len(items) > _DESCRIBE_CACHE_SIZE)
_load_cache = _Lru(lambda items: len(items) > LOAD_CACHE_SIZE
                   or sum(map(_nbytes, items.values())) > LOAD_CACHE_BYTES)


def _stamp_for(p: Mapping[str, Any]) -> Any:
    """File-system stamp that invalidates caches when a user file changes (None for built-in data)."""
    return registry.get(p["source"]).stamp(dict(p))


def _cached(cache: _Lru, key: Any, fn: Callable[[dict[str, Any]], Any], p: dict[str, Any]) -> Any:
    hit = cache.get(key)
    if hit is not None:
        return hit
    value = _guard(fn, p)
    cache.put(key, value)
    return value


def describe(params: Mapping[str, Any]) -> DatasetInfo:
    """Static facts about the dataset ``params`` selects; fast, never loads big data.

    Built-in sets answer from constants; CSV files and image folders are scanned
    once per (params, file stamp). Torchvision sets are not checked for presence
    here (shapes stay available while designing); ``load`` reports a missing set.
    Raises DataError with a user-facing message.
    """
    p = normalize_params(params)
    stamp = _stamp_for(p)
    source = registry.get(p["source"])
    if stamp is None:  # built-ins: constants, no need to cache
        return _guard(source.describe, p)
    return _cached(_describe_cache, (relevant_key(p), stamp), source.describe, p)


def load(params: Mapping[str, Any]) -> PreparedData:
    """Load, split (seeded) and normalize the dataset; deterministic for a seed.

    Results are cached in-process (LRU of ``LOAD_CACHE_SIZE``) keyed by the
    params that affect the data plus the file stamp, so the returned tensors
    may be shared between calls: do not modify them in place.
    Raises DataError with a user-facing message.
    """
    p = normalize_params(params)
    return _cached(_load_cache, (relevant_key(p), _stamp_for(p)), registry.get(p["source"]).load, p)


def _nbytes(d: PreparedData) -> int:
    """Bytes held by a prepared set's resident tensors (lazy sets count as small)."""
    return sum(t.element_size() * t.nelement() for t in (d.train_x, d.train_y, d.val_x, d.val_y)
               if t is not None)


def clear_cache() -> None:
    """Forget every cached description and loaded dataset (frees memory)."""
    _describe_cache.clear()
    _load_cache.clear()
    for source in registry.all_sources():
        source.clear_cache()


def _guard(fn: Callable[[dict[str, Any]], Any], p: dict[str, Any]) -> Any:
    """Turn unexpected library errors into DataError so the UI shows a message, not a trace."""
    try:
        return fn(p)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"Not enough memory to load the {SOURCES[p['source']].label} dataset",
                        hint="use a smaller resize or fewer samples") from None
    except Exception as e:  # noqa: BLE001 - the message names the source and the cause
        raise DataError(f"Could not load the {SOURCES[p['source']].label} dataset: {e}") from e

