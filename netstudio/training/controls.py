"""Step controls: gradient clipping, learning-rate warm-up and mixed precision.

They are settings of :class:`netstudio.training.config.TrainConfig`, applied by
the one training step every path uses (``fastpath.make_step`` for a single
process, ``distributed.DistStep`` for a rank of a DDP job), so the CLI, the
ranks and the app's worker all honour them.

* **Clipping** (``clip_norm`` / ``clip_value``, 0 = off) runs between backward and
  the optimizer step. By norm, the gradients of all parameters are scaled together
  so that their total L2 norm is at most ``clip_norm``; by value, every element is
  clamped to ±``clip_value``. Both together: by value first, then by norm. With a
  gradient scaler (fp16) the gradients are unscaled first.
* **Warm-up** (``warmup_epochs``): the learning rate is multiplied by
  ``(step + 1) / warmup_steps`` for the first ``warmup_epochs × steps_per_epoch``
  batches, on top of whatever the graph's scheduler (if any) has set. The factor
  is applied around each step and taken off again, so the scheduler never sees
  it: it composes with every scheduler (chainable ones included).
* **Mixed precision** (``precision``): ``bf16`` runs forward and loss under
  ``torch.autocast`` with bfloat16 (CPU, and CUDA GPUs that support it); ``fp16``
  (CUDA only) adds a ``torch.amp.GradScaler`` against underflowing gradients.
  Weights and optimizer state stay float32; validation runs in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from netstudio.errors import TrainingError


@dataclass
class StepControls:
    """What the training step does besides forward/backward/step (all off by default)."""

    clip_norm: float = 0.0
    clip_value: float = 0.0
    #: autocast dtype (None: float32 throughout) and the device type it applies to
    autocast_dtype: torch.dtype | None = None
    device_type: str = "cpu"
    scaler: Any = None  # torch.amp.GradScaler for fp16

    @property
    def clips(self) -> bool:
        return self.clip_norm > 0 or self.clip_value > 0

    @property
    def active(self) -> bool:
        return self.clips or self.autocast_dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # no weight-cast cache: a cached cast would be freed between CUDA-graph replays
        return torch.autocast(self.device_type, dtype=self.autocast_dtype, cache_enabled=False)

    def clip(self, params: list[torch.Tensor]) -> None:
        """Clip the gradients of ``params`` in place (by value, then by norm)."""
        grads = [p for p in params if p.grad is not None]
        if not grads:
            return
        if self.clip_value > 0:
            torch.nn.utils.clip_grad_value_(grads, self.clip_value)
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(grads, self.clip_norm)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()``, clipping, ``optimizer.step()`` — through the gradient scaler for fp16."""
        scaler = self.scaler
        if scaler is None:
            loss.backward()
            if self.clips:
                self.clip([p for g in optimizer.param_groups for p in g["params"]])
            optimizer.step()
            return
        scaler.scale(loss).backward()
        if self.clips:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            self.clip([p for g in optimizer.param_groups for p in g["params"]])
        scaler.step(optimizer)
        scaler.update()


def bf16_supported(device: torch.device) -> bool:
    """Can autocast run in bfloat16 on ``device``?"""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                a = torch.ones(2, 2)
                return (a @ a).dtype == torch.bfloat16
        except Exception:  # noqa: BLE001 - any failure means: not here
            return False
    return device.type == "mps"


def step_controls(config: Any, device: torch.device) -> StepControls:
    """The step controls of ``config`` on ``device``; TrainingError for a precision the device lacks."""
    ctl = StepControls(clip_norm=float(config.clip_norm), clip_value=float(config.clip_value),
                       device_type=device.type)
    precision = config.precision
    if precision == "bf16":
        if not bf16_supported(device):
            raise TrainingError(f"bf16 mixed precision is not supported on {device}",
                                hint="set precision to off in the training settings")
        ctl.autocast_dtype = torch.bfloat16
    elif precision == "fp16":
        if device.type != "cuda":
            raise TrainingError(f"fp16 mixed precision needs a CUDA GPU (training runs on {device})",
                                hint="use bf16 on the CPU, or precision off")
        ctl.autocast_dtype = torch.float16
        ctl.scaler = torch.amp.GradScaler("cuda")
    return ctl


def fast_path_blocker(ctl: StepControls | None, warmup_epochs: int) -> str | None:
    """Why these controls keep a run off the captured CUDA-graph fast path (None: they do not)."""
    if warmup_epochs > 0:
        return "the learning-rate warm-up changes the learning rate during training"
    if ctl is not None and ctl.scaler is not None:
        return "fp16 uses a gradient scaler, which checks every step's gradients on the host"
    return None


class Warmup:
    """Linear learning-rate warm-up over the first ``total`` steps, on top of the scheduler's lr."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.optimizer = optimizer
        self.total = max(0, int(total_steps))

    def factor(self, step: int) -> float:
        """The lr multiplier at (0-based) global step ``step``."""
        if step >= self.total:
            return 1.0
        return (step + 1) / self.total

    @contextlib.contextmanager
    def applied(self, step: int) -> Iterator[None]:
        """Scale every group's lr for this step, then put the scheduler's lr back."""
        f = self.factor(step)
        if f >= 1.0:
            yield
            return
        groups = self.optimizer.param_groups
        saved = [g["lr"] for g in groups]
        for g, lr in zip(groups, saved):
            g["lr"] = lr * f if not isinstance(lr, torch.Tensor) else lr.mul(f)
        try:
            yield
        finally:
            for g, lr in zip(groups, saved):
                g["lr"] = lr
