"""Holding a weights file as the session's model (#18 item 4): ``plan_with_state`` builds the model on the meta
device and assigns the state, skipping the random init the state replaces; the model must be exactly the one
the usual path gives (``build_plan`` + ``load_state_dict``), and anything the state does not provide makes it
build the usual way."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import netstudio.compiler.build as build_mod
import netstudio.compiler.held as held
from netstudio.compiler.build import build_plan
from netstudio.compiler.held import plan_with_state
from netstudio.graph.model import Graph
from netstudio.project.importer import import_spec
from tests.graphs import chain as _chain

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _mlp() -> Graph:
    return _chain({"source": "moons"}, [("layer.linear", {"out_features": 32}), ("activation.relu", {}),
                                        ("layer.dropout", {"p": 0.2}), ("layer.linear", {"out_features": 2})])


def _cnn() -> Graph:
    return _chain({"source": "mnist_5k"},
                  [("layer.conv2d", {"out_channels": 6, "kernel_size": 5}), ("layer.batchnorm2d", {}),
                   ("activation.relu", {}), ("layer.flatten", {}), ("layer.linear", {"out_features": 10})])


def _trained_state(graph: Graph, seed: int) -> dict[str, torch.Tensor]:
    """A state that differs from any fresh init: random weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    model = build_plan(graph, 8).model
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
            else:
                t.fill_(7)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _usual(graph: Graph, state: dict[str, torch.Tensor], batch: int) -> nn.Module:
    """Today's path: build with random init, then load the state over it."""
    model = build_plan(graph, batch).model
    model.load_state_dict(state, strict=True)
    return model.eval()


def _assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].device == sb[k].device and sa[k].stride() == sb[k].stride(), k
        assert torch.equal(sa[k], sb[k]), k
    assert [(n, p.requires_grad) for n, p in a.named_parameters()] == \
        [(n, p.requires_grad) for n, p in b.named_parameters()]
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)


def _compile_then(monkeypatch: pytest.MonkeyPatch, change: Any, *, usual_path_too: bool = True) -> None:
    """Every model compiled for a held state gets ``change(module)`` applied (and, with ``usual_path_too``,
    the usual path's model as well)."""
    real = build_mod.compile_model

    def changed(*args: Any, **kwargs: Any) -> Any:
        compiled = real(*args, **kwargs)
        change(compiled.module)
        return compiled

    if usual_path_too:
        monkeypatch.setattr(build_mod, "compile_model", changed)
    monkeypatch.setattr(held, "compile_model", changed)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records whether each plan_with_state took the fast (meta) path."""
    taken: list[bool] = []
    real = held._fast_plan

    def spy(*args: Any) -> Any:
        plan = real(*args)
        taken.append(plan is not None)
        return plan

    monkeypatch.setattr(held, "_fast_plan", spy)
    return taken


@pytest.mark.parametrize(("make", "shape"), [(_mlp, (5, 2)), (_cnn, (5, 1, 28, 28))], ids=["mlp", "cnn_batchnorm"])
def test_held_catalog_model_equals_the_usual_path(make: Any, shape: tuple[int, ...],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _spy(monkeypatch)
    g = make()
    state = _trained_state(g, seed=4)
    usual = _usual(g, state, 8)
    fast = plan_with_state(g, {k: v.clone() for k, v in state.items()}, 8).model.eval()
    assert taken == [True]
    assert not any(t.is_meta for t in [*fast.parameters(), *fast.buffers()])
    _assert_same(fast, usual, torch.randn(*shape))
    # the held model trains like the usual one: parameters are leaves that the optimizer updates
    fast.train()
    usual.train()
    x = torch.randn(*shape)
    for m in (fast, usual):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        torch.manual_seed(9)  # the same dropout mask
        m(x).sum().backward()
        opt.step()
    _assert_same(fast.eval(), usual.eval(), x)


def test_held_imported_model_with_blocks_equals_the_usual_path(monkeypatch: pytest.MonkeyPatch) -> None:
    res = import_spec("torchvision:resnet18", input_shape="2,3,64,64", seed=5, blocks=True)
    g = res.project.graph
    batch = res.project.training.batch_size
    assert sum(n.type_id == "block.block" for n in g.nodes.values()) >= 4
    taken = _spy(monkeypatch)
    usual = _usual(g, res.state_dict, batch)
    fast = plan_with_state(g, {k: v.clone() for k, v in res.state_dict.items()}, batch).model.eval()
    assert taken == [True]
    _assert_same(fast, usual, torch.randn(3, 3, 64, 64))


def test_state_of_another_dtype_or_layout_is_converted_as_load_state_dict_does(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _spy(monkeypatch)
    g = _mlp()
    state = _trained_state(g, seed=6)
    odd = {k: v.double() for k, v in state.items()}
    w = next(k for k, v in state.items() if v.dim() == 2)
    odd[w] = state[w].t().contiguous().t()  # same values, transposed strides
    usual = _usual(g, odd, 8)
    fast = plan_with_state(g, odd, 8).model.eval()
    assert taken == [True]
    _assert_same(fast, usual, torch.randn(4, 2))
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in fast.parameters())


def test_state_that_does_not_fit_raises_the_usual_error() -> None:
    g = _mlp()
    state = _trained_state(g, seed=1)
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        plan_with_state(g, {k: v for k, v in list(state.items())[1:]}, 8)
    bad = dict(state)
    k = next(iter(bad))
    bad[k] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        plan_with_state(g, bad, 8)


def test_non_persistent_buffer_falls_back_to_the_usual_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor the state does not provide (here a non-persistent buffer the model gets when compiled) would
    stay on the meta device: the model is built the usual way instead, with the buffer's real values."""
    _compile_then(monkeypatch, lambda m: m.register_buffer("offset", torch.full((2,), 0.25), persistent=False))
    taken = _spy(monkeypatch)
    g = _mlp()
    state = _trained_state(g, seed=2)
    model = plan_with_state(g, {k: v.clone() for k, v in state.items()}, 8).model.eval()
    assert taken == [False]
    assert torch.equal(model.get_buffer("offset"), torch.full((2,), 0.25))
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    _assert_same(model, _usual(g, state, 8), torch.randn(4, 2))


def test_plain_tensor_attribute_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor kept as a plain attribute of a layer (not a buffer) is found too."""
    def with_attr(module: nn.Module) -> None:
        first = next(m for m in module.modules() if isinstance(m, nn.Linear))
        first.mask = [torch.ones(3)]  # type: ignore[assignment]

    _compile_then(monkeypatch, with_attr, usual_path_too=False)
    taken = _spy(monkeypatch)
    g = _mlp()
    state = _trained_state(g, seed=3)
    plan_with_state(g, state, 8)
    assert taken == [False]


def test_tied_parameters_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def tied(module: nn.Module) -> None:
        lin = [m for m in module.modules() if isinstance(m, nn.Linear)]
        lin[1].extra = lin[0].bias  # the same Parameter under two names

    _compile_then(monkeypatch, tied)
    taken = _spy(monkeypatch)
    g = _mlp()
    state = _trained_state(g, seed=3)
    model = plan_with_state(g, {k: v.clone() for k, v in state.items()}, 8).model
    assert taken == [False]
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert lin[1].extra is lin[0].bias
