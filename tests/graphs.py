"""Small graphs the tests build: a Dataset, a chain of layers, a cross-entropy loss and Adam."""

from __future__ import annotations

from typing import Any

from netstudio.graph.model import Graph


def chain(data: dict[str, Any], layers: list[tuple[str, dict[str, Any]]]) -> Graph:
    """``data`` (Dataset params) → ``layers`` ((type id, params), named n0, n1, …) → loss → Adam."""
    g = Graph()
    d = g.add_node("data.dataset", data, name="data").id
    prev, port = d, "features"
    for i, (type_id, params) in enumerate(layers):
        nid = g.add_node(type_id, params, name=f"n{i}").id
        g.connect(prev, port, nid, "input")
        prev, port = nid, "output"
    loss = g.add_node("loss.cross_entropy", {}, name="loss").id
    opt = g.add_node("optim.adam", {}, name="opt").id
    g.connect(prev, "output", loss, "prediction")
    g.connect(d, "target", loss, "target")
    g.connect(loss, "loss", opt, "loss")
    return g
