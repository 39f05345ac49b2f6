"""Learning-rate finder: a range test on a copy of the model.

:func:`lr_find` trains a *deep copy* of the model with a fresh optimizer (built by
the plan, as for a run) for up to ``steps`` batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``: step ``i`` of ``n`` uses
``start_lr · (end_lr / start_lr) ** (i / (n - 1))``. It records every batch's loss
and an exponentially smoothed loss (``beta``, bias-corrected), and stops early
once the smoothed loss exceeds ``diverge ×`` its minimum so far, or a loss is not
finite. The caller's model, optimizer, plan and random-number state are left
exactly as they were (the test compares the weights bit for bit).

The suggestion (:func:`suggest_lr`) is the learning rate where the smoothed loss
falls fastest: the most negative slope of the smoothed loss against log10(lr),
searched between the first tenth of the curve (where the smoothing has not
settled yet) and the point of lowest smoothed loss. A curve without a falling
stretch gives no suggestion (None). The lowest-loss lr divided by ten, a second
common rule of thumb, is returned as ``lr_min_loss / 10`` alongside.

Step controls of the settings (clipping, mixed precision) apply as in training;
warm-up does not (the range test *is* a schedule). Nothing here imports Qt.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from netstudio.errors import TrainingError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from netstudio.compiler.build import TrainingPlan
    from netstudio.data import PreparedData
    from netstudio.training.config import TrainConfig

START_LR = 1e-7
END_LR = 10.0
STEPS = 100
BETA = 0.9        # smoothing of the loss curve (0.98 lagged almost a decade of lr behind over 100 steps)
DIVERGE = 4.0     # stop once the smoothed loss is this many times its minimum


@dataclass
class LrFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)     # raw per-batch losses
    smoothed: list[float] = field(default_factory=list)   # exponentially smoothed, bias-corrected
    suggestion: float | None = None                       # steepest descent (see the module text)
    lr_min_loss: float | None = None                      # lr of the lowest smoothed loss
    stopped: str = "finished"                             # finished | diverged | stopped (by the user)

    def to_dict(self) -> dict[str, Any]:
        return {"lrs": list(self.lrs), "losses": list(self.losses), "smoothed": list(self.smoothed),
                "suggestion": self.suggestion, "lr_min_loss": self.lr_min_loss, "stopped": self.stopped}


def lr_at(i: int, steps: int, start_lr: float, end_lr: float) -> float:
    """The learning rate of step ``i`` (0-based) of an exponential ramp of ``steps`` steps."""
    if steps <= 1:
        return start_lr
    return start_lr * (end_lr / start_lr) ** (i / (steps - 1))


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr of the steepest descent of ``smoothed`` against log10(lr) (None: no falling stretch)."""
    n = len(lrs)
    if n < 5:
        return None
    finite = [i for i in range(n) if math.isfinite(smoothed[i])]
    if len(finite) < 5:
        return None
    lowest = min(finite, key=lambda i: smoothed[i])
    start = max(1, n // 10)
    best_i, best_slope = None, 0.0
    for i in range(start, lowest + 1):
        a, b = i - 1, min(i + 1, n - 1)
        if not (math.isfinite(smoothed[a]) and math.isfinite(smoothed[b])) or b == a:
            continue
        slope = (smoothed[b] - smoothed[a]) / (math.log10(lrs[b]) - math.log10(lrs[a]))
        if slope < best_slope:
            best_i, best_slope = i, slope
    return None if best_i is None else float(lrs[best_i])


def _batches(data: "PreparedData", batch_size: int, gen: torch.Generator, device: torch.device
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches, reshuffled epoch after epoch, for as long as they are asked for."""
    from netstudio.training.batches import loader

    if data.resident:
        assert data.train_x is not None and data.train_y is not None
        x, y = data.train_x, data.train_y
        n = int(x.shape[0])
        while True:
            perm = torch.randperm(n, generator=gen)
            for a in range(0, n, batch_size):
                idx = perm[a:a + batch_size]
                yield x.index_select(0, idx).to(device), y.index_select(0, idx).to(device)
    else:
        while True:
            for xb, yb in loader(data.train_set, batch_size, True, gen, device):
                yield xb.to(device), yb.to(device)


def lr_find(plan: "TrainingPlan", data: "PreparedData", config: "TrainConfig", *,
            start_lr: float = START_LR, end_lr: float = END_LR, steps: int = STEPS, beta: float = BETA,
            diverge: float = DIVERGE, model: "nn.Module | None" = None,
            report: Callable[[dict[str, Any]], None] | None = None,
            stop_event: threading.Event | None = None) -> LrFindResult:
    """Run the range test (see the module text); ``model``: start from these weights (else the plan's).

    ``report`` is called after every step with ``{"kind": "lr_find", "step", "steps", "lr", "loss",
    "smoothed"}``. Raises TrainingError for an impossible range or a device that cannot be used.
    """
    from netstudio.training.controls import step_controls
    from netstudio.training.devices import resolve_device
    from netstudio.training.engine import _plan_on
    from netstudio.training.fastpath import make_step

    if getattr(plan, "multi_phase", False):
        names = ", ".join(ph.name for ph in plan.phases)
        raise TrainingError(f"The learning-rate range test follows one optimizer's loss; this graph trains in "
                            f"{len(plan.phases)} phases ({names})", node_id=plan.phases[0].optimizer_node,
                            hint="set each optimizer's learning rate by hand (GANs often use 0.0002 with beta1 0.5)")
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise TrainingError(f"The learning-rate range must rise from above 0: got {start_lr:g} to {end_lr:g}")
    if steps < 2:
        raise TrainingError(f"The range test needs at least 2 steps, got {steps}")
    device = resolve_device(config.device)
    source = model if model is not None else plan.model
    result = LrFindResult()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the caller's random state stays as it was
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        run_plan = _plan_on(plan, device)
        net = run_plan.train_mode(copy.deepcopy(source).to(device))
        optimizer = run_plan.make_optimizer(net)
        step = make_step(net, run_plan, optimizer, step_controls(config, device))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        avg, best = 0.0, math.inf
        batches = _batches(data, config.batch_size, gen, device)
        for i in range(steps):
            if stop_event is not None and stop_event.is_set():
                result.stopped = "stopped"
                break
            lr = lr_at(i, steps, start_lr, end_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = next(batches)
            for p in params:
                p.grad = None
            loss_t, _ = step(x, y)
            loss = float(loss_t)
            result.lrs.append(lr)
            result.losses.append(loss)
            if not math.isfinite(loss):
                result.smoothed.append(math.inf)
                result.stopped = "diverged"
                break
            avg = beta * avg + (1 - beta) * loss
            smooth = avg / (1 - beta ** (i + 1))
            result.smoothed.append(smooth)
            best = min(best, smooth)
            if report is not None:
                report({"kind": "lr_find", "step": i + 1, "steps": steps, "lr": lr, "loss": loss,
                        "smoothed": smooth})
            if smooth > diverge * best and i > 0:
                result.stopped = "diverged"
                break
        del net, optimizer, step
    finite = [i for i, v in enumerate(result.smoothed) if math.isfinite(v)]
    if finite:
        result.lr_min_loss = result.lrs[min(finite, key=lambda i: result.smoothed[i])]
    result.suggestion = suggest_lr(result.lrs, result.smoothed)
    return result
