"""ReLU → max pool trains as max pool → ReLU on the CPU (netstudio.compiler.reorder): same numbers, bit for bit."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import netstudio.data as ns_data
from netstudio.compiler.build import TrainingPlan, build_plan
from netstudio.compiler.reorder import pool_before_relu, reordered_forward, swappable
from netstudio.graph.model import Graph
from netstudio.training import fit
from test_training import cfg
from tests.graphs import chain

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def lenet_graph(pool: dict[str, Any] | None = None) -> Graph:
    """digits (8×8) → conv n0 → ReLU n1 → pool n2 → conv n3 → ReLU n4 → pool n5 → linear, CrossEntropy, Adam."""
    pool = pool or {"kernel_size": 2}
    g = chain({"source": "digits"}, [
        ("layer.conv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}), ("activation.relu", {}),
        ("layer.maxpool2d", pool), ("layer.conv2d", {"out_channels": 8, "kernel_size": 3, "padding": 1}),
        ("activation.relu", {}), ("layer.maxpool2d", pool), ("layer.flatten", {}),
        ("layer.linear", {"out_features": 10})])
    g.set_param(next(nid for nid, n in g.nodes.items() if n.name == "opt"), "lr", 0.01)
    return g


def seeded_plan(g: Graph) -> TrainingPlan:
    torch.manual_seed(0)  # initial weights are drawn while compiling
    return build_plan(g, 32)


def order(gm: fx.GraphModule) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]


def sparse_images(n: int = 32, size: int = 8) -> torch.Tensor:
    """Mostly-zero images (like digits): whole windows of equal values, so the tie rule matters."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 4, (n, 1, size, size), generator=g).float()
    return x * (torch.rand(n, 1, size, size, generator=g) < 0.3)


def test_the_pools_move_before_their_relus_and_the_model_keeps_its_own_graph() -> None:
    plan = seeded_plan(lenet_graph())
    model = plan.model
    before = model.code
    fast = pool_before_relu(model)
    assert fast is not None
    names = order(model)
    assert names[:6] == ["n0", "n1", "n2", "n3", "n4", "n5"]  # conv, ReLU, pool, conv, ReLU, pool
    assert order(fast)[:6] == ["n0", "n2", "n1", "n3", "n5", "n4"]
    assert model.code == before  # the compiled model (and so every export) is untouched
    assert fast.get_submodule("n0") is model.get_submodule("n0")  # shared, not copied


def test_gradients_and_training_are_bit_equal_including_tied_windows() -> None:
    plan = seeded_plan(lenet_graph())
    plain = copy.deepcopy(plan.model)
    model = copy.deepcopy(plan.model)
    with torch.no_grad():  # a positive bias: all-zero patches give equal positive maxima (first one wins)
        for m in (plain, model):
            m.get_submodule("n0").bias.fill_(0.1)
    undo = reordered_forward(model)
    assert "forward" in model.__dict__
    x, y = sparse_images(), torch.arange(32) % 10
    opts = [torch.optim.Adam(m.parameters(), 1e-2) for m in (plain, model)]
    for _ in range(15):
        grads = []
        for m, opt in zip((plain, model), opts):
            opt.zero_grad()
            out = m(x)
            F.cross_entropy(out, y).backward()
            grads.append([p.grad.clone() for p in m.parameters()])
            opt.step()
        assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))
    assert torch.equal(plain(x), model(x))
    undo()
    assert "forward" not in model.__dict__


def test_the_tie_rule_is_the_pools_first_maximum() -> None:
    """One window of four equal positive values: the gradient reaches only the first, as in the graph order."""
    x = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    relu, pool = nn.ReLU(), nn.MaxPool2d(2)
    pool(relu(x)).sum().backward()
    graph_order = x.grad.clone()
    x.grad = None
    relu(pool(x)).sum().backward()
    assert torch.equal(graph_order, x.grad)
    assert graph_order.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


class _Shapes(nn.Module):
    def __init__(self, inplace: bool = False, indices: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool2d(2, return_indices=indices)
        self.avg = nn.AvgPool2d(2)


class TwoReaders(_Shapes):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu(self.conv(x))
        return self.pool(r).sum() + r.sum()  # the ReLU's output is read twice


class InplaceSkip(_Shapes):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv(x)
        return self.pool(self.relu(c)).sum() + c.sum()  # an in-place ReLU overwrote what c reads


class AvgPool(_Shapes):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avg(self.relu(self.conv(x)))  # average pooling does not commute with ReLU


class Indices(_Shapes):
    def forward(self, x: torch.Tensor) -> Any:
        return self.pool(self.relu(self.conv(x)))  # the indices would point into a different tensor


class Functional(_Shapes):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv(x)))


@pytest.mark.parametrize("module", [TwoReaders(), InplaceSkip(inplace=True), AvgPool(), Indices(indices=True)],
                         ids=["two-readers", "inplace-skip", "avgpool", "indices"])
def test_only_exact_rewrites_are_made(module: nn.Module) -> None:
    gm = fx.symbolic_trace(module)
    assert swappable(gm) == [] and pool_before_relu(gm) is None
    assert reordered_forward(gm) is not None and "forward" not in gm.__dict__


class Plain(_Shapes):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.conv(x)))


@pytest.mark.parametrize("module", [Functional(), Plain(inplace=True), Plain()],
                         ids=["functional", "inplace-alone", "module"])
def test_functional_and_in_place_relus_are_reordered(module: nn.Module) -> None:
    gm = fx.symbolic_trace(module)
    fast = pool_before_relu(gm)
    assert fast is not None
    x = sparse_images(4)
    assert torch.equal(fast(x), gm(x))


def test_fit_trains_reordered_on_the_cpu_with_the_same_weights_and_hands_back_the_graph_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from netstudio.training import strategy

    g = lenet_graph()
    data = ns_data.load({"source": "digits"})
    seen: list[float] = []  # the smallest value the first pool receives: negative only when it runs before its ReLU

    def spy(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        if mod.training:
            seen.append(float(inp[0].detach().min()))

    plan = seeded_plan(g)
    handle = plan.model.get_submodule("n2").register_forward_pre_hook(spy)
    fast = fit(plan, data, cfg(epochs=2, batch_size=32, stats_every=5, threads=1))
    handle.remove()
    assert fast.status == "finished" and fast.metrics["val_accuracy"] > 0.85
    assert seen and min(seen) < 0  # trained reordered (sampled statistics steps excepted)
    reordered_steps = sum(v < 0 for v in seen)
    assert reordered_steps >= len(seen) - len(range(1, len(seen) + 1, 5))  # back to it after every sample
    assert fast.model is not None and "forward" not in fast.model.__dict__
    assert order(fast.model)[:3] == ["n0", "n1", "n2"]

    monkeypatch.setattr(strategy.SingleProcess, "reorders", lambda self, model, device: False)
    seen.clear()
    plan = seeded_plan(g)
    handle = plan.model.get_submodule("n2").register_forward_pre_hook(spy)
    plain = fit(plan, data, cfg(epochs=2, batch_size=32, stats_every=5, threads=1))
    handle.remove()
    assert seen and min(seen) >= 0  # the graph order: the pool only ever sees ReLU outputs
    assert [h["train_loss"] for h in fast.history] == [h["train_loss"] for h in plain.history]
    assert [h["val_loss"] for h in fast.history] == [h["val_loss"] for h in plain.history]
    assert plain.model is not None
    for (k, a), (_, b) in zip(fast.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_statistics_of_a_reordered_run_describe_the_graph_as_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampled step runs the graph's own order: ReLU figures are of the full feature map."""
    from netstudio.training import strategy

    g = lenet_graph()
    data = ns_data.load({"source": "digits"})
    events: list[dict[str, Any]] = []
    fit(seeded_plan(g), data, cfg(epochs=1, batch_size=32, stats_every=3, threads=1), report=events.append)
    monkeypatch.setattr(strategy.SingleProcess, "reorders", lambda self, model, device: False)
    plain: list[dict[str, Any]] = []
    fit(seeded_plan(g), data, cfg(epochs=1, batch_size=32, stats_every=3, threads=1), report=plain.append)
    a = [e["nodes"] for e in events if e["kind"] == "stats"]
    b = [e["nodes"] for e in plain if e["kind"] == "stats"]
    assert len(a) == len(b) > 3
    assert a == b


class _Head(nn.Module):
    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)  # as torchvision's AlexNet/VGG write it
        self.pool = pool
        self.fc = nn.LazyLinear(5)  # sized by a first call: the pools' output sizes differ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.AdaptiveMaxPool2d(3), nn.MaxPool2d(2, stride=3, dilation=2)],
                         ids=["overlapping-padded", "ceil-mode", "adaptive", "dilated"])
def test_every_max_pool_form_commutes_with_relu_bit_for_bit(pool: nn.Module) -> None:
    torch.manual_seed(0)
    head = _Head(pool)
    x = sparse_images(4, 9)
    head(x)
    gm = fx.symbolic_trace(head)
    with torch.no_grad():
        gm.get_submodule("conv").bias.fill_(0.1)  # tied positive maxima in the empty parts of the images
    fast = pool_before_relu(gm)
    assert fast is not None
    grads = []
    for m in (gm, fast):  # the same parameters: fast shares gm's submodules
        for p in gm.parameters():
            p.grad = None
        out = m(x)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in gm.parameters()]))
    (a, ga), (b, gb) = grads
    assert torch.equal(a, b) and all(torch.equal(u, v) for u, v in zip(ga, gb))
