"""The train/validation split, shared by NetStudio and the exported training program."""

import numpy as np


def split_indices(n, val_fraction, seed):
    """A seeded numpy permutation of range(n) -> (train indices, validation indices), int64.

    The first n_val = round(n * val_fraction) entries (at least 1 when val_fraction > 0, at most
    n - 1) are validation. numpy's RandomState stream is frozen across versions, so a project
    trains on the same split on every machine.
    """
    n_val = 0 if val_fraction <= 0 else min(max(1, round(n * val_fraction)), n - 1)
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    return perm[n_val:], perm[:n_val]
