"""How a run is spread over processes: one process, or a data-parallel job of several ranks.

The training loop (:class:`netstudio.training.engine._Trainer`) asks its strategy
for everything that differs between the two: the device, the thread policy, the
model wrapper and the step, the batches of an epoch, the epoch sums, validation,
who reads and writes checkpoints and who computes the closing figures. The loop
itself never asks whether it runs distributed.

* :class:`SingleProcess` — the usual run: the device from the settings, the thread
  tuner adapts on the CPU, channels-last convolutions and the CUDA fast path when
  they apply, the loss checked at every report.
* :class:`DataParallel` — one rank of a ``torch.distributed`` job
  (:class:`netstudio.training.distributed.DistContext`): DDP around the model, a
  step whose loss scaling makes the averaged gradient the global batch's, each
  rank's share of every global batch, all-reduced sums, rank 0 alone reads (and
  broadcasts) and writes checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
import torch.nn as nn

from netstudio.training import batches as B
from netstudio.training.checkpoints import read_checkpoint
from netstudio.training.devices import resolve_device
from netstudio.training.fastpath import fast_path_blocker, make_step

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.compiler.build import TrainingPlan
    from netstudio.data import PreparedData
    from netstudio.training.distributed import DistContext

#: one training step: (x, y) -> (summed loss tensor, correct count tensor or None)
Step = Callable[[torch.Tensor, torch.Tensor], Any]


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Train 2-d convolutions in channels-last layout on the CPU?

    oneDNN's channels-last convolutions are faster than the default layout's for
    the small CNNs of the tutorials (the LeNet sample: +8–10 % samples/s in ``fit``
    on 2 cores, bench/README.md). The layout may change the rounding of sums, not
    the maths; every layer NetStudio builds accepts it, and the weights are handed
    back in the usual layout. CUDA keeps the layout the fast path was measured with.
    """
    return device.type == "cpu" and any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


class SingleProcess:
    """Training in this process alone."""

    #: this process reports, writes checkpoints and computes the closing figures
    is_main = True
    #: a NaN/inf loss is caught at the next batch report (a job of ranks judges the all-reduced sums)
    checks_batch_loss = True
    #: after a NaN/inf loss the epoch may be replayed to name the node where NaN first appeared
    replays_divergence = True

    def device(self, requested: str) -> torch.device:
        return resolve_device(requested)

    def adapts_threads(self, device: torch.device) -> bool:
        """The thread tuner adapts on the CPU (a GPU step barely depends on the CPU threads)."""
        return device.type == "cpu"

    def channels_last(self, model: nn.Module, device: torch.device) -> bool:
        return use_channels_last(model, device)

    def reorders(self, model: nn.Module, device: torch.device) -> bool:
        """Train with ReLU → max pool reordered (:mod:`netstudio.compiler.reorder`)? Exact, so on
        every CPU run, ranks included; GPUs keep the graph their fast path was measured with."""
        return device.type == "cpu"

    def fast_path_blocker(self, **kw: Any) -> str | None:
        """Why the captured-graph fast path cannot be used (None: it may be tried)."""
        return fast_path_blocker(**kw)

    def step(self, model: nn.Module, plan: "TrainingPlan", optimizer: torch.optim.Optimizer,
             controls: Any = None) -> Step:
        return make_step(model, plan, optimizer, controls)

    def loader(self, dataset: Any, batch_size: int, shuffle: bool, generator: torch.Generator | None,
               device: torch.device) -> torch.utils.data.DataLoader:
        return B.loader(dataset, batch_size, shuffle, generator, device)

    def batches(self, items: Any, step: Step, *, resident: bool, loader: Any = None) -> Iterator[Any]:
        """The batches this process trains on: all of them."""
        return items

    def epoch_totals(self, loss_sum: float, correct: int, n: int) -> tuple[float, int, int]:
        return loss_sum, correct, n

    def validate(self, model: nn.Module, plan: "TrainingPlan", data: "PreparedData",
                 val_dev: tuple[torch.Tensor, torch.Tensor] | None, batch_size: int, device: torch.device
                 ) -> tuple[float | None, float | None]:
        loss, acc, _ = B.eval_batches(model, plan, B.val_batches(data, batch_size, device, val_dev), device)
        return loss, acc

    def read_checkpoint(self, path: str) -> dict[str, Any] | None:
        return read_checkpoint(path)

    def reduce_node_stats(self, outs: torch.Tensor) -> torch.Tensor:
        """Per-node output figures (rows: mean, std, zeros, saturated, min, max, nonfinite): this process's."""
        return outs


class DataParallel(SingleProcess):
    """One rank of a data-parallel job (DDP); see :mod:`netstudio.training.distributed`."""

    checks_batch_loss = False  # judged on the all-reduced epoch sums, the same on every rank
    replays_divergence = False  # the ranks' collectives would have to replay in step

    def __init__(self, ctx: "DistContext") -> None:
        self.ctx = ctx

    @property
    def is_main(self) -> bool:  # type: ignore[override]
        return self.ctx.is_main

    def device(self, requested: str) -> torch.device:
        return self.ctx.device  # chosen when the rank joined (cuda:LOCAL_RANK or the CPU)

    def adapts_threads(self, device: torch.device) -> bool:
        return False  # ranks run with the thread count their launcher gave them

    def channels_last(self, model: nn.Module, device: torch.device) -> bool:
        return False

    def fast_path_blocker(self, **kw: Any) -> str | None:
        return "distributed training runs eagerly"

    def step(self, model: nn.Module, plan: "TrainingPlan", optimizer: torch.optim.Optimizer,
             controls: Any = None) -> Step:
        from netstudio.training.distributed import DistStep

        if getattr(plan, "multi_phase", False):
            from netstudio.training.phased import PhasedStep

            # no DDP wrapper: each phase all-reduces its own weights' gradients (the others get none)
            return PhasedStep(model, plan, optimizer, controls, dist=self.ctx)
        # DDP around the model; the step scales each rank's loss so the averaged gradient is the global one
        return DistStep(self.ctx.wrap(model), plan, optimizer, self.ctx, controls)

    def loader(self, dataset: Any, batch_size: int, shuffle: bool, generator: torch.Generator | None,
               device: torch.device) -> torch.utils.data.DataLoader:
        return self.ctx.loader(dataset, batch_size, shuffle, generator, pin_memory=device.type == "cuda")

    def batches(self, items: Any, step: Step, *, resident: bool, loader: Any = None) -> Iterator[Any]:
        """This rank's share of every global batch."""
        return self.ctx.rank_batches(items, step, resident=resident, loader=loader)  # type: ignore[arg-type]

    def epoch_totals(self, loss_sum: float, correct: int, n: int) -> tuple[float, int, int]:
        return self.ctx.epoch_totals(loss_sum, correct, n)  # every rank sees the same sums from here on

    def validate(self, model: nn.Module, plan: "TrainingPlan", data: "PreparedData",
                 val_dev: tuple[torch.Tensor, torch.Tensor] | None, batch_size: int, device: torch.device
                 ) -> tuple[float | None, float | None]:
        # each rank evaluates its share; the sums are all-reduced
        return self.ctx.validate(model, plan, data, val_dev, batch_size, B.eval_batches, B.val_batches)

    def reduce_node_stats(self, outs: torch.Tensor) -> torch.Tensor:
        """The ranks' output figures combined (every rank calls it at the same sampled step): means,
        std and fractions averaged over the ranks (equal shares), min/max over all, NaN/Inf counts summed."""
        import torch.distributed as dist

        if not self.ctx.active:
            return outs
        avg, lo, hi, bad = outs[:, :4].contiguous(), outs[:, 4].contiguous(), outs[:, 5].contiguous(), \
            outs[:, 6].contiguous()
        dist.all_reduce(avg, op=dist.ReduceOp.SUM)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(bad, op=dist.ReduceOp.SUM)
        return torch.cat([avg / self.ctx.world_size, lo[:, None], hi[:, None], bad[:, None]], dim=1)

    def read_checkpoint(self, path: str) -> dict[str, Any] | None:
        # rank 0 reads, the others receive it: the folder only has to exist where rank 0 runs
        return self.ctx.broadcast_object(read_checkpoint(path) if self.ctx.is_main else None)


Strategy = SingleProcess  # the interface: DataParallel overrides what differs


def strategy_for(dist: "DistContext | None") -> SingleProcess:
    """The strategy of a run: data-parallel for a job of several ranks, else this process alone."""
    if dist is not None and dist.world_size > 1:
        return DataParallel(dist)
    return SingleProcess()
