"""The training loop: ``fit(plan, data, config)`` with progress reports and stop/pause events.

Pure PyTorch, no Qt: the GUI runs ``fit`` in a worker thread and turns the
``report`` callback into signals; the CLI prints the same events. Events are
plain dicts of Python numbers and strings (they cross threads; never tensors),
declared in :mod:`netstudio.training.events` (``kind``: an :class:`EventKind`,
``status``: a :class:`FitStatus`; both compare equal to their text):

* ``{"kind": "start", "device", "device_id", "epochs", "steps_per_epoch", "n_train", "n_val", "task",
  "fast_path", "fast_path_reason", "threads", "threads_mode", "precision", "clip_norm", "clip_value", "warmup_epochs"}`` — ``threads``: the CPU intra-op threads in
  force; ``threads_mode`` "auto" (adapted during the run, see :mod:`netstudio.training.threads`), "fixed"
  (``config.threads``) or "default" (the caller's count: GPU runs, distributed ranks)
* ``{"kind": "batch", "epoch", "batch", "n_batches", "loss", "samples_per_s", "eta_s", "global_step"}`` —
  at most ~20 per second; ``loss`` is the mean loss of the batches since the previous batch event
* ``{"kind": "epoch", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
  "samples_per_s", "threads"}`` — accuracies are None for regression, val values None without validation data
* ``{"kind": "paused", "epoch", "batch", "global_step"}`` (``batch``: the one that waits; ``global_step``:
  steps done so far) / ``{"kind": "resumed", "paused_s"}``
* ``{"kind": "end", "status": "finished"|"stopped"|"early_stopped"|"error", "message"}``
* ``{"kind": "stats", "epoch", "global_step", "nodes", "diagnoses", "nan_origin"}`` — per-node figures of a
  sampled step (every ``config.stats_every`` steps, :mod:`netstudio.training.nodestats`); ``nan_origin``:
  the node id where NaN/Inf first appeared (sent when the run diverges), else None
* ``{"kind": "phases", "scope": "batch"|"epoch", "epoch", "global_step", "losses", "lrs"}`` — a multi-phase run
  (several optimizers, :mod:`netstudio.training.phased`): each phase's mean loss by optimizer name, with every
  batch event (since the previous one) and after every epoch event (the epoch's), and each phase's lr (the
  epoch event's ``lr`` is the first phase's)

Speed (measured in bench/bench_trainer.py): resident datasets stay on the
device and are batched by index; loss and accuracy are summed on the device
and read only when reporting; on CUDA the whole step may be replayed from a
captured graph (:mod:`netstudio.training.fastpath`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import math
import threading
import time
import traceback as tb
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from netstudio.compiler.reorder import reordered_forward
from netstudio.errors import NetStudioError, TrainingError
from netstudio.training.augment import augmented_step, augmenter_for
from netstudio.training.batches import eval_batches as _eval_batches
from netstudio.training.batches import loader as _loader
from netstudio.training.batches import tensor_batches as _tensor_batches
from netstudio.training.batches import val_batches as _val_batches
from netstudio.training.config import TrainConfig
from netstudio.training.controls import Warmup, step_controls
from netstudio.training.controls import fast_path_blocker as controls_blocker
from netstudio.training.devices import _mps_available, available_devices, device_label, resolve_device  # noqa: F401
from netstudio.training.checkpoints import checkpoint_path, save_checkpoint
from netstudio.training.events import EventKind, FitStatus
from netstudio.training.fastpath import Stepper, prepare_optimizer, reset_for_eager, try_capture
from netstudio.training.nodestats import NodeStats
from netstudio.training.phased import PhasedStep
from netstudio.training.strategy import DataParallel, SingleProcess, strategy_for, use_channels_last  # noqa: F401
from netstudio.training.threads import ThreadTuner

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.compiler.build import TrainingPlan
    from netstudio.data import PreparedData
    from netstudio.training.distributed import DistContext

Report = Callable[[dict[str, Any]], None]

REPORT_INTERVAL_S = 0.05   # batch events: at most ~20 per second
SAMPLE_COUNT = 16          # a generator's samples per epoch (the samples event)
PAUSE_POLL_S = 0.02
EVAL_BATCH = 1024


@dataclass
class FitResult:
    status: FitStatus              # finished | stopped | early_stopped | error (compares equal to the text)
    message: str
    history: list[dict[str, Any]] = field(default_factory=list)   # the epoch events, in order
    #: train_loss, train_accuracy, val_loss, val_accuracy (of the returned weights), epochs_run,
    #: samples_per_s (whole run), device (label), device_id, best_epoch, fast_path
    metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None  # epoch (1-based) with the lowest validation loss
    model: nn.Module | None = None  # trained model on the CPU in eval mode (None if training never started)
    traceback: str | None = None    # for unexpected errors


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _plan_on(plan: Any, device: torch.device) -> Any:
    """The plan with loss modules that hold tensors (class weights…) copied to ``device``.

    A copy, so the caller's plan stays untouched (it may be used from the UI thread).
    """
    losses = getattr(plan, "losses", None)
    if not dataclasses.is_dataclass(plan) or isinstance(plan, type) or not losses:
        return plan
    if not any(any(True for _ in t.module.parameters()) or any(True for _ in t.module.buffers())
               for t in losses):
        return plan
    moved = [dataclasses.replace(t, module=copy.deepcopy(t.module).to(device)) for t in losses]
    return dataclasses.replace(plan, losses=moved)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    # in place, so a captured CUDA graph keeps pointing at the live weights
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])


def _host_copy(obj: Any) -> Any:
    """A deep copy with every tensor on the CPU (an optimizer's state_dict, loaded back where it belongs)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _fmt_lr(lr: float) -> str:
    if lr == int(lr) and abs(lr) < 1e16:
        return str(int(lr))
    return f"{lr:g}"


def _shape(shape: Any) -> str:
    return "×".join(str(int(d)) for d in shape) if len(shape) else "scalar"


def _n(t: torch.Tensor | None) -> int:
    return 0 if t is None else int(t.shape[0])


def _data_sizes(data: Any) -> tuple[int, int]:
    if data.resident:
        return _n(data.train_x), _n(data.val_x)
    return len(data.train_set), (len(data.val_set) if data.val_set is not None else 0)


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------------
# Public helpers for the UI
# ----------------------------------------------------------------------------


def evaluate(model: nn.Module, plan: Any, data: Any, device: str | torch.device = "cpu",
             batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """Validation loss/accuracy of ``model`` (accuracy None for regression; both None without val data).

    The model is returned to its original device afterwards.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    home = _model_device(model)
    model.to(dev)
    try:
        loss, acc, n = _eval_batches(model, _plan_on(plan, dev), _val_batches(data, batch_size, dev), dev)
    finally:
        model.to(home)
    return {"val_loss": loss, "val_accuracy": acc, "n": n}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: str | torch.device = "cpu",
            batch_size: int = EVAL_BATCH) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Model outputs for ``x`` (eval mode, on the CPU); a tuple for multi-output models."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    home = _model_device(model)
    was_training = model.training
    model.to(dev).eval()
    try:
        chunks = [model(x[a:a + batch_size].to(dev)) for a in range(0, max(x.shape[0], 1), batch_size)]
    finally:
        model.to(home).train(was_training)
    if isinstance(chunks[0], tuple):
        return tuple(torch.cat([c[i].cpu() for c in chunks]) for i in range(len(chunks[0])))
    return torch.cat([c.cpu() for c in chunks])


def to_target_units(t: torch.Tensor, data: Any) -> torch.Tensor:
    """Undo the data source's target standardization (``diabetes``/``regression``): ``t * std + mean``.

    ``t`` holds predictions or targets as the model sees them, targets in the last
    dimension (or a single target); unchanged when the targets were not standardized.
    """
    mean, std = getattr(data, "target_mean", None), getattr(data, "target_std", None)
    if mean is None or std is None:
        return t
    m = torch.tensor(mean, dtype=t.dtype, device=t.device)
    s = torch.tensor(std, dtype=t.dtype, device=t.device)
    if m.numel() == 1 or (t.dim() >= 2 and t.shape[-1] == m.numel()):
        return t * s + m
    raise TrainingError(f"Cannot map outputs of shape {tuple(t.shape)} to the {m.numel()} targets' units",
                        hint="give the regression layer one output per target")


@torch.no_grad()
def outcome_metrics(model: nn.Module, plan: Any, data: Any, device: str | torch.device = "cpu",
                    batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """Figures beyond loss/accuracy, on the validation split (the training split without one).

    * ``loss_terms`` (when the project has several losses): each loss term's mean
      value (weighted as in training) by its node name; they sum to the loss.
    * ``r2``, ``mae``, ``rmse`` for a regression (a loss on the dataset's float
      target without an accuracy rule), over every target value, in the target's
      own units (standardized targets are mapped back with :func:`to_target_units`,
      like the exports' ``postprocess``).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    n_train, n_val = _data_sizes(data)
    split = "val" if n_val else "train"
    if data.resident:
        x_all, y_all = (data.val_x, data.val_y) if n_val else (data.train_x, data.train_y)
        batches: Any = _tensor_batches(x_all, y_all, batch_size)
    else:
        batches = iter(_loader(data.val_set if n_val else data.train_set, batch_size, False, None, dev))
    multi = len(plan.losses) > 1
    reg_term = next((t for t in plan.losses if t.target[0] == "target" and not t.metric), None)
    if getattr(data.info, "task", None) != "regression":
        reg_term = None
    if not multi and reg_term is None:
        return {}
    term_sums = [0.0] * len(plan.losses)
    n = 0
    sse = sae = 0.0
    ys: list[torch.Tensor] = []
    home = _model_device(model)
    was_training = model.training
    run_plan = _plan_on(plan, dev)
    model.to(dev).eval()
    try:
        for xb, yb in batches:
            xb, yb = xb.to(dev), yb.to(dev)
            out = model(xb)
            if multi:
                for i, (_, value) in enumerate(run_plan.loss_terms(out, xb, yb)):
                    term_sums[i] += float(value) * xb.shape[0]
            if reg_term is not None:
                pred = (out if isinstance(out, tuple) else (out,))[reg_term.pred_index].float()
                tgt = to_target_units(yb.to(pred.dtype).reshape(pred.shape), data)
                pred = to_target_units(pred, data)
                err = pred - tgt
                sse += float((err * err).sum(dtype=torch.float64))
                sae += float(err.abs().sum(dtype=torch.float64))
                ys.append(tgt.detach().to("cpu", torch.float64).reshape(-1))
            n += xb.shape[0]
    finally:
        model.to(home).train(was_training)
    out_m: dict[str, Any] = {"metrics_split": split}
    if n == 0:
        return {}
    if multi:
        out_m["loss_terms"] = {t.name: term_sums[i] / n for i, t in enumerate(plan.losses)}
    if reg_term is not None and ys:
        y = torch.cat(ys)
        m = y.numel()
        ss_tot = float(((y - y.mean()) ** 2).sum())
        out_m["r2"] = 1.0 - sse / ss_tot if ss_tot > 0 else float("nan")
        out_m["mae"] = sae / m
        out_m["rmse"] = math.sqrt(sse / m)
    return out_m


@torch.no_grad()
def confusion_matrix(model: nn.Module, plan: Any, data: Any, device: str | torch.device = "cpu",
                     batch_size: int = EVAL_BATCH) -> list[list[int]]:
    """matrix[true class][predicted class] on the validation split (the training split if there is none)."""
    term = plan.metric_term
    if term is None or term.target[0] != "target":
        raise TrainingError("A confusion matrix needs a classification loss on the dataset's target",
                            hint="use CrossEntropy or BCE fed by the dataset's target")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    n_train, n_val = _data_sizes(data)
    if data.resident:
        x, y = (data.val_x, data.val_y) if n_val else (data.train_x, data.train_y)
        batches: Any = _tensor_batches(x, y, batch_size)
    else:
        batches = iter(_loader(data.val_set if n_val else data.train_set, batch_size, False, None, dev))
    k = int(getattr(data.info, "num_classes", None) or 0)
    if term.metric != "argmax":
        k = max(k, 2)
    home = _model_device(model)
    was_training = model.training
    model.to(dev).eval()
    rows: list[torch.Tensor] = []
    try:
        for xb, yb in batches:
            outs = model(xb.to(dev))
            pred = (outs if isinstance(outs, tuple) else (outs,))[term.pred_index]
            if term.metric == "argmax":
                p = pred.argmax(dim=1)
            else:
                p = (pred.reshape(-1) > (0.5 if term.metric == "sigmoid" else 0.0)).long()
            rows.append(torch.stack([yb.to(dev).reshape(-1).long(), p.reshape(-1)], 1).cpu())
    finally:
        model.to(home).train(was_training)
    pairs = torch.cat(rows) if rows else torch.zeros((0, 2), dtype=torch.long)
    if pairs.numel():
        k = max(k, int(pairs.max()) + 1)
    counts = torch.bincount(pairs[:, 0] * k + pairs[:, 1], minlength=k * k) if k else torch.zeros(0)
    return counts.reshape(k, k).tolist() if k else []


# ----------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------


def _plain_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies whose enum values are plain text: a checkpoint holds only what ``weights_only`` loads."""
    return [{k: str(v) if isinstance(v, str) else v for k, v in e.items()} for e in events]


class _Stop(Exception):
    """Internal: leave the batch loop (stop requested)."""


class _Trainer:
    def __init__(self, plan: "TrainingPlan", data: "PreparedData", config: TrainConfig, report: Report | None,
                 stop_event: threading.Event | None, pause_event: threading.Event | None,
                 model: nn.Module | None, strategy: SingleProcess | None = None, checkpoint_dir: str | None = None,
                 resume: bool = False) -> None:
        self.plan, self.data, self.config = plan, data, config
        # one process or one rank of a DDP job (netstudio.training.strategy); checkpoints: see _resume/_save_checkpoint
        self.strategy = strategy if strategy is not None else SingleProcess()
        self.ckpt_dir, self.resume = checkpoint_dir, resume
        self.report = report
        self.stop_event, self.pause_event = stop_event, pause_event
        self.last_report = 0.0  # time of the last batch event (0: the first batch reports at once)
        self.initial_model = model
        self.model: nn.Module | None = None
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch = 0
        self.global_step = 0
        self.samples_done = 0
        self.device = torch.device("cpu")
        self.label = "cpu"
        self.fast = False
        self.channels_last = False  # CPU conv models train in channels-last layout (use_channels_last)
        self._undo_reorder: Callable[[], None] = lambda: None  # takes the reordered forward away again
        self.paused_total = 0.0
        self.train_active = 0.0   # seconds spent in training batches (for throughput)
        self.stepper: Stepper | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.start_state: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.n_train = 0
        self.tuner: ThreadTuner | None = None  # CPU thread count (adaptive unless config.threads is set)
        self.warmup: Warmup | None = None  # lr warm-up over the first batches (config.warmup_epochs)
        # per-node statistics (config.stats_every); the epoch's start for naming where NaN first appeared
        self.stats: NodeStats | None = None
        self._epoch_opt_state: dict[str, Any] | None = None
        self._epoch_perm: torch.Tensor | None = None

    # --- events ------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if self.report is not None:
            self.report(event)

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise _Stop

    def _wait_if_paused(self, batch: int) -> float:
        """Block while the pause event is set (stop still honoured); returns seconds paused."""
        pe = self.pause_event
        if pe is None or not pe.is_set():
            return 0.0
        t0 = time.perf_counter()
        self.emit({"kind": EventKind.PAUSED, "epoch": self.epoch, "batch": batch, "global_step": self.global_step})
        while pe.is_set():
            if self.stop_event is not None:
                if self.stop_event.wait(PAUSE_POLL_S):
                    break
            else:
                time.sleep(PAUSE_POLL_S)
        paused = time.perf_counter() - t0
        self.paused_total += paused
        self.emit({"kind": EventKind.RESUMED, "paused_s": paused})
        return paused

    # --- the run --------------------------------------------------------------
    def run(self) -> FitResult:
        cfg = self.config
        cfg.validate()
        strategy = self.strategy
        self.device = strategy.device(cfg.device)
        self.label = device_label(self.device)
        dev = self.device
        # before any torch work of the run; adapts on the CPU of a single process only (ranks have
        # one thread each, and a GPU step barely depends on them); fit hands the caller's count back
        self.tuner = ThreadTuner(cfg.threads, adaptive=strategy.adapts_threads(dev))
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)   # CPU: same shuffling order on every device

        source = self.initial_model if self.initial_model is not None else self.plan.model
        self.model = model = copy.deepcopy(source).to(dev)
        # before the optimizer exists: its state is created in the weights' layout
        self.channels_last = strategy.channels_last(model, dev)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if strategy.reorders(model, dev):
            # ReLU → max pool runs as max pool → ReLU: the same numbers, less work (netstudio.compiler.reorder)
            self._undo_reorder = reordered_forward(model)
        plan = _plan_on(self.plan, dev)
        plan.train_mode(model)  # frozen nodes' BatchNorm stays in eval mode
        data = self.data
        n_train, n_val = _data_sizes(data)
        if n_train == 0:
            raise TrainingError("The training split has no samples", hint="lower the validation fraction")
        bs = cfg.batch_size
        steps = math.ceil(n_train / bs)
        self.steps, self.n_train = steps, n_train
        self.tuner.expect_steps(steps * cfg.epochs)

        self.optimizer = optimizer = plan.make_optimizer(model)
        sched_info = plan.make_scheduler(optimizer, cfg.epochs, steps)
        sched, sched_every, sched_metric = sched_info if sched_info is not None else (None, "epoch", False)

        start_epoch, monitor_best, bad_epochs = self._resume_from_checkpoint(model, optimizer, sched, gen)

        reason = strategy.fast_path_blocker(setting=cfg.fast_path, device=dev, resident=bool(data.resident),
                                            optimizer=optimizer, has_scheduler=sched is not None, n_train=n_train,
                                            batch_size=bs)
        # clipping, mixed precision, warm-up (netstudio.training.controls)
        controls = step_controls(cfg, dev)
        if cfg.warmup_epochs:
            self.warmup = Warmup(optimizer, cfg.warmup_epochs * steps)
        if reason is None:
            reason = controls_blocker(controls, cfg.warmup_epochs)
        # image augmentation of training batches only (netstudio.training.augment); eager: new draws every batch
        rank = strategy.ctx.rank if isinstance(strategy, DataParallel) else 0
        augmenter = augmenter_for(plan.dataset_params, data, cfg.seed, dev, node_id=plan.compiled.dataset_node,
                                  rank=rank)
        if reason is None and augmenter is not None:
            reason = "image augmentation draws new random transforms for every batch"
        prepare_optimizer(optimizer, dev, capture=reason is None)
        step = strategy.step(model, plan, optimizer, controls)
        self.phase_step = step if isinstance(step, PhasedStep) else None  # several optimizers: per-phase losses
        if augmenter is not None:
            step = augmented_step(step, augmenter)

        val_dev: tuple[torch.Tensor, torch.Tensor] | None = None
        if data.resident:
            assert data.train_x is not None and data.train_y is not None
            assert data.val_x is not None and data.val_y is not None
            train_x = data.train_x.to(dev)
            train_y = data.train_y.to(dev)
            if n_val:
                val_dev = (data.val_x.to(dev), data.val_y.to(dev))
            stepper = Stepper(step, optimizer, dev, bs, steps, train_x, train_y)
            loader = None
        else:
            stepper = Stepper(step, optimizer, dev, bs, steps)
            loader = strategy.loader(data.train_set, bs, cfg.shuffle, gen, dev)
        self.stepper = stepper

        if reason is None:
            reason = try_capture(stepper, model)
            self.fast = reason is None
            if not self.fast:
                reset_for_eager(optimizer, dev)

        multi = getattr(plan, "multi_phase", False)
        if cfg.stats_every > 0 and not multi:
            self.stats = NodeStats(model, plan, cfg.stats_every, strategy.reduce_node_stats)

        task = getattr(data.info, "task", "classification")
        self.emit({"kind": EventKind.START, "device": self.label, "device_id": str(dev), "epochs": cfg.epochs,
                   "steps_per_epoch": steps, "n_train": n_train, "n_val": n_val, "task": task,
                   "fast_path": self.fast, "fast_path_reason": None if self.fast else reason,
                   "threads": self.tuner.threads, "threads_mode": self.tuner.mode,
                   "precision": cfg.precision, "clip_norm": cfg.clip_norm, "clip_value": cfg.clip_value,
                   "warmup_epochs": cfg.warmup_epochs,
                   "augmentation": augmenter.settings.describe() if augmenter is not None else None,
                   **({"phases": [ph.name for ph in plan.phases],
                       "stats_reason": "per-node statistics follow one optimizer's step; a multi-phase run has "
                                       f"{len(plan.phases)}"} if multi else {})})

        status, message = FitStatus.FINISHED, f"Trained {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
        try:
            for epoch in range(start_epoch, cfg.epochs + 1):
                self.epoch = epoch
                epoch_start = time.perf_counter()
                paused_before, active_before = self.paused_total, self.train_active
                self.start_state = _snapshot(model)
                if self.stats is not None and strategy.replays_divergence:
                    # on the host: the copy must not take device memory the preflight did not count
                    self._epoch_opt_state = _host_copy(optimizer.state_dict())
                plan.train_mode(model)
                stepper.reset_epoch()
                if self.phase_step is not None:
                    self.phase_step.reset()
                    self._phase_seen = ([0.0] * len(self.phase_step.names), 0)
                if augmenter is not None:
                    augmenter.start_epoch(epoch)
                self.tuner.epoch_start()
                if data.resident:
                    perm = torch.randperm(n_train, generator=gen) if cfg.shuffle else torch.arange(n_train)
                    perm = perm.to(dev)   # one small copy per epoch; batches are views of it
                    items: Any = (perm[a:a + bs] for a in range(0, n_train, bs))
                    self._epoch_perm = perm
                else:
                    items = iter(loader)  # type: ignore[arg-type]
                items = strategy.batches(items, step, resident=bool(data.resident), loader=loader)
                batch_sched = (sched if sched_every == "batch" else
                               sched.batch if sched is not None and sched_every == "phased" else None)
                if not self._train_epoch(items, batch_sched):
                    return self._diverged()
                if self.phase_step is not None:
                    self.phase_step.sync_buffers()  # a distributed multi-phase run: rank 0's buffers everywhere
                loss_total, correct = stepper.totals()
                n_seen = stepper.samples
                loss_total, correct, n_seen = strategy.epoch_totals(loss_total, correct, n_seen)
                if not math.isfinite(loss_total):
                    return self._diverged()
                self.samples_done += n_seen
                train_seconds = self.train_active - active_before
                term = plan.metric_term
                train_acc = correct / n_seen if term is not None and term.target[0] == "target" else None
                val_loss, val_acc = None, None
                if n_val:
                    val_loss, val_acc = strategy.validate(model, plan, data, val_dev, max(bs, EVAL_BATCH), dev)
                train_loss = loss_total / n_seen
                entry = {"kind": EventKind.EPOCH, "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                         "val_loss": val_loss, "val_accuracy": val_acc,
                         "lr": float(optimizer.param_groups[0]["lr"]),
                         "seconds": time.perf_counter() - epoch_start - (self.paused_total - paused_before),
                         "samples_per_s": n_seen / max(train_seconds, 1e-9), "threads": self.tuner.threads}
                self.history.append(entry)
                self.emit(dict(entry))
                if self.phase_step is not None:
                    self._emit_phases("epoch")
                self._emit_samples(model, plan)

                if sched is not None and sched_every != "batch":
                    if sched_metric:
                        sched.step(val_loss if val_loss is not None else train_loss)
                    else:
                        sched.step()

                # early stopping watches the validation loss (the training loss without validation data)
                monitored = val_loss if val_loss is not None else train_loss
                if monitored < monitor_best:
                    monitor_best, bad_epochs = monitored, 0
                    if val_loss is not None and not multi:  # an adversarial game's loss does not rank epochs
                        self.best_epoch = epoch
                        if cfg.keep_best:
                            self.best_state = _snapshot(model)
                else:
                    bad_epochs += 1
                self._save_checkpoint(epoch, model, optimizer, sched, gen, monitor_best, bad_epochs)
                patience = cfg.early_stopping_patience
                if patience and bad_epochs >= patience and epoch < cfg.epochs:
                    what = "validation loss" if val_loss is not None else "training loss"
                    status = FitStatus.EARLY_STOPPED
                    message = (f"Stopped early after epoch {epoch}: the {what} did not improve for "
                               f"{bad_epochs} epoch{'s' if bad_epochs != 1 else ''}")
                    break
                self._check_stop()
        except _Stop:
            done = len(self.history)
            message = f"Stopped by the user after {done} complete epoch{'s' if done != 1 else ''}"
            return self._finish(FitStatus.STOPPED, message, keep_best=False)
        return self._finish(status, message, keep_best=True)

    def _train_epoch(self, items: Any, batch_sched: Any) -> bool:
        """Run one epoch's batches; False if the loss became NaN/inf (seen at a report)."""
        stepper, dev, resident = self.stepper, self.device, self.data.resident
        assert stepper is not None and self.tuner is not None
        tuner = self.tuner
        stats = self.stats
        total_samples = self.config.epochs * self.n_train
        # the report clock runs across epochs: with epochs shorter than the report
        # interval, a per-epoch clock would never emit a batch event at all
        seg_start = time.perf_counter()
        last_loss, last_samples, last_active = 0.0, 0, self.train_active
        try:
            for item in items:
                self._check_stop()
                if self.pause_event is not None and self.pause_event.is_set():
                    self.train_active += time.perf_counter() - seg_start
                    self._wait_if_paused(stepper.batches + 1)
                    seg_start = self.last_report = time.perf_counter()
                    self._check_stop()
                    last_active = self.train_active
                    last_loss, last_samples = stepper.totals()[0], stepper.samples
                warm = self.warmup.applied(self.global_step) if self.warmup is not None else contextlib.nullcontext()
                with warm:
                    if stats is not None and stats.due(self.global_step + 1):
                        self._sampled_step(stats, item)   # untimed by the thread tuner
                    else:
                        adapt = tuner.hooked
                        if adapt:
                            tuner.step_start()
                        if resident:
                            stepper.run_indices(item)
                        else:
                            stepper.run_tensors(item[0].to(dev, non_blocking=True),
                                                item[1].to(dev, non_blocking=True))
                        if adapt:
                            tuner.step_end()
                if batch_sched is not None:
                    batch_sched.step()
                self.global_step += 1
                if self._pending_stats is not None:
                    self._emit_stats(self._pending_stats)
                if time.perf_counter() - self.last_report < REPORT_INTERVAL_S:
                    continue
                loss_total, _ = stepper.totals()   # the only synchronisation, ~20 times a second
                now = time.perf_counter()
                self.train_active += now - seg_start
                seg_start = self.last_report = now
                if not math.isfinite(loss_total) and self.strategy.checks_batch_loss:
                    return False
                stepper.mark_finite()
                done = self.samples_done + stepper.samples
                seg_n = stepper.samples - last_samples
                rate = done / max(self.train_active, 1e-9)
                self.emit({"kind": EventKind.BATCH, "epoch": self.epoch, "batch": stepper.batches, "n_batches": self.steps,
                           "loss": (loss_total - last_loss) / max(seg_n, 1),
                           "samples_per_s": seg_n / max(self.train_active - last_active, 1e-9),
                           "eta_s": (total_samples - done) / rate if rate > 0 else None,
                           "global_step": self.global_step})
                last_loss, last_samples, last_active = loss_total, stepper.samples, self.train_active
                if self.phase_step is not None:
                    self._emit_phases("batch")
        except _Stop:
            self.samples_done += stepper.samples  # the partial epoch counts for the throughput
            raise
        finally:
            self.train_active += time.perf_counter() - seg_start
        return True

    # --- multi-phase runs (netstudio.training.phased) ---------------------------------
    phase_step: PhasedStep | None = None
    _phase_seen: tuple[list[float], int] = ([], 0)

    def _emit_phases(self, scope: str) -> None:
        """The ``phases`` event: each phase's mean loss over the batches since the last report ("batch") or
        over the epoch ("epoch", summed over the ranks of a distributed job)."""
        ps = self.phase_step
        assert ps is not None
        sums = ps.sums.tolist() if ps.sums is not None else [0.0] * len(ps.names)
        n = ps.samples
        if scope == "epoch":
            if isinstance(self.strategy, DataParallel):
                totals = self.strategy.ctx.all_sum([*sums, float(n)])
                sums, n = totals[:-1], int(totals[-1])
            seen, seen_n = [0.0] * len(sums), 0
        else:
            seen, seen_n = self._phase_seen
            self._phase_seen = (list(sums), n)
        k = n - seen_n
        if k <= 0 or not self.strategy.is_main:
            return
        self.emit({"kind": EventKind.PHASES, "scope": scope, "epoch": self.epoch, "global_step": self.global_step,
                   "losses": {name: (s - s0) / k for name, s, s0 in zip(ps.names, sums, seen)},
                   "lrs": {name: float(o.param_groups[0]["lr"])
                           for name, o in zip(ps.names, ps.optimizer.optimizers)}})

    def _emit_samples(self, model: nn.Module, plan: Any) -> None:
        """The ``samples`` event: a GAN's generator on fixed noise (the same every epoch), as plain lists."""
        if not self.strategy.is_main:
            return
        from netstudio.compiler.build import generator_noise, generator_of

        gen = generator_of(model)
        if gen is None:
            return
        z = generator_noise(model, SAMPLE_COUNT, self.config.seed, self.device)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = gen(*z)
        finally:
            if was:
                plan.train_mode(model)
        out = out.detach().float().cpu()
        self.emit({"kind": EventKind.SAMPLES, "epoch": self.epoch, "node_id": gen.meta.get("node", ""),
                   "shape": list(out.shape[1:]), "images": out.tolist()})

    # --- per-node statistics (netstudio.training.nodestats) -------------------------
    _pending_stats: Any = None

    def _sampled_step(self, stats: NodeStats, item: Any) -> None:
        """One step with the statistics probes in (run eagerly, also on the CUDA fast path)."""
        stepper = self.stepper
        assert stepper is not None
        stats.begin()
        try:
            if self.data.resident:
                stepper.run_indices_uncaptured(item)
            else:
                stepper.run_tensors(item[0].to(self.device), item[1].to(self.device))
        finally:
            stats.cancel()
        self._pending_stats = stats.end(self.global_step + 1, self.epoch)

    def _emit_stats(self, sample: Any, nan_origin: str | None = None) -> None:
        self._pending_stats = None
        if self.stats is not None and self.strategy.is_main:
            event = sample.event(self.stats.diagnoses(sample))
            event["nan_origin"] = nan_origin
            self.emit(event)

    def _replay_to_nan(self, bad_batch: int) -> None:
        """After a NaN/inf loss: replay the epoch from its start up to the bad batch, sampling the last
        steps, so the statistics see the step where NaN/Inf first appeared (single process, resident data)."""
        stats, stepper, model, opt = self.stats, self.stepper, self.model, self.optimizer
        if stats is None or stats.first_nonfinite is not None or not self.data.resident \
                or self._epoch_perm is None or self._epoch_opt_state is None:
            return
        assert stepper is not None and model is not None and opt is not None
        _restore(model, self.start_state)
        opt.load_state_dict(self._epoch_opt_state)
        replay = NodeStats(model, self.plan, 1, None)
        bs, perm = self.config.batch_size, self._epoch_perm
        first_sampled = max(0, bad_batch - 20)
        step0 = self.global_step - stepper.batches
        for i in range(bad_batch + 1):
            idx = perm[i * bs:(i + 1) * bs]
            if i < first_sampled:
                stepper.run_indices_uncaptured(idx)
                continue
            replay.begin()
            try:
                stepper.run_indices_uncaptured(idx)
            finally:
                replay.cancel()
            replay.end(step0 + i + 1, self.epoch)
            if replay.first_nonfinite is not None:
                break
        stats.first_nonfinite, stats.samples = replay.first_nonfinite, replay.samples

    def _nan_report(self, bad_batch: int) -> str | None:
        """The sentence naming the first node that produced NaN/Inf (and its stats event), or None."""
        if self.stats is None:
            return None
        try:
            self._replay_to_nan(bad_batch)
        except Exception:  # noqa: BLE001 - naming the node is extra: the divergence message comes anyway
            pass
        found = self.stats.first_nonfinite
        if found is None:
            return None
        self._emit_stats(found[0], found[1])
        return self.stats.nan_message()

    # --- checkpoints (any run with a checkpoint folder; written by rank 0 only) --------
    def _resume_from_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, sched: Any,
                                gen: torch.Generator) -> tuple[int, float, int]:
        """(first epoch to run, best monitored loss, epochs without improvement) after a resume."""
        if not (self.resume and self.ckpt_dir):
            return 1, math.inf, 0
        from netstudio.training.checkpoints import restore_checkpoint

        path = checkpoint_path(self.ckpt_dir)
        state = self.strategy.read_checkpoint(path)
        if state is None:
            return 1, math.inf, 0
        done = restore_checkpoint(state, model, optimizer, sched)
        if state.get("generator") is not None:
            gen.set_state(state["generator"])  # the shuffling continues where it stopped
        self.history = [{**e, "kind": EventKind.EPOCH} if isinstance(e, dict) else e
                        for e in state.get("history") or []]
        self.best_epoch = state.get("best_epoch")
        best = state.get("best_state")
        self.best_state = None if best is None else {k: v.to(self.device) for k, v in best.items()}
        self.emit({"kind": EventKind.RESUMED_FROM, "epoch": done, "path": path})
        return done + 1, float(state.get("monitor_best", math.inf)), int(state.get("bad_epochs", 0))

    def _save_checkpoint(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, sched: Any,
                         gen: torch.Generator, monitor_best: float, bad_epochs: int) -> None:
        if not self.ckpt_dir or not self.strategy.is_main:
            return
        best = None if self.best_state is None else {k: v.detach().cpu() for k, v in self.best_state.items()}
        save_checkpoint(checkpoint_path(self.ckpt_dir), model=model, optimizer=optimizer,
                          scheduler=sched, epoch=epoch,
                          extra={"generator": gen.get_state(), "history": _plain_events(self.history),
                                 "best_epoch": self.best_epoch,
                                 "best_state": best, "monitor_best": monitor_best, "bad_epochs": bad_epochs})

    # --- endings ------------------------------------------------------------------
    def _metrics(self, entry: dict[str, Any] | None) -> dict[str, Any]:
        e = entry or {}
        return {"train_loss": e.get("train_loss"), "train_accuracy": e.get("train_accuracy"),
                "val_loss": e.get("val_loss"), "val_accuracy": e.get("val_accuracy"),
                "epochs_run": len(self.history),
                "samples_per_s": self.samples_done / self.train_active if self.train_active > 0 else None,
                "device": self.label, "device_id": str(self.device), "best_epoch": self.best_epoch,
                "fast_path": self.fast, **(self.tuner.summary() if self.tuner is not None else {})}

    def _cpu_model(self) -> nn.Module | None:
        if self.model is None:
            return None
        self._undo_reorder()  # the model's own forward again: what exports and callers see
        self.model.to("cpu").eval()
        if self.channels_last:
            # hand back ordinary weights: exports and state_dicts look as without the speed-up
            self.model.to(memory_format=torch.contiguous_format)
        return self.model

    def _finish(self, status: FitStatus, message: str, keep_best: bool) -> FitResult:
        entry = self.history[-1] if self.history else None
        if keep_best and self.config.keep_best and self.best_state is not None and self.best_epoch is not None \
                and self.history and self.best_epoch != self.history[-1]["epoch"]:
            assert self.model is not None
            _restore(self.model, self.best_state)
            entry = self.history[self.best_epoch - 1]
            message += f"; kept the weights of epoch {self.best_epoch} (lowest validation loss)"
        metrics = self._metrics(entry)
        model = self._cpu_model()
        if model is not None and self.strategy.is_main:
            try:  # R²/MAE/RMSE of a regression, each loss term of a multi-loss project
                metrics.update(outcome_metrics(model, self.plan, self.data, "cpu"))
            except Exception:  # noqa: BLE001 - extra figures must never turn a finished run into an error
                pass
        self.emit({"kind": EventKind.END, "status": status, "message": message})
        return FitResult(status, message, self.history, metrics, self.best_epoch, model)

    def _diverged(self) -> FitResult:
        """NaN/inf loss: name the batch, restore the weights of the epoch start, report an error."""
        assert self.stepper is not None and self.model is not None and self.optimizer is not None
        batch, value = self.stepper.first_bad_batch()
        what = "infinite" if math.isinf(value) else "NaN"
        lr = float(self.optimizer.param_groups[0]["lr"])
        origin = self._nan_report(batch)
        _restore(self.model, self.start_state)
        message = (f"Training diverged at epoch {self.epoch}, batch {batch + 1}: the loss became {what}. "
                   f"Lower the learning rate (currently {_fmt_lr(lr)}) or check the data for invalid values.")
        if origin is not None:
            message += f" {origin}."
        return self.error(message)

    def error(self, message: str, trace: str | None = None) -> FitResult:
        entry = self.history[-1] if self.history else None
        metrics = self._metrics(entry)
        model = None
        try:
            model = self._cpu_model()
        except Exception:  # noqa: BLE001 - a broken device must not hide the original error
            model = None
        try:
            self.emit({"kind": EventKind.END, "status": FitStatus.ERROR, "message": message})
        except Exception:  # noqa: BLE001 - the listener itself may be what failed
            pass
        return FitResult(FitStatus.ERROR, message, self.history, metrics, self.best_epoch, model, trace)

    def release(self) -> None:
        """Drop every device tensor except the model's (after running out of memory)."""
        self.stepper = None
        self.optimizer = None
        self.start_state = {}
        self.best_state = None
        gc.collect()

    def input_mismatch(self) -> str | None:
        """The friendly message when the dataset's features cannot be what the model was built for."""
        info = getattr(getattr(self.plan, "compiled", None), "input_info", None)
        if info is None:
            return None
        data = self.data
        if data.resident:
            got = tuple(data.train_x.shape[1:]) if data.train_x is not None else None
        else:
            try:
                assert data.train_set is not None
                got = tuple(data.train_set[0][0].shape)
            except Exception:  # noqa: BLE001
                got = None
        want = tuple(info.sample_shape)
        if got is None or got == want:
            return None
        return f"The dataset's features (shape {_shape(got)}) do not fit the model input (expected {_shape(want)})"


def fit(plan: "TrainingPlan", data: "PreparedData", config: TrainConfig, report: Report | None = None,
        stop_event: threading.Event | None = None, pause_event: threading.Event | None = None,
        model: nn.Module | None = None, *, dist: "DistContext | None" = None, checkpoint_dir: str | None = None,
        resume: bool = False) -> FitResult:
    """Train a copy of ``model`` (or of ``plan.model``) on ``data``; never raises.

    ``plan``: a :class:`netstudio.compiler.build.TrainingPlan`; ``data``: a
    :class:`netstudio.data.PreparedData`. Neither ``plan`` nor ``model`` is modified.
    Errors (unusable device, NaN loss, out of memory, data that does not fit the
    model, any exception) come back as ``status == "error"`` with a message.

    ``dist`` (a :class:`netstudio.training.distributed.DistContext` of a job with
    several ranks): DDP, each rank trains on its share of every global batch, epoch
    metrics are all-reduced. ``checkpoint_dir``: model/optimizer/scheduler/epoch
    (and the shuffling state) are saved there after every epoch (rank 0 only);
    ``resume`` continues after the last saved epoch.
    """
    trainer = _Trainer(plan, data, config, report, stop_event, pause_event, model, strategy_for(dist),
                       checkpoint_dir, resume)
    try:
        return _fit(trainer, config)
    finally:
        if trainer.tuner is not None:
            trainer.tuner.close()  # the caller's thread count again


def _fit(trainer: _Trainer, config: TrainConfig) -> FitResult:
    try:
        return trainer.run()
    except NetStudioError as exc:
        return trainer.error(str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the UI thread must always get a result
        trace = tb.format_exc()
        if not _is_oom(exc):
            if trainer.global_step == 0 and isinstance(exc, RuntimeError):
                mismatch = trainer.input_mismatch()
                if mismatch is not None:
                    return trainer.error(mismatch, trace)
            return trainer.error(f"{type(exc).__name__}: {exc}", trace)
    # Out of memory, handled outside the except block so that the traceback's
    # frames (holding device tensors) are gone before the cache is emptied.
    trainer.release()
    result = trainer.error(f"Out of GPU memory at batch size {config.batch_size}: reduce the batch size or the "
                           "model size", trace)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result
