"""Blocks in the editor: make (Ctrl+G), open (double-click), breadcrumb, expand, library, one undo stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from netstudio.graph.commands import SetParam

from .helpers import assert_scene_matches_model, build_mlp, edge_label, mlp_with_block, view_point


def _snap(window: Any) -> dict[str, Any]:
    return json.loads(json.dumps(window.document.graph.to_dict()))


def assert_scene_matches_current(window: Any) -> None:
    """The canvas shows exactly the graph being edited (the project's, or the open block's)."""
    g = window.document.current
    assert_scene_matches_model(window, g)
    for nid, item in window.scene.node_items.items():
        nt = g.node_type(nid)
        assert list(item.in_ports) == [p.name for p in nt.inputs]
        assert list(item.out_ports) == [p.name for p in nt.outputs]


def _double_click(window: Any, nid: str) -> None:
    item = window.scene.node_items[nid]
    QTest.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                      view_point(window, item.scenePos() + QPointF(40, 14)))


def test_make_open_edit_expand_and_undo_round_trip(window: Any, qtbot: Any) -> None:
    doc = window.document
    ids = build_mlp(window)
    window.view.frame_all()
    original = _snap(window)
    base = doc.undo_stack.count()

    # select fc1 + relu, Ctrl+G: one block drawn as one node with its ports and edge shapes
    window.scene.select_nodes([ids["fc1"], ids["relu"]])
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    assert doc.undo_stack.count() == base + 1
    (bid,) = [n for n in doc.graph.nodes if doc.graph.nodes[n].inner is not None]
    assert window.scene.selected_node_ids() == [bid]
    assert_scene_matches_current(window)
    inp = doc.graph.node_type(bid).inputs[0].name
    out = doc.graph.node_type(bid).outputs[0].name
    assert "784" in edge_label(window, ids["flat"], "output", bid, inp)
    assert "128" in edge_label(window, bid, out, ids["fc2"], "input")
    made = _snap(window)

    # double-click opens it in the same canvas, with a breadcrumb back
    window.view.frame_all()
    _double_click(window, bid)
    assert doc.path == [bid]
    assert window.breadcrumb.isVisible() and window.breadcrumb.text() == "Project › block1"
    assert_scene_matches_current(window)
    inner = doc.current
    assert {n.name for n in inner.nodes.values()} >= {"fc1", "relu1"}

    # edits inside are steps on the document's one undo stack
    fc1 = inner.find("fc1").id
    assert doc.push(SetParam(fc1, "out_features", 32))
    assert doc.undo_stack.count() == base + 2
    assert inner.nodes[fc1].params["out_features"] == 32
    window.scene.select_nodes([inner.find("relu1").id])
    window.delete_selection()  # the block's output port now has no input: a problem on the block
    assert doc.undo_stack.count() == base + 3
    assert_scene_matches_current(window)
    assert any(p.node_id == bid and "Block 'block1'" in p.message for p in doc.analysis().problems)
    doc.undo()
    assert_scene_matches_current(window)
    assert not any(p.node_id == bid for p in doc.analysis().problems)

    # back to the project with the breadcrumb; the block's edge shape follows the inner edit
    window.breadcrumb.buttons[0].click()
    assert doc.path == [] and not window.breadcrumb.isVisible()
    assert_scene_matches_current(window)
    assert "32" in edge_label(window, bid, out, ids["fc2"], "input")

    # undo across levels: the inner edit, then the block itself
    doc.undo()
    assert_scene_matches_current(window)
    assert _snap(window) == made
    doc.undo()
    assert_scene_matches_current(window)
    assert _snap(window) == original
    # redo all, then undo while inside the block: leaving it when the block goes away
    doc.redo()
    doc.redo()
    assert doc.graph.nodes[bid].inner.find("fc1").params["out_features"] == 32
    _double_click(window, bid)
    assert doc.path == [bid]
    doc.undo()
    assert doc.path == [bid]
    assert_scene_matches_current(window)
    doc.undo()
    assert doc.path == [] and _snap(window) == original
    assert_scene_matches_current(window)

    # expand: the block's nodes come back wired as before; undo returns the block
    doc.redo()
    assert _snap(window) == made
    window.scene.select_nodes([bid])
    new_ids = window.expand_block()
    assert sorted(new_ids) == sorted([ids["fc1"], ids["relu"]])
    assert {tuple(e) for e in _snap(window)["edges"]} == {tuple(e) for e in original["edges"]}
    assert_scene_matches_current(window)
    doc.undo()
    assert _snap(window) == made
    assert_scene_matches_current(window)


def test_block_library_from_the_window(window: Any, tmp_path: Path) -> None:
    doc = window.document
    ids, bid = mlp_with_block(window)
    window.scene.select_nodes([bid])
    path = window.save_block_dialog(str(tmp_path / "pair.nsblock"))
    assert path is not None and path.exists()
    count = doc.undo_stack.count()
    new = window.load_block_dialog(str(path), QPointF(100, 400))
    assert new is not None and new != bid and doc.undo_stack.count() == count + 1
    assert doc.graph.nodes[new].pos == (100.0, 400.0)
    assert doc.graph.nodes[new].inner.to_dict() == doc.graph.nodes[bid].inner.to_dict()
    assert doc.graph.nodes[new].inner is not doc.graph.nodes[bid].inner
    assert_scene_matches_current(window)
    menu = window._context_menu(QPointF(0, 0), window.scene.node_items[bid])
    texts = [a.text() for a in menu.actions()]
    assert "&Make Block" in texts and "E&xpand Block" in texts and "Save Block to &Library…" in texts
    assert "E&xpand Block" in [a.text() for a in window.edit_menu.actions()]


def test_block_card_duplicate_and_copy_inside(window: Any, qtbot: Any) -> None:
    doc = window.document
    ids, bid = mlp_with_block(window)
    window.scene.update_param_counts()
    card = window.scene.node_items[bid]
    # the card names its ports after the inner ports and counts the parameters inside
    assert card.show_port_labels and card.param_count == 784 * 128 + 128
    assert [p.port.display for p in card.in_ports.values()] == ["fc1_in"]
    # Ctrl+D: an independent copy
    window.scene.select_nodes([bid])
    window.duplicate()
    (copy_id,) = [n for n in doc.graph.nodes if n not in ids.values() and n != bid]
    assert doc.graph.nodes[copy_id].inner is not doc.graph.nodes[bid].inner
    doc.enter_block(copy_id)
    fc = doc.current.find("fc1").id
    assert doc.push(SetParam(fc, "out_features", 5))
    assert doc.graph.nodes[bid].inner.find("fc1").params["out_features"] == 128
    # copy/paste inside the open block pastes into the block
    window.scene.select_nodes([fc])
    assert window.copy()
    window.paste()
    assert len([n for n in doc.current.nodes.values() if n.type_id == "layer.linear"]) == 2
    assert_scene_matches_current(window)
    window.breadcrumb.buttons[0].click()
    assert_scene_matches_current(window)


def test_inspector_edits_inside_an_open_block(window: Any) -> None:
    from PySide6.QtWidgets import QSpinBox

    doc = window.document
    ids, bid = mlp_with_block(window, ("fc1", "relu", "fc2"))
    doc.enter_block(bid)
    inner = doc.current
    fc1, fc2 = inner.find("fc1").id, inner.find("fc2").id
    window.scene.select_nodes([fc1])
    window.inspector.show_node(fc1)
    spin = window.inspector.editor("out_features").widget
    assert isinstance(spin, QSpinBox) and spin.value() == 128
    spin.setFocus()
    spin.selectAll()
    QTest.keyClicks(spin, "64")
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert inner.nodes[fc1].params["out_features"] == 64
    assert edge_label(window, fc1, "output", inner.find("relu1").id, "input") == "64×64"
    # the inspector shows what 'auto' resolved to inside the block
    window.inspector.show_node(fc2)
    auto_box = window.inspector.editor("in_features").auto_box
    assert auto_box is not None and auto_box.text() == "auto = 64"
    # undo (one step on the document's stack) updates the open inspector and the canvas
    window.inspector.show_node(fc1)
    doc.undo()
    assert inner.nodes[fc1].params["out_features"] == 128
    assert window.inspector.editor("out_features").widget.value() == 128
    assert edge_label(window, fc1, "output", inner.find("relu1").id, "input") == "64×128"
    assert_scene_matches_current(window)


def test_block_port_cards_show_their_whole_title(window: Any) -> None:
    from PySide6.QtGui import QFontMetricsF

    from netstudio.ui.canvas.items import TITLE_FONT

    doc = window.document
    _, bid = mlp_with_block(window)
    doc.enter_block(bid)
    fm = QFontMetricsF(TITLE_FONT)
    ports = [(nid, item) for nid, item in window.scene.node_items.items()
             if doc.current.nodes[nid].type_id in ("block.input", "block.output")]
    assert {doc.current.nodes[nid].type_id for nid, _ in ports} == {"block.input", "block.output"}
    for _, item in ports:  # the narrow card cut "Block output" to "Block out…"
        assert fm.horizontalAdvance(item.nt.title) <= item.width - 28, item.nt.title
