"""Background workers: thin QObjects around the pure training/evaluation code.

The slow work lives in Qt-free functions (``netstudio.training.fit``,
``netstudio.training.predict``); these workers only run them on a QThread and
turn their report callbacks into Qt signals. Every signal carries plain
Python data (dicts, lists, numbers, small uint8 numpy images) — never a
tensor — so nothing the GUI touches is shared with the running loop.

Stop and pause are ``threading.Event`` objects the GUI thread sets directly:
a queued signal would wait behind the training loop, which never returns to
an event loop while it runs.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from netstudio.errors import NetStudioError
from netstudio.training.config import TrainConfig

#: Progress reaches the GUI at most 10 times a second, as one list of events: every
#: epoch (the plots need each point), the newest batch only. Each signal wakes the GUI
#: thread, whose Python then holds the GIL the training loop needs; the sample models'
#: epochs can end 25 times a second.
EMIT_INTERVAL_S = 0.1
#: validation images shown in the results grid
SAMPLE_GRID_SIZE = 24
#: training images shown in the dataset summary
PREVIEW_GRID_SIZE = 16
#: validation points in the predicted-vs-true plot of a regression
REGRESSION_POINTS = 5000
#: validation samples per confusion-matrix chunk (a stop request waits at most one chunk)
EVAL_CHUNK = 2048


#: intra-op threads a worker computes with: torch's default for this machine, read
#: before the GUI thread is limited to one (see ``reserve_cores_for_workers``)
_WORKER_THREADS: int | None = None


def reserve_cores_for_workers() -> int:
    """Limit the calling (GUI) thread to one torch thread; return the workers' thread count.

    libgomp gives each thread that enters an OpenMP region its own team of
    threads, kept for the thread's lifetime. Once the GUI thread and a worker
    both own a team there are more OpenMP threads than cores, libgomp stops
    spinning at barriers and every op pays a futex wake-up: training in a worker
    thread ran at a third of its speed on 2 cores (bench/bench_gui_latency.py).
    So the GUI thread computes single-threaded, before it runs any torch op,
    and only the worker owns a team, as large as ``netstudio train`` would use.
    Idempotent; call it on the GUI thread.
    """
    global _WORKER_THREADS
    if _WORKER_THREADS is None:
        import torch

        _WORKER_THREADS = max(1, torch.get_num_threads())
        # at::set_num_threads sets this thread's OpenMP/MKL threads and the default of
        # threads created later; every worker sets its own count explicitly
        torch.set_num_threads(1)
    return _WORKER_THREADS


@dataclass
class TrainJob:
    """Everything a run needs, frozen at the moment Train was pressed."""

    graph_dict: dict[str, Any]
    config: TrainConfig
    run_index: int = 1
    #: continue from these weights (a private deep copy is trained, the original stays intact)
    init_model: Any = None
    #: intra-op threads for torch while the GUI runs (None: leave torch's setting)
    num_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: a fresh run starts from this weights file where names and shapes match (an imported model's)
    start_weights: str | None = None
    #: also log the epochs for TensorBoard under this folder (netstudio.training.tensorboard); None: off
    tensorboard_dir: str | None = None
    #: the run's TensorBoard folder is named after this (the project's file name)
    run_name: str = "run"


def error_record(exc: BaseException) -> dict[str, Any]:
    """A plain description of an exception for the GUI (message + node + hint)."""
    if isinstance(exc, NetStudioError):
        return {"status": "error", "message": exc.message, "node_id": exc.node_id, "hint": exc.hint,
                "error_type": type(exc).__name__}
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return {"status": "error", "message": f"Out of memory: {exc}", "node_id": None,
                "hint": "use a smaller batch size or model, or train on the CPU", "error_type": type(exc).__name__}
    return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "node_id": None, "hint": None,
            "error_type": type(exc).__name__, "traceback": traceback.format_exc(limit=8)}


def image_to_uint8(img: Any) -> Any:
    """(C,H,W) float tensor/array → (H,W) or (H,W,3) uint8 array, contrast-stretched per image."""
    import numpy as np

    a = img.detach().cpu().float().numpy() if hasattr(img, "detach") else np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.ascontiguousarray(np.clip((a - lo) * scale, 0, 255).astype(np.uint8))


def data_summary(data: Any, n_images: int = PREVIEW_GRID_SIZE) -> dict[str, Any]:
    """Plain summary of PreparedData plus a few training images for the preview grid."""
    info = data.info
    out: dict[str, Any] = {"source": info.source, "n_train": info.n_train, "n_val": info.n_val,
                           "task": info.task, "num_classes": info.num_classes,
                           "class_names": list(info.class_names), "feature_shape": list(info.feature_shape),
                           "is_image": info.is_image, "images": []}
    if info.is_image:
        out["images"] = sample_images(data, "train", n_images)
    return out


def first_samples(data: Any, split: str, n: int) -> tuple[Any, Any]:
    """(features, targets) of the first ``n`` samples of a split ("train"/"val"), stacked; None if empty."""
    import torch

    if data.resident:
        xs, ys = (data.train_x, data.train_y) if split == "train" else (data.val_x, data.val_y)
        if xs is None or not xs.shape[0]:
            return None, None
        return xs[:n], ys[:n]
    ds = data.train_set if split == "train" else data.val_set
    if ds is None or not len(ds):
        return None, None
    pairs = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([p[0] for p in pairs]), torch.stack([torch.as_tensor(p[1]) for p in pairs])


def sample_images(data: Any, split: str, n: int) -> list[dict[str, Any]]:
    """First ``n`` images of a split as uint8 arrays with their label text."""
    names = list(data.info.class_names)
    items: list[dict[str, Any]] = []
    xs, ys = first_samples(data, split, n)
    if xs is None:
        return items
    for x, y in zip(xs, ys):
        label = int(y)
        items.append({"image": image_to_uint8(x), "label": names[label] if 0 <= label < len(names) else str(label)})
    return items


#: nice increment of worker threads (Linux: per thread, inherited by their OpenMP threads)
WORKER_NICE = 5


def lower_thread_priority() -> None:
    """Give the calling thread (and the OpenMP team it will create) a lower CPU priority.

    With the training loop's threads on every core, the GUI thread otherwise waits
    for a time slice behind them, sometimes while it holds the GIL the loop needs.
    Niced, the loop takes whatever the GUI leaves; on an idle GUI that is everything.
    Linux only (per-thread nice); elsewhere a no-op.
    """
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE))
    except (OSError, AttributeError):
        pass  # not permitted here: run at normal priority


class _ThreadedWorker(QObject):
    """Common part: run once on its thread, report ``done`` with a plain dict, go home."""

    done = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.stop_event = threading.Event()
        self.outcome: dict[str, Any] | None = None

    #: torch intra-op threads for this run (None: leave torch's setting)
    num_threads: int | None = None

    @Slot()
    def run(self) -> None:
        outcome: dict[str, Any]
        restore = None
        lower_thread_priority()
        try:
            if self.num_threads:
                import torch

                restore = torch.get_num_threads()
                torch.set_num_threads(self.num_threads)
            outcome = self._work()
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the GUI must hear about it
            outcome = error_record(exc)
        finally:
            if restore is not None:
                import torch

                # at::set_num_threads also changes the default of threads created later
                torch.set_num_threads(restore)
        self.outcome = outcome
        # Hand the object back to the GUI thread before the thread ends, so
        # Python/Qt can delete it there (a finished thread has no event loop).
        app = QCoreApplication.instance()
        if app is not None:
            self.moveToThread(app.thread())
        self.done.emit(outcome)

    def _work(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class TrainingWorker(_ThreadedWorker):
    """Loads the data, builds the plan from a graph snapshot and runs ``fit``."""

    # Every payload carries "run" (the job's run index): PySide does not tell a
    # queued Python slot its sender, and the GUI must ignore a finished run's stragglers.
    progress = Signal(object)    # list of start / batch / epoch / paused / resumed / end report dicts, in order
    data_ready = Signal(object)  # data_summary(...) once the dataset is loaded
    phase = Signal(object)       # {"run", "phase": "building model" | "loading data" | "training"}

    def __init__(self, job: TrainJob) -> None:
        super().__init__()
        self.job = job
        self.num_threads = job.num_threads
        self.pause_event = threading.Event()
        # Results, read by the GUI after the thread has finished.
        self.plan: Any = None
        self.data: Any = None
        self.result: Any = None
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # every non-batch report, in order
        self.batches_reported = 0                # batch events seen from fit (unthrottled)
        self.batches_emitted = 0                 # batch events passed on to the GUI
        self._last_emit = 0.0
        self._pending: dict[str, Any] | None = None  # newest batch event not yet queued
        self._queue: list[dict[str, Any]] = []        # tagged events not yet sent
        #: loss of the run's first batch (fit reports the first batch at once): where the run started
        self.first_loss: float | None = None

    # --- report callback (runs on the worker thread) ------------------------------
    def report(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "batch":
            if self.first_loss is None and isinstance(event.get("loss"), (int, float)):
                self.first_loss = float(event["loss"])
            self.batches_reported += 1
            self._pending = event  # only the newest batch is worth showing
        else:
            self._queue_pending()  # the last batch before an epoch/pause/end comes first
            ev = self._tag(event)
            # a multi-phase run's per-batch phase losses and a GAN's sample images are shown, not kept
            streamed = kind == "samples" or (kind == "phases" and event.get("scope") == "batch")
            if not streamed:
                self.events.append(ev)
            if kind == "epoch":
                ev["first_loss"] = self.first_loss  # lets the GUI tell a loss that has not moved
                self.history.append(ev)
            self._queue.append(ev)
            if kind not in ("epoch", "phases", "samples"):  # start / paused / resumed / end: the GUI must react now
                self._flush()
                return
        if time.monotonic() - self._last_emit >= EMIT_INTERVAL_S:
            self._flush()

    def _queue_pending(self) -> None:
        ev, self._pending = self._pending, None
        if ev is not None:
            self.batches_emitted += 1
            self._queue.append(self._tag(ev))

    def _flush(self) -> None:
        """Send everything queued as one signal: one GUI wake-up however many epochs ended."""
        self._queue_pending()
        if self._queue:
            batch, self._queue = self._queue, []
            self._last_emit = time.monotonic()
            self.progress.emit(batch)

    def _tag(self, event: dict[str, Any]) -> dict[str, Any]:
        ev = _plain(event)
        ev["run"] = self.job.run_index
        return ev

    def _phase(self, text: str) -> None:
        self.phase.emit({"run": self.job.run_index, "phase": text})

    # --- the run ------------------------------------------------------------------
    def _work(self) -> dict[str, Any]:
        from netstudio.graph.model import Graph
        from netstudio.training import job as training_job

        job = self.job
        self._phase("building model")
        graph = Graph.from_dict(job.graph_dict)

        def on_data(plan: Any, data: Any) -> None:
            self.plan, self.data = plan, data
            self.data_ready.emit({**data_summary(data), "run": job.run_index,
                                  "metric": getattr(plan, "metric", None)})

        def on_phase(text: str) -> None:
            if text != "building model":  # announced above, before the graph is read
                self._phase(text)

        try:
            # settings, device, memory preflight, seed, plan, data: the order `netstudio train` uses,
            # so the same seed gives the same run in the app and on the command line
            start = None
            if job.start_weights is not None and job.init_model is None:
                from netstudio.project.export import read_weights

                start = read_weights(job.start_weights)[1]  # weights_only: a hostile file cannot run code
            prepared = training_job.prepare(graph, job.config, stop_event=self.stop_event, on_phase=on_phase,
                                            on_data=on_data, start_weights=start)
            if prepared.start_note:
                self._phase("starting from the weights beside the project: " + prepared.start_note.splitlines()[0])
        except training_job.JobStopped:
            return {"status": "stopped", "message": "Stopped before training started"}
        self.plan = prepared.plan
        if job.init_model is not None:  # continuing needs the architecture the weights were trained with
            training_job.check_continuable(job.init_model, prepared.plan)
        self._phase("training")
        from netstudio.training.tensorboard import with_tensorboard

        report, tb = with_tensorboard(self.report, job.tensorboard_dir, job.run_name)
        if tb is not None:
            self._phase(f"training · TensorBoard log in {tb.log_dir}")
        try:
            # fit trains a copy of init_model: the weights the GUI holds stay intact
            result = training_job.run(prepared, report, self.stop_event, self.pause_event, model=job.init_model)
        finally:
            self._flush()  # the last epochs reach the plots even when fit raised
            if tb is not None:
                tb.close()
        self.result = result
        out: dict[str, Any] = {"status": str(result.status), "message": str(result.message or ""),
                               "metrics": _plain(dict(result.metrics or {})),
                               "best_epoch": result.best_epoch,
                               "history": _plain(list(result.history or []))}
        if out["status"] == "error":
            out.setdefault("hint", None)
            out.setdefault("node_id", None)
        return out


class EvalWorker(_ThreadedWorker):
    """Validation predictions → confusion matrix and a labelled sample grid.

    The matrix is summed over chunks of the validation split, each counted by
    ``netstudio.training.confusion_matrix``, so a stop request (window closing)
    is honoured within one chunk even for a large dataset.
    """

    def __init__(self, model: Any, plan: Any, data: Any, num_threads: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.data = data
        self.num_threads = num_threads

    def _work(self) -> dict[str, Any]:
        info = self.data.info
        out: dict[str, Any] = {"status": "ok", "task": info.task, "class_names": list(info.class_names),
                               "is_image": info.is_image, "confusion": None, "samples": []}
        if info.n_val == 0:
            return out
        term = self.plan.metric_term
        if term is None and info.task == "regression":
            reg = next((t for t in self.plan.losses if t.target[0] == "target"), None)
            if reg is not None:
                out["regression"] = self._regression(reg)
            return out
        if term is None or term.target[0] != "target":
            return out
        cm = self._confusion()
        if cm is None:
            return {"status": "stopped"}
        out["confusion"] = cm
        if info.is_image:
            out["samples"] = self._samples(term)
        return out

    def _regression(self, term: Any) -> dict[str, Any]:
        """Predicted vs. true target on (up to REGRESSION_POINTS of) the validation split."""
        import numpy as np

        from netstudio import training
        from netstudio.training.engine import to_target_units

        x, y = first_samples(self.data, "val", REGRESSION_POINTS)
        outs = training.predict(self.model, x)
        pred = (outs if isinstance(outs, tuple) else (outs,))[term.pred_index]
        n = int(y.shape[0])
        # in the target's own units, like the exported model's output (its postprocess)
        pred = to_target_units((pred.reshape(y.shape) if pred.numel() == y.numel() else pred).double(), self.data)
        y = to_target_units(y.double(), self.data)
        p2 = pred.detach().reshape(n, -1).double().numpy()
        t2 = y.detach().reshape(n, -1).double().numpy()
        p, t = p2[:, 0], t2[:, 0]  # several targets: the first one is plotted
        ss_res = float(np.sum((t - p) ** 2))
        ss_tot = float(np.sum((t - t.mean()) ** 2))
        return {"pred": p.tolist(), "true": t.tolist(), "n_targets": int(t2.shape[1]),
                "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
                "rmse": float(np.sqrt(ss_res / max(n, 1))), "mae": float(np.mean(np.abs(t - p))) if n else float("nan")}

    def _confusion(self) -> list[list[int]] | None:
        import dataclasses

        import numpy as np
        import torch.utils.data as tud

        from netstudio import training

        d = self.data
        n = int(d.val_x.shape[0]) if d.resident else len(d.val_set)
        total: Any = None
        for a in range(0, n, EVAL_CHUNK):
            if self.stop_event.is_set():
                return None
            b = min(n, a + EVAL_CHUNK)
            if d.resident:
                part = dataclasses.replace(d, val_x=d.val_x[a:b], val_y=d.val_y[a:b])
            else:
                part = dataclasses.replace(d, val_set=tud.Subset(d.val_set, range(a, b)))
            m = np.asarray(training.confusion_matrix(self.model, self.plan, part), dtype=np.int64)
            if total is None:
                total = m
            else:  # a chunk may reveal a higher label: pad to the larger size
                k = max(total.shape[0], m.shape[0])
                total = np.pad(total, ((0, k - total.shape[0]),) * 2) + np.pad(m, ((0, k - m.shape[0]),) * 2)
        return [] if total is None else total.tolist()

    def _samples(self, term: Any) -> list[dict[str, Any]]:
        from netstudio import training

        names = list(self.data.info.class_names)
        grid = sample_images(self.data, "val", SAMPLE_GRID_SIZE)
        if not grid:
            return []
        x, y = first_samples(self.data, "val", len(grid))
        outs = training.predict(self.model, x)
        pred = (outs if isinstance(outs, tuple) else (outs,))[term.pred_index]
        if term.metric == "argmax":
            p = pred.argmax(dim=1)
        else:
            p = (pred.reshape(-1) > (0.5 if term.metric == "sigmoid" else 0.0)).long()
        for item, pi, ti in zip(grid, p.tolist(), y.reshape(-1).tolist()):
            pi, ti = int(pi), int(ti)
            item.update(pred=names[pi] if 0 <= pi < len(names) else str(pi),
                        true=names[ti] if 0 <= ti < len(names) else str(ti), ok=pi == ti)
        return grid


def _plain(v: Any) -> Any:
    """Deep copy into plain Python values: tensors become numbers/lists, NaN stays NaN."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "detach"):  # torch tensor
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0:  # numpy scalar
        return v.item()
    if isinstance(v, float) and math.isnan(v):
        return float("nan")
    return v


#: threads started and not yet joined; stopped and joined at interpreter exit so a script
#: that ends without quitting the app never destroys a running QThread (Qt aborts on that)
_LIVE: "weakref.WeakSet[WorkerThread]" = weakref.WeakSet()


@atexit.register
def _join_live_threads() -> None:
    for wt in list(_LIVE):
        try:
            wt.stop()
            wt.join(3000)
        except RuntimeError:  # the C++ object is already gone
            pass


class WorkerThread:
    """One QThread running one worker object exactly once.

    ``join`` is safe to call from the GUI thread at any time: the worker's
    ``done`` quits the thread with a direct connection, so joining never waits
    for the GUI event loop (which is blocked while joining).
    """

    def __init__(self, worker: _ThreadedWorker, name: str, on_finished: Callable[[], None] | None = None) -> None:
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(name)
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.run)
        worker.done.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        if on_finished is not None:
            # queued: ``finished`` is emitted on the worker thread, the handler touches widgets
            self.thread.finished.connect(on_finished, Qt.ConnectionType.QueuedConnection)

    def start(self) -> None:
        _LIVE.add(self)
        self.thread.start()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def stop(self) -> None:
        self.worker.stop_event.set()
        pause = getattr(self.worker, "pause_event", None)
        if pause is not None:
            pause.clear()  # a paused loop must wake up to see the stop

    def join(self, timeout_ms: int) -> bool:
        """Wait until the thread has ended; True if it did within ``timeout_ms``."""
        if not self.thread.isRunning():
            return True
        return bool(self.thread.wait(max(0, int(timeout_ms))))
