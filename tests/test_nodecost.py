"""Per-node cost (netstudio.training.nodecost): multiply-adds per sample and measured time shares."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from netstudio.compiler.build import build_plan
from netstudio.project.io import load_project
from netstudio.training.nodecost import node_costs

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]


def test_lenet_multiply_adds_per_sample_and_time_shares() -> None:
    project = load_project(ROOT / "sample_projects" / "lenet.nsproj")
    plan = build_plan(project.graph, 16)
    before = {k: v.clone() for k, v in plan.model.state_dict().items()}
    costs = node_costs(plan.compiled, 16, repeats=2)
    by_name = {project.graph.nodes[nid].name: c for nid, c in costs.items()}
    model = plan.model
    # by hand: output positions (28−5+1 = 24; pooled 12−5+1 = 8) × out × in channels × kernel area for a
    # conv, in × out features for a linear
    conv1, conv2 = model.get_submodule("conv1"), model.get_submodule("conv2")
    assert by_name["conv1"].macs_per_sample == conv1.out_channels * 24 * 24 * conv1.in_channels * 25
    assert by_name["conv2"].macs_per_sample == conv2.out_channels * 8 * 8 * conv2.in_channels * 25
    for name in ("fc1", "fc2", "fc3"):
        lin = model.get_submodule(name)
        assert by_name[name].macs_per_sample == lin.in_features * lin.out_features
    assert by_name["relu1"].macs_per_sample == 0 and by_name["pool1"].macs_per_sample == 0
    shares = [c.time_share for c in costs.values()]
    assert all(s is not None and s >= 0 for s in shares) and sum(shares) == pytest.approx(1.0)  # type: ignore[misc]
    assert by_name["conv1"].seconds is not None and by_name["conv1"].seconds > 0
    assert all(torch.equal(v, before[k]) for k, v in plan.model.state_dict().items())  # a copy was profiled


def test_multiply_adds_without_measuring() -> None:
    project = load_project(ROOT / "sample_projects" / "net_10_20_1.nsproj")
    plan = build_plan(project.graph, 8)
    costs = node_costs(plan.compiled, 8, measure=False)
    assert costs and all(c.time_share is None for c in costs.values())
    linears = [c.macs_per_sample for nid, c in costs.items() if project.graph.nodes[nid].type_id == "layer.linear"]
    assert sorted(linears) == sorted(m.in_features * m.out_features for m in plan.model.modules()
                                     if isinstance(m, torch.nn.Linear))
