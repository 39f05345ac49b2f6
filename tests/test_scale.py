"""What the Model panel counts after every edit (#18 item 4): multiply-adds per sample on the meta device.

Counting passes BatchNorm, ReLU and Dropout through (they are never counted; on the meta device their
element-wise work was most of the time): the counts must equal those of the measuring path, and a BatchNorm1d
model counted with a batch of one (what the panel does) must get its counts instead of failing on "more than
1 value per channel".
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from netstudio.compiler.build import build_plan, compile_model
from netstudio.graph.model import Graph
from netstudio.training.nodecost import node_costs
from tests.graphs import chain

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _graph(conv: bool) -> Graph:
    layers: list[tuple[str, dict[str, Any]]] = (
        [("layer.conv2d", {"out_channels": 6, "kernel_size": 5}), ("layer.batchnorm2d", {}),
         ("activation.relu", {}), ("layer.flatten", {}), ("layer.linear", {"out_features": 10})]
        if conv else
        [("layer.linear", {"out_features": 16}), ("layer.batchnorm1d", {}), ("activation.relu", {}),
         ("layer.dropout", {"p": 0.5}), ("layer.linear", {"out_features": 2})])
    return chain({"source": "mnist_5k" if conv else "moons"}, layers)


def test_counts_equal_the_measuring_path_with_batchnorm() -> None:
    g = _graph(conv=True)
    plan = build_plan(g, 4)
    counted = node_costs(plan.compiled, 4, measure=False)
    measured = node_costs(plan.compiled, 4, repeats=1)
    assert {nid: c.macs_per_sample for nid, c in counted.items()} == \
        {nid: c.macs_per_sample for nid, c in measured.items()}
    by_name = {g.nodes[nid].name: c.macs_per_sample for nid, c in counted.items()}
    assert by_name["n0"] == 6 * 24 * 24 * 1 * 25 and by_name["n4"] == 6 * 24 * 24 * 10
    assert by_name["n1"] == 0
    # the compiled module keeps its mode: a copy is counted
    assert plan.model.training and all(m.training for m in plan.model.modules())


def test_batchnorm1d_model_counted_with_a_batch_of_one_on_meta() -> None:
    g = _graph(conv=False)
    with torch.device("meta"):  # as the Model panel does
        compiled = compile_model(g, 64)
    costs = node_costs(compiled, 1, measure=False, device="meta")
    by_name = {g.nodes[nid].name: c.macs_per_sample for nid, c in costs.items()}
    assert by_name == {"n0": 2 * 16, "n1": 0, "n2": 0, "n3": 0, "n4": 16 * 2}
    # counted on a copy: the compiled module keeps its layers
    kinds = [type(m).__name__ for m in compiled.module.children()]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def _meta_compiled(g: Graph, batch: int = 64) -> Any:
    with torch.device("meta"):
        return compile_model(g, batch)


def test_counting_in_place_gives_the_counts_of_a_copy_for_catalog_and_imported_models() -> None:
    """The Model panel hands its meta model over (no deep copy): the counts are the same as on a copy."""
    from netstudio.project.importer import import_spec

    imported = import_spec("torchvision:resnet18", input_shape="2,3,64,64", seed=1, blocks=True).project.graph
    for g in (_graph(conv=True), _graph(conv=False), imported):
        copied = node_costs(_meta_compiled(g), 1, measure=False, device="meta")
        compiled = _meta_compiled(g)
        in_place = node_costs(compiled, 1, measure=False, device="meta", in_place=True)
        assert {k: c.macs_per_sample for k, c in in_place.items()} == \
            {k: c.macs_per_sample for k, c in copied.items()}
        assert sum(c.macs_per_sample for c in copied.values()) > 0


def test_count_key_changes_with_the_model_only() -> None:
    from netstudio.training.nodecost import count_key

    g = _graph(conv=True)
    key = count_key(_meta_compiled(g))
    assert key is not None and count_key(_meta_compiled(g)) == key
    opt = g.find("opt").id
    g.set_param(opt, "lr", 0.5)  # not the model: the same counts
    assert count_key(_meta_compiled(g)) == key
    head = g.find("n4").id
    g.set_param(head, "out_features", 12)
    changed = _meta_compiled(g)
    assert count_key(changed) != key
    conv = g.find("n0").id
    g.set_param(conv, "stride", 2)  # same parameter shapes, other MACs
    assert count_key(_meta_compiled(g)) != count_key(changed)
    # another input shape (the batch size does not count: the count is per sample)
    assert count_key(_meta_compiled(g, 8)) == count_key(_meta_compiled(g))


def test_count_key_refuses_modules_it_cannot_describe() -> None:
    from netstudio.training.nodecost import count_key

    class Mine(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = 3  # not in its repr

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.k

    compiled = _meta_compiled(_graph(conv=True))
    compiled.module.extra = Mine()
    assert count_key(compiled) is None
