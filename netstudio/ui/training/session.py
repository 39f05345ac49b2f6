"""The training session: run state, worker threads, the trained model and its results.

A :class:`TrainingSession` is the one owner of everything a training run leaves
behind in the app. It starts a :class:`TrainingWorker` on a thread for a frozen
snapshot of the graph, follows the worker's reports, reaps the thread, keeps the
weights worth keeping and runs the evaluation of the validation split. Views
(the Training dock, the editor window) only follow its typed signals; it holds
no widgets and never asks a window anything.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal, Slot

from netstudio.enums import StrEnum
from netstudio.errors import Scope, Severity
from netstudio.training.config import TrainConfig
from netstudio.training.health import HealthBook
from netstudio.ui.training.results import format_metric
from netstudio.ui.training.worker import (EvalWorker, TrainingWorker, TrainJob, WorkerThread, first_samples,
                                          reserve_cores_for_workers)

#: statuses of FitResult (and the CLI) that mean the run failed
FAILED_STATUSES = ("error", "failed", "diverged", "nan")
#: a run whose mean training loss after an epoch is within this fraction of its first batch's
#: loss has not learned anything yet: Problems says so (plain SGD on a conv net, a tiny rate)
FLAT_LOSS_FRACTION = 0.02
FLAT_LOSS_HINT = "raise the learning rate or use Adam"


class RunState(StrEnum):
    """Where a session's training run is; equal to the plain strings the dock used before."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPING = "stopping"

    @property
    def busy(self) -> bool:
        """A run exists (the editor is locked, settings cannot change)."""
        return self is not RunState.IDLE


@dataclass
class TrainedModel:
    """The weights the session currently holds and what they were trained from."""

    model: Any
    plan: Any
    data: Any
    graph_dict: dict[str, Any]
    config: TrainConfig
    run_index: int
    result: Any = None
    #: complete epochs of its run behind these weights
    epochs_done: int = 0
    #: saved to a file through the export dialog at least once
    exported: bool = False
    #: weights loaded from elsewhere (a recorded run): what to call them
    label: str | None = None

    def describe(self) -> str:
        """Which weights these are, in words: "run 2 after epoch 3"."""
        if self.label:
            return self.label
        if self.epochs_done <= 0:
            return f"run {self.run_index} (stopped within its first epoch)"
        return f"run {self.run_index} after epoch {self.epochs_done}"

    def example_input(self, n: int = 2) -> Any:
        """A real batch of validation (else training) features, CPU."""
        if self.data is None:
            return None
        x, _ = first_samples(self.data, "val", n)
        if x is None:
            x, _ = first_samples(self.data, "train", n)
        return None if x is None else x.clone()


@dataclass
class RunEnd:
    """How a run ended, as the session saw it once its thread was reaped."""

    run_index: int
    outcome: dict[str, Any]
    status: str
    result: Any
    #: the run failed (error, diverged…)
    failed: bool
    #: the model could not be built or the data not loaded: nothing trained, no run counted
    refused: bool


class TrainingSession(QObject):
    """Owns one project's training runs; the GUI follows its signals."""

    #: the new :class:`RunState`
    state_changed = Signal(object)
    #: a run was started (its index); the thread is running
    run_started = Signal(int)
    #: {"run", "phase"} of the current run ("building model", "loading data", "training")
    phase = Signal(object)
    #: data_summary(...) of the current run once its dataset is loaded
    data_ready = Signal(object)
    #: one report event (start / batch / epoch / paused / resumed / end) of the current run, in order
    report = Signal(object)
    #: a :class:`RunEnd`, after the thread has ended and the weights were taken over
    run_finished = Signal(object)
    #: (evaluation dict, announce): announce is False for an evaluation cancelled by the app
    evaluation_done = Signal(object, bool)
    #: problems the current run found (a flat loss), for the editor's Problems panel
    run_problems_changed = Signal(list)
    #: the per-node statistics of the current run changed: the :class:`HealthBook` (also ``self.health``)
    node_health_changed = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        # Dynamo registers process-wide state on import; doing it here, on the GUI
        # thread, keeps the first import from happening inside a worker thread.
        import torch._dynamo  # noqa: F401

        super().__init__(parent)
        #: torch intra-op threads of the training/evaluation workers: all of torch's default
        #: (what ``netstudio train`` uses); the GUI thread itself computes with one
        self.torch_threads: int | None = reserve_cores_for_workers()  # before this thread runs any torch op
        self.state = RunState.IDLE
        self.trained: TrainedModel | None = None
        self.outcome: dict[str, Any] | None = None
        self.evaluation: dict[str, Any] | None = None
        #: the last run's number if it failed (diverged…): Export then says it exports older weights
        self.failed_run: int | None = None
        self.run_problems: list[Any] = []
        #: per-node health of the current run (its ``stats`` events) and the problems found in it
        self.health = HealthBook()
        self._flat_problems: list[Any] = []
        self.run_count = 0
        #: the graph and settings of the current (or last) run, frozen when it started
        self.job_graph: dict[str, Any] | None = None
        self.job_config: TrainConfig | None = None
        #: the current run continues the previous weights
        self.continuing = False
        self.last_stop_seconds: float | None = None
        self.closing = False
        self._train: WorkerThread | None = None
        self._eval: WorkerThread | None = None
        self._stop_requested_at: float | None = None
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._about_to_quit)

    # ======================================================================
    # state
    # ======================================================================
    def is_running(self) -> bool:
        """True while the training thread exists and runs."""
        return self._train is not None and self._train.is_running()

    @property
    def evaluating(self) -> bool:
        """An evaluation thread exists (running or not yet reaped)."""
        return self._eval is not None

    @property
    def worker(self) -> TrainingWorker | None:
        return self._train.worker if self._train is not None else None  # type: ignore[return-value]

    @property
    def train_thread(self) -> WorkerThread | None:
        return self._train

    def _set_state(self, state: RunState) -> None:
        self.state = state
        self.state_changed.emit(state)

    def weights_note(self) -> str:
        """Which weights Export writes; after a failed run, that they are the last good ones."""
        t = self.trained
        if t is None:
            return ""
        note = f"Weights of {t.describe()}"
        if self.failed_run is not None:
            note += f": the last good ones, from before run {self.failed_run} failed"
        return note

    def unexported_weights(self) -> str | None:
        """A warning if trained weights that were never exported would be lost (None: nothing to lose)."""
        t = self.trained
        if t is None or t.exported or self.closing:
            return None
        return (f"The weights trained in {t.describe()} were never exported and will be lost.\n\n"
                "Use Export… in the Training panel to keep them.")

    # ======================================================================
    # commands
    # ======================================================================
    def start(self, graph_dict: dict[str, Any], config: TrainConfig, *, continue_training: bool = False,
              start_weights: str | None = None, tensorboard_dir: str | None = None, run_name: str = "run") -> int:
        """Start a run on a frozen graph/config; returns its index (0: not started, busy or nothing to continue).

        ``start_weights``: a weights file (an imported model's, beside the project) that a fresh run
        starts from where layer names and shapes match. ``tensorboard_dir``: also log the epochs for
        TensorBoard, into a folder ``<run_name>-<time>`` there (netstudio.training.tensorboard)."""
        if self.state != RunState.IDLE or self.is_running():
            return 0
        if continue_training and self.trained is None:
            return 0
        self.cancel_evaluation()
        self.run_count += 1
        job = TrainJob(graph_dict, config, self.run_count,
                       init_model=self.trained.model if continue_training and self.trained is not None else None,
                       num_threads=self.torch_threads, start_weights=start_weights,
                       tensorboard_dir=tensorboard_dir, run_name=run_name)
        worker = TrainingWorker(job)
        # Explicitly queued: the slots run on the GUI thread (their signals drive widgets).
        queued = Qt.ConnectionType.QueuedConnection
        worker.progress.connect(self._on_progress, queued)
        worker.data_ready.connect(self._on_data_ready, queued)
        worker.phase.connect(self._on_phase, queued)
        self.job_graph, self.job_config = graph_dict, config
        self.continuing = continue_training
        self.set_run_problems([])
        self.health.clear()
        self.node_health_changed.emit(self.health)
        self.outcome = None
        self._stop_requested_at = None
        self._train = WorkerThread(worker, f"netstudio-train-{self.run_count}", self._on_thread_finished)
        self._set_state(RunState.STARTING)
        self._train.start()
        self.run_started.emit(self.run_count)
        return self.run_count

    def pause(self) -> bool:
        """Ask the loop to pause after the current batch; it confirms with a "paused" report."""
        if self._train is None or self.state not in (RunState.RUNNING, RunState.STARTING):
            return False
        self._train.worker.pause_event.set()  # type: ignore[attr-defined]
        self._set_state(RunState.PAUSING)
        return True

    def resume(self) -> bool:
        if self._train is None or self.state not in (RunState.PAUSING, RunState.PAUSED):
            return False
        self._train.worker.pause_event.clear()  # type: ignore[attr-defined]
        self._set_state(RunState.RUNNING)
        return True

    def stop(self) -> bool:
        """Ask the loop to stop after the current batch (set directly: the worker never waits on Qt)."""
        if self._train is None or not self.is_running():
            return False
        self._stop_requested_at = time.perf_counter()
        self._train.stop()
        if self._eval is not None:
            self._eval.stop()
        self._set_state(RunState.STOPPING)
        return True

    def reset_weights(self) -> bool:
        """Forget the trained weights (the next run starts from scratch)."""
        if self.state != RunState.IDLE:
            return False
        self.cancel_evaluation()
        self.trained = None
        self.evaluation = None
        self._set_state(RunState.IDLE)
        return True

    def hold_weights(self, state: dict[str, Any], graph_dict: dict[str, Any], config: TrainConfig, *,
                     label: str) -> TrainedModel:
        """Hold ``state`` (a recorded run's weights, handed over: its tensors may become the model's) as the
        trained model of ``graph_dict``.

        Raises TrainingError when they do not fit the graph's model, or while a run is going.
        """
        from netstudio.compiler.held import plan_with_state
        from netstudio.errors import TrainingError
        from netstudio.graph.model import Graph

        if self.state != RunState.IDLE:
            raise TrainingError("Weights cannot be loaded while a run is going", hint="wait for it or stop it")
        try:  # the model is built without the random init that the state replaces; its tensors become the model's
            plan = plan_with_state(Graph.from_dict(graph_dict), state, config.batch_size)
            model = plan.model
        except (RuntimeError, KeyError) as e:
            raise TrainingError(f"These weights do not fit the current model ({str(e).splitlines()[0]})",
                                hint="the graph changed since the run: undo the changes or train again") from None
        model.eval()
        self.cancel_evaluation()
        self.trained = TrainedModel(model, plan, None, graph_dict, config, self.run_count, None,
                                    epochs_done=0, label=label)
        self.trained.exported = True  # they come from a file: closing loses nothing (no "not exported" question)
        self.evaluation = None
        self.failed_run = None
        self._set_state(RunState.IDLE)
        return self.trained

    def forget_runs(self) -> bool:
        """No weights, no results, no problems; the next run is run 1."""
        if self.state != RunState.IDLE:
            return False
        self.cancel_evaluation()
        self.trained = None
        self.outcome = None
        self.evaluation = None
        self.run_count = 0
        self.failed_run = None
        self.set_run_problems([])
        self._set_state(RunState.IDLE)
        return True

    def set_run_problems(self, problems: list[Any]) -> None:
        self._flat_problems = []
        self.run_problems = list(problems)
        self.run_problems_changed.emit(self.run_problems)

    def predict(self, x: Any) -> Any:
        """Outputs of the current trained model for features ``x`` (CPU, eval mode, no grad)."""
        import torch

        if self.trained is None:
            raise RuntimeError("no trained model")
        m = copy.deepcopy(self.trained.model).cpu().eval()
        with torch.no_grad():
            return m(x.cpu())

    # ======================================================================
    # worker signals (queued onto the GUI thread)
    # ======================================================================
    def _from_current(self, payload: dict[str, Any]) -> bool:
        """Is this payload from the run in progress (not a straggler of an ended one)?"""
        return self._train is not None and payload.get("run") == self._train.worker.job.run_index  # type: ignore

    @Slot(object)
    def _on_phase(self, payload: dict[str, Any]) -> None:
        if self._from_current(payload) and self.state != RunState.STOPPING:
            self.phase.emit(payload)

    @Slot(object)
    def _on_data_ready(self, summary: dict[str, Any]) -> None:
        if self._from_current(summary):
            self.data_ready.emit(summary)

    @Slot(object)
    def _on_progress(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            if not self._from_current(ev):
                continue
            kind = ev.get("kind")
            self.report.emit(ev)
            if kind in ("batch", "start") and self.state == RunState.STARTING:
                self._set_state(RunState.RUNNING)
            elif kind == "paused" and self.state == RunState.PAUSING:
                self._set_state(RunState.PAUSED)
            elif kind == "epoch":
                self._check_flat_loss(ev)
            elif kind == "stats":
                self._on_stats(ev)

    def _on_stats(self, ev: dict[str, Any]) -> None:
        """Per-node statistics: the health book, and its diagnoses in Problems (with the flat-loss finding)."""
        from netstudio.errors import Problem

        self.health.add(ev)
        if self._flat_problems or self.health.diagnoses or self.run_problems:
            found = [Problem(d["message"], d["node_id"], d.get("hint"),
                             Severity.ERROR if d.get("severity") == "error" else Severity.WARNING, Scope.TRAINING)
                     for d in self.health.diagnoses.values()]
            self._publish_problems(found)
        self.node_health_changed.emit(self.health)

    def _publish_problems(self, stats_problems: list[Any]) -> None:
        problems = self._flat_problems + stats_problems
        if problems != self.run_problems:
            self.run_problems = problems
            self.run_problems_changed.emit(self.run_problems)

    def _check_flat_loss(self, ev: dict[str, Any]) -> None:
        """Warn in Problems while the loss has not moved from where the run started."""
        first, now = ev.get("first_loss"), ev.get("train_loss")
        if not (isinstance(first, (int, float)) and isinstance(now, (int, float))
                and math.isfinite(first) and math.isfinite(now) and first != 0):
            return
        stats_problems = [p for p in self.run_problems if p not in self._flat_problems]
        if abs(first - now) > FLAT_LOSS_FRACTION * abs(first):
            self._flat_problems = []
            self._publish_problems(stats_problems)
            return
        from netstudio.errors import Problem

        worker = self.worker
        plan = worker.plan if worker is not None else None
        epoch = ev.get("epoch")
        self._flat_problems = [Problem(
            f"The loss is flat: {format_metric(float(first))} at the start of run {self.run_count}, "
            f"{format_metric(float(now))} after epoch {epoch}", plan.optimizer_node if plan is not None else None,
            FLAT_LOSS_HINT, Severity.WARNING, Scope.TRAINING)]
        self._publish_problems(stats_problems)

    @Slot()
    def _on_thread_finished(self) -> None:
        """Queued from the training/eval thread's ``finished``: reap whichever has ended."""
        if self._train is not None and not self._train.is_running():
            self._finish_training()
        if self._eval is not None and not self._eval.is_running():
            self._finish_evaluation()

    def _finish_training(self) -> None:
        wt, self._train = self._train, None
        if wt is None:
            return
        wt.join(0)
        if self._stop_requested_at is not None:
            self.last_stop_seconds = time.perf_counter() - self._stop_requested_at
        worker: TrainingWorker = wt.worker  # type: ignore[assignment]
        outcome = dict(worker.outcome or {"status": "error", "message": "The training thread ended unexpectedly"})
        self.outcome = outcome
        status = str(outcome.get("status", ""))
        result = worker.result
        failed = status in FAILED_STATUSES
        run_index = worker.job.run_index
        # Refused: the model could not be built or the data not loaded, so nothing trained.
        # That is no run: the number is given back and the last run's figures stay.
        refused = failed and (worker.plan is None or worker.data is None)
        end = RunEnd(run_index, outcome, status, result, failed, refused)
        if refused:
            if self.run_count == run_index:
                self.run_count -= 1
            self._set_state(RunState.IDLE)
            self.run_finished.emit(end)
            return
        model = getattr(result, "model", None)
        epochs_done = len(getattr(result, "history", None) or [])
        if failed and epochs_done == 0:
            # a run that failed in its first epoch leaves the weights it started from: for a
            # fresh run that is a random initialisation, nothing worth exporting; keep what
            # was trained before (if anything), it is still the last good model
            model = None
        if model is not None and _weights_finite(model):
            # fit keeps the last good (or best) weights even when a run fails: keep them.
            self.trained = TrainedModel(model, worker.plan, worker.data, self.job_graph or {},
                                        self.job_config or TrainConfig(), run_index, result,
                                        epochs_done=epochs_done)
        self.failed_run = run_index if failed else None
        self.evaluation = None
        self._set_state(RunState.IDLE)
        self.run_finished.emit(end)
        if self.trained is not None and not self.closing and self.trained.data is not None \
                and self.trained.result is result:
            self._start_evaluation()

    # ======================================================================
    # evaluation
    # ======================================================================
    def _start_evaluation(self) -> None:
        t = self.trained
        if t is None or t.plan is None:
            return
        worker = EvalWorker(t.model, t.plan, t.data, self.torch_threads)
        self._eval = WorkerThread(worker, "netstudio-eval", self._on_thread_finished)
        self._eval.start()

    def cancel_evaluation(self, timeout_ms: int = 2000) -> None:
        if self._eval is None:
            return
        self._eval.stop()
        self._eval.join(timeout_ms)
        self._finish_evaluation(announce=False)

    def _finish_evaluation(self, announce: bool = True) -> None:
        wt, self._eval = self._eval, None
        if wt is None:
            return
        wt.join(0)
        ev = wt.worker.outcome or {}
        if ev.get("status") == "ok":
            self.evaluation = ev
        self.evaluation_done.emit(ev, announce)

    # ======================================================================
    # closing
    # ======================================================================
    def shutdown(self, timeout_ms: int = 2000) -> bool:
        """Stop every worker thread and wait for it; True if all ended within ``timeout_ms``."""
        self.closing = True
        deadline = time.perf_counter() + timeout_ms / 1000.0
        ok = True
        for wt in (self._train, self._eval):
            if wt is not None:
                wt.stop()
        for wt in (self._train, self._eval):
            if wt is None:
                continue
            left = max(0, int((deadline - time.perf_counter()) * 1000))
            if not wt.join(left):
                ok = False
        if self._train is not None and not self._train.is_running():
            self._finish_training()
        if self._eval is not None and not self._eval.is_running():
            self._finish_evaluation(announce=False)
        return ok

    @Slot()
    def _about_to_quit(self) -> None:
        try:
            self.shutdown()
        except RuntimeError:  # the C++ side is already gone
            pass


def _weights_finite(model: Any) -> bool:
    import torch

    try:
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())
    except Exception:  # noqa: BLE001
        return False
