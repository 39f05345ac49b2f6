"""Torch-side preparation shared by every source: split, normalize, resize, wrap.

Imported lazily by ``load`` only (it imports torch at module level so the
Dataset classes are plain module-level classes that DataLoader workers can
pickle).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from netstudio.data.base import DatasetInfo, PreparedData, split_indices
from netstudio.data.standalone.data_images import channel_stats as _channel_stats
from netstudio.data.standalone.data_images import to_gray as _to_gray
from netstudio.data.standalone.data_tabular import feature_stats as _feature_stats
from netstudio.errors import DataError

#: Largest resident image tensor; bigger (resized) sets are served per sample instead.
RESIDENT_LIMIT_BYTES = 1536 * 1024 * 1024


# ----------------------------------------------------------------------------
# Tabular
# ----------------------------------------------------------------------------


def finish_tabular(info_kw: dict[str, Any], p: dict[str, Any], x: np.ndarray, y: np.ndarray, *,
                   scale_targets: bool = False, ids: bool = False, names: Sequence[str] | None = None
                   ) -> PreparedData:
    """Split, normalize and wrap a feature matrix ``x`` (N, F) and targets ``y``.

    ``y`` is int64 (N,) for classification or float (N, k) for regression.
    ``info_kw`` holds the DatasetInfo fields that do not depend on the split.
    ``ids``: ``x`` holds integer token ids (int64, never normalized).
    ``names``: the name of each column of ``x`` (for messages; default: the info's feature names).
    """
    from netstudio.errors import DataError

    n = x.shape[0]
    tr, va = split_indices(n, p["val_fraction"], p["seed"])
    names = list(names if names is not None else info_kw.get("feature_names") or ())
    stats = None
    if ids:
        x = np.asarray(x, dtype=np.int64)
    else:
        x = np.asarray(x, dtype=np.float64)
        # numpy would only warn on overflow (and the loss would then blame the learning rate)
        with np.errstate(all="ignore"):
            stats = _feature_stats(x[tr], p["normalize"])
            if stats is not None:
                x = (x - stats[0]) / stats[1]
            x32 = x.astype(np.float32)
            finite = np.isfinite(x32).all(axis=0)
            if stats is not None:
                finite &= np.isfinite(stats[0]) & np.isfinite(stats[1])
        if not finite.all():
            j = int(np.argmin(finite))
            name = names[j] if j < len(names) else f"column {j}"
            raise DataError(f"Feature '{name}' has values too large to train with (beyond float32's "
                            f"±3.4e38, or their spread overflows when normalized)",
                            hint="rescale that column (e.g. a log or a smaller unit) or leave it out")
    regression = info_kw["task"] == "regression"
    y = np.asarray(y, dtype=np.float64 if regression else np.int64)
    t_mean = t_std = None
    if regression:
        with np.errstate(all="ignore"):
            if not np.isfinite(y.astype(np.float32)).all():
                raise DataError("The regression target has values too large to train with (beyond float32's "
                                "±3.4e38)", hint="rescale the target column")
    if regression and scale_targets and p["normalize"] != "none":
        # small-scale targets let MSE + SGD(0.01) converge on diabetes/regression
        ts = _feature_stats(y[tr], "standard")
        assert ts is not None
        y = (y - ts[0]) / ts[1]
        t_mean, t_std = [float(v) for v in ts[0]], [float(v) for v in ts[1]]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64 if ids else np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32 if regression else np.int64))
    tri, vai = torch.from_numpy(tr), torch.from_numpy(va)
    info = DatasetInfo(**info_kw, feature_shape=tuple(xt.shape[1:]), n_train=len(tr), n_val=len(va))
    mean = None if stats is None else [float(v) for v in stats[0]]
    std = None if stats is None else [float(v) for v in stats[1]]
    return PreparedData(
        info=info, resident=True,
        train_x=xt[tri].contiguous(), train_y=yt[tri].contiguous(),
        val_x=xt[vai].contiguous(), val_y=yt[vai].contiguous(),
        mean=mean, std=std, target_mean=t_mean, target_std=t_std,
        preprocess={"kind": "ids", "columns": list(info_kw.get("feature_names") or ()), "vocabulary": [],
                    "text_columns": []} if ids else
        {"kind": "tabular", "columns": list(info_kw.get("feature_names") or ()), "categories": None,
         "encoding": None, "fill": None, "shift": mean, "scale": std},
    )


# ----------------------------------------------------------------------------
# Images held as tensors (digits, mnist_5k, torchvision sets)
# ----------------------------------------------------------------------------


def _nchw(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return images.permute(0, 3, 1, 2) if channels_last else images


def channel_stats(images: torch.Tensor, indices: torch.Tensor, *, channels_last: bool, pixel_scale: float,
                  grayscale: bool, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean/std over ``images[indices]`` in [0,1] units, chunked to bound memory
    (the exported program's function, :func:`netstudio.data.standalone.data_images.channel_stats`)."""
    return _channel_stats(images, indices, pixel_scale, grayscale, chunk=chunk, channels_last=channels_last)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    # antialias keeps downscaled images from aliasing (same as PIL's resize)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class ImageTensorDataset(Dataset):
    """Per-sample view of a stored uint8/float image tensor: scale, gray, resize, normalize.

    Used when a set is too big to keep resident once converted (CIFAR-10, or
    MNIST resized large). Returns ``(float32 (C,H,W), int64 scalar)``.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, *,
                 channels_last: bool, pixel_scale: float, size: tuple[int, int] | None, grayscale: bool,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.images = images
        self.targets = targets
        self.indices = indices
        self.channels_last = channels_last
        self.pixel_scale = float(pixel_scale)
        self.size = size
        self.grayscale = grayscale
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        x = _nchw(self.images[j:j + 1], self.channels_last).to(torch.float32) / self.pixel_scale
        if self.grayscale:
            x = _to_gray(x)
        if self.size is not None:
            x = _resize(x, self.size)
        x = x[0]
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x.contiguous(), self.targets[j]


def _image_norm(p: dict[str, Any], images: torch.Tensor, train_idx: torch.Tensor, *, channels_last: bool,
                pixel_scale: float, grayscale: bool, channels: int
                ) -> tuple[float, list[float] | None, list[float] | None]:
    """(pixel_scale, mean, std) for the chosen normalize mode."""
    how = p["normalize"]
    if how == "none":
        return 1.0, None, None  # raw pixel values, as stored
    if how == "minmax":
        return pixel_scale, [0.0] * channels, [1.0] * channels  # [0, 1] by the known pixel range
    mean, std = channel_stats(images, train_idx, channels_last=channels_last, pixel_scale=pixel_scale,
                              grayscale=grayscale)
    return pixel_scale, mean, std


def finish_images(info_kw: dict[str, Any], p: dict[str, Any], images: torch.Tensor, targets: torch.Tensor,
                  train_idx: torch.Tensor, val_idx: torch.Tensor, *, pixel_scale: float,
                  channels_last: bool = False, grayscale: bool = False, force_lazy: bool = False
                  ) -> PreparedData:
    """Normalize/resize an image tensor (N,C,H,W) or (N,H,W,C) and wrap it.

    Resident (whole float32 tensors) unless ``force_lazy`` or the converted set
    would exceed RESIDENT_LIMIT_BYTES, in which case samples are converted on
    access by :class:`ImageTensorDataset`.
    """
    n, *rest = images.shape
    c, h, w = (rest[2], rest[0], rest[1]) if channels_last else (rest[0], rest[1], rest[2])
    c_in = c
    if grayscale and c == 3:
        c = 1
    else:
        grayscale = False
    size = (p["resize"], p["resize"]) if p["resize"] else (h, w)
    scale, mean, std = _image_norm(p, images, train_idx, channels_last=channels_last, pixel_scale=pixel_scale,
                                   grayscale=grayscale, channels=c)
    targets = targets.to(torch.int64)
    info = DatasetInfo(**info_kw, feature_shape=(c, *size), n_train=len(train_idx), n_val=len(val_idx))
    nbytes = n * c * size[0] * size[1] * 4
    spec = image_spec((c_in, h, w), scale, grayscale, size if size != (h, w) else None, mean, std)
    if force_lazy or nbytes > RESIDENT_LIMIT_BYTES:
        kw: dict[str, Any] = dict(channels_last=channels_last, pixel_scale=scale,
                                  size=size if size != (h, w) else None, grayscale=grayscale, mean=mean, std=std)
        return PreparedData(info=info, resident=False,
                            train_set=ImageTensorDataset(images, targets, train_idx, **kw),
                            val_set=ImageTensorDataset(images, targets, val_idx, **kw),
                            mean=mean, std=std, pixel_scale=scale, preprocess=spec)

    def convert(idx: torch.Tensor) -> torch.Tensor:
        out = torch.empty((len(idx), c, *size), dtype=torch.float32)
        for start in range(0, len(idx), 4096):  # chunks bound the float64/resize temporaries
            x = _nchw(images[idx[start:start + 4096]], channels_last).to(torch.float32) / scale
            if grayscale:
                x = _to_gray(x)
            x = _resize(x, size)
            if mean is not None and std is not None:
                x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
            out[start:start + len(x)] = x
        return out

    return PreparedData(info=info, resident=True,
                        train_x=convert(train_idx), train_y=targets[train_idx].contiguous(),
                        val_x=convert(val_idx), val_y=targets[val_idx].contiguous(),
                        mean=mean, std=std, pixel_scale=scale, preprocess=spec)


def image_spec(input_shape: Sequence[int], pixel_scale: float, gray: bool, size: Sequence[int] | None,
               mean: Sequence[float] | None, std: Sequence[float] | None) -> dict[str, Any]:
    """The preprocessing of an image source as data (see :mod:`netstudio.project.preprocess`):
    raw pixels (C, H, W) → ``/ pixel_scale`` → luma if ``gray`` → bilinear resize to ``size`` → ``(x - mean) / std``."""
    return {"kind": "image", "input_shape": [int(v) for v in input_shape], "pixel_scale": float(pixel_scale),
            "gray": bool(gray), "size": None if size is None else [int(v) for v in size],
            "mean": None if mean is None else [float(v) for v in mean],
            "std": None if std is None else [float(v) for v in std]}


def decode_image(path: str, mode: str, size: tuple[int, int]) -> "torch.Tensor":
    """One image → float32 (C, H, W) with raw 0–255 values (the exported program's decoder; DataError if unreadable)."""
    from netstudio.data.standalone.data_folder import decode_image as decode

    try:
        return decode(path, mode, size)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"Cannot read image {path}: {e}") from None


class ImageFileDataset(Dataset):
    """Decodes image files on access: ``(float32 (C,H,W), int64 scalar class index)``."""

    def __init__(self, samples: Sequence[tuple[str, int]], mode: str, size: tuple[int, int], pixel_scale: float,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.samples = list(samples)
        self.mode = mode  # PIL mode every image is converted to ("L" or "RGB")
        self.size = size
        self.pixel_scale = float(pixel_scale)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[i]
        x = decode_image(path, self.mode, self.size) / self.pixel_scale
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x, torch.tensor(label, dtype=torch.int64)


def seeded_split(n: int, p: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    tr, va = split_indices(n, p["val_fraction"], p["seed"])
    return torch.from_numpy(tr), torch.from_numpy(va)


def is_integral(v: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(v)) and np.all(np.floor(v) == v))


__all__ = ["finish_tabular", "finish_images", "ImageTensorDataset", "ImageFileDataset", "channel_stats", "seeded_split",
           "is_integral", "RESIDENT_LIMIT_BYTES"]
