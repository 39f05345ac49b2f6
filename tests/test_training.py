"""The training engine: learning, reproducibility, stop/pause, divergence, early stopping, errors.

Graphs are built with the real node catalog; the data are small synthetic
tensors in a real :class:`netstudio.data.PreparedData`, shaped like the
Dataset node's source (``iris``: 4 features/3 classes, ``regression``: F
features/1 float target), so every test is fast and exact.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from typing import Any

import pytest
import torch

from netstudio.compiler.build import TrainingPlan, build_plan
from netstudio.data import DatasetInfo, PreparedData
from netstudio.graph.model import Graph
from netstudio.training import (FitResult, TrainConfig, available_devices, confusion_matrix, evaluate, fit,
                                predict, resolve_device)
from netstudio.errors import TrainingError

WAIT = 20.0  # generous timeout for thread handshakes; tests finish far sooner


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def chain(g: Graph, src: Any, port: str, *specs: tuple[str, dict[str, Any]]) -> Any:
    node, out = src, port
    for type_id, params in specs:
        nxt = g.add_node(type_id, params)
        g.connect(node.id, out, nxt.id, "input")
        node, out = nxt, "output"
    return node


def classifier_plan(*, hidden: int = 16, n_classes: int = 3, optim: str = "optim.adam", lr: float = 0.01,
                    sched: tuple[str, dict[str, Any]] | None = None, extra: dict[str, Any] | None = None,
                    depth: int = 1, batch_size: int = 32) -> TrainingPlan:
    """iris-shaped MLP: 4 features → hidden → n_classes, CrossEntropy, one optimizer."""
    g = Graph()
    torch.manual_seed(0)  # layer init happens while compiling
    d = g.add_node("data.dataset", {"source": "iris"})
    specs: list[tuple[str, dict[str, Any]]] = []
    for _ in range(depth):
        specs += [("layer.linear", {"out_features": hidden}), ("activation.relu", {})]
    specs.append(("layer.linear", {"out_features": n_classes}))
    last = chain(g, d, "features", *specs)
    loss = g.add_node("loss.cross_entropy")
    g.connect(last.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    opt = g.add_node(optim, {"lr": lr, **(extra or {})})
    g.connect(loss.id, "loss", opt.id, "loss")
    if sched is not None:
        s = g.add_node(sched[0], sched[1])
        g.connect(opt.id, "optimizer", s.id, "optimizer")
    return build_plan(g, batch_size)


def regression_plan(n_features: int = 5, lr: float = 0.05) -> TrainingPlan:
    g = Graph()
    torch.manual_seed(0)
    d = g.add_node("data.dataset", {"source": "regression", "n_features": n_features})
    last = chain(g, d, "features", ("layer.linear", {"out_features": 16}), ("activation.relu", {}),
                 ("layer.linear", {"out_features": 1}))
    loss = g.add_node("loss.mse")
    g.connect(last.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    opt = g.add_node("optim.adam", {"lr": lr})
    g.connect(loss.id, "loss", opt.id, "loss")
    return build_plan(g)


def info(n_train: int, n_val: int, *, task: str = "classification", n_features: int = 4,
         num_classes: int | None = 3) -> DatasetInfo:
    return DatasetInfo(source="test", feature_shape=(n_features,), feature_dtype="float32",
                       target_shape=() if task == "classification" else (1,),
                       target_dtype="int64" if task == "classification" else "float32", task=task,
                       num_classes=num_classes, class_names=tuple(str(i) for i in range(num_classes or 0)),
                       n_train=n_train, n_val=n_val, is_image=False)


def blobs(n: int = 600, n_val: int = 150, *, seed: int = 0, n_features: int = 4, noise: float = 0.6,
          random_labels: bool = False) -> PreparedData:
    """Three Gaussian blobs in ``n_features`` dimensions: linearly separable classes."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])[:, :n_features]
    if n_features > 4:
        centers = torch.nn.functional.pad(centers, (0, n_features - 4))
    y = torch.randint(0, 3, (n + n_val,), generator=g)
    x = centers[y] + noise * torch.randn(n + n_val, n_features, generator=g)
    if random_labels:
        y = torch.randint(0, 3, (n + n_val,), generator=g)
    return PreparedData(info(n, n_val, n_features=n_features), True, x[:n].contiguous(), y[:n].contiguous(),
                        x[n:].contiguous(), y[n:].contiguous())


def linear_data(n: int = 400, n_val: int = 100, n_features: int = 5) -> PreparedData:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n + n_val, n_features, generator=g)
    w = torch.randn(n_features, 1, generator=g)
    y = x @ w + 0.05 * torch.randn(n + n_val, 1, generator=g)
    return PreparedData(info(n, n_val, task="regression", n_features=n_features, num_classes=None), True,
                        x[:n], y[:n], x[n:], y[n:])


def cfg(**kw: Any) -> TrainConfig:
    base = dict(epochs=5, batch_size=32, device="cpu", seed=0, keep_best=False)
    base.update(kw)
    return TrainConfig(**base)


def params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


class Recorder:
    """Collects report events with arrival times; signals chosen kinds to the test thread."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.first_batch = threading.Event()
        self.paused = threading.Event()
        self.batch_after_pause = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, e: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((time.perf_counter(), e))
        if e["kind"] == "batch":
            self.first_batch.set()
            if self.paused.is_set():
                self.batch_after_pause.set()
        elif e["kind"] == "paused":
            self.paused.set()

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["kind"] == kind]


def run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    t.start()
    return t, box


# ----------------------------------------------------------------------------
# Learning and reporting
# ----------------------------------------------------------------------------


def test_mlp_learns_blobs_and_reports_plain_events() -> None:
    plan = classifier_plan()
    data = blobs()
    rec = Recorder()
    before = params_of(plan.model)
    res = fit(plan, data, cfg(epochs=8), report=rec)
    assert isinstance(res, FitResult)
    assert res.status == "finished", res.message
    assert res.history[-1]["val_accuracy"] >= 0.95
    assert res.history[-1]["train_accuracy"] >= 0.95
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] / 2
    assert [h["epoch"] for h in res.history] == list(range(1, 9))
    assert res.metrics["epochs_run"] == 8 and res.metrics["device"] == "cpu"
    assert res.metrics["val_accuracy"] == res.history[-1]["val_accuracy"]
    assert res.metrics["samples_per_s"] > 0
    # the plan's model is untouched ("reset weights" = train from plan.model again)
    assert same(before, params_of(plan.model))
    # the returned model is on the CPU, in eval mode, and really has that accuracy
    assert next(res.model.parameters()).device.type == "cpu" and not res.model.training
    ev = evaluate(res.model, plan, data)
    assert ev["val_accuracy"] == pytest.approx(res.history[-1]["val_accuracy"])
    assert ev["val_loss"] == pytest.approx(res.history[-1]["val_loss"], rel=1e-5)

    kinds = [e["kind"] for _, e in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 8
    start = dict(rec.kinds("start")[0])
    # the CPU thread count in force (netstudio/training/threads.py; tests/test_threads.py checks its choices)
    assert isinstance(start.pop("threads"), int) and start.pop("threads_mode") in ("auto", "default")
    assert start == {"kind": "start", "device": "cpu", "device_id": "cpu", "epochs": 8, "steps_per_epoch": 19,
                     "n_train": 600, "n_val": 150, "task": "classification", "fast_path": False,
                     "fast_path_reason": "needs a CUDA GPU", "precision": "off", "clip_norm": 0.0,
                     "clip_value": 0.0, "warmup_epochs": 0, "augmentation": None}
    assert rec.kinds("end")[0] == {"kind": "end", "status": "finished", "message": res.message}
    from netstudio.training.events import EventKind, FitStatus

    def plain(v: object) -> bool:  # the stats event nests dicts and lists of plain values
        if isinstance(v, dict):
            return all(type(k) is str and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (int, float, str, bool, EventKind, FitStatus)

    for _, e in rec.events:  # only plain Python values cross the thread boundary (the typed kinds are str)
        assert all(plain(v) for v in e.values()), e
        assert type(e["kind"]) is EventKind and isinstance(e["kind"], str)
    assert type(res.status) is FitStatus and res.status == "finished" and f"{res.status}" == "finished"


def test_batch_events_are_throttled_and_consistent() -> None:
    plan = classifier_plan()
    data = blobs(n=3000, n_val=0)
    rec = Recorder()
    t0 = time.perf_counter()
    res = fit(plan, data, cfg(epochs=6, batch_size=8), report=rec)
    wall = time.perf_counter() - t0
    assert res.status == "finished"
    batches = rec.kinds("batch")
    assert batches, "a run of several hundred ms must report batches"
    assert len(batches) <= wall * 20 + 6  # ≤ ~20/s (+ one per epoch for the clock reset)
    steps = [b["global_step"] for b in batches]
    assert steps == sorted(steps) and steps[-1] <= 6 * 375
    for b in batches:
        assert b["n_batches"] == 375 and 1 <= b["batch"] <= 375
        assert b["global_step"] == (b["epoch"] - 1) * 375 + b["batch"]
        assert math.isfinite(b["loss"]) and b["samples_per_s"] > 0 and b["eta_s"] >= 0
    # no validation data: val values are None, the rest is still there
    assert res.history[-1]["val_loss"] is None and res.history[-1]["val_accuracy"] is None
    assert res.best_epoch is None


def test_same_seed_gives_identical_history() -> None:
    plan = classifier_plan()
    data = blobs()
    a = fit(plan, data, cfg(seed=3))
    b = fit(plan, data, cfg(seed=3))
    c = fit(plan, data, cfg(seed=4))
    key = [(h["train_loss"], h["val_loss"], h["train_accuracy"]) for h in a.history]
    assert key == [(h["train_loss"], h["val_loss"], h["train_accuracy"]) for h in b.history]
    assert same(params_of(a.model), params_of(b.model))
    # the seed drives the shuffling: another seed gives another trajectory
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_streamed_dataset_matches_resident_batches() -> None:
    """The DataLoader path (big datasets) computes exactly what the index-batched path does."""
    plan = classifier_plan()
    data = blobs()
    streamed = PreparedData(data.info, False, train_set=torch.utils.data.TensorDataset(data.train_x, data.train_y),
                            val_set=torch.utils.data.TensorDataset(data.val_x, data.val_y))
    a = fit(plan, data, cfg(shuffle=False, epochs=3))
    b = fit(plan, streamed, cfg(shuffle=False, epochs=3))
    assert b.status == "finished"
    for ha, hb in zip(a.history, b.history):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
        assert hb["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-5)
    shuffled = fit(plan, streamed, cfg(epochs=6))
    assert shuffled.history[-1]["val_accuracy"] >= 0.95


def test_regression_reports_no_accuracy() -> None:
    plan = regression_plan()
    data = linear_data()
    rec = Recorder()
    res = fit(plan, data, cfg(epochs=30), report=rec)
    assert res.status == "finished", res.message
    assert rec.kinds("start")[0]["task"] == "regression"
    assert all(h["train_accuracy"] is None and h["val_accuracy"] is None for h in res.history)
    assert res.metrics["val_accuracy"] is None and res.metrics["train_accuracy"] is None
    # targets have variance ~5; a fitted linear map gets close to the 0.05² noise
    assert res.history[-1]["val_loss"] < 0.1 < res.history[0]["val_loss"]


def test_two_heads_with_two_losses_train_together() -> None:
    """Shared trunk, a classification head (CE on the target) and a reconstruction head (MSE on the features)."""
    g = Graph()
    torch.manual_seed(0)
    d = g.add_node("data.dataset", {"source": "iris"})
    trunk = chain(g, d, "features", ("layer.linear", {"out_features": 16}), ("activation.relu", {}))
    cls_head = chain(g, trunk, "output", ("layer.linear", {"out_features": 3}))
    rec_head = chain(g, trunk, "output", ("layer.linear", {"out_features": 4}))
    ce, mse = g.add_node("loss.cross_entropy"), g.add_node("loss.mse", {"weight": 0.5})
    g.connect(cls_head.id, "output", ce.id, "prediction")
    g.connect(d.id, "target", ce.id, "target")
    g.connect(rec_head.id, "output", mse.id, "prediction")
    g.connect(d.id, "features", mse.id, "target")
    opt = g.add_node("optim.adam", {"lr": 0.01})
    g.connect(ce.id, "loss", opt.id, "loss")
    g.connect(mse.id, "loss", opt.id, "loss")
    plan = build_plan(g)
    assert len(plan.losses) == 2
    data = blobs()
    res = fit(plan, data, cfg(epochs=15))
    assert res.status == "finished", res.message
    assert res.history[-1]["val_accuracy"] >= 0.95
    # the reconstruction head learned too: its MSE alone is far below the features' variance (~2.5)
    out = predict(res.model, data.val_x)
    assert isinstance(out, tuple) and out[0].shape == (150, 3) and out[1].shape == (150, 4)
    assert torch.nn.functional.mse_loss(out[1], data.val_x).item() < 0.3


def test_schedulers_change_the_learning_rate() -> None:
    data = blobs(n=320, n_val=64)
    step = fit(classifier_plan(sched=("sched.step", {"step_size": 1, "gamma": 0.5})), data, cfg(epochs=3))
    assert [h["lr"] for h in step.history] == pytest.approx([0.01, 0.005, 0.0025])
    one = fit(classifier_plan(sched=("sched.onecycle", {"max_lr": 0.1})), data, cfg(epochs=10))
    assert one.status == "finished", one.message  # stepped exactly epochs × steps times, once per batch
    lrs = [h["lr"] for h in one.history]
    assert max(lrs) > lrs[0] and lrs[-1] < 1e-4
    plateau = fit(classifier_plan(lr=0.05, sched=("sched.plateau", {"patience": 0, "factor": 0.5})),
                  blobs(n=320, n_val=64, random_labels=True), cfg(epochs=6))
    assert plateau.status == "finished"
    assert plateau.history[-1]["lr"] < 0.05  # val loss on random labels stops improving → lr reduced


# ----------------------------------------------------------------------------
# Stop / pause
# ----------------------------------------------------------------------------


def test_stop_event_ends_quickly_with_weights_kept() -> None:
    plan = classifier_plan()
    data = blobs(n=2000, n_val=0)
    rec, stop = Recorder(), threading.Event()
    thread, box = run_in_thread(lambda: fit(plan, data, cfg(epochs=500, batch_size=8), report=rec,
                                            stop_event=stop))
    assert rec.first_batch.wait(WAIT)
    t_stop = time.perf_counter()
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    end_time = rec.events[-1][0]
    assert end_time - t_stop < 1.0  # checked every batch
    res: FitResult = box["result"]
    assert res.status == "stopped" and "Stopped" in res.message
    assert res.metrics["epochs_run"] < 500
    assert rec.kinds("end")[0]["status"] == "stopped"
    assert res.model is not None and not same(params_of(res.model), params_of(plan.model))


def test_pause_freezes_batches_and_is_excluded_from_timing() -> None:
    plan = classifier_plan()
    data = blobs(n=400, n_val=0)
    pause, stop, epoch_after_resume = threading.Event(), threading.Event(), threading.Event()
    state: dict[str, Any] = {}

    class PausingRecorder(Recorder):
        def __call__(self, e: dict[str, Any]) -> None:
            super().__call__(e)
            if e["kind"] == "batch" and "paused_at" not in state:
                state["paused_at"] = e["global_step"]
                pause.set()  # from the training thread: the very next batch must wait
            if e["kind"] == "epoch" and "resumed" in state:
                epoch_after_resume.set()
            if e["kind"] == "resumed":
                state["resumed"] = True

    rec = PausingRecorder()
    thread, box = run_in_thread(lambda: fit(plan, data, cfg(epochs=10_000, batch_size=8), report=rec,
                                            pause_event=pause, stop_event=stop))
    assert rec.paused.wait(WAIT)
    paused_event = rec.kinds("paused")[0]
    # paused before the batch right after the event that asked for it
    assert paused_event["global_step"] == state["paused_at"]
    # while paused nothing trains: no batch event may arrive
    assert not rec.batch_after_pause.wait(0.5)
    pause.clear()
    assert epoch_after_resume.wait(WAIT)
    stop.set()
    thread.join(WAIT)
    res: FitResult = box["result"]
    assert res.status == "stopped"
    resumed = rec.kinds("resumed")
    assert len(resumed) == 1 and resumed[0]["paused_s"] >= 0.5
    # the paused epoch's reported duration excludes the pause
    paused_epoch = paused_event["epoch"]
    times = {e["epoch"]: t for t, e in rec.events if e["kind"] == "epoch"}
    t_begin = times.get(paused_epoch - 1, rec.events[0][0])
    wall = times[paused_epoch] - t_begin
    reported = res.history[paused_epoch - 1]["seconds"]
    assert reported < wall - 0.45


def test_stop_while_paused() -> None:
    plan = classifier_plan()
    data = blobs(n=400, n_val=0)
    stop, pause = threading.Event(), threading.Event()

    class PausingRecorder(Recorder):
        def __call__(self, e: dict[str, Any]) -> None:
            super().__call__(e)
            if e["kind"] == "batch":
                pause.set()

    rec = PausingRecorder()
    thread, box = run_in_thread(lambda: fit(plan, data, cfg(epochs=10_000, batch_size=8), report=rec,
                                            stop_event=stop, pause_event=pause))
    assert rec.paused.wait(WAIT)
    t_stop = time.perf_counter()
    stop.set()
    thread.join(WAIT)
    assert box["result"].status == "stopped"
    assert rec.events[-1][0] - t_stop < 1.0


# ----------------------------------------------------------------------------
# Divergence, early stopping, best weights
# ----------------------------------------------------------------------------


def test_huge_learning_rate_diverges_with_clear_error_and_finite_weights() -> None:
    plan = classifier_plan(optim="optim.sgd", lr=1e6)
    data = blobs()
    rec = Recorder()
    res = fit(plan, data, cfg(epochs=3), report=rec)
    assert res.status == "error"
    assert res.message.startswith("Training diverged at epoch 1, batch ")
    assert ("NaN" in res.message or "infinite" in res.message)
    assert "Lower the learning rate (currently 1000000)" in res.message
    assert rec.kinds("end")[0]["status"] == "error"
    # the weights of the last good state (start of epoch 1 = the initial weights) are kept
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert same(params_of(res.model), params_of(plan.model))


def test_divergence_names_the_exact_batch() -> None:
    """Data with a poisoned sample: the loss becomes NaN at the batch that contains it."""
    plan = classifier_plan()
    data = blobs(n=320, n_val=0)
    x = data.train_x.clone()
    x[100, 2] = float("nan")  # batch 4 with batch size 32 and no shuffling (rows 96..127)
    bad = PreparedData(data.info, True, x, data.train_y, data.val_x, data.val_y)
    res = fit(plan, bad, cfg(epochs=2, shuffle=False))
    assert res.status == "error"
    assert res.message.startswith("Training diverged at epoch 1, batch 4: the loss became NaN.")
    assert "(currently 0.01)" in res.message


def overfit_setup() -> tuple[TrainingPlan, PreparedData]:
    """Random labels + a wide MLP: the validation loss is best early and then rises."""
    return classifier_plan(hidden=64, depth=2, lr=0.01), blobs(n=200, n_val=200, random_labels=True)


def test_early_stopping_triggers() -> None:
    plan, data = overfit_setup()
    res = fit(plan, data, cfg(epochs=60, early_stopping_patience=3))
    assert res.status == "early_stopped", res.message
    n = res.metrics["epochs_run"]
    assert n < 60 and "did not improve for 3 epochs" in res.message
    vals = [h["val_loss"] for h in res.history]
    best = min(vals)
    assert vals.index(best) == n - 4  # the last 3 epochs are all worse than the best one
    assert res.best_epoch == n - 3


def test_keep_best_restores_the_best_epoch() -> None:
    plan, data = overfit_setup()
    kept = fit(plan, data, cfg(epochs=12, keep_best=True))
    vals = [h["val_loss"] for h in kept.history]
    best_epoch = vals.index(min(vals)) + 1
    assert best_epoch < 12  # the setup overfits, so the best epoch is not the last
    assert kept.best_epoch == best_epoch and f"epoch {best_epoch}" in kept.message
    assert kept.metrics["val_loss"] == pytest.approx(vals[best_epoch - 1])
    assert evaluate(kept.model, plan, data)["val_loss"] == pytest.approx(vals[best_epoch - 1], rel=1e-5)
    last = fit(plan, data, cfg(epochs=12, keep_best=False))
    assert evaluate(last.model, plan, data)["val_loss"] == pytest.approx(vals[-1], rel=1e-5)


# ----------------------------------------------------------------------------
# Continuing, devices, errors
# ----------------------------------------------------------------------------


def test_fit_continues_from_a_given_model() -> None:
    plan = classifier_plan()
    data = blobs()
    first = fit(plan, data, cfg(epochs=4))
    trained = params_of(first.model)
    snapshot = copy.deepcopy(first.model)
    # a learning rate of 1e-8 barely moves weights: the result must sit at the given model, not at plan.model
    tiny = classifier_plan(optim="optim.sgd", lr=1e-8)
    tiny.compiled.module.load_state_dict(plan.model.state_dict())
    cont = fit(tiny, data, cfg(epochs=1), model=first.model)
    assert cont.status == "finished"
    for p, q in zip(cont.model.parameters(), trained):
        assert torch.allclose(p, q, atol=1e-6)
    assert cont.history[0]["val_accuracy"] == pytest.approx(first.history[-1]["val_accuracy"])
    assert not same(params_of(cont.model), params_of(plan.model))
    # the given model itself is not modified
    assert same(params_of(first.model), params_of(snapshot))


def test_resolve_device_and_available_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(TrainingError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    devs = available_devices()
    assert devs[0][0] == "cpu" and all(isinstance(i, str) and isinstance(lbl, str) for i, lbl in devs)
    assert len([d for d in devs if d[0].startswith("cuda:")]) == (torch.cuda.device_count()
                                                                  if torch.cuda.is_available() else 0)


def test_unavailable_device_is_an_error_result() -> None:
    plan = classifier_plan()
    rec = Recorder()
    bad = "cuda:99" if torch.cuda.is_available() else "cuda"
    res = fit(plan, blobs(), cfg(device=bad), report=rec)
    assert res.status == "error" and f"Device '{bad}'" in res.message
    assert res.history == [] and rec.kinds("end")[0]["status"] == "error"
    res2 = fit(plan, blobs(), cfg(device="tpu"))
    assert res2.status == "error" and "device must be one of" in res2.message


def test_exception_in_the_loop_becomes_an_error_result() -> None:
    plan = classifier_plan()

    class BrokenLoss:
        """Everything as in ``plan`` except that the loss raises on the 3rd batch."""

        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(plan, name)

        def loss(self, outputs: Any, x: Any, y: Any) -> torch.Tensor:
            self.calls += 1
            if self.calls == 3:
                raise ValueError("loss exploded on purpose")
            return plan.loss(outputs, x, y)

    rec = Recorder()
    res = fit(BrokenLoss(), blobs(), cfg(), report=rec)
    assert res.status == "error"
    assert res.message == "ValueError: loss exploded on purpose"
    assert res.traceback is not None and "loss exploded on purpose" in res.traceback
    assert rec.kinds("end")[0] == {"kind": "end", "status": "error", "message": res.message}


def test_failing_report_callback_becomes_an_error_result() -> None:
    def listener(e: dict[str, Any]) -> None:
        if e["kind"] == "epoch":
            raise KeyError("the UI went away")

    res = fit(classifier_plan(), blobs(), cfg(), report=listener)
    assert res.status == "error" and res.message == "KeyError: 'the UI went away'"


def test_features_that_do_not_fit_the_model() -> None:
    plan = classifier_plan()  # built for iris: 4 features
    res = fit(plan, blobs(n_features=6), cfg())
    assert res.status == "error"
    assert res.message == "The dataset's features (shape 6) do not fit the model input (expected 4)"


# ----------------------------------------------------------------------------
# evaluate / predict / confusion matrix
# ----------------------------------------------------------------------------


def test_evaluate_predict_and_confusion_matrix_agree() -> None:
    plan = classifier_plan()
    data = blobs()
    res = fit(plan, data, cfg(epochs=6))
    model = res.model
    ev = evaluate(model, plan, data)
    out = predict(model, data.val_x)
    assert isinstance(out, torch.Tensor) and out.shape == (150, 3)
    with torch.no_grad():
        assert torch.allclose(out, model(data.val_x), atol=1e-6)
    acc = (out.argmax(1) == data.val_y).float().mean().item()
    assert ev["val_accuracy"] == pytest.approx(acc)
    cm = confusion_matrix(model, plan, data)
    assert len(cm) == 3 and all(len(r) == 3 for r in cm)
    assert sum(map(sum, cm)) == 150
    assert sum(cm[i][i] for i in range(3)) == round(acc * 150)
    assert [sum(r) for r in cm] == torch.bincount(data.val_y, minlength=3).tolist()
    with pytest.raises(TrainingError, match="classification loss"):
        confusion_matrix(model, regression_plan(), linear_data())


def test_pristine_plan_model_means_reset_weights() -> None:
    """Training twice from the same plan starts from the same initial weights both times."""
    plan = classifier_plan()
    data = blobs()
    a = fit(plan, data, cfg(epochs=2))
    b = fit(plan, data, cfg(epochs=2))
    assert [(h["train_loss"], h["val_loss"]) for h in a.history] == \
        [(h["train_loss"], h["val_loss"]) for h in b.history]


def test_cpu_conv_models_train_channels_last_and_come_back_contiguous(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels-last is a speed-up only: same run within float tolerance, ordinary weights returned."""
    import netstudio.data as ns_data
    import netstudio.training.engine as engine

    g = Graph()
    d = g.add_node("data.dataset", {"source": "digits"})
    last = chain(g, d, "features", ("layer.conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}),
                 ("layer.batchnorm2d", {}), ("activation.relu", {}),
                 ("layer.conv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}),
                 ("activation.relu", {}), ("layer.maxpool2d", {"kernel_size": 2}),
                 ("layer.flatten", {}), ("layer.linear", {"out_features": 10}))
    loss = g.add_node("loss.cross_entropy")
    opt = g.add_node("optim.adam", {"lr": 0.01})
    g.connect(last.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    g.connect(loss.id, "loss", opt.id, "loss")
    data = ns_data.load({"source": "digits"})
    plan = build_plan(g, 32)
    from netstudio.training import strategy

    assert engine.use_channels_last(plan.model, torch.device("cpu"))
    assert not engine.use_channels_last(classifier_plan().model, torch.device("cpu"))  # no convolution

    seen: list[bool] = []
    real_step = strategy.make_step  # the single-process strategy builds the step and chooses the layout

    def spy(model: Any, *a: Any) -> Any:
        # the second convolution: with one input channel both layouts have the same strides
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous())
        return real_step(model, *a)

    def seeded_plan() -> TrainingPlan:
        torch.manual_seed(0)  # the initial weights are drawn while compiling
        return build_plan(g, 32)

    monkeypatch.setattr(strategy, "make_step", spy)
    fast = fit(seeded_plan(), data, cfg(epochs=2, batch_size=32))
    monkeypatch.setattr(strategy, "use_channels_last", lambda model, device: False)
    plain = fit(seeded_plan(), data, cfg(epochs=2, batch_size=32))
    assert seen == [True, False]  # the first run trained in channels-last layout, the second did not
    assert fast.status == plain.status == "finished"
    # rounding differs between the layouts and Adam carries it along: close, not bit-equal
    for a, b in zip(fast.history, plain.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=2e-2)
    assert fast.metrics["val_accuracy"] > 0.9
    assert all(p.is_contiguous() for p in fast.model.state_dict().values())
