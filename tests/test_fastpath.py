"""The CUDA-graph fast path.

On any machine: the step body the graph captures (static index buffer, gather,
forward, loss, backward, optimizer step, on-device sums) run eagerly gives
exactly what the plain PyTorch loop and ``fit`` give; the eligibility rules and
optimizer preparation. On a CUDA machine: captured replays match eager
training, and ``fit`` trains on the GPU with the fast path on.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from netstudio.compiler.build import TrainingPlan, build_plan
from netstudio.data import DatasetInfo, PreparedData
from netstudio.graph.model import Graph
from netstudio.training import TrainConfig, fit
from netstudio.training.fastpath import (Stepper, fast_path_blocker, make_step, prepare_optimizer,
                                         reset_for_eager, try_capture)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def mlp_plan(optim: str = "optim.adam", lr: float = 0.01, extra: dict[str, Any] | None = None,
             sched: tuple[str, dict[str, Any]] | None = None, dropout: bool = False) -> TrainingPlan:
    g = Graph()
    torch.manual_seed(0)
    d = g.add_node("data.dataset", {"source": "iris"})
    specs: list[tuple[str, dict[str, Any]]] = [("layer.linear", {"out_features": 32}), ("activation.relu", {})]
    if dropout:
        specs += [("layer.batchnorm1d", {}), ("layer.dropout", {"p": 0.2})]
    specs.append(("layer.linear", {"out_features": 3}))
    node, port = d, "features"
    for type_id, params in specs:
        nxt = g.add_node(type_id, params)
        g.connect(node.id, port, nxt.id, "input")
        node, port = nxt, "output"
    loss = g.add_node("loss.cross_entropy")
    g.connect(node.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    opt = g.add_node(optim, {"lr": lr, **(extra or {})})
    g.connect(loss.id, "loss", opt.id, "loss")
    if sched is not None:
        s = g.add_node(*sched)
        g.connect(opt.id, "optimizer", s.id, "optimizer")
    return build_plan(g)


def blobs(n: int = 500, n_val: int = 100, seed: int = 0) -> PreparedData:
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    y = torch.randint(0, 3, (n + n_val,), generator=g)
    x = centers[y] + 0.6 * torch.randn(n + n_val, 4, generator=g)
    info = DatasetInfo(source="test", feature_shape=(4,), feature_dtype="float32", target_shape=(),
                       target_dtype="int64", task="classification", num_classes=3, class_names=("0", "1", "2"),
                       n_train=n, n_val=n_val, is_image=False)
    return PreparedData(info, True, x[:n], y[:n], x[n:], y[n:])


def perms(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    """The shuffling order fit uses: a CPU generator seeded with config.seed."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


# ----------------------------------------------------------------------------
# CPU: the captured body run eagerly equals the plain loop and fit
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("optim,extra", [("optim.adam", {}), ("optim.sgd", {"momentum": 0.9}),
                                          ("optim.adamw", {})])
def test_static_step_body_equals_plain_loop_and_fit(optim: str, extra: dict[str, Any]) -> None:
    plan = mlp_plan(optim, 0.01, extra)
    data = blobs()
    bs, epochs, seed = 64, 3, 5   # 500 = 7 × 64 + 52: the last batch takes the eager route
    steps = math.ceil(500 / bs)

    # the fast-path machinery, in static mode without a graph (what a replay executes)
    model_a = copy.deepcopy(plan.model)
    opt_a = plan.make_optimizer(model_a)
    prepare_optimizer(opt_a, torch.device("cpu"), capture=False)
    stepper = Stepper(make_step(model_a, plan, opt_a), opt_a, torch.device("cpu"), bs, steps,
                      data.train_x, data.train_y)
    stepper.enable_static()

    # the textbook loop
    model_b = copy.deepcopy(plan.model)
    opt_b = plan.make_optimizer(model_b)
    prepare_optimizer(opt_b, torch.device("cpu"), capture=False)

    epoch_losses = []
    for perm in perms(500, seed, epochs):
        stepper.reset_epoch()
        plain: list[float] = []
        for a in range(0, 500, bs):
            idx = perm[a:a + bs]
            stepper.run_indices(idx)
            xb, yb = data.train_x[idx], data.train_y[idx]
            opt_b.zero_grad(set_to_none=True)
            loss = plan.loss(model_b(xb), xb, yb)
            loss.backward()
            opt_b.step()
            plain.append(loss.item())
        recorded = stepper.batch_losses()
        assert recorded is not None and recorded.tolist() == plain
        total, correct = stepper.totals()
        assert stepper.samples == 500 and stepper.batches == steps
        epoch_losses.append(total / 500)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)

    res = fit(plan, data, TrainConfig(epochs=epochs, batch_size=bs, device="cpu", seed=seed, keep_best=False))
    assert res.status == "finished", res.message
    assert [h["train_loss"] for h in res.history] == pytest.approx(epoch_losses, rel=1e-6, abs=0)
    for p, q in zip(res.model.parameters(), model_a.parameters()):
        assert torch.equal(p, q)


def test_static_body_names_the_first_nan_batch() -> None:
    plan = mlp_plan()
    data = blobs(n=320, n_val=0)
    x = data.train_x.clone()
    x[200, 1] = float("inf")  # row 200 is in batch 6 (rows 192..223) when not shuffled
    model = copy.deepcopy(plan.model)
    opt = plan.make_optimizer(model)
    stepper = Stepper(make_step(model, plan, opt), opt, torch.device("cpu"), 32, 10, x, data.train_y)
    stepper.enable_static()
    stepper.reset_epoch()
    for a in range(0, 320, 32):
        stepper.run_indices(torch.arange(a, a + 32))
    assert not math.isfinite(stepper.totals()[0])
    assert stepper.first_bad_batch()[0] == 6


def test_static_body_with_dropout_and_batchnorm_trains_on_cpu() -> None:
    plan = mlp_plan(dropout=True)
    res = fit(plan, blobs(), TrainConfig(epochs=6, device="cpu", keep_best=False))
    assert res.status == "finished" and res.history[-1]["val_accuracy"] >= 0.95


def test_fast_path_blocker_reasons() -> None:
    model = torch.nn.Linear(2, 2)
    adam = torch.optim.Adam(model.parameters())
    ok = dict(setting="auto", device=torch.device("cuda", 0), resident=True, optimizer=adam, has_scheduler=False,
              n_train=100, batch_size=10)
    assert fast_path_blocker(**ok) is None
    assert fast_path_blocker(**{**ok, "setting": "off"}) == "turned off in the training settings"
    assert fast_path_blocker(**{**ok, "device": torch.device("cpu")}) == "needs a CUDA GPU"
    assert fast_path_blocker(**{**ok, "resident": False}) == \
        "the dataset is streamed batch by batch (too large to keep on the device)"
    assert fast_path_blocker(**{**ok, "has_scheduler": True}) == \
        "a learning-rate scheduler changes the learning rate during training"
    rms = torch.optim.RMSprop(model.parameters())
    assert fast_path_blocker(**{**ok, "optimizer": rms}) == \
        "the RMSprop optimizer is not supported (SGD, Adam and AdamW are)"
    assert fast_path_blocker(**{**ok, "n_train": 5}) == "the training set is smaller than one batch"


def test_prepare_optimizer_picks_the_implementation() -> None:
    model = torch.nn.Linear(3, 2)
    cpu = torch.device("cpu")
    adam = torch.optim.Adam(model.parameters())
    prepare_optimizer(adam, cpu, capture=True)
    assert all(g["capturable"] for g in adam.param_groups) and adam.param_groups[0]["fused"]
    # after a failed capture: fresh state, eager implementation
    adam.state[next(model.parameters())]["step"] = torch.zeros(())
    reset_for_eager(adam, cpu)
    assert len(adam.state) == 0
    assert not adam.param_groups[0]["capturable"] and adam.param_groups[0]["fused"]
    for cls in (torch.optim.SGD, torch.optim.AdamW):
        opt = cls(model.parameters(), lr=0.1)
        prepare_optimizer(opt, cpu, capture=False)
        assert opt.param_groups[0]["fused"] is True
    rms = torch.optim.RMSprop(model.parameters())
    prepare_optimizer(rms, cpu, capture=False)
    assert "fused" not in rms.param_groups[0] or not rms.param_groups[0]["fused"]
    # a fused optimizer still computes the same update as the default one (rounding aside)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    oa, ob = torch.optim.Adam(a.parameters(), 0.01), torch.optim.Adam(b.parameters(), 0.01)
    prepare_optimizer(ob, cpu, capture=False)
    x = torch.randn(16, 3)
    for _ in range(5):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_try_capture_falls_back_from_fused_kernels() -> None:
    """A capture that fails with fused optimizer kernels is retried with the multi-tensor ones."""
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    prepare_optimizer(opt, torch.device("cpu"), capture=True)
    assert opt.param_groups[0]["fused"] and opt.param_groups[0]["capturable"]

    class FakeCapture(Stepper):
        def __init__(self, fail: tuple[bool, ...]) -> None:
            super().__init__(lambda x, y: (x.sum(), None), opt, torch.device("cpu"), 2, 1)
            self.fail, self.seen = list(fail), []

        def capture(self, model: torch.nn.Module, warmup_steps: int = 3) -> None:
            self.seen.append(bool(self.optimizer.param_groups[0]["fused"]))
            if self.fail.pop(0):
                raise RuntimeError("operation not permitted when stream is capturing")

    opt.state[next(model.parameters())]["step"] = torch.zeros(())  # as left by a warm-up
    second = FakeCapture((True, False))
    assert try_capture(second, model) is None
    assert second.seen == [True, False] and len(opt.state) == 0 and opt.param_groups[0]["capturable"]
    never = FakeCapture((True,))
    assert try_capture(never, model) == \
        "capture failed (RuntimeError: operation not permitted when stream is capturing)"
    assert never.seen == [False]  # already unfused: no second attempt


def test_cpu_run_reports_why_there_is_no_fast_path() -> None:
    events: list[dict[str, Any]] = []
    res = fit(mlp_plan(), blobs(), TrainConfig(epochs=1, device="cpu"), report=events.append)
    assert res.metrics["fast_path"] is False
    assert events[0]["fast_path"] is False and events[0]["fast_path_reason"] == "needs a CUDA GPU"


# ----------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------


def cuda_cfg(**kw: Any) -> TrainConfig:
    base = dict(epochs=4, batch_size=64, device="cuda", seed=1, keep_best=False)
    base.update(kw)
    return TrainConfig(**base)


@cuda_only
def test_cuda_fit_trains_the_mlp_with_the_fast_path() -> None:
    plan = mlp_plan()
    data = blobs()
    events: list[dict[str, Any]] = []
    res = fit(plan, data, cuda_cfg(epochs=8), report=events.append)
    assert res.status == "finished", res.message
    start = events[0]
    assert start["fast_path"] is True and start["fast_path_reason"] is None, start
    assert start["device"] == torch.cuda.get_device_name(0)
    assert res.history[-1]["val_accuracy"] >= 0.95
    assert next(res.model.parameters()).device.type == "cpu"


@cuda_only
@pytest.mark.parametrize("optim,extra", [("optim.adam", {}), ("optim.sgd", {"momentum": 0.9}),
                                          ("optim.adamw", {"weight_decay": 0.01})])
def test_cuda_fast_path_matches_eager(optim: str, extra: dict[str, Any]) -> None:
    plan = mlp_plan(optim, 0.01, extra)
    data = blobs()  # 500 = 7 × 64 + 52: the last batch of each epoch runs eagerly between replays
    fast = fit(plan, data, cuda_cfg())
    eager = fit(plan, data, cuda_cfg(fast_path="off"))
    assert fast.metrics["fast_path"] is True and eager.metrics["fast_path"] is False
    for hf, he in zip(fast.history, eager.history):
        assert hf["train_loss"] == pytest.approx(he["train_loss"], rel=1e-4)
        assert hf["val_loss"] == pytest.approx(he["val_loss"], rel=1e-4)
    for p, q in zip(fast.model.parameters(), eager.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


@cuda_only
def test_cuda_replay_equals_static_eager_step() -> None:
    """Same optimizer implementation on both sides: a replay computes what the eager body computes."""
    plan = mlp_plan("optim.adam", 0.01)
    data = blobs()
    dev = torch.device("cuda", 0)
    x, y = data.train_x.to(dev), data.train_y.to(dev)
    runs = []
    for capture in (True, False):
        model = copy.deepcopy(plan.model).to(dev)
        opt = plan.make_optimizer(model)
        prepare_optimizer(opt, dev, capture=True)
        stepper = Stepper(make_step(model, plan, opt), opt, dev, 50, 10, x, y)
        if capture:
            before = [p.detach().clone() for p in model.parameters()]
            assert try_capture(stepper, model) is None
            assert stepper.graph is not None
            # warm-up steps were undone: weights and optimizer state as before capture
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
            assert all(float(s["step"]) == 0 for s in opt.state.values())
        else:
            stepper.enable_static()
        losses = []
        for perm in perms(500, 2, 3):
            stepper.reset_epoch()
            for a in range(0, 500, 50):
                stepper.run_indices(perm[a:a + 50].to(dev))
            losses.append(stepper.batch_losses().cpu())
        runs.append((losses, [p.detach().cpu() for p in model.parameters()]))
    (la, pa), (lb, pb) = runs
    for a, b in zip(la, lb):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for p, q in zip(pa, pb):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


@cuda_only
@pytest.mark.parametrize("optim", ["optim.adam", "optim.adamw", "optim.sgd"])
def test_cuda_capture_with_fused_optimizer_kernels(optim: str) -> None:
    """The first choice: fused optimizer kernels inside the graph (try_capture's fallback is not needed)."""
    plan = mlp_plan(optim, 0.01, {"momentum": 0.9} if optim == "optim.sgd" else {})
    dev = torch.device("cuda", 0)
    data = blobs()
    model = copy.deepcopy(plan.model).to(dev)
    opt = plan.make_optimizer(model)
    prepare_optimizer(opt, dev, capture=True)
    assert opt.param_groups[0]["fused"]
    stepper = Stepper(make_step(model, plan, opt), opt, dev, 50, 10, data.train_x.to(dev), data.train_y.to(dev))
    stepper.capture(model)  # raises if fused kernels cannot be captured
    stepper.reset_epoch()
    for a in range(0, 500, 50):
        stepper.run_indices(torch.arange(a, a + 50, device=dev))
    losses = stepper.batch_losses()
    assert losses is not None and bool(torch.isfinite(losses).all()) and losses[-1] < losses[0]


@cuda_only
def test_cuda_fast_path_divergence_and_keep_best() -> None:
    data = blobs()
    res = fit(mlp_plan("optim.sgd", 1e6), data, cuda_cfg())
    assert res.status == "error" and res.message.startswith("Training diverged at epoch 1, batch ")
    assert res.metrics["fast_path"] is True
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    kept = fit(mlp_plan(), blobs(n=200, n_val=200), cuda_cfg(epochs=10, keep_best=True))
    assert kept.status == "finished" and kept.metrics["fast_path"] is True
    assert kept.metrics["val_loss"] == min(h["val_loss"] for h in kept.history)


@cuda_only
def test_cuda_scheduler_runs_eagerly_with_a_reason() -> None:
    events: list[dict[str, Any]] = []
    res = fit(mlp_plan(sched=("sched.step", {"step_size": 1, "gamma": 0.5})), blobs(), cuda_cfg(epochs=2),
              report=events.append)
    assert res.status == "finished"
    assert events[0]["fast_path"] is False
    assert events[0]["fast_path_reason"] == "a learning-rate scheduler changes the learning rate during training"
    assert [h["lr"] for h in res.history] == pytest.approx([0.01, 0.005])


@cuda_only
def test_cuda_fast_path_with_dropout_and_batchnorm() -> None:
    """Dropout draws fresh random numbers on every replay; BatchNorm updates its running stats in place."""
    plan = mlp_plan(dropout=True)
    res = fit(plan, blobs(), cuda_cfg(epochs=8))
    assert res.status == "finished", res.message
    assert res.metrics["fast_path"] is True
    assert res.history[-1]["val_accuracy"] >= 0.95
    bn = next(m for m in res.model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    fresh = next(m for m in plan.model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert int(bn.num_batches_tracked) == 8 * 8  # 8 epochs × 8 batches (7 replays + 1 eager each)
    assert not torch.allclose(bn.running_mean, fresh.running_mean)


@cuda_only
def test_cuda_streamed_dataset_trains_eagerly() -> None:
    data = blobs()
    streamed = PreparedData(data.info, False, train_set=torch.utils.data.TensorDataset(data.train_x, data.train_y),
                            val_set=torch.utils.data.TensorDataset(data.val_x, data.val_y))
    events: list[dict[str, Any]] = []
    res = fit(mlp_plan(), streamed, cuda_cfg(epochs=6), report=events.append)
    assert res.status == "finished", res.message
    assert events[0]["fast_path"] is False and "streamed" in events[0]["fast_path_reason"]
    assert res.history[-1]["val_accuracy"] >= 0.95


@cuda_only
@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_cuda_out_of_memory_is_a_clear_error(fast_path: str) -> None:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    a = g.add_node("layer.linear", {"out_features": 8192})
    b = g.add_node("layer.linear", {"out_features": 8192})
    c = g.add_node("layer.linear", {"out_features": 3})
    g.connect(d.id, "features", a.id, "input")
    g.connect(a.id, "output", b.id, "input")
    g.connect(b.id, "output", c.id, "input")
    loss = g.add_node("loss.cross_entropy")
    g.connect(c.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    opt = g.add_node("optim.adam")
    g.connect(loss.id, "loss", opt.id, "loss")
    plan = build_plan(g)  # ~270 MB of weights; with gradients and Adam state ~1.1 GB
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 600e6 / total), 0)
    try:
        res = fit(plan, blobs(), cuda_cfg(epochs=1, batch_size=256, fast_path=fast_path))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    assert res.status == "error"
    assert res.message == "Out of GPU memory at batch size 256: reduce the batch size or the model size"
    assert res.traceback is not None
    # the memory was given back: a normal run works right after
    assert fit(mlp_plan(), blobs(), cuda_cfg(epochs=1)).status == "finished"
