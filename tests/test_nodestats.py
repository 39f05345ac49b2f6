"""Per-node training statistics (netstudio.training.nodestats): figures, diagnoses, NaN origin, --stats."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from netstudio.compiler.build import TrainingPlan, build_plan
from netstudio.data import PreparedData
from netstudio.graph.model import Graph
from netstudio.nodes.base import Category
from netstudio.training import fit
from netstudio.training.nodestats import NodeStats
from test_training import blobs, cfg, chain, classifier_plan

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]


def stats_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "stats"]


def node_id(plan: TrainingPlan, name: str) -> str:
    return next(nid for nid, n in plan.graph.nodes.items() if n.name == name)


def names(plan: TrainingPlan) -> dict[str, str]:
    return {nid: n.name for nid, n in plan.graph.nodes.items()}


def test_sampled_steps_and_off() -> None:
    plan = classifier_plan(optim="optim.sgd", lr=0.05)
    events: list[dict[str, Any]] = []
    res = fit(plan, blobs(), cfg(epochs=2, stats_every=7), report=events.append)
    assert res.status == "finished"
    steps = [e["global_step"] for e in stats_events(events)]
    assert steps == list(range(1, 2 * 19 + 1, 7))  # 600 samples / 32 = 19 steps per epoch
    # every model node, plain floats only (the event crosses threads)
    model_nodes = {nid for nid, n in plan.graph.nodes.items()
                   if plan.graph.catalog.get(n.type_id).category in (Category.LAYER, Category.ACTIVATION)}
    for ev in stats_events(events):
        assert model_nodes <= set(ev["nodes"])
        for fig in ev["nodes"].values():
            assert all(v is None or type(v) is float for v in fig.values())
    off: list[dict[str, Any]] = []
    fit(plan, blobs(), cfg(epochs=1, stats_every=0), report=off.append)
    assert stats_events(off) == []


def test_unsampled_steps_use_the_models_own_forward() -> None:
    plan = classifier_plan()
    model = copy.deepcopy(plan.model)
    stats = NodeStats(model, plan, 10)
    assert stats.probed and "forward" not in model.__dict__
    stats.begin()
    assert "forward" in model.__dict__
    stats.cancel()
    assert "forward" not in model.__dict__
    assert [stats.due(s) for s in (1, 2, 10, 11, 21)] == [True, False, False, True, True]


def test_figures_equal_a_hand_computation_with_hooks_on_the_same_step() -> None:
    lr = 0.1
    plan = classifier_plan(optim="optim.sgd", lr=lr, extra={"momentum": 0.0})
    data = blobs(n_val=0)
    events: list[dict[str, Any]] = []
    fit(plan, data, cfg(epochs=1, stats_every=4, threads=1), report=events.append)
    sample = next(e for e in stats_events(events) if e["global_step"] == 5)

    # the same run without statistics, with plain forward hooks recording every training forward
    model = copy.deepcopy(plan.model)
    outputs: dict[str, list[torch.Tensor]] = {}
    weights: dict[str, list[torch.Tensor]] = {}   # each layer's parameters as each forward starts
    attr_of = plan.compiled.module_names
    for nid, attr in attr_of.items():
        def hook(mod: torch.nn.Module, inp: Any, out: torch.Tensor, nid: str = nid) -> None:
            if mod.training:
                outputs.setdefault(nid, []).append(out.detach().clone())

        def pre(mod: torch.nn.Module, inp: Any, nid: str = nid) -> None:
            params = list(mod.parameters())
            if mod.training and params:
                weights.setdefault(nid, []).append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
        model.get_submodule(attr).register_forward_hook(hook)
        model.get_submodule(attr).register_forward_pre_hook(pre)
    fit(plan, data, cfg(epochs=1, stats_every=0, threads=1), model=model)
    assert len(outputs) == len(attr_of) and weights

    step = 5  # 1-based: index 4 of the recorded forwards
    for nid, outs in outputs.items():
        t = outs[step - 1].double()
        fig = sample["nodes"][nid]
        assert fig["mean"] == pytest.approx(float(t.mean()), rel=1e-4, abs=1e-6)
        assert fig["std"] == pytest.approx(float(t.std(unbiased=False)), rel=1e-4)
        assert fig["zeros"] == pytest.approx(float((t == 0).double().mean()))
        assert fig["min"] == pytest.approx(float(t.min()), rel=1e-5)
        assert fig["max"] == pytest.approx(float(t.max()), rel=1e-5)
        assert fig["nonfinite"] == 0.0
        hist = sample["histograms"][nid]["output"]
        lo, hi, counts = hist[0], hist[1], torch.tensor(hist[2:])
        assert lo == pytest.approx(float(t.min()), rel=1e-5) and hi == pytest.approx(float(t.max()), rel=1e-5)
        assert int(counts.sum()) == t.numel()
        by_hand = torch.histc(t.float(), bins=len(counts), min=lo, max=hi)
        assert (counts - by_hand).abs().sum() <= 4  # values on a bin edge may round either way
    for nid, seen in weights.items():
        before, after = seen[step - 1].double(), seen[step].double()
        fig = sample["nodes"][nid]
        assert fig["weight_norm"] == pytest.approx(float(after.norm()), rel=1e-5)
        assert fig["update_ratio"] == pytest.approx(float((after - before).norm() / before.norm()), rel=1e-3)
        # plain SGD: the update is lr times the gradient
        assert fig["grad_norm"] == pytest.approx(float((before - after).norm()) / lr, rel=1e-3)


def test_dead_relus_are_diagnosed_on_the_right_node() -> None:
    plan = classifier_plan(optim="optim.sgd", lr=0.05, hidden=16, depth=2)
    # the second hidden layer's bias kills the ReLU after it; the first ReLU stays alive
    fc2 = plan.model.get_submodule(plan.compiled.module_names[node_id(plan, "fc2")])
    with torch.no_grad():
        fc2.bias.fill_(-100.0)
    events: list[dict[str, Any]] = []
    fit(plan, blobs(), cfg(epochs=1, stats_every=5), report=events.append)
    diags = [d for e in stats_events(events) for d in e["diagnoses"]]
    dead = {d["node_id"] for d in diags if d["code"] == "dead_relu"}
    assert dead == {node_id(plan, "relu2")}
    d = next(d for d in diags if d["code"] == "dead_relu")
    assert "relu2" in d["message"] and "100%" in d["message"] and "bias" in d["hint"]
    # nothing flows back through it: the layer feeding it stops changing
    assert node_id(plan, "fc2") in {d["node_id"] for d in diags if d["code"] == "frozen"}


def test_huge_learning_rate_names_the_first_node_producing_nan() -> None:
    plan = classifier_plan(optim="optim.sgd", lr=1e6)
    events: list[dict[str, Any]] = []
    res = fit(plan, blobs(), cfg(epochs=2), report=events.append)
    assert res.status == "error"
    origin = [e for e in stats_events(events) if e["nan_origin"]]
    assert len(origin) == 1
    ev = origin[0]
    nid = ev["nan_origin"]
    name = names(plan)[nid]
    assert f"NaN first appears at '{name}' output at step {ev['global_step']}" in res.message
    assert "its gradient norm was" in res.message and "the step before" in res.message
    assert "→ lower the learning rate or add gradient clipping" in res.message
    # the named node is the first in the forward's order whose output is not finite
    order = [n for n in plan.compiled.analysis.order if n in ev["nodes"]]
    bad = [n for n in order if ev["nodes"][n]["nonfinite"] > 0]
    assert bad and bad[0] == nid
    assert all(ev["nodes"][n]["nonfinite"] == 0 for n in order[:order.index(nid)])
    # the weights of the epoch start are still handed back
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_nan_in_the_data_is_named_as_such() -> None:
    plan = classifier_plan()
    data = blobs(n=320, n_val=0)
    x = data.train_x.clone()
    x[100, 2] = float("nan")
    res = fit(plan, PreparedData(data.info, True, x, data.train_y, data.val_x, data.val_y),
              cfg(epochs=1, shuffle=False))
    assert res.message.startswith("Training diverged at epoch 1, batch 4: the loss became NaN.")
    assert "NaN/Inf first appears in the features of 'data1' at step 4 → check the data" in res.message


def sigmoid_mlp(depth: int) -> TrainingPlan:
    g = Graph()
    torch.manual_seed(0)
    d = g.add_node("data.dataset", {"source": "iris"})
    specs: list[tuple[str, dict[str, Any]]] = []
    for _ in range(depth):
        specs += [("layer.linear", {"out_features": 16}), ("activation.sigmoid", {})]
    specs.append(("layer.linear", {"out_features": 3}))
    last = chain(g, d, "features", *specs)
    loss = g.add_node("loss.cross_entropy")
    g.connect(last.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    opt = g.add_node("optim.sgd", {"lr": 0.01})
    g.connect(loss.id, "loss", opt.id, "loss")
    return build_plan(g, 32)


def test_twenty_layer_sigmoid_mlp_has_vanishing_gradients() -> None:
    plan = sigmoid_mlp(20)
    events: list[dict[str, Any]] = []
    fit(plan, blobs(), cfg(epochs=1, stats_every=10), report=events.append)
    diags = [d for e in stats_events(events) for d in e["diagnoses"] if d["code"] == "vanishing"]
    assert diags and {d["node_id"] for d in diags} == {node_id(plan, "fc1")}
    assert "Vanishing gradients" in diags[0]["message"] and "ReLU" in diags[0]["hint"]
    # a shallow one does not
    shallow = sigmoid_mlp(2)
    events = []
    fit(shallow, blobs(), cfg(epochs=1, stats_every=10), report=events.append)
    assert not [d for e in stats_events(events) for d in e["diagnoses"] if d["code"] == "vanishing"]


@pytest.mark.slow
def test_cli_stats_file_holds_every_layer_node_with_finite_figures(tmp_path: Path) -> None:
    out = tmp_path / "stats.jsonl"
    project = ROOT / "sample_projects" / "net_10_20_1.nsproj"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "netstudio", "train", str(project), "--epochs", "1", "--quiet",
                          "--stats", str(out), "--stats-every", "5", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and [r["step"] for r in lines] == list(range(1, 5 * len(lines), 5))
    from netstudio.project.io import load_project

    graph = load_project(project).graph
    layer_ids = {nid for nid, n in graph.nodes.items()
                 if graph.catalog.get(n.type_id).category in (Category.LAYER, Category.ACTIVATION)}
    for rec in lines:
        assert rec["epoch"] == 1
        assert layer_ids <= set(rec["nodes"])
        for nid in layer_ids:
            fig = rec["nodes"][nid]
            for key in ("mean", "std", "zeros", "min", "max"):
                assert isinstance(fig[key], float) and math.isfinite(fig[key])
            assert fig["nonfinite"] == 0.0
            if graph.catalog.get(graph.nodes[nid].type_id).category == Category.LAYER:
                assert all(math.isfinite(fig[k]) for k in ("weight_norm", "grad_norm", "update_ratio"))


def test_a_sampled_step_runs_eagerly_beside_a_captured_graph() -> None:
    """On the CUDA fast path the replay cannot call the probes: a sampled step takes the Python step."""
    from netstudio.training.fastpath import Stepper, make_step

    plan = classifier_plan(optim="optim.sgd", lr=0.1)
    model = copy.deepcopy(plan.model)
    opt = plan.make_optimizer(model)
    data = blobs()
    stepper = Stepper(make_step(model, plan, opt), opt, torch.device("cpu"), 32, 19, data.train_x, data.train_y)
    stepper.enable_static()

    class Graph:
        replays = 0

        def replay(self) -> None:
            self.replays += 1

    graph = Graph()
    stepper.graph = graph  # type: ignore[assignment]
    stats = NodeStats(model, plan, 1)
    before = [p.detach().clone() for p in model.parameters()]
    idx = torch.arange(32)
    stats.begin()
    stepper.run_indices_uncaptured(idx)
    stats.cancel()
    sample = stats.end(1, 1)
    assert graph.replays == 0 and stepper.batches == 1 and stepper.samples == 32
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(fig["nonfinite"] == 0 for fig in sample.nodes.values() if "nonfinite" in fig)
    stepper.run_indices(idx)  # an unsampled step replays
    assert graph.replays == 1


def _reduce_rank(rank: int, world: int, init: str, out: Any) -> None:
    import torch.distributed as dist

    from netstudio.training.distributed import DistContext
    from netstudio.training.strategy import DataParallel

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank, torch.device("cpu"), "gloo")
        outs = torch.tensor([[1.0 + rank, 2.0, 0.5 * rank, 0.0, -1.0 - rank, 3.0 + rank, float(rank)]])
        out[rank] = DataParallel(ctx).reduce_node_stats(outs).tolist()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_reduces_the_output_figures_over_the_ranks(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_reduce_rank, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2, join=True)
    # mean/std/fractions averaged, min over the ranks, max over the ranks, NaN/Inf counts summed
    assert out[0] == out[1] == [[1.5, 2.0, 0.25, 0.0, -2.0, 4.0, 1.0]]


def test_a_dead_path_is_not_called_vanishing() -> None:
    from netstudio.training.nodestats import NodeInfo, StatsSample, diagnose

    info = {"a": NodeInfo("a", "fc1", "layer.linear"), "b": NodeInfo("b", "fc2", "layer.linear")}
    dead = StatsSample(5, 1, {"a": {"grad_norm": 0.0, "update_ratio": 0.0}, "b": {"grad_norm": 0.5,
                                                                                   "update_ratio": 1e-3}})
    codes = {(d["code"], d["node_id"]) for d in diagnose(dead, info, ["a", "b"], previous=dead)}
    assert codes == {("frozen", "a")}
    tiny = StatsSample(5, 1, {"a": {"grad_norm": 1e-9, "update_ratio": 1e-6}, "b": {"grad_norm": 0.5,
                                                                                     "update_ratio": 1e-3}})
    assert {(d["code"], d["node_id"]) for d in diagnose(tiny, info, ["a", "b"])} == {("vanishing", "a")}


def test_stats_every_is_saved_only_when_changed() -> None:
    from netstudio.errors import ProjectError
    from netstudio.training.config import TrainConfig

    assert "stats_every" not in TrainConfig().to_dict()  # projects read by older versions stay as they were
    d = TrainConfig(stats_every=25).to_dict()
    assert d["stats_every"] == 25 and TrainConfig.from_dict(d).stats_every == 25
    assert TrainConfig.from_dict({}).stats_every == 200
    with pytest.raises(ProjectError, match="stats_every"):
        TrainConfig.from_dict({"stats_every": -1})
