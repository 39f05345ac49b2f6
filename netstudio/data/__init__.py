"""NetStudio's data layer: dataset descriptions for shape inference, and loading for training.

* :func:`describe` — fast static facts (shapes, dtypes, classes, split sizes); the
  editor calls it on every graph edit.
* :func:`load` — load, split (seeded) and normalize; cached in-process, so the
  returned tensors are shared and must not be modified in place.

No Qt, and no torch/numpy/pandas/sklearn at import time (they are imported
inside the functions that need them) so the editor starts fast.

Conventions worth knowing:

* Split: a ``numpy.random.RandomState(seed)`` permutation; the first
  ``n_val = round(N * val_fraction)`` (at least 1 when val_fraction > 0, at most
  N-1) are validation. Torchvision sets use their official test split as
  validation and ignore ``val_fraction``/``seed``.
* Normalization is fitted on the train split only. Tabular ``standard`` is a
  per-feature z-score, ``minmax`` maps train min/max to 0/1. Images are divided by
  their pixel range (``pixel_scale``: 255, or 16 for sklearn digits) then
  ``standard`` applies per-channel mean/std, ``minmax`` stops at [0, 1], and
  ``none`` keeps raw pixel values.
* Targets are raw, except the regression targets of ``diabetes`` and
  ``regression``, standardized with train mean/std (``target_mean``/``target_std``)
  unless normalize is ``none`` — so MSE + SGD(0.01) converges on them.


Sources: each dataset source is a :class:`DataSource` in a module of its own that registers
itself in :mod:`netstudio.data.registry` when imported; this package imports the bundled ones
below. ``core`` dispatches by name through the registry and imports no source module.
"""

from netstudio.data.base import DataSource, ExportLoader
from netstudio.data.core import (DEFAULT_PARAMS, LOAD_CACHE_SIZE, SOURCE_PARAMS, SOURCES, DatasetInfo,
                                 PreparedData, SourceSpec, clear_cache, describe, load, normalize_params)
from netstudio.data.registry import register, unregister

# the bundled sources, in the order the Dataset node lists them (each registers itself)
from netstudio.data import builtin as _builtin  # noqa: E402,F401  digits, iris, wine, breast_cancer, diabetes, mnist_5k
from netstudio.data import synthetic as _synthetic  # noqa: E402,F401  moons, circles, regression
from netstudio.data import torchvision_sets as _torchvision_sets  # noqa: E402,F401  mnist, fashion_mnist, cifar10
from netstudio.data import csv_source as _csv_source  # noqa: E402,F401  csv
from netstudio.data import images as _images  # noqa: E402,F401  image_folder

__all__ = ["DatasetInfo", "PreparedData", "SourceSpec", "DataSource", "ExportLoader", "SOURCES", "SOURCE_PARAMS",
           "DEFAULT_PARAMS", "LOAD_CACHE_SIZE", "describe", "load", "clear_cache", "normalize_params", "register",
           "unregister"]
