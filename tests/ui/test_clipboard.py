"""NodeClipboard on its own: a document, a scene and a view, no editor window."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QApplication

from netstudio.graph.commands import AddNode, Connect
from netstudio.project.io import Project
from netstudio.ui.canvas.items import GRID
from netstudio.ui.canvas.scene import NodeScene
from netstudio.ui.canvas.view import NodeView
from netstudio.ui.clipboard import CLIPBOARD_MARKER, NodeClipboard, parse_clipboard
from netstudio.ui.document import Document


def test_clipboard_copies_and_pastes_through_the_document(qtbot: Any) -> None:
    doc = Document(Project())
    scene = NodeScene(doc)
    view = NodeView(scene)
    qtbot.addWidget(view)
    clip = NodeClipboard(doc, scene, view)
    said: list[str] = []
    clip.message.connect(said.append)
    a, b = AddNode("layer.linear", (0, 0), {"out_features": 8}), AddNode("activation.relu", (240, 0))
    assert doc.push(a) and doc.push(b) and doc.push(Connect(a.node_id, "output", b.node_id, "input"))
    scene.select_nodes([a.node_id, b.node_id])

    assert clip.copy() and said[-1] == "Copied 2 node(s)"
    data = parse_clipboard(QApplication.clipboard().text())
    assert data is not None and data["format"] == CLIPBOARD_MARKER and len(data["edges"]) == 1
    steps = doc.undo_stack.count()
    new = clip.paste(QPointF(5 * GRID + 3, 9 * GRID - 2))  # off the grid: snapped
    assert len(new) == 2 and said[-1] == "Pasted 2 node(s)"
    assert doc.undo_stack.count() == steps + 1  # one undo step
    assert sorted(doc.graph.nodes[n].pos for n in new)[0] == (5 * GRID, 9 * GRID)
    assert len(doc.graph.edges) == 2 and set(scene.selected_node_ids()) == set(new)
    doc.undo()
    assert len(doc.graph.nodes) == 2

    # the clipboard holding anything else pastes nothing and says so
    QApplication.clipboard().setText("not nodes")
    assert clip.paste() == [] and said[-1] == "The clipboard holds no NetStudio nodes"
    assert parse_clipboard('{"format": "netstudio/nodes", "nodes": [{"id": "x", "type": "nope"}]}') is None
