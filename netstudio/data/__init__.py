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
"""

from netstudio.data.core import (DEFAULT_PARAMS, LOAD_CACHE_SIZE, SOURCE_PARAMS, SOURCES, DatasetInfo,
                                 PreparedData, SourceSpec, clear_cache, describe, load, normalize_params)

__all__ = ["DatasetInfo", "PreparedData", "SourceSpec", "SOURCES", "SOURCE_PARAMS", "DEFAULT_PARAMS",
           "LOAD_CACHE_SIZE", "describe", "load", "clear_cache", "normalize_params"]
