"""Hyperparameter search with Optuna: trials of the one training job, each kept as a run.

:func:`run_sweep` is a pure function with a report callback and a stop event (the CLI's
``netstudio sweep`` and the app's Sweep dialog both call it):

* the search space is ``NODE.PARAM=DISTRIBUTION`` texts (:mod:`netstudio.project.sweep_space`);
* a seeded TPE sampler draws each trial's values; they are set on a copy of the graph, which
  trains through :func:`netstudio.training.job.prepare` / :func:`~netstudio.training.job.run` with
  the sweep's settings (the same for every trial: epochs, batch size, seed...);
* after every epoch the trial reports its validation loss (the training loss without a validation
  split) to Optuna; the median pruner stops a trial whose loss is above the median of the finished
  trials at that epoch — the run ends after that epoch;
* every trial, complete, pruned or failed, is recorded in ``<project>.runs/`` (netstudio.project.runs)
  with a ``sweep`` entry: the sweep's id, the trial number, its state, its values and its objective;
* the best trial is the complete one with the lowest objective (the validation loss of the weights a
  run keeps: its best epoch).

``jobs`` > 1 runs trials in that many worker processes (spawned; CPU unless the settings name a GPU,
spread over the GPUs there are). The study stays in this process: each worker sends its epoch losses
over a pipe and waits for the prune decision. Optuna is optional (``pip install netstudio[sweep]``).
Nothing here imports Qt.
"""

from __future__ import annotations

import datetime
import math
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from netstudio.enums import StrEnum
from netstudio.errors import NetStudioError, SweepError
from netstudio.project.sweep_space import ParamSpace, Target, apply_values, parse_space, resolve, suggest
from netstudio.training.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.graph.model import Graph

INSTALL_HINT = "pip install netstudio[sweep]"
#: trials drawn at random before TPE models the results (fewer for a short sweep, see ``startup_trials``)
TPE_STARTUP_MAX = 10
#: complete trials before the median pruner prunes (Optuna's default)
PRUNE_AFTER = 5

SweepReport = Callable[[dict[str, Any]], None]


class TrialState(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"      # training failed (diverged, a size the model cannot take...)
    STOPPED = "stopped"    # the sweep was stopped while the trial ran


class SweepEvent(StrEnum):
    """The ``kind`` of the dicts :func:`run_sweep` reports."""

    START = "sweep_start"        # sweep, trials, keys, jobs
    TRIAL_START = "trial_start"  # trial, params
    TRIAL_EPOCH = "trial_epoch"  # trial, epoch, value, pruned
    TRIAL_END = "trial_end"      # TrialOutcome.to_dict()
    END = "sweep_end"            # SweepResult.to_dict()


def require_optuna() -> Any:
    """The optuna module, or SweepError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise SweepError("Hyperparameter search needs Optuna, which is not installed", hint=INSTALL_HINT) from None
    return optuna


@dataclass
class TrialOutcome:
    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None              # the objective (complete: kept weights' val loss; pruned: last reported)
    epochs_run: int = 0
    val_accuracy: float | None = None
    seconds: float = 0.0
    message: str = ""
    run_folder: str | None = None
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = str(self.state)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialOutcome":
        return cls(**{**d, "state": TrialState(str(d["state"])), "params": dict(d.get("params") or {})})


@dataclass
class SweepResult:
    sweep_id: str
    keys: list[str]
    trials: list[TrialOutcome] = field(default_factory=list)
    #: why it ended before its trials were all run: "" | "timeout" | "stopped"
    ended_early: str = ""
    seconds: float = 0.0

    @property
    def best(self) -> TrialOutcome | None:
        done = [t for t in self.trials if t.state == TrialState.COMPLETE and t.value is not None]
        return min(done, key=lambda t: (t.value, t.number)) if done else None

    def count(self, state: TrialState) -> int:
        return sum(1 for t in self.trials if t.state == state)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"sweep": self.sweep_id, "keys": list(self.keys), "trials": [t.to_dict() for t in self.trials],
                "best": best.to_dict() if best is not None else None, "ended_early": self.ended_early,
                "seconds": self.seconds, "complete": self.count(TrialState.COMPLETE),
                "pruned": self.count(TrialState.PRUNED), "failed": self.count(TrialState.FAILED)}


@dataclass
class SweepSpec:
    """Everything a sweep needs, in plain data (it travels to worker processes)."""

    project_path: str                 # runs are recorded beside it (and only named after it otherwise)
    graph_dict: dict[str, Any]
    config: TrainConfig               # the settings of every trial (overrides already applied)
    params: list[str]                 # NODE.PARAM=DISTRIBUTION texts
    trials: int = 20
    timeout_s: float | None = None    # no trial starts after this many seconds
    jobs: int = 1
    sampler_seed: int = 0
    prune_after: int = PRUNE_AFTER    # complete trials before the pruner prunes
    record: bool = True               # keep every trial in <project>.runs/ (also needs recording_enabled())
    keep_weights: bool = False        # keep each trial's trained weights in its run folder
    source: str = "sweep"
    #: a weights file (an imported model's, beside the project) every trial starts from where layer names and
    #: shapes match, as `netstudio train` does; None: fresh weights
    start_weights: str | None = None

    def space(self) -> list[ParamSpace]:
        return parse_space(self.params)

    def validate(self) -> list[Target]:
        """The parsed, resolved space (SweepError / the settings' ProjectError otherwise)."""
        from netstudio.graph.model import Graph

        if not 1 <= self.trials <= 100_000:
            raise SweepError(f"trials must be between 1 and 100000, got {self.trials}")
        if not 1 <= self.jobs <= 256:
            raise SweepError(f"jobs must be between 1 and 256, got {self.jobs}")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise SweepError(f"timeout must be a positive number of seconds, got {self.timeout_s}")
        self.config.validate()
        return resolve(Graph.from_dict(self.graph_dict), self.space())


def new_sweep_id(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return "sweep-" + now.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def startup_trials(trials: int) -> int:
    """Random trials before TPE takes over: Optuna's 10, but a third of a short sweep (at least 2)."""
    return max(2, min(TPE_STARTUP_MAX, trials // 3))


# ----------------------------------------------------------------------------
# one trial (in this process or a worker's)
# ----------------------------------------------------------------------------


def _objective(ev: Mapping[str, Any]) -> float | None:
    v = ev.get("val_loss")
    if v is None:
        v = ev.get("train_loss")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def execute_trial(spec: SweepSpec, targets: Sequence[Target], sweep_id: str, number: int, values: Mapping[str, Any],
                  decide: Callable[[int, float], bool], stop_event: Any = None,
                  on_epoch: Callable[[int, float, bool], None] | None = None) -> TrialOutcome:
    """Train one trial: ``values`` set on a copy of the graph, the one training job, the run recorded.

    ``decide(epoch, objective)`` is asked after every epoch and returns True to prune (the run then
    ends after that epoch). ``stop_event`` (anything with ``is_set``): the sweep was stopped.
    """
    from netstudio.graph.model import Graph
    from netstudio.training import job as training_job
    from netstudio.training.events import FitStatus

    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc)
    trial_stop = threading.Event()
    pruned: dict[str, Any] = {}

    def report(ev: dict[str, Any]) -> None:
        if stop_event is not None and stop_event.is_set():
            trial_stop.set()
        if ev.get("kind") != "epoch" or trial_stop.is_set():
            return
        value = _objective(ev)
        if value is None:
            return
        epoch = int(ev.get("epoch") or 0)
        prune = bool(decide(epoch, value))
        if on_epoch is not None:
            on_epoch(epoch, value, prune)
        if prune:
            pruned.update(epoch=epoch, value=value)
            trial_stop.set()  # fit ends after this epoch

    params = dict(values)
    graph: "Graph | None" = None
    try:
        graph = apply_values(Graph.from_dict(spec.graph_dict), targets, values)
        start = _read_start_weights(spec.start_weights) if spec.start_weights else None
        job = training_job.prepare(graph, spec.config, stop_event=trial_stop, start_weights=start)
        result = training_job.run(job, report, trial_stop)
    except training_job.JobStopped:
        outcome = TrialOutcome(number, params, TrialState.STOPPED, None, message="Stopped before training started",
                               seconds=time.perf_counter() - t0)
        _record(spec, graph, outcome, "stopped", started, sweep_id, [], {}, None)
        return outcome
    except NetStudioError as e:  # a value the model cannot take (a size that does not fit...): the trial failed
        outcome = TrialOutcome(number, params, TrialState.FAILED, None, message=str(e),
                               seconds=time.perf_counter() - t0)
        _record(spec, graph, outcome, "error", started, sweep_id, [], {}, None)
        return outcome
    seconds = time.perf_counter() - t0
    metrics = dict(result.metrics or {})
    status = result.status
    message = str(result.message or "")
    if pruned:
        state = TrialState.PRUNED
        value: float | None = pruned["value"]
        status_text = "pruned"
        message = (f"Pruned after epoch {pruned['epoch']}: its loss {pruned['value']:.4g} is above the median of "
                   f"the finished trials at that epoch")
    elif status == FitStatus.ERROR:
        state, value, status_text = TrialState.FAILED, None, str(status)
    elif status == FitStatus.STOPPED:
        state, value, status_text = TrialState.STOPPED, None, str(status)
        message = "Stopped with the sweep: " + message
    else:
        state, status_text = TrialState.COMPLETE, str(status)
        value = _objective(metrics)
        if value is None:
            state, value = TrialState.FAILED, None
            message += "; no finite loss to compare"
    outcome = TrialOutcome(number, params, state, value, epochs_run=len(result.history or []),
                           val_accuracy=metrics.get("val_accuracy"), seconds=seconds, message=message,
                           device=metrics.get("device"))
    _record(spec, graph, outcome, status_text, started, sweep_id, list(result.history or []), metrics,
            result.model if spec.keep_weights else None)
    return outcome


_START_WEIGHTS: dict[str, Any] = {}


def _read_start_weights(path: str) -> Any:
    """The start weights' state_dict, read once per process (``weights_only``; each trial copies from it)."""
    if path not in _START_WEIGHTS:
        from netstudio.project.export import read_weights

        _START_WEIGHTS.clear()
        _START_WEIGHTS[path] = read_weights(path)[1]
    return _START_WEIGHTS[path]


def _record(spec: SweepSpec, graph: "Graph | None", outcome: TrialOutcome, status: str,
            started: datetime.datetime, sweep_id: str, history: list[dict[str, Any]], metrics: dict[str, Any],
            model: Any) -> None:
    """Keep the trial in ``<project>.runs/`` (when recording is on); its folder goes into the outcome."""
    from netstudio.graph.model import Graph
    from netstudio.project import runs as R

    if not spec.record or not R.recording_enabled():
        return
    try:
        rec = R.record_run(spec.project_path, graph if graph is not None else Graph.from_dict(spec.graph_dict),
                           spec.config, status=status, message=outcome.message, history=history, metrics=metrics,
                           seconds=outcome.seconds, device=metrics.get("device"), source=spec.source,
                           started=started, state_dict=model.state_dict() if model is not None else None,
                           sweep={"id": sweep_id, "trial": outcome.number, "state": str(outcome.state),
                                  "params": outcome.params, "value": outcome.value})
    except OSError as e:
        outcome.message += f" (not recorded: {e})"
        return
    outcome.run_folder = str(rec.folder)


# ----------------------------------------------------------------------------
# the sweep
# ----------------------------------------------------------------------------


def _tell(optuna: Any, study: Any, trial: Any, outcome: TrialOutcome) -> None:
    states = optuna.trial.TrialState
    if outcome.state == TrialState.COMPLETE:
        study.tell(trial, outcome.value)
    elif outcome.state == TrialState.PRUNED:
        study.tell(trial, state=states.PRUNED)
    else:
        study.tell(trial, state=states.FAIL)


def run_sweep(spec: SweepSpec, report: SweepReport | None = None, stop_event: threading.Event | None = None,
              *, sweep_id: str | None = None) -> SweepResult:
    """Run the sweep (see the module text). Raises SweepError for a bad space or a missing Optuna;
    a failing trial is a FAILED outcome, never an exception."""
    optuna = require_optuna()
    targets = spec.validate()
    sweep_id = sweep_id or new_sweep_id()
    emit = report or (lambda ev: None)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what each trial did
    try:
        return _sweep(optuna, spec, targets, sweep_id, emit, stop_event)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _sweep(optuna: Any, spec: SweepSpec, targets: Sequence[Target], sweep_id: str, emit: SweepReport,
           stop_event: threading.Event | None) -> SweepResult:
    result = SweepResult(sweep_id, [t.key for t in targets])
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=startup_trials(spec.trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after))
    t0 = time.monotonic()
    stop = stop_event or threading.Event()

    def may_start(started: int) -> bool:
        if started >= spec.trials or stop.is_set():
            if stop.is_set() and started < spec.trials:
                result.ended_early = "stopped"
            return False
        if spec.timeout_s is not None and time.monotonic() - t0 >= spec.timeout_s:
            result.ended_early = "timeout"
            return False
        return True

    def finished(trial: Any, outcome: TrialOutcome) -> None:
        _tell(optuna, study, trial, outcome)
        result.trials.append(outcome)
        emit({"kind": SweepEvent.TRIAL_END, **outcome.to_dict()})

    emit({"kind": SweepEvent.START, "sweep": sweep_id, "trials": spec.trials, "keys": result.keys, "jobs": spec.jobs})
    if spec.jobs <= 1:
        started = 0
        while may_start(started):
            trial = study.ask()
            values = {t.key: suggest(trial, t) for t in targets}
            started += 1
            emit({"kind": SweepEvent.TRIAL_START, "trial": trial.number, "params": dict(values)})

            def decide(epoch: int, value: float, trial: Any = trial) -> bool:
                trial.report(value, epoch)
                return bool(trial.should_prune())

            def on_epoch(epoch: int, value: float, pruned: bool, n: int = trial.number) -> None:
                emit({"kind": SweepEvent.TRIAL_EPOCH, "trial": n, "epoch": epoch, "value": value, "pruned": pruned})

            finished(trial, execute_trial(spec, targets, sweep_id, trial.number, values, decide, stop, on_epoch))
    else:
        _run_parallel(spec, targets, sweep_id, study, stop, may_start, finished, emit)
    if stop.is_set() and not result.ended_early and len(result.trials) < spec.trials:
        result.ended_early = "stopped"
    result.trials.sort(key=lambda t: t.number)
    result.seconds = time.monotonic() - t0
    emit({"kind": SweepEvent.END, **result.to_dict()})
    return result


# ----------------------------------------------------------------------------
# trials in worker processes
# ----------------------------------------------------------------------------


def _worker_devices(config: TrainConfig, jobs: int) -> list[str]:
    """Each worker's device: the settings' own, but ``cuda`` spread over the GPUs there are."""
    if config.device != "cuda":
        return [config.device] * jobs
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i % n}" if n > 1 else "cuda" for i in range(jobs)]


def _worker_main(conn: Any, spec_dict: dict[str, Any], stop: Any) -> None:
    """A worker process: trials on request until told to quit (Ctrl-C is the parent's to handle)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec_dict = dict(spec_dict)
    from netstudio.nodes import usercode

    for path, sha in spec_dict.pop("trusted_files", []):
        usercode.allow(path, sha)
    spec_dict["config"] = TrainConfig.from_dict(spec_dict["config"])
    spec = SweepSpec(**spec_dict)
    from netstudio.graph.model import Graph

    targets = resolve(Graph.from_dict(spec.graph_dict), spec.space())
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] != "trial":
            return
        _, sweep_id, number, values = msg

        def decide(epoch: int, value: float, number: int = number) -> bool:
            conn.send(("epoch", number, epoch, value))
            return bool(conn.recv())

        try:
            outcome = execute_trial(spec, targets, sweep_id, number, values, decide, stop)
        except Exception as e:  # noqa: BLE001 - the parent must hear about every trial
            outcome = TrialOutcome(number, dict(values), TrialState.FAILED, None, message=f"{type(e).__name__}: {e}")
        conn.send(("done", outcome.to_dict()))


def _run_parallel(spec: SweepSpec, targets: Sequence[Target], sweep_id: str, study: Any, stop: threading.Event,
                  may_start: Callable[[int], bool], finished: Callable[[Any, TrialOutcome], None],
                  emit: SweepReport) -> None:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # torch in a forked child of a threaded parent is not safe
    shared_stop = ctx.Event()
    config = spec.config
    if config.threads == 0:  # automatic: the cores shared out between the workers
        from netstudio.training.threads import cpu_cores

        config = TrainConfig.from_dict({**config.to_dict(), "threads": max(1, cpu_cores() // spec.jobs)})
    devices = _worker_devices(config, spec.jobs)
    # a user's file this process was allowed to run (--trust, or trusted in the app) is allowed in the workers
    from netstudio.graph.model import Graph
    from netstudio.nodes import usercode
    from netstudio.nodes.user_module import references

    trusted = [ref for ref in references(Graph.from_dict(spec.graph_dict)) if usercode.is_allowed(*ref)]
    workers: list[dict[str, Any]] = []
    try:
        for i in range(spec.jobs):
            cfg = TrainConfig.from_dict({**config.to_dict(), "device": devices[i]})
            payload = {**asdict(spec), "config": cfg.to_dict(), "trusted_files": trusted}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, payload, shared_stop), daemon=True,
                               name=f"netstudio-sweep-{i}")
            proc.start()
            child.close()
            workers.append({"proc": proc, "conn": parent, "trial": None})
        started = 0
        while True:
            if stop.is_set():
                shared_stop.set()
            for w in workers:
                if w["trial"] is None and w["conn"] is not None and may_start(started):
                    trial = study.ask()
                    values = {t.key: suggest(trial, t) for t in targets}
                    started += 1
                    w["trial"], w["values"] = trial, values
                    emit({"kind": SweepEvent.TRIAL_START, "trial": trial.number, "params": dict(values)})
                    w["conn"].send(("trial", sweep_id, trial.number, values))
            busy = [w for w in workers if w["trial"] is not None]
            if not busy:
                return
            ready = wait([w["conn"] for w in busy], timeout=0.2)
            for w in busy:
                if w["conn"] not in ready:
                    continue
                trial = w["trial"]
                try:
                    msg = w["conn"].recv()
                except (EOFError, OSError):  # the worker died (killed, out of memory)
                    w["conn"], w["trial"] = None, None
                    finished(trial, TrialOutcome(trial.number, dict(w["values"]), TrialState.FAILED, None,
                                                 message="The worker process ended unexpectedly"))
                    continue
                if msg[0] == "epoch":
                    _, number, epoch, value = msg
                    trial.report(value, epoch)
                    prune = bool(trial.should_prune())
                    w["conn"].send(prune)
                    emit({"kind": SweepEvent.TRIAL_EPOCH, "trial": number, "epoch": epoch, "value": value,
                          "pruned": prune})
                else:
                    w["trial"] = None
                    finished(trial, TrialOutcome.from_dict(msg[1]))
    finally:
        shared_stop.set()
        for w in workers:
            try:
                if w["conn"] is not None:
                    w["conn"].send(("quit",))
            except (OSError, ValueError):
                pass
        for w in workers:
            w["proc"].join(timeout=10)
            if w["proc"].is_alive():
                w["proc"].terminate()
                w["proc"].join(timeout=5)


# ----------------------------------------------------------------------------
# applying the best trial
# ----------------------------------------------------------------------------


def apply_values_in_place(graph: "Graph", params: Sequence[str], values: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """Set a trial's values on ``graph`` itself (the project's): ``[(node id, param, old, new)]`` of the changes."""
    targets = resolve(graph, parse_space(params))
    changes = []
    for t in targets:
        if t.key not in values:
            continue
        old = graph.nodes[t.node_id].params.get(t.space.param)
        graph.set_param(t.node_id, t.space.param, values[t.key])
        changes.append((t.node_id, t.space.param, old, graph.nodes[t.node_id].params.get(t.space.param)))
    return changes
