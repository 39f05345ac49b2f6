"""One training job: the steps every caller of the trainer takes, in one order, in one place.

``netstudio train`` (:mod:`netstudio.cli`), each rank of a distributed job
(:mod:`netstudio.cli.rank`) and the app's training worker
(:mod:`netstudio.ui.training.worker`) all call :func:`prepare` and then :func:`run`:

1. the project's settings with the caller's overrides, validated;
2. the device: an unusable one fails here, before any data is read;
3. the memory preflight: a model that cannot fit is refused before a weight is allocated;
4. the seed, *then* the plan: the initial weights are drawn while the model is compiled,
   so the same seed gives the same weights — and the same run — on every path;
5. the data (a dataset that downloads is fetched once per machine in a distributed job).

:func:`run` trains (``fit``) and returns its :class:`FitResult`. Progress goes to a
report callback; stop and pause are ``threading.Event`` objects. Nothing here imports Qt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from netstudio.errors import TrainingError
from netstudio.training.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from netstudio.compiler.build import TrainingPlan
    from netstudio.data import PreparedData
    from netstudio.graph.model import Graph
    from netstudio.training.distributed import DistContext
    from netstudio.training.engine import FitResult, Report

#: the settings a caller may override (command-line flags, a rank's arguments)
OVERRIDABLE = ("epochs", "batch_size", "seed", "device", "threads", "clip_norm", "clip_value", "warmup_epochs",
               "precision", "stats_every")


class JobStopped(Exception):
    """The stop event was set while the job was being prepared (before training started)."""


@dataclass
class TrainingJob:
    """A run ready to train: its settings, the compiled plan (initial weights drawn) and the data."""

    config: TrainConfig
    plan: "TrainingPlan"
    data: "PreparedData"
    #: the training device's label (e.g. "cpu"), resolved before the data was read
    device: str
    #: the rank's place in a distributed job (None: this process alone)
    dist: "DistContext | None" = None
    #: what the start weights gave the model (``prepare(start_weights=...)``; empty without them)
    start_note: str = ""


def configure(base: TrainConfig, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """``base`` with the overrides that are set (None = keep), validated (ProjectError otherwise)."""
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(changes) - set(OVERRIDABLE))
    if unknown:
        raise TrainingError(f"Unknown training setting(s): {', '.join(unknown)}")
    config = replace(base, **changes)
    config.validate()
    return config


def prepare(graph: "Graph", config: TrainConfig, overrides: Mapping[str, Any] | None = None, *,
            dist: "DistContext | None" = None, memory_check: bool = True, processes: int = 1,
            stop_event: threading.Event | None = None, on_phase: Callable[[str], None] | None = None,
            on_data: Callable[["TrainingPlan", "PreparedData"], None] | None = None,
            start_weights: Mapping[str, Any] | None = None) -> TrainingJob:
    """Settings, device, memory preflight, seed, plan and data, in that order (see the module's text).

    ``dist``: this rank's context in a distributed job (its device was chosen when it joined).
    ``memory_check``: False where the launcher already checked for all ``processes`` together.
    ``on_phase``: told "building model" and "loading data" as they start; ``on_data``: called
    with the plan and the data once both exist. ``start_weights``: a state_dict (an imported model's)
    loaded onto the freshly built model by module path, where names and shapes match (a replaced head
    keeps its initial weights); :attr:`TrainingJob.start_note` says what was taken. Raises :class:`JobStopped` when ``stop_event``
    is set between the steps, and the steps' own errors (ProjectError, TrainingError, DataError...).
    """
    import torch

    import netstudio.data as data_mod
    from netstudio.compiler.build import build_plan
    from netstudio.training.devices import device_label
    from netstudio.training.preflight import check_memory
    from netstudio.training.strategy import strategy_for

    def stopped() -> None:
        if stop_event is not None and stop_event.is_set():
            raise JobStopped("Stopped before training started")

    config = configure(config, overrides)
    device = strategy_for(dist).device(config.device)  # an unusable device fails before the data is read
    if on_phase is not None:
        on_phase("building model")
    if memory_check:
        check_memory(graph, config.batch_size, config.device, processes=processes)  # before allocating
    torch.manual_seed(config.seed)  # the initial weights are drawn while compiling: seed first
    plan = build_plan(graph, config.batch_size)
    start_note = ""
    if start_weights is not None:
        from netstudio.training.checkpoints import load_weights_onto

        report = load_weights_onto(plan.model, start_weights)
        if not report.loaded:
            raise TrainingError("None of the start weights fit this model (no layer name and shape match)",
                                hint="the weights file beside the project belongs to another model: remove its "
                                     "entry, or train from fresh weights")
        start_note = report.text()
    stopped()
    if on_phase is not None:
        on_phase("loading data")
    params = plan.dataset_params
    source = plan.compiled.dataset_node
    if source is not None and graph.nodes[source].type_id == "data.input":  # an imported model's Input node
        shape = "×".join(str(v) for v in graph.nodes[source].params.get("shape", []))
        raise TrainingError(f"The Input node '{graph.nodes[source].name}' has no data to train on", node_id=source,
                            hint=f"replace it by a Dataset whose features are {shape}, connected to the same layers")
    if dist is not None and dist.active and str(params.get("download", "")).lower() in ("true", "1"):
        if dist.local_rank == 0:  # one download per machine, the other ranks then read the files
            data_mod.load(params)
        dist.barrier()
    data = data_mod.load(params)
    if on_data is not None:
        on_data(plan, data)
    stopped()
    return TrainingJob(config, plan, data, device_label(device), dist, start_note)


def check_continuable(model: "nn.Module", plan: "TrainingPlan") -> None:
    """Continuing from trained weights needs the architecture they were trained with."""
    old = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    new = {k: tuple(v.shape) for k, v in plan.model.state_dict().items()}
    if old != new:
        raise TrainingError("The model changed since these weights were trained, so training cannot continue "
                            "from them", hint="press Train to start from fresh weights")


def run(job: TrainingJob, report: "Report | None" = None, stop_event: threading.Event | None = None,
        pause_event: threading.Event | None = None, *, model: "nn.Module | None" = None,
        checkpoint_dir: str | None = None, resume: bool = False) -> "FitResult":
    """Train the prepared job (never raises for a failed run: see ``FitResult.status``).

    ``model``: continue from these weights (a copy is trained); ``checkpoint_dir``/``resume``:
    save after every epoch / continue after the last saved one.
    """
    import netstudio.training as training  # looked up per call: netstudio.training.fit is engine.fit

    if model is not None:
        check_continuable(model, job.plan)
    return training.fit(job.plan, job.data, job.config, report, stop_event, pause_event, model=model,
                      dist=job.dist, checkpoint_dir=checkpoint_dir, resume=resume)
