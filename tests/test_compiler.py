"""Shape analysis problems and torch.fx compilation."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

from netstudio.compiler import ShapeChecker, analyze
from netstudio.compiler.build import build_plan, compile_model
from netstudio.errors import CompileError
from netstudio.graph.model import Graph


def residual_concat_graph() -> tuple[Graph, dict[str, str]]:
    """iris(4) → fc_in(16) → [relu → fc_a(16)] + skip → concat(with fc_b(8)) → head(3)."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    fin = g.add_node("layer.linear", {"out_features": 16}, name="fc_in")
    r = g.add_node("activation.relu")
    fa = g.add_node("layer.linear", {"out_features": 16}, name="fc_a")
    add = g.add_node("merge.add")
    fb = g.add_node("layer.linear", {"out_features": 8}, name="fc_b")
    cat = g.add_node("merge.concat")
    head = g.add_node("layer.linear", {"out_features": 3}, name="head")
    ce = g.add_node("loss.cross_entropy")
    opt = g.add_node("optim.adam", {"lr": 0.01})
    c = g.connect
    c(d.id, "features", fin.id, "input")
    c(fin.id, "output", r.id, "input")
    c(r.id, "output", fa.id, "input")
    c(fa.id, "output", add.id, "a")
    c(fin.id, "output", add.id, "b")
    c(add.id, "output", cat.id, "inputs")
    c(fin.id, "output", fb.id, "input")
    c(fb.id, "output", cat.id, "inputs")
    c(cat.id, "output", head.id, "input")
    c(head.id, "output", ce.id, "prediction")
    c(d.id, "target", ce.id, "target")
    c(ce.id, "loss", opt.id, "loss")
    return g, {"add": add.id, "cat": cat.id, "head": head.id, "ce": ce.id, "fa": fa.id, "d": d.id}


class HandWritten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc_in, self.fc_a, self.fc_b, self.head = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc_in(x)
        a = self.fc_a(torch.relu(h)) + h
        return self.head(torch.cat([a, self.fc_b(h)], dim=1))


def test_residual_and_concat_compile_to_readable_fx() -> None:
    g, ids = residual_concat_graph()
    an = analyze(g, batch_size=32)
    assert an.ok, an.problems
    assert an.output_info(ids["cat"]).fmt() == "32×24"
    cm = compile_model(g, 32, an)
    code = cm.code
    assert "def forward(self, x)" in code
    assert "self.fc_in(x)" in code and "torch.cat" in code
    ref = HandWritten()
    cm.module.load_state_dict(ref.state_dict())
    x = torch.randn(5, 4)
    assert torch.allclose(cm.module(x), ref(x), atol=1e-6)
    # only built-in modules: the module pickles and unpickles on its own
    clone = pickle.loads(pickle.dumps(cm.module))
    assert torch.equal(clone(x), cm.module(x))


def test_plan_loss_and_accuracy() -> None:
    g, _ = residual_concat_graph()
    plan = build_plan(g, 8)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    out = plan.model(x)
    assert torch.allclose(plan.loss(out, x, y), nn.functional.cross_entropy(out, y))
    assert int(plan.correct(out, y)) == int((out.argmax(1) == y).sum())
    opt = plan.make_optimizer(plan.model)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.01


def test_missing_target_cycle_and_mismatch_are_problems_with_node_ids() -> None:
    g, ids = residual_concat_graph()
    tgt = next(e for e in g.edges if e.dst == ids["ce"] and e.dst_port == "target")
    g.disconnect(tgt)
    an = analyze(g)
    (p,) = [p for p in an.problems if p.node_id == ids["ce"]]
    assert "no input connected to 'target'" in p.message and "dataset's target" in (p.hint or "")
    with pytest.raises(CompileError) as ei:
        build_plan(g)
    assert ei.value.node_id == ids["ce"]

    g, ids = residual_concat_graph()
    g.set_param(ids["head"], "in_features", 20)
    an = analyze(g)
    (p,) = an.errors()
    assert p.node_id == ids["head"]
    assert p.message == "Linear 'head' expects 20 input features but receives 24"
    assert p.hint == "set in_features to 24 or 'auto'"


def test_incremental_checker_reuses_unchanged_nodes() -> None:
    g, ids = residual_concat_graph()
    checker = ShapeChecker()
    checker.analyze(g)
    misses = checker.misses
    g.set_param(ids["head"], "out_features", 3)  # no change in value → nothing recomputed
    checker.analyze(g)
    assert checker.misses == misses
    g.set_param(ids["fa"], "bias", False)  # one node changes; its outputs are equal so downstream hits
    checker.analyze(g)
    assert checker.misses == misses + 1


def test_without_losses_every_dangling_output_is_returned() -> None:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    a = g.add_node("layer.linear", {"out_features": 2})
    b = g.add_node("layer.linear", {"out_features": 5})
    g.connect(d.id, "features", a.id, "input")
    g.connect(d.id, "features", b.id, "input")
    cm = compile_model(g)
    out = cm.module(torch.randn(3, 4))
    assert isinstance(out, tuple) and [o.shape[1] for o in out] == [2, 5]
