"""Image augmentation of training batches, on the training device, with per-sample randomness.

The Dataset node's ``augment_*`` params (off by default) describe it; :func:`augmenter_for`
turns them into an :class:`Augmenter` for one run and :func:`augmented_step` puts it in
front of the training step, so every training batch — resident rows or DataLoader batches,
single process or one rank of a DDP job — is augmented and nothing else is: validation and
test batches go through :func:`netstudio.training.batches.eval_batches`, which never sees it.

A batch is ``(N, C, H, W)`` in the data's normalized units. One affine resampling per batch
does the geometry (a per-sample shift of up to ``crop`` pixels — a random crop of the image
padded by ``crop`` —, horizontal flip, rotation, scale); the area outside the image is filled
with black (raw value 0). Colour jitter (3-channel images) works in [0, 1] pixel units.
Random erasing sets a random rectangle to 0 (the training mean once normalized).

All draws come from one generator on the device seeded from the run's seed, so the same
seed gives the same augmented batches. Exports are unaffected: augmentation is training-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from netstudio.errors import TrainingError

#: salt mixed into the run's seed, so augmentation draws are independent of shuffling and weights
_SEED_SALT = 0x5A17_A06


@dataclass(frozen=True)
class AugmentSettings:
    crop: int = 0
    flip: bool = False
    rotate: float = 0.0
    scale: float = 0.0
    jitter: float = 0.0
    erase: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.rotate or self.scale or self.jitter or self.erase)

    @property
    def geometric(self) -> bool:
        return bool(self.crop or self.flip or self.rotate or self.scale)

    def describe(self) -> str:
        parts = []
        if self.crop:
            parts.append(f"crop ±{self.crop} px")
        if self.flip:
            parts.append("flip")
        if self.rotate:
            parts.append(f"rotate ±{self.rotate:g}°")
        if self.scale:
            parts.append(f"scale ±{self.scale:g}")
        if self.jitter:
            parts.append(f"colour jitter {self.jitter:g}")
        if self.erase:
            parts.append(f"erase p={self.erase:g}")
        return ", ".join(parts) or "off"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "AugmentSettings":
        """The settings in a Dataset node's params (validated by the node; absent = off)."""
        def num(name: str) -> float:
            v = params.get(name)
            try:
                return float(v) if v is not None else 0.0
            except (TypeError, ValueError):
                return 0.0

        flip = params.get("augment_flip", False)
        if isinstance(flip, str):
            flip = flip.strip().lower() in ("true", "1", "yes", "on")
        return cls(crop=max(0, int(num("augment_crop"))), flip=bool(flip),
                   rotate=max(0.0, num("augment_rotate")), scale=min(max(0.0, num("augment_scale")), 0.9),
                   jitter=min(max(0.0, num("augment_jitter")), 1.0), erase=min(max(0.0, num("augment_erase")), 1.0))


class Augmenter:
    """Augments ``(N, C, H, W)`` batches; draws from its own generator on ``device``."""

    def __init__(self, settings: AugmentSettings, *, seed: int, device: torch.device | str,
                 mean: list[float] | None = None, std: list[float] | None = None, channels: int = 1) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.seed = (int(seed) ^ _SEED_SALT) & 0xFFFF_FFFF_FFFF
        self.generator.manual_seed(self.seed)
        # normalized x = (u - mean) / std with u the [0, 1] pixel value (mean/std None: x = u)
        if mean is not None and std is not None and len(mean) == channels == len(std):
            self.mean: torch.Tensor | None = torch.tensor(mean, dtype=torch.float32,
                                                          device=self.device).view(1, -1, 1, 1)
            self.std: torch.Tensor | None = torch.tensor(std, dtype=torch.float32,
                                                         device=self.device).view(1, -1, 1, 1)
            self.black: torch.Tensor | float = -self.mean / self.std
        else:
            self.mean = self.std = None
            self.black = 0.0

    def start_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s transforms from a stream of its own, so a run resumed from a
        checkpoint augments its remaining epochs exactly as the uninterrupted run would have."""
        self.generator.manual_seed(self.seed + 7919 * int(epoch))

    def _rand(self, n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, device=self.device)
        return u * (high - low) + low

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise TrainingError(f"Image augmentation needs image batches (N, C, H, W), got {tuple(x.shape)}",
                                hint="turn the Dataset's augment settings off for this source")
        s = self.settings
        out = x
        if s.geometric:
            out = self._geometry(out)
        if s.jitter and out.shape[1] == 3:
            out = self._jitter(out)
        if s.erase:
            out = self._erase(out)
        return out

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        n, _, h, w = x.shape
        dt = x.dtype if x.is_floating_point() else torch.float32
        one = torch.ones(n, device=self.device)
        a, b = one.clone(), torch.zeros(n, device=self.device)
        c, d = torch.zeros(n, device=self.device), one.clone()
        if s.rotate:
            ang = self._rand(n, -s.rotate, s.rotate) * (math.pi / 180.0)
            cos, sin = torch.cos(ang), torch.sin(ang)
            # a rotation in pixel units, written in affine_grid's [-1, 1] units of a w×h image
            a, b, c, d = cos, -sin * (h / w), sin * (w / h), cos
        if s.scale:
            z = self._rand(n, 1.0 - s.scale, 1.0 + s.scale)
            a, b, c, d = a / z, b / z, c / z, d / z
        if s.flip:
            sign = torch.where(self._rand(n) < 0.5, -1.0, 1.0)
            a, c = a * sign, c * sign
        tx = torch.zeros(n, device=self.device)
        ty = torch.zeros(n, device=self.device)
        if s.crop:
            p = s.crop
            gen = self.generator
            tx = torch.randint(-p, p + 1, (n,), generator=gen, device=self.device).float() * (2.0 / w)
            ty = torch.randint(-p, p + 1, (n,), generator=gen, device=self.device).float() * (2.0 / h)
        theta = torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1).to(dt)
        grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
        mode = "bilinear" if (s.rotate or s.scale) else "nearest"  # whole-pixel shifts and flips: exact
        src = x if x.is_floating_point() else x.float()
        # one resampling of the image plus a channel of ones: where that channel is below 1 the sample
        # came (partly) from outside the image, which is black (inside it is exactly 1: values stay exact)
        both = F.grid_sample(torch.cat([src, torch.ones_like(src[:, :1])], 1), grid, mode=mode,
                             padding_mode="zeros", align_corners=False)
        out = both[:, :-1] + self.black * (1.0 - both[:, -1:])
        return out.to(x.dtype)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        j = self.settings.jitter
        n = x.shape[0]
        u = x * self.std + self.mean if self.mean is not None and self.std is not None else x
        bright = self._rand(n, 1 - j, 1 + j).view(n, 1, 1, 1)
        contrast = self._rand(n, 1 - j, 1 + j).view(n, 1, 1, 1)
        sat = self._rand(n, 1 - j, 1 + j).view(n, 1, 1, 1)
        u = u * bright
        gray = (0.299 * u[:, 0] + 0.587 * u[:, 1] + 0.114 * u[:, 2]).unsqueeze(1)
        u = (u - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
        gray = (0.299 * u[:, 0] + 0.587 * u[:, 1] + 0.114 * u[:, 2]).unsqueeze(1)
        u = (u - gray) * sat + gray
        if self.mean is not None and self.std is not None:
            return (u.clamp(0.0, 1.0) - self.mean) / self.std
        return u

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        apply = self._rand(n) < self.settings.erase
        area = self._rand(n, 0.02, 0.33) * (h * w)
        ratio = torch.exp(self._rand(n, math.log(0.3), math.log(3.3)))
        eh = torch.sqrt(area * ratio).round().clamp(1, h)
        ew = torch.sqrt(area / ratio).round().clamp(1, w)
        top = (self._rand(n) * (h - eh + 1)).floor()
        left = (self._rand(n) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=self.device).view(1, h, 1)
        cols = torch.arange(w, device=self.device).view(1, 1, w)
        box = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
               & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
        mask = (box & apply.view(n, 1, 1)).unsqueeze(1)
        return x.masked_fill(mask, 0.0)


def augmenter_for(dataset_params: Mapping[str, Any], data: Any, seed: int, device: torch.device | str,
                  *, node_id: str | None = None, rank: int = 0) -> Augmenter | None:
    """The run's augmenter, or None when augmentation is off.

    Raises TrainingError (with the Dataset node's id) when it is on for data that are not images.
    ``rank``: a DDP rank's index, so ranks draw different transforms for their different samples.
    """
    settings = AugmentSettings.from_params(dataset_params)
    if not settings.active:
        return None
    shape = tuple(getattr(data.info, "feature_shape", ()))
    if len(shape) != 3:
        raise TrainingError(f"Image augmentation needs image features (channels × height × width); this dataset's "
                            f"samples are {'×'.join(str(v) for v in shape) or 'scalars'}", node_id=node_id,
                            hint="set the Dataset's augment settings back to 0 / off for this source")
    return Augmenter(settings, seed=seed + 1_000_003 * rank, device=device, mean=data.mean, std=data.std,
                     channels=int(shape[0]))


def augmented_step(step: Any, augmenter: Augmenter) -> Any:
    """``step`` with its batch augmented first (the training step only; evaluation never calls it)."""
    def step_with_augmentation(x: torch.Tensor, y: torch.Tensor) -> Any:
        return step(augmenter(x), y)

    return step_with_augmentation


def preview(dataset_params: Mapping[str, Any], n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, augmented): the first ``n`` training images and one augmentation of each, as
    ``(n, C, H, W)`` float pixel values in [0, 1], for showing (the Dataset node's preview strip).

    Loads the data (through the data cache); raises DataError/TrainingError like training would."""
    import netstudio.data as data_mod

    data = data_mod.load(dataset_params)
    settings = AugmentSettings.from_params(dataset_params)
    if data.resident:
        assert data.train_x is not None
        x = data.train_x[:n].float()
    else:
        train_set: Any = data.train_set
        x = torch.stack([train_set[i][0] for i in range(min(n, len(train_set)))]).float()
    shape = tuple(getattr(data.info, "feature_shape", ()))
    aug = augmenter_for(dataset_params, data, seed, "cpu") if settings.active else None
    out = aug(x) if aug is not None else x.clone()

    def pixels(t: torch.Tensor) -> torch.Tensor:
        if len(shape) == 3 and data.mean is not None and data.std is not None and len(data.mean) == shape[0]:
            mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
            return (t * std + mean).clamp(0.0, 1.0)
        lo, hi = t.amin(dim=(1, 2, 3), keepdim=True), t.amax(dim=(1, 2, 3), keepdim=True)
        return (t - lo) / (hi - lo).clamp_min(1e-12)

    return pixels(x), pixels(out)
