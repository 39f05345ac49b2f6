"""Typed training events and run status.

``fit`` reports progress as plain dicts (they cross threads and are printed,
plotted and saved as JSON); their shapes are declared here once. The ``kind``
and ``status`` values are string enums, so ``ev["kind"] == "epoch"`` and
``result.status == "finished"`` keep working for readers that compare strings,
and a value serializes as its plain text.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any

if sys.version_info >= (3, 11):  # pragma: no cover - version dependent
    from enum import StrEnum as _StrEnum
    from typing import TypedDict
else:  # pragma: no cover - Python 3.10
    from typing import TypedDict

    class _StrEnum(str, Enum):
        """``enum.StrEnum`` for Python 3.10: members are their value as text."""

        def __str__(self) -> str:
            return str.__str__(self)

        def __format__(self, spec: str) -> str:
            return str.__format__(str(self), spec)


class _TextEnum(_StrEnum):
    # hashed like its text, so a member finds the entry of a dict keyed by the plain string (and back)
    def __hash__(self) -> int:
        return str.__hash__(self)


class FitStatus(_TextEnum):
    """How a ``fit`` run ended (``FitResult.status`` and the ``end`` event's ``status``)."""

    FINISHED = "finished"
    STOPPED = "stopped"              # by the user (stop event)
    EARLY_STOPPED = "early_stopped"  # the monitored loss stopped improving
    ERROR = "error"                  # anything else, a diverged loss included (the message says which)


class EventKind(_TextEnum):
    """The ``kind`` of every event ``fit`` reports."""

    START = "start"
    BATCH = "batch"
    EPOCH = "epoch"
    PAUSED = "paused"
    RESUMED = "resumed"
    RESUMED_FROM = "resumed_from"  # continued after an epoch saved in a checkpoint
    END = "end"
    STATS = "stats"                # per-node statistics of a sampled step (netstudio.training.nodestats)
    PHASES = "phases"              # each phase's loss of a multi-phase run (several optimizers: a GAN)
    SAMPLES = "samples"            # a generator's samples from fixed noise after an epoch (a GAN)


class _MultiPhaseStart(TypedDict, total=False):
    """Sent only by a multi-phase run (several optimizers): the phases in step order, and why the per-node
    statistics are off."""

    phases: list[str]
    stats_reason: str


class StartEvent(_MultiPhaseStart):
    kind: EventKind
    device: str
    device_id: str
    epochs: int
    steps_per_epoch: int
    n_train: int
    n_val: int
    task: str
    fast_path: bool
    fast_path_reason: str | None
    threads: int
    threads_mode: str
    precision: str          # off | bf16 | fp16 (netstudio.training.controls)
    clip_norm: float        # 0 = off
    clip_value: float       # 0 = off
    warmup_epochs: int      # 0 = off
    augmentation: str | None  # the training batches' image augmentation (netstudio.training.augment); None = off


class BatchEvent(TypedDict):
    kind: EventKind
    epoch: int
    batch: int
    n_batches: int
    loss: float
    samples_per_s: float
    eta_s: float | None
    global_step: int


class EpochEvent(TypedDict):
    kind: EventKind
    epoch: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    samples_per_s: float
    threads: int


class PausedEvent(TypedDict):
    kind: EventKind
    epoch: int
    batch: int
    global_step: int


class ResumedEvent(TypedDict):
    kind: EventKind
    paused_s: float


class ResumedFromEvent(TypedDict):
    kind: EventKind
    epoch: int
    path: str


class EndEvent(TypedDict):
    kind: EventKind
    status: FitStatus
    message: str


class Diagnosis(TypedDict):
    code: str          # dead_relu | vanishing | exploding | saturated | frozen | nonfinite
    node_id: str
    message: str
    hint: str
    severity: str      # "warning" | "error"


class StatsEvent(TypedDict):
    """Per-node figures of one sampled step: ``nodes[node_id]`` holds plain floats (None: does not apply):
    mean, std, zeros, saturated, min, max, nonfinite (its output); weight_norm, grad_norm, update_ratio
    (a node with parameters)."""

    kind: EventKind
    epoch: int
    global_step: int
    nodes: dict[str, dict[str, float | None]]
    diagnoses: list[Diagnosis]
    nan_origin: str | None   # the node where NaN/Inf first appeared (sent when the run diverged)
    #: per node id "output" / "grad": [lo, hi, counts of equal bins between them] (finite values)
    histograms: dict[str, dict[str, list[float]]]


class PhasesEvent(TypedDict):
    """Each phase's mean loss per sample (a multi-phase run: one phase per optimizer, in step order):
    ``scope`` "batch" — the batches since the previous report, sent with every batch event; "epoch" — the
    whole epoch (all ranks of a distributed job), sent right after the epoch event."""

    kind: EventKind
    scope: str
    epoch: int
    global_step: int
    losses: dict[str, float]
    #: each phase's learning rate (its optimizer's first group, as its scheduler set it, without the warm-up)
    lrs: dict[str, float]


class SamplesEvent(TypedDict):
    """After every epoch of a model with a generator (Noise → … → Real | Fake): its output for the same fixed
    noise each time, as plain nested lists of floats (``count`` samples of ``shape``, e.g. 1×28×28)."""

    kind: EventKind
    epoch: int
    node_id: str          # the node whose output the samples are
    shape: list[int]      # per sample
    images: list[Any]     # count × shape nested lists of floats


TrainingEvent = StartEvent | BatchEvent | EpochEvent | PausedEvent | ResumedEvent | ResumedFromEvent | EndEvent | StatsEvent | PhasesEvent | SamplesEvent

__all__ = ["BatchEvent", "Diagnosis", "EndEvent", "EpochEvent", "EventKind", "FitStatus", "PausedEvent", "PhasesEvent",
           "ResumedEvent", "ResumedFromEvent", "SamplesEvent", "StartEvent", "StatsEvent", "TrainingEvent"]
