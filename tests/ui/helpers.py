"""Shared helpers for the editor tests: building graphs through commands, mouse drags."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from netstudio.graph.commands import AddNode, Connect
from netstudio.ui.canvas.items import EdgeItem, NodeItem


def add(window: Any, type_id: str, pos: tuple[float, float], **params: Any) -> str:
    """Add a node through the document (one undo step), return its id."""
    cmd = AddNode(type_id, pos, params or None)
    assert window.document.push(cmd)
    assert cmd.node_id is not None
    return cmd.node_id


def connect(window: Any, src: str, sp: str, dst: str, dp: str) -> None:
    assert window.document.push(Connect(src, sp, dst, dp))


def view_point(window: Any, scene_point: QPointF) -> QPoint:
    return window.view.mapFromScene(scene_point)


def port_point(window: Any, node_id: str, port: str, output: bool) -> QPoint:
    item = window.scene.node_items[node_id]
    p = (item.out_ports if output else item.in_ports)[port]
    return view_point(window, p.scenePos())


def mouse_drag(window: Any, start: QPoint, end: QPoint, steps: int = 6, before_release: Any = None) -> None:
    """Press at ``start``, move in steps to ``end``, (inspect), release — on the canvas viewport."""
    vp = window.view.viewport()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for i in range(1, steps + 1):
        p = QPoint(start.x() + (end.x() - start.x()) * i // steps, start.y() + (end.y() - start.y()) * i // steps)
        QTest.mouseMove(vp, p)
    if before_release is not None:
        before_release()
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


def scene_counts(window: Any) -> tuple[int, int]:
    items = window.scene.items()
    return (sum(isinstance(i, NodeItem) for i in items), sum(isinstance(i, EdgeItem) for i in items))


def assert_scene_matches_model(window: Any, graph: Any = None) -> None:
    """The scene's items are the graph's nodes and edges (``graph``: the project's by default)."""
    g = window.document.graph if graph is None else graph
    assert scene_counts(window) == (len(g.nodes), len(g.edges))
    assert set(window.scene.node_items) == set(g.nodes)
    assert set(window.scene.edge_items) == set(g.edges)
    for nid, item in window.scene.node_items.items():
        assert (item.pos().x(), item.pos().y()) == g.nodes[nid].pos
        assert item.name == g.nodes[nid].name


def edge_label(window: Any, src: str, sp: str, dst: str, dp: str) -> str:
    for e, item in window.scene.edge_items.items():
        if (e.src, e.src_port, e.dst, e.dst_port) == (src, sp, dst, dp):
            return item.label.text if item.label.isVisible() else ""
    raise AssertionError("no such edge in the scene")


def build_mlp(window: Any) -> dict[str, str]:
    """Dataset(mnist_5k) → Flatten → Linear(128) → ReLU → Linear(10) → CrossEntropy → SGD."""
    ids = {
        "data": add(window, "data.dataset", (0, 0), source="mnist_5k"),
        "flat": add(window, "layer.flatten", (260, 0)),
        "fc1": add(window, "layer.linear", (460, 0), out_features=128),
        "relu": add(window, "activation.relu", (700, 0)),
        "fc2": add(window, "layer.linear", (880, 0), out_features=10),
        "loss": add(window, "loss.cross_entropy", (1120, 0)),
        "opt": add(window, "optim.sgd", (1360, 0)),
    }
    connect(window, ids["data"], "features", ids["flat"], "input")
    connect(window, ids["flat"], "output", ids["fc1"], "input")
    connect(window, ids["fc1"], "output", ids["relu"], "input")
    connect(window, ids["relu"], "output", ids["fc2"], "input")
    connect(window, ids["fc2"], "output", ids["loss"], "prediction")
    connect(window, ids["data"], "target", ids["loss"], "target")
    connect(window, ids["loss"], "loss", ids["opt"], "loss")
    return ids


def simulate_crash(window: Any) -> None:
    """What the next start sees after this window's process died: its slot no longer in use.

    The window object lives on in the test, so it is detached from its backup (a dead
    process never touches its files again) and its close at teardown deletes nothing.
    """
    window.autosave_timer.stop()
    window.recovery.release()
    window.recovery.slot = "crashed-" + window.recovery.slot


def mlp_with_block(window: Any, names: tuple[str, ...] = ("fc1", "relu")) -> tuple[dict[str, str], str]:
    """:func:`build_mlp`, then the nodes ``names`` made into a block through the window (Ctrl+G)."""
    ids = build_mlp(window)
    window.scene.select_nodes([ids[n] for n in names])
    bid = window.make_block()
    assert bid is not None
    return ids, bid
