"""Edits through the UI: undo/redo of every edit kind, clipboard, inspector, problems, LeNet fix."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QLineEdit, QSpinBox

from netstudio.graph.commands import SetParam
from netstudio.ui.canvas.view import NODE_MIME

from .helpers import (add, assert_scene_matches_model, build_mlp, connect, edge_label, mouse_drag, port_point,
                      view_point)


def _snapshot(window: Any) -> dict[str, Any]:
    return json.loads(json.dumps(window.document.graph.to_dict()))


def test_undo_redo_round_trips_every_edit_kind(window: Any) -> None:
    doc = window.document
    stack = doc.undo_stack
    snaps = [_snapshot(window)]

    def step(label: str) -> None:
        assert stack.count() == len(snaps), f"{label}: expected exactly one undo step"
        snaps.append(_snapshot(window))
        assert snaps[-1] != snaps[-2], f"{label} changed nothing"
        assert_scene_matches_model(window)

    # add (drop from the palette)
    mime = QMimeData()
    mime.setData(NODE_MIME, b"data.dataset")
    window.view.dropEvent(QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                     Qt.KeyboardModifier.NoModifier))
    step("add")
    data = next(iter(doc.graph.nodes))
    fc = add(window, "layer.linear", (doc.graph.nodes[data].pos[0] + 320, doc.graph.nodes[data].pos[1]))
    step("add 2")
    window.view.frame_all()
    # connect with the mouse
    mouse_drag(window, port_point(window, data, "features", True), port_point(window, fc, "input", False))
    step("connect")
    # move with the mouse
    card = window.scene.node_items[fc]
    grab = view_point(window, card.scenePos() + QPointF(50, 12))
    mouse_drag(window, grab, grab + QPoint(0, 120), steps=6)
    step("move")
    # param edit in the inspector
    window.select_node(fc)
    spin = window.inspector.editor("out_features").widget
    assert isinstance(spin, QSpinBox)
    spin.setValue(33)
    step("param edit")
    # copy + paste
    window.scene.select_nodes([data, fc])
    window.copy()
    pasted = window.paste()
    assert len(pasted) == 2
    step("paste")
    # disconnect (select the first edge, delete)
    window.scene.clearSelection()
    window.scene.edge_items[doc.graph.edges[0]].setSelected(True)
    window.delete_selection()
    step("disconnect")
    # delete a node
    window.scene.select_nodes([fc])
    window.delete_selection()
    step("delete")
    # rename via the inspector
    window.select_node(pasted[1])
    name_edit = window.inspector.name_edit
    name_edit.setText("classifier")
    name_edit.editingFinished.emit()
    step("rename")
    assert doc.graph.nodes[pasted[1]].name == "classifier"

    # undo everything, checking model and scene after each step
    for expected in reversed(snaps[:-1]):
        window.act_undo.trigger()
        assert _snapshot(window) == expected
        assert_scene_matches_model(window)
    assert not stack.canUndo()
    for expected in snaps[1:]:
        window.act_redo.trigger()
        assert _snapshot(window) == expected
        assert_scene_matches_model(window)
    assert window.window_title().endswith("* — NetStudio")


def test_copy_paste_duplicates_two_node_selection_with_its_edge(window: Any) -> None:
    ids = build_mlp(window)
    doc = window.document
    window.scene.select_nodes([ids["fc1"], ids["relu"]])
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    clip = json.loads(QApplication.clipboard().text())
    assert clip["format"] == "netstudio/nodes" and len(clip["nodes"]) == 2 and len(clip["edges"]) == 1
    QTest.keyClick(window.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    g = doc.graph
    assert len(g.nodes) == 9 and len(g.edges) == 8
    new = window.scene.selected_node_ids()
    assert len(new) == 2 and not set(new) & set(ids.values())
    a, b = (g.nodes[n] for n in new)
    assert (a.type_id, b.type_id) == ("layer.linear", "activation.relu")
    assert a.params["out_features"] == 128
    # the cursor is not over the canvas: the copy goes just below the originals, not on top of them
    fc1 = g.nodes[ids["fc1"]].pos
    assert a.pos[0] == fc1[0] and fc1[1] + window.scene.node_items[ids["fc1"]].height < a.pos[1] < fc1[1] + 300
    inner = [e for e in g.edges if e.src in new or e.dst in new]
    assert [(e.src, e.src_port, e.dst, e.dst_port) for e in inner] == [(a.id, "output", b.id, "input")]
    assert {a.name, b.name}.isdisjoint({n.name for nid, n in g.nodes.items() if nid not in new})
    assert_scene_matches_model(window)
    # duplicate (Ctrl+D) and cut (Ctrl+X) are single undo steps too
    n = doc.undo_stack.count()
    QTest.keyClick(window.view, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier)
    assert len(g.nodes) == 11 and doc.undo_stack.count() == n + 1
    QTest.keyClick(window.view, Qt.Key.Key_X, Qt.KeyboardModifier.ControlModifier)
    assert len(g.nodes) == 9 and doc.undo_stack.count() == n + 2
    # pasting garbage does nothing
    QApplication.clipboard().setText('{"format": "netstudio/nodes", "nodes": [{"id": "x", "type": "nope"}]}')
    assert window.paste() == []
    assert len(g.nodes) == 9


def test_editing_out_features_in_the_inspector_updates_downstream_shapes(window: Any) -> None:
    ids = build_mlp(window)
    assert edge_label(window, ids["fc1"], "output", ids["relu"], "input") == "64×128"
    assert edge_label(window, ids["relu"], "output", ids["fc2"], "input") == "64×128"
    window.select_node(ids["fc1"])
    spin = window.inspector.editor("out_features").widget
    assert isinstance(spin, QSpinBox) and spin.value() == 128
    spin.setFocus()
    spin.selectAll()
    QTest.keyClicks(spin, "256")
    assert window.document.graph.nodes[ids["fc1"]].params["out_features"] == 128  # not per keystroke
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert window.document.graph.nodes[ids["fc1"]].params["out_features"] == 256
    assert edge_label(window, ids["fc1"], "output", ids["relu"], "input") == "64×256"
    assert edge_label(window, ids["relu"], "output", ids["fc2"], "input") == "64×256"
    # fc2's in_features is auto: the inspector shows what it resolved to
    window.select_node(ids["fc2"])
    auto_box = window.inspector.editor("in_features").auto_box
    assert auto_box is not None and auto_box.isChecked() and auto_box.text() == "auto = 256"
    # undo restores the label
    window.document.undo()
    assert edge_label(window, ids["relu"], "output", ids["fc2"], "input") == "64×128"


def test_inspector_widgets_follow_param_kinds_and_validate(window: Any) -> None:
    ids = build_mlp(window)
    insp = window.inspector
    window.select_node(ids["opt"])
    lr = insp.editor("lr").widget
    lr.setValue(0.01)
    lr.stepBy(1)  # log scale: 0.01 → 0.02 → 0.05
    lr.stepBy(1)
    assert window.document.graph.nodes[ids["opt"]].params["lr"] == 0.05
    assert isinstance(insp.editor("nesterov").widget, QCheckBox)
    window.select_node(ids["loss"])
    combo = insp.editor("reduction").widget
    assert isinstance(combo, QComboBox) and combo.currentText() == "mean"
    combo.activated.emit(1)
    assert window.document.graph.nodes[ids["loss"]].params["reduction"] == "sum"
    # visible_if: the CSV column fields appear only for the csv source
    window.select_node(ids["data"])
    form = insp.form
    row = insp._rows["target_column"]
    assert not form.isRowVisible(row)
    window.document.push(SetParam(ids["data"], "source", "csv"))
    assert form.isRowVisible(row)
    window.document.undo()
    assert not form.isRowVisible(row)
    # an invalid value shows the ParamError inline and leaves the model alone
    conv = add(window, "layer.adaptive_avgpool2d", (0, 300))
    window.select_node(conv)
    edit = insp.editor("output_size").widget
    assert isinstance(edit, QLineEdit) and edit.text() == "1, 1"
    edit.setText("two, 2")
    edit.editingFinished.emit()
    assert "is not a list of whole numbers" in insp.error_text("output_size")
    assert window.document.graph.nodes[conv].params["output_size"] == [1, 1]
    assert edit.text() == "1, 1"
    edit.setText("4, 4")
    edit.editingFinished.emit()
    assert insp.error_text("output_size") == ""
    assert window.document.graph.nodes[conv].params["output_size"] == [4, 4]
    # renaming to a taken name is refused with the reason
    window.select_node(ids["fc2"])
    insp.name_edit.setText("fc1")
    insp.name_edit.editingFinished.emit()
    assert window.document.graph.nodes[ids["fc2"]].name == "fc2"
    assert "already named 'fc1'" in insp.name_error.text()


def test_shape_error_appears_in_problems_panel_and_on_the_node(window: Any) -> None:
    ids = build_mlp(window)
    assert window.problems.problems == []
    assert window.problems.summary.text().startswith("No problems")
    window.document.push(SetParam(ids["fc2"], "in_features", 100))
    texts = window.problems.texts()
    assert texts == ["Linear 'fc2' expects 100 input features but receives 128 — set in_features to 128 or 'auto'"]
    card = window.scene.node_items[ids["fc2"]]
    assert card.has_error
    assert "expects 100 input features but receives 128" in card.toolTip()
    assert "set in_features to 128" in card.toolTip()
    assert "✖ 1 problem in the model" == window.status_shapes.text()
    # downstream edges lose their shape; upstream keep it
    assert edge_label(window, ids["fc2"], "output", ids["loss"], "prediction") == ""
    assert edge_label(window, ids["relu"], "output", ids["fc2"], "input") == "64×128"
    # clicking the problem selects and frames the node
    window.scene.clearSelection()
    window.view.centerOn(20000, 20000)
    window.problems.select_problem(0)
    assert window.scene.selected_node_ids() == [ids["fc2"]]
    visible = window.view.mapToScene(window.view.viewport().rect()).boundingRect()
    assert visible.contains(card.sceneBoundingRect())
    assert "expects 100 input features" in window.inspector.problem_label.text()
    window.document.undo()
    assert window.problems.problems == [] and not card.has_error


def _build_lenet(window: Any) -> dict[str, str]:
    """The seed LeNet-5 (written for 32×32 input, so fc1 expects 16*5*5 = 400) on 28×28 MNIST."""
    ids: dict[str, str] = {}
    chain = [
        ("data", "data.dataset", {"source": "mnist_5k"}),
        ("conv1", "layer.conv2d", {"out_channels": 6, "kernel_size": 5}),
        ("relu1", "activation.relu", {}),
        ("pool1", "layer.maxpool2d", {"kernel_size": 2}),
        ("conv2", "layer.conv2d", {"out_channels": 16, "kernel_size": 5}),
        ("relu2", "activation.relu", {}),
        ("pool2", "layer.maxpool2d", {"kernel_size": 2}),
        ("flat", "layer.flatten", {}),
        ("fc1", "layer.linear", {"in_features": 16 * 5 * 5, "out_features": 120}),
        ("relu3", "activation.relu", {}),
        ("fc2", "layer.linear", {"out_features": 84}),
        ("relu4", "activation.relu", {}),
        ("fc3", "layer.linear", {"out_features": 10}),
        ("loss", "loss.cross_entropy", {}),
        ("opt", "optim.adam", {}),
    ]
    for i, (key, type_id, params) in enumerate(chain):
        ids[key] = add(window, type_id, (i * 220.0, 0.0), **params)
    keys = [k for k, _, _ in chain]
    connect(window, ids["data"], "features", ids["conv1"], "input")
    for a, b in zip(keys[1:12], keys[2:13]):
        connect(window, ids[a], "output", ids[b], "input")
    connect(window, ids["fc3"], "output", ids["loss"], "prediction")
    connect(window, ids["data"], "target", ids["loss"], "target")
    connect(window, ids["loss"], "loss", ids["opt"], "loss")
    return ids


def test_seed_lenet_on_28x28_shows_the_mismatch_and_the_hint_fixes_it(window: Any, qtbot: Any) -> None:
    ids = _build_lenet(window)
    assert edge_label(window, ids["pool2"], "output", ids["flat"], "input") == "64×16×4×4"
    assert edge_label(window, ids["flat"], "output", ids["fc1"], "input") == "64×256"
    problems = window.problems.problems
    assert len(problems) == 1
    p = problems[0]
    assert p.node_id == ids["fc1"]
    assert p.message == "Linear 'fc1' expects 400 input features but receives 256 (16×4×4 flattened)"
    assert p.hint is not None and p.hint.startswith("set in_features to 256")
    card = window.scene.node_items[ids["fc1"]]
    assert card.has_error and "set in_features to 256" in card.toolTip()
    assert edge_label(window, ids["fc1"], "output", ids["relu3"], "input") == ""
    # apply the hint from the Problems panel
    window.problems.select_problem(0)
    assert window.problems.fix_button.isEnabled()
    assert window.problems.fix_button.text() == "Apply fix: in_features = 256"
    QTest.mouseClick(window.problems.fix_button, Qt.MouseButton.LeftButton)
    assert window.document.graph.nodes[ids["fc1"]].params["in_features"] == 256
    assert window.problems.problems == []
    assert not card.has_error
    assert edge_label(window, ids["fc1"], "output", ids["relu3"], "input") == "64×120"
    assert window.status_shapes.text() == "✔ Ready to train"
    # parameter counts are computed (meta device) and match LeNet on 28×28
    qtbot.waitUntil(lambda: card.param_count is not None, timeout=20000)
    assert card.param_count == 256 * 120 + 120
    window.summary.refresh()
    assert window.summary.total_params == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (256 * 120 + 120) + (120 * 84 + 84) \
        + (84 * 10 + 10)
    # undo brings the mismatch back
    window.document.undo()
    assert [q.message for q in window.problems.problems] == [p.message]


def test_a_half_typed_value_goes_to_its_own_node_when_the_selection_changes(window: Any, qtbot: Any) -> None:
    ids = build_mlp(window)
    window.activateWindow()
    window.select_node(ids["fc1"])
    spin = window.inspector.editor("out_features").widget
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=3000)
    spin.lineEdit().selectAll()
    QTest.keyClicks(spin.lineEdit(), "77")
    n = window.document.undo_stack.count()
    window.select_node(ids["fc2"])  # e.g. a click in the Problems panel
    g = window.document.graph
    assert g.nodes[ids["fc1"]].params["out_features"] == 77
    assert g.nodes[ids["fc2"]].params["out_features"] == 10
    assert window.document.undo_stack.count() == n + 1
    assert window.inspector.node_id == ids["fc2"]
    assert window.inspector.editor("out_features").widget.value() == 10
