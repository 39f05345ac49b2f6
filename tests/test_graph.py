"""Graph model, reversible commands and validation errors (no Qt, no display)."""

from __future__ import annotations

import pytest

from netstudio.errors import CycleError, DuplicateEdgeError, GraphError, ParamError, PortError
from netstudio.graph import commands as cmd
from netstudio.graph.model import Edge, Graph


def mlp(g: Graph) -> dict[str, str]:
    d = g.add_node("data.dataset", {"source": "iris"}, (0, 0))
    f = g.add_node("layer.linear", {"out_features": 16}, (200, 0))
    r = g.add_node("activation.relu", pos=(400, 0))
    o = g.add_node("layer.linear", {"out_features": 3}, (600, 0))
    ce = g.add_node("loss.cross_entropy", pos=(800, 0))
    opt = g.add_node("optim.adam", pos=(1000, 0))
    g.connect(d.id, "features", f.id, "input")
    g.connect(f.id, "output", r.id, "input")
    g.connect(r.id, "output", o.id, "input")
    g.connect(o.id, "output", ce.id, "prediction")
    g.connect(d.id, "target", ce.id, "target")
    g.connect(ce.id, "loss", opt.id, "loss")
    return {"d": d.id, "f": f.id, "r": r.id, "o": o.id, "ce": ce.id, "opt": opt.id}


def test_events_and_unique_names() -> None:
    g = Graph()
    seen: list[str] = []
    g.subscribe(lambda e: seen.append(e.kind))
    a = g.add_node("layer.linear")
    b = g.add_node("layer.linear")
    assert (a.name, b.name) == ("fc1", "fc2")
    g.connect(a.id, "output", b.id, "input")
    g.set_param(a.id, "out_features", "32")
    assert g.nodes[a.id].params["out_features"] == 32
    g.move_node(a.id, (5, 6))
    g.remove_node(a.id)
    assert seen == ["node_added", "node_added", "edge_added", "param_changed", "node_moved",
                    "edge_removed", "node_removed"]
    assert g.edges == []


def test_refused_edits_leave_graph_unchanged() -> None:
    g = Graph()
    ids = mlp(g)
    before = g.to_dict()
    with pytest.raises(CycleError) as ei:
        g.connect(ids["o"], "output", ids["f"], "input")
    assert ei.value.node_id == ids["f"]
    with pytest.raises(DuplicateEdgeError):
        g.connect(ids["d"], "features", ids["f"], "input")
    with pytest.raises(PortError) as pe:
        g.connect(ids["d"], "target", ids["r"], "input")  # a target cannot feed a layer
    assert "target output" in pe.value.message and pe.value.hint
    with pytest.raises(PortError):
        g.connect(ids["ce"], "loss", ids["o"], "input")
    with pytest.raises(ParamError) as pa:
        g.set_param(ids["o"], "out_features", 0)
    assert "below the minimum" in str(pa.value) and pa.value.node_id == ids["o"]
    with pytest.raises(ParamError):
        g.set_param(ids["opt"], "lr", "fast")
    assert g.to_dict() == before


def test_tensor_may_feed_loss_target_for_reconstruction() -> None:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    lin = g.add_node("layer.linear", {"out_features": 4})
    mse = g.add_node("loss.mse")
    g.connect(d.id, "features", lin.id, "input")
    g.connect(lin.id, "output", mse.id, "prediction")
    g.connect(d.id, "features", mse.id, "target")
    assert len(g.edges) == 3


def test_round_trip_dict() -> None:
    g = Graph()
    mlp(g)
    g2 = Graph.from_dict(g.to_dict())
    assert g2.to_dict() == g.to_dict()


def test_from_dict_rejects_cycle_and_unknown_type() -> None:
    g = Graph()
    ids = mlp(g)
    data = g.to_dict()
    data["edges"].append([ids["o"], "output", ids["f"], "input"])
    with pytest.raises(GraphError):
        Graph.from_dict(data)
    data = g.to_dict()
    data["nodes"][1]["type"] = "layer.does_not_exist"
    with pytest.raises(GraphError, match="Unknown node type"):
        Graph.from_dict(data)


def _apply(g: Graph, c: cmd.Command, stack: list[cmd.Command]) -> None:
    c.redo(g)
    stack.append(c)


def test_every_command_undoes_and_redoes_exactly() -> None:
    g = Graph()
    ids = mlp(g)
    snapshots = [g.to_dict()]
    done: list[cmd.Command] = []
    edge = Edge(ids["r"], "output", ids["o"], "input")
    steps: list[cmd.Command] = [
        cmd.AddNode("layer.dropout" if "layer.dropout" in g.catalog else "activation.relu", (50, 50)),
        cmd.SetParam(ids["f"], "out_features", 32),
        cmd.MoveNodes({ids["f"]: (200.0, 0.0)}, {ids["f"]: (210.0, 30.0)}),
        cmd.Disconnect([edge]),
        cmd.Connect(edge.src, edge.src_port, edge.dst, edge.dst_port),
        cmd.RenameNode(ids["f"], "hidden"),
        cmd.Paste(g.subgraph_dict([ids["f"], ids["r"]])),
        cmd.RemoveNodes([ids["r"], ids["f"]]),
    ]
    for c in steps:
        _apply(g, c, done)
        snapshots.append(g.to_dict())
    # the pasted copy carries its inner edge and fresh ids/names
    paste = steps[6]
    assert isinstance(paste, cmd.Paste) and len(paste.new_ids) == 2
    for i in range(len(done) - 1, -1, -1):
        done[i].undo(g)
        assert g.to_dict() == snapshots[i], f"undo of {type(done[i]).__name__}"
    for i, c in enumerate(done):
        c.redo(g)
        assert g.to_dict() == snapshots[i + 1], f"redo of {type(c).__name__}"


def test_topological_order_is_stable() -> None:
    g = Graph()
    ids = mlp(g)
    order = g.topological_order()
    assert order.index(ids["d"]) < order.index(ids["f"]) < order.index(ids["o"]) < order.index(ids["ce"])
