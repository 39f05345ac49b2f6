"""The training step of a multi-phase plan (several optimizers: a GAN's discriminator and generator).

Every batch runs the plan's phases in order (:mod:`netstudio.compiler.phases`). A phase:

1. holds every weight still except its own optimizer's (``requires_grad`` off), so no gradient
   reaches the other phases' weights — a generator's samples reach the discriminator's phase
   detached, and the generator's phase back-propagates *through* the discriminator without
   touching its weights;
2. clears its own weights' gradients, runs forward, sums the losses wired to its optimizer
   (weighted), back-propagates (clipping and mixed precision as in the plain step) and steps its
   own optimizer only.

The step returns the sum of the phases' losses (the epoch's training loss) and keeps each phase's
loss summed on the device (:attr:`PhasedStep.sums`), read only when the trainer reports — the
``phases`` event (:mod:`netstudio.training.events`). In a distributed job (``dist``) each phase
all-reduces its own weights' gradients before stepping, with the DDP loss scaling of a global batch. There
is no DDP wrapper, so the step does what DDP would do to the model's buffers (BatchNorm running statistics):
rank 0's are broadcast to every rank before each phase's forward, and once more at the end of every epoch
(:meth:`PhasedStep.sync_buffers`), so every rank ends an epoch with the same buffers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn


class PhasedStep:
    """``step(x, y) -> (summed loss, None)`` over the phases of ``plan`` (see the module's text)."""

    def __init__(self, model: nn.Module, plan: Any, optimizer: Any, controls: Any = None, dist: Any = None) -> None:
        self.model, self.plan, self.optimizer, self.controls, self.dist = model, plan, optimizer, controls, dist
        self.names = [ph.name for ph in plan.phases]
        self.params = [[p for g in o.param_groups for p in g["params"]] for o in optimizer.optimizers]
        self._all = [p for ps in self.params for p in ps]
        self._buffers = [b for b in model.buffers()]
        self.sums: torch.Tensor | None = None   # per phase: sum over samples of the phase's loss
        self.samples = 0
        self.global_n = 0  # set by a distributed job's batches before each call

    def reset(self) -> None:
        if self.sums is not None:
            self.sums.zero_()
        self.samples = 0

    def means(self) -> dict[str, float]:
        """Each phase's mean loss per sample since the last :meth:`reset` (synchronises)."""
        if self.sums is None or self.samples == 0:
            return {}
        return {n: float(v) / self.samples for n, v in zip(self.names, self.sums.tolist())}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = int(x.shape[0])
        if self.sums is None:
            self.sums = torch.zeros(len(self.names), dtype=torch.float32, device=x.device)
        ctl = self.controls
        total: torch.Tensor | None = None
        try:
            for i, (phase, opt) in enumerate(zip(self.plan.phases, self.optimizer.optimizers)):
                mine = self.params[i]
                for p in self._all:
                    p.requires_grad_(False)
                for p in mine:
                    p.requires_grad_(True)
                    p.grad = None
                self.sync_buffers()  # as DDP does before every forward
                with (ctl.autocast() if ctl is not None else contextlib.nullcontext()):
                    out = self.model(x)
                    terms = self.plan.loss_terms(out, x, y)
                    loss = sum(terms[j][1] for j in phase.losses)
                assert isinstance(loss, torch.Tensor)
                scaled = loss
                if self.dist is not None and self.dist.active:
                    mean_scale, _ = self.dist.loss_scales(n, self.global_n or n)
                    scaled = loss * mean_scale
                if self.dist is not None and self.dist.active:
                    self._backward_all_reduce(scaled, mine)
                    self._step(opt, mine, backward=False, loss=scaled)
                else:
                    self._step(opt, mine, backward=True, loss=scaled)
                value = loss.detach().float()
                self.sums[i].add_(value, alpha=n)
                total = value if total is None else total + value
        finally:
            for p in self._all:
                p.requires_grad_(True)
        self.samples += n
        assert total is not None
        return total, None

    def sync_buffers(self) -> None:
        """Rank 0's buffers on every rank (a distributed job; a collective: every rank calls it)."""
        if self.dist is None or not self.dist.active or not self._buffers:
            return
        import torch.distributed as tdist

        for b in self._buffers:
            tdist.broadcast(b.data, src=0)

    def _backward_all_reduce(self, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        import torch.distributed as tdist

        loss.backward()
        world = self.dist.world_size
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
            p.grad.div_(world)

    def _step(self, opt: torch.optim.Optimizer, params: list[torch.Tensor], *, backward: bool,
              loss: torch.Tensor) -> None:
        ctl = self.controls
        if ctl is None or not ctl.active:
            if backward:
                loss.backward()
            opt.step()
            return
        if ctl.scaler is not None:  # fp16: one scaler for the step; each phase scales and steps its own part
            if backward:
                ctl.scaler.scale(loss).backward()
            if ctl.clips:
                ctl.scaler.unscale_(opt)
                ctl.clip(params)
            ctl.scaler.step(opt)
            ctl.scaler.update()
            return
        if backward:
            loss.backward()
        if ctl.clips:
            ctl.clip(params)
        opt.step()


def phased_step(model: nn.Module, plan: Any, optimizer: Any, controls: Any = None, dist: Any = None) -> PhasedStep:
    return PhasedStep(model, plan, optimizer, controls, dist)
