"""Parameter nodes in the app: counted on their cards and in the Model panel's total."""

from __future__ import annotations

import torch

from netstudio.compiler.shapes import analyze
from netstudio.project.importer import import_module
from netstudio.ui.paramcount import ParamCounter
from tests.test_import_vit import _tiny


def test_parameter_nodes_are_counted_like_layers() -> None:
    model = _tiny()
    res = import_module(model, torch.randn(2, 3, 8, 8), blocks=True)
    g = res.project.graph
    an = analyze(g, 64)
    counter = ParamCounter()
    assert counter.count(g, an, g.find("class_token").id) == 16
    total = sum(counter.count(g, an, nid) or 0 for nid in g.nodes)  # the encoder block counts its pos_embedding
    assert total == sum(p.numel() for p in model.parameters())
