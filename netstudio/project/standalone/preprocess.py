"""The data preprocessing of the exported program as modules, so the saved model takes raw inputs.

Copied into train.py by the script export; NetStudio's own exports trace the same Postprocess.
"""

import torch
import torch.nn.functional as F
from torch import nn

# What load_data fitted (scaling, mean/std) so the saved model can start from raw inputs.
FITTED: dict = {}


class Preprocess(nn.Module):
    """Raw input (pixels 0-255 / 0-16, raw table columns) -> the features the model trains on."""

    def __init__(self, fitted):
        super().__init__()
        self.pixel_scale = float(fitted.get("pixel_scale", 1.0))
        self.gray = bool(fitted.get("gray", False))
        self.size = tuple(fitted["size"]) if fitted.get("size") else None
        image = "pixel_scale" in fitted
        shift, scale = (fitted.get("mean"), fitted.get("std")) if image else (fitted.get("shift"), fitted.get("scale"))
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("shift", None if shift is None else torch.tensor(shift, dtype=torch.float32).view(shape))
        self.register_buffer("scale", None if scale is None else torch.tensor(scale, dtype=torch.float32).view(shape))
        self.register_buffer("gray_weights", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1) if self.gray else None)

    def forward(self, x):
        x = x.to(torch.float32)
        if self.pixel_scale != 1.0:
            x = x / self.pixel_scale
        if self.gray:
            x = (x * self.gray_weights).sum(dim=1, keepdim=True)
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if self.shift is not None:
            x = (x - self.shift) / self.scale
        return x


class Postprocess(nn.Module):
    """Standardized regression output -> the target's own units (y * target_scale + target_shift)."""

    def __init__(self, fitted):
        super().__init__()
        self.register_buffer("scale", torch.tensor(fitted["target_scale"], dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(fitted["target_shift"], dtype=torch.float32))

    def forward(self, y):
        if isinstance(y, tuple):  # several outputs: the first is the regression's
            return (y[0] * self.scale + self.shift, *y[1:])
        return y * self.scale + self.shift


class WithPreprocess(nn.Module):
    """The saved model: preprocess, the network, and postprocess when load_data standardized the target."""

    def __init__(self, preprocess, model, postprocess=None):
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.postprocess = postprocess

    def forward(self, x):
        y = self.model(self.preprocess(x))
        return y if self.postprocess is None else self.postprocess(y)
