"""Tabular preparation: per-column statistics fitted on the training rows, then tensors."""

import numpy as np
import torch


def feature_stats(x, normalize):
    """(shift, scale) per column of x (the training rows), or None when normalize is "none".

    "standard" is a z-score, "minmax" maps min/max to 0/1; constant columns are only centred.
    """
    if normalize == "none" or len(x) == 0:
        return None
    x = x.astype(np.float64, copy=False)
    if normalize == "standard":
        shift, scale = x.mean(axis=0), x.std(axis=0)
    else:  # minmax
        shift = x.min(axis=0)
        scale = x.max(axis=0) - shift
    return shift, np.where(scale > 1e-12, scale, 1.0)


def prepare_tabular(x, y, train_idx, val_idx, normalize, fitted, regression, scale_targets=False):
    """Normalize a feature matrix (N, F) and its targets, split them, and return CPU tensors.

    What was fitted (shift/scale, target_shift/target_scale) is recorded in the dict ``fitted``.
    """
    x = np.array(x, dtype=np.float64)  # a writable copy (pandas may hand out read-only arrays)
    stats = feature_stats(x[train_idx], normalize)
    if stats is not None:
        x = (x - stats[0]) / stats[1]
        fitted.update(shift=stats[0].tolist(), scale=stats[1].tolist())
    y = np.array(y, dtype=np.float64 if regression else np.int64)
    if regression and scale_targets and normalize != "none":
        # standardized targets let MSE with a plain SGD learning rate converge
        y_shift, y_scale = feature_stats(y[train_idx], "standard")
        y = (y - y_shift) / y_scale
        fitted.update(target_shift=y_shift.tolist(), target_scale=y_scale.tolist())
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32 if regression else np.int64))
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
