"""The records every data source shares: dataset facts, prepared data, the source protocol.

Source modules import from here (and from :mod:`netstudio.data.registry`), never from
:mod:`netstudio.data.core`, so there is no import circle between ``core`` and the sources.
No torch/numpy at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

        assert self.train_x is not None and self.train_y is not None and self.val_x is not None and self.val_y is not None
        return TensorDataset(self.train_x, self.train_y), TensorDataset(self.val_x, self.val_y)


@dataclass(frozen=True)
class SourceSpec:
    label: str
    kind: str          # 'tabular' | 'image' | 'synthetic'
    description: str
    offline: bool      # usable without any download


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


@dataclass(frozen=True)
class ExportLoader:
    """What a source writes into the standalone training program.

    ``settings``: constant lines after the common ones (VAL_FRACTION, DATA_SEED, NORMALIZE);
    ``modules``: the runtime modules of :mod:`netstudio.data.standalone` the code needs, pasted in
    this order; ``body``: the program's ``load_data(data_path=None)`` returning
    ``(train_x, train_y, val_x, val_y)`` CPU tensors, and any helper it needs.
    """

    body: str
    settings: tuple[str, ...] = ()
    modules: tuple[str, ...] = field(default=())


class DataSource:
    """One dataset source: what the Dataset node offers, and how to describe, load and export it.

    Subclass it in a module of its own and pass an instance to
    :func:`netstudio.data.registry.register`; ``describe``/``load`` receive normalized params
    (see :func:`netstudio.data.core.normalize_params`). A module may register several names with
    one class (e.g. the sklearn sets).
    """

    def __init__(self, name: str, spec: SourceSpec, params: tuple[str, ...]) -> None:
        self.name = name
        self.spec = spec
        #: the Dataset params that change this source's data (cache keys; the node hides the others)
        self.params = params

    @property
    def uses_split(self) -> bool:
        """Whether val_fraction/seed split the samples (False: the source brings its own split)."""
        return "val_fraction" in self.params

    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        """Static facts; fast (runs on every graph edit)."""
        raise NotImplementedError

    def load(self, p: dict[str, Any]) -> PreparedData:
        """Load, split and normalize."""
        raise NotImplementedError

    def stamp(self, p: dict[str, Any]) -> Any:
        """A value that changes when the user's files change (None: the data depends on params only)."""
        return None

    def export_loader(self, p: dict[str, Any]) -> ExportLoader | None:
        """The standalone program's loader, or None when the program cannot load this source itself."""
        return None

    def clear_cache(self) -> None:
        """Forget whatever the source keeps between calls (parsed files, scans)."""


# ----------------------------------------------------------------------------
# Helpers for sources
# ----------------------------------------------------------------------------

DIGIT_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))


def classification_info(source: str, names: tuple[str, ...], is_image: bool,
                        feature_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """The DatasetInfo fields of a classification set that do not depend on the split."""
    return dict(source=source, feature_dtype="float32", target_shape=(), target_dtype="int64",
                task="classification", num_classes=len(names), class_names=names, is_image=is_image,
                feature_names=feature_names)


def regression_info(source: str, feature_names: tuple[str, ...]) -> dict[str, Any]:
    """The DatasetInfo fields of a one-target regression set that do not depend on the split."""
    return dict(source=source, feature_dtype="float32", target_shape=(1,), target_dtype="float32",
                task="regression", num_classes=None, class_names=(), is_image=False,
                feature_names=feature_names)


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

    The same function the exported training program runs (:mod:`netstudio.data.standalone.split`);
    this one first checks the sizes and raises DataError.
    """
    from netstudio.data.standalone.split import split_indices as split

    split_sizes(n, val_fraction)
    return split(n, val_fraction, seed)


def export_literal(v: Any) -> str:
    """A Python literal for a plain value in generated code (floats keep full precision through repr)."""
    if isinstance(v, float) and v != v:  # NaN never reaches here from validated params, but stay valid
        return "float('nan')"
    return repr(v)


def file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


def resolve_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path)) if path else ""
