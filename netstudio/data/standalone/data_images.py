"""Images held as one tensor: luma, per-channel statistics, and the normalized train/val tensors."""

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, like PIL's convert("L")


def to_gray(x):
    """(N, 3, H, W) -> (N, 1, H, W); other channel counts are returned unchanged."""
    if x.shape[1] != 3:
        return x
    return (x * torch.tensor(GRAY_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def channel_stats(images, indices, pixel_scale, gray, chunk=4096, channels_last=False):
    """Per-channel mean/std of images[indices] in [0, 1] units (float64 sums, chunked for memory).

    Computed on the stored (un-resized) pixels: bilinear resizing is an average, so the
    statistics barely move and do not depend on how the set is served.
    """
    total = 0
    s = s2 = torch.zeros(0, dtype=torch.float64)  # per-channel sums, sized by the first chunk
    for start in range(0, len(indices), chunk):
        x = images[indices[start:start + chunk]]
        if channels_last:
            x = x.permute(0, 3, 1, 2)
        x = x.to(torch.float64) / pixel_scale
        if gray:
            x = to_gray(x)
        cs, cs2 = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        s, s2 = (cs, cs2) if total == 0 else (s + cs, s2 + cs2)
        total += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / total
    std = (s2 / total - mean * mean).clamp_min(0.0).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return [float(v) for v in mean], [float(v) for v in std]


def prepare_images(images, targets, train_idx, val_idx, pixel_scale, normalize, resize, fitted, grayscale=False,
                   chunk=4096):
    """Raw pixels (N, C, H, W) -> normalized float32 train/val tensors, resized to resize x resize if set.

    normalize: "standard" (per-channel z-score fitted on the training images), "minmax" ([0, 1] by the
    known pixel range) or "none" (raw pixel values). What was fitted is recorded in the dict ``fitted``.
    """
    c, h, w = images.shape[1:]
    gray = grayscale and c == 3
    c = 1 if gray else c
    size = (resize, resize) if resize else (h, w)
    if normalize == "none":
        scale, mean, std = 1.0, None, None
    elif normalize == "minmax":
        scale, mean, std = pixel_scale, [0.0] * c, [1.0] * c
    else:
        scale = pixel_scale
        mean, std = channel_stats(images, train_idx, pixel_scale, gray)
    fitted.update(pixel_scale=scale, gray=gray, size=list(size) if size != (h, w) else None, mean=mean, std=std)

    def convert(idx):
        out = torch.empty((len(idx), c, *size), dtype=torch.float32)
        for start in range(0, len(idx), chunk):
            x = images[idx[start:start + chunk]].to(torch.float32) / scale
            if gray:
                x = to_gray(x)
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            if mean is not None:
                x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
            out[start:start + len(x)] = x
        return out

    targets = targets.to(torch.int64)
    return convert(train_idx), targets[train_idx].contiguous(), convert(val_idx), targets[val_idx].contiguous()
