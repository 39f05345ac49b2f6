"""Training steps on device-resident data, optionally replayed from one captured CUDA graph.

For the small models NetStudio users build, a GPU training step is dominated by
kernel launches and Python, not arithmetic. When the whole dataset lives on the
device and the batch size is fixed, a step is the same sequence of kernels on
the same addresses every time, so it can be captured once as a
``torch.cuda.CUDAGraph`` (PyTorch's "whole network capture": forward, loss,
backward and ``optimizer.step()`` together) and replayed for every full batch.
A batch then costs one small copy of its row indices plus one replay.

:class:`Stepper` runs the *same* step body in both modes (gather the rows,
forward, loss, backward, optimizer step, add loss and correct count to on-device
sums), so the eager mode is the reference the captured mode is tested against.

Rules that keep the graph valid (see the CUDA-graphs notes in PyTorch's docs):

* everything the graph reads or writes keeps its address: batch indices go into
  ``static_idx`` with ``copy_``; weights, optimizer state and gradients are only
  ever modified in place after capture (restoring "best" weights uses ``copy_``);
* gradients are set to None right before capture, so the captured backward
  *writes* them (no accumulation) and no ``zero_grad`` is needed between replays;
* Adam/AdamW need ``capturable=True`` (step counters on the device); the learning
  rate is baked into the graph, so runs with an LR scheduler stay eager;
* warm-up iterations run on a side stream before capture (lazy optimizer state,
  cuBLAS/cuDNN workspaces); their effect on weights and optimizer state is undone,
  so the run starts exactly from the caller's weights.

The last, smaller batch of an epoch runs eagerly through the same body (no
``drop_last``), so an epoch sees every sample on both paths.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
import torch.nn as nn

#: forward + loss + backward + optimizer step on one batch → (detached loss, correct count or None)
StepFn = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]

#: optimizers whose ``step`` can be captured (no host synchronisation, state updated in place)
CAPTURABLE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.SGD, torch.optim.Adam,
                                                                  torch.optim.AdamW)
WARMUP_STEPS = 3


def make_step(model: nn.Module, plan: Any, optimizer: torch.optim.Optimizer, controls: Any = None) -> StepFn:
    """The training step shared by the eager loop and the captured graph.

    It does not zero gradients: the eager loop sets them to None before every
    step, the graph path once before capture (see module docstring).
    ``controls``: a :class:`netstudio.training.controls.StepControls` (clipping,
    mixed precision) or None for the plain step.
    """
    if getattr(plan, "multi_phase", False):  # several optimizers: one phase each (netstudio.training.phased)
        from netstudio.training.phased import PhasedStep

        return PhasedStep(model, plan, optimizer, controls)
    loss_fn, correct_fn = plan.loss, plan.correct
    if controls is not None and controls.active:
        def controlled_step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            with controls.autocast():
                out = model(x)
                loss = loss_fn(out, x, y)
            controls.backward_and_step(loss, optimizer)
            with torch.no_grad():
                correct = correct_fn(out, y)
            return loss.detach().float(), correct

        return controlled_step

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = model(x)
        loss = loss_fn(out, x, y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            correct = correct_fn(out, y)
        return loss.detach(), correct

    return step


def fast_path_blocker(*, setting: str, device: torch.device, resident: bool,
                      optimizer: torch.optim.Optimizer, has_scheduler: bool, n_train: int,
                      batch_size: int) -> str | None:
    """Why the CUDA-graph fast path cannot be used for this run, or None if it can."""
    if setting == "off":
        return "turned off in the training settings"
    names = getattr(optimizer, "names", None)
    if getattr(optimizer, "optimizers", None) is not None and names:
        return f"multi-phase training ({len(names)} optimizers: {', '.join(names)}) runs eagerly"
    if device.type != "cuda":
        return "needs a CUDA GPU"
    if not resident:
        return "the dataset is streamed batch by batch (too large to keep on the device)"
    if has_scheduler:
        return "a learning-rate scheduler changes the learning rate during training"
    if type(optimizer) not in CAPTURABLE_OPTIMIZERS:
        return f"the {type(optimizer).__name__} optimizer is not supported (SGD, Adam and AdamW are)"
    if any(g.get("differentiable") for g in optimizer.param_groups):
        return "differentiable optimizers are not supported"
    if n_train < batch_size:
        return "the training set is smaller than one batch"
    return None


def prepare_optimizer(optimizer: torch.optim.Optimizer, device: torch.device, capture: bool) -> None:
    """Pick the optimizer implementation before its first step (state is created lazily).

    Where possible the fused kernels of SGD/Adam/AdamW do the whole update in
    one pass instead of a dozen kernels (a third of a small MLP's GPU step, ~10%
    of its step on 2 CPU cores; see bench/README.md): same algorithm, rounding
    differences only. For capture, Adam/AdamW must also keep their step counters
    on the device (``capturable``); fused kernels have no host synchronisation,
    so they are capturable too.
    """
    if type(optimizer) not in CAPTURABLE_OPTIMIZERS:
        return
    groups = optimizer.param_groups
    if capture and isinstance(optimizer, torch.optim.Adam):  # AdamW is a subclass
        for g in groups:
            g["capturable"] = True
        optimizer.defaults["capturable"] = True
    if device.type not in ("cpu", "cuda"):
        return
    if any(g.get("fused") or g.get("foreach") or g.get("differentiable") for g in groups):
        return  # the node asked for a specific implementation: keep it
    params = [p for g in groups for p in g["params"]]
    if not params or not all(p.is_floating_point() and p.device.type == device.type for p in params):
        return
    for g in groups:
        g["fused"] = True
    optimizer.defaults["fused"] = True


def try_capture(stepper: "Stepper", model: nn.Module) -> str | None:
    """Capture the training step; None on success, else why it could not be captured.

    Tries the fused optimizer kernels first (fewest kernels per replay), then
    the multi-tensor ones that PyTorch's CUDA-graph recipe uses.
    """
    opt = stepper.optimizer
    try:
        stepper.capture(model)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: try the next way, or run eagerly
        why = f"capture failed ({type(exc).__name__}: {exc})"
    if not any(g.get("fused") for g in opt.param_groups):
        return why
    opt.state.clear()
    for g in opt.param_groups:
        g["fused"] = False
    opt.defaults["fused"] = False
    try:
        stepper.capture(model)
        return None
    except Exception as exc:  # noqa: BLE001
        return f"capture failed ({type(exc).__name__}: {exc})"


def reset_for_eager(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """After a failed capture: a fresh (empty) optimizer state and the eager implementation."""
    optimizer.state.clear()
    for g in optimizer.param_groups:
        if "capturable" in g:
            g["capturable"] = False
    if "capturable" in optimizer.defaults:
        optimizer.defaults["capturable"] = False
    prepare_optimizer(optimizer, device, capture=False)


class Stepper:
    """Runs training steps and keeps the epoch's loss/correct sums on the device.

    Sums are only read (``totals``) when the trainer reports, so no batch forces
    a host-device synchronisation. Per-batch losses are kept just long enough to
    name the batch where a loss first became NaN/inf.
    """

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer, device: torch.device, batch_size: int,
                 steps_per_epoch: int, train_x: torch.Tensor | None = None,
                 train_y: torch.Tensor | None = None) -> None:
        self.step = step
        self.optimizer = optimizer
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self.device = device
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.train_x = train_x
        self.train_y = train_y
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.correct_sum = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0   # in this epoch
        self.batches = 0   # in this epoch
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_idx: torch.Tensor | None = None
        # eager: recent per-batch losses (cleared whenever the sum was seen finite)
        self._recent: list[torch.Tensor] = []
        self._recent_start = 0
        # captured: per-batch losses written by the graph itself at a device-side position
        self._hist: torch.Tensor | None = None
        self._pos: torch.Tensor | None = None

    # --- running ---------------------------------------------------------------
    def run_indices(self, idx: torch.Tensor) -> None:
        """One step on rows ``idx`` (device tensor) of the resident training tensors."""
        n = idx.shape[0]
        if self.static_idx is not None and n == self.batch_size:
            self.static_idx.copy_(idx)
            if self.graph is not None:
                self.graph.replay()
            else:  # the captured body, run eagerly (CPU tests compare it with the plain loop)
                self._drop_grads()
                self._static_body()
        else:
            assert self.train_x is not None and self.train_y is not None
            self._eager(self.train_x.index_select(0, idx), self.train_y.index_select(0, idx), n)
        self.samples += n
        self.batches += 1

    def run_indices_uncaptured(self, idx: torch.Tensor) -> None:
        """One step on rows ``idx`` that runs the Python step even when a graph is captured (a
        statistics sample hooks into it); the same arithmetic as a replay."""
        if self.graph is None:
            self.run_indices(idx)
            return
        assert self.train_x is not None and self.train_y is not None
        self._eager(self.train_x.index_select(0, idx), self.train_y.index_select(0, idx), idx.shape[0])
        self.samples += idx.shape[0]
        self.batches += 1

    def run_tensors(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One eager step on a batch that is already on the device (DataLoader path)."""
        n = x.shape[0]
        self._eager(x, y, n)
        self.samples += n
        self.batches += 1

    def _drop_grads(self) -> None:
        # What zero_grad(set_to_none=True) does, minus its per-call profiler scope (~1% of a small step)
        for p in self._params:
            p.grad = None

    def _eager(self, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        if self.graph is None:
            self._drop_grads()
        else:
            # the gradients live in the graph's memory pool and must keep their addresses
            self.optimizer.zero_grad(set_to_none=False)
        loss = self._accumulate(x, y, n)
        if self._hist is None:
            self._recent.append(loss)

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        loss, correct = self.step(x, y)
        self.loss_sum.add_(loss, alpha=n)
        if correct is not None:
            self.correct_sum.add_(correct)
        if self._hist is not None:
            assert self._pos is not None
            self._hist.index_copy_(0, self._pos, loss.reshape(1).to(self._hist.dtype))
            self._pos.add_(1)
        return loss

    def _static_body(self) -> None:
        assert self.train_x is not None and self.train_y is not None and self.static_idx is not None
        x = self.train_x.index_select(0, self.static_idx)
        y = self.train_y.index_select(0, self.static_idx)
        self._accumulate(x, y, self.batch_size)

    # --- epoch bookkeeping ---------------------------------------------------------
    def reset_epoch(self) -> None:
        self.loss_sum.zero_()
        self.correct_sum.zero_()
        if self._pos is not None:
            self._pos.zero_()
        self.samples = 0
        self.batches = 0
        self._recent.clear()
        self._recent_start = 0

    def totals(self) -> tuple[float, int]:
        """(sum of per-sample losses, correct predictions) so far this epoch; synchronises."""
        return float(self.loss_sum.item()), int(self.correct_sum.item())

    def mark_finite(self) -> None:
        """The sums were seen finite: batches so far need no re-checking."""
        self._recent.clear()
        self._recent_start = self.batches

    def batch_losses(self) -> torch.Tensor | None:
        """This epoch's per-batch losses as recorded by the static body (None when it is not in use)."""
        return None if self._hist is None else self._hist[:self.batches].clone()

    def first_bad_batch(self) -> tuple[int, float]:
        """(0-based batch index in this epoch, loss value) of the first non-finite batch loss."""
        if self._hist is not None:
            losses = self._hist[:self.batches].float().cpu()
            start = 0
        elif self._recent:
            losses = torch.stack([t.float() for t in self._recent]).cpu()
            start = self._recent_start
        else:
            return max(self.batches - 1, 0), float("nan")
        bad = (~torch.isfinite(losses)).nonzero()
        if bad.numel() == 0:
            return max(self.batches - 1, 0), float("nan")
        i = int(bad[0, 0])
        return start + i, float(losses[i])

    # --- capture -------------------------------------------------------------
    def enable_static(self) -> None:
        """Allocate the fixed-address buffers the captured step reads and writes.

        Full batches then go through ``static_idx`` and the static body: replayed
        once a graph is captured, run eagerly before that.
        """
        dev = self.device
        self.static_idx = torch.arange(self.batch_size, device=dev)  # any valid rows until the first batch
        self._hist = torch.zeros(self.steps_per_epoch + 1, dtype=torch.float32, device=dev)
        self._pos = torch.zeros(1, dtype=torch.int64, device=dev)
        self._recent.clear()

    def capture(self, model: nn.Module, warmup_steps: int = WARMUP_STEPS) -> None:
        """Capture the whole training step as a CUDA graph; raises if that is impossible.

        Whatever happens, the model's weights/buffers and the optimizer state are
        afterwards exactly as before the call (warm-up steps are undone in place).
        """
        assert self.train_x is not None and self.device.type == "cuda"
        dev = self.device
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.enable_static()   # warm-up rows are arbitrary: their effect is undone below
        ok = False
        try:
            with warnings.catch_warnings():
                # Adam warns once that capturable=True is slower when run uncaptured (warm-up, last batch)
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                side = torch.cuda.Stream(dev)
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    for _ in range(warmup_steps):
                        self.optimizer.zero_grad(set_to_none=True)
                        self._static_body()
                torch.cuda.current_stream(dev).wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_body()
            self.graph = graph
            ok = True
        finally:
            if not ok:
                self.graph = None
                self._hist = self._pos = None
                self.static_idx = None
                self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(saved[k])
                # a fresh SGD/Adam/AdamW state is all zeros (step 0, zero moments,
                # zero momentum buffer gives buf = grad on the first step)
                for state in self.optimizer.state.values():
                    for v in state.values():
                        if isinstance(v, torch.Tensor):
                            v.zero_()
            self.reset_epoch()
            torch.cuda.synchronize(dev)
