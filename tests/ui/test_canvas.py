"""Canvas interactions driven through the real widgets: drop, Tab search, mouse connections, moves."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDropEvent, QWheelEvent
from PySide6.QtTest import QTest

from netstudio.nodes import CATALOG
from netstudio.nodes.base import Category
from netstudio.ui.canvas.view import NODE_MIME

from .helpers import (add, assert_scene_matches_model, build_mlp, connect, edge_label, mouse_drag, port_point,
                      scene_counts, view_point)


def _drop(window: Any, mime: QMimeData, at: QPoint) -> QDropEvent:
    ev = QDropEvent(QPointF(at), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    window.view.dropEvent(ev)
    return ev


def test_palette_is_generated_from_the_catalog_and_filters(window: Any) -> None:
    pal = window.palette_panel
    by_cat = CATALOG.by_category()
    for cat, types in by_cat.items():
        if types:
            top = pal.category_items[cat]
            assert top.childCount() == len(types)
    assert set(pal.type_items) == {t.type_id for t in CATALOG.types()}
    linear = pal.type_items["layer.linear"]
    assert CATALOG.get("layer.linear").description in linear.toolTip(0)
    pal.filter.setText("conv2d")
    visible = pal.visible_type_ids()
    assert "layer.conv2d" in visible and "layer.linear" not in visible
    assert pal.category_items[Category.LOSS].isHidden()
    pal.filter.setText("")
    assert len(pal.visible_type_ids()) == len(CATALOG.types())


def test_drop_palette_item_creates_node_at_drop_position(window: Any) -> None:
    item = window.palette_panel.type_items["layer.conv2d"]
    mime = window.palette_panel.tree.mimeData([item])
    assert bytes(mime.data(NODE_MIME).data()) == b"layer.conv2d"
    at = QPoint(300, 200)
    ev = _drop(window, mime, at)
    assert ev.isAccepted()
    g = window.document.graph
    assert len(g.nodes) == 1
    node = next(iter(g.nodes.values()))
    assert node.type_id == "layer.conv2d"
    expected = window.scene.snap_point(window.view.mapToScene(at))
    assert node.pos == (expected.x(), expected.y())
    assert abs(node.pos[0] - window.view.mapToScene(at).x()) <= 10  # snapped to the 20 px grid
    assert window.scene.selected_node_ids() == [node.id]
    assert window.inspector.node_id == node.id
    assert_scene_matches_model(window)
    # a drop of anything else is ignored
    other = QMimeData()
    other.setText("hello")
    _drop(window, other, at)
    assert len(g.nodes) == 1


def test_tab_opens_search_and_enter_adds_the_match(window: Any, qtbot: Any) -> None:
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key.Key_Tab)
    popup = window.view.quick_add_popup
    assert popup is not None and popup.isVisible()
    QTest.keyClicks(popup.search, "maxpool2")  # "maxpo" also matches MaxPool1d, listed first
    assert popup.current_type() == "layer.maxpool2d"
    QTest.keyClick(popup.search, Qt.Key.Key_Return)
    g = window.document.graph
    assert [n.type_id for n in g.nodes.values()] == ["layer.maxpool2d"]
    assert window.document.undo_stack.count() == 1


def test_double_click_on_empty_canvas_opens_search(window: Any) -> None:
    QTest.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                      QPoint(200, 200))
    popup = window.view.quick_add_popup
    assert popup is not None and popup.isVisible()
    QTest.keyClicks(popup.search, "relu")
    QTest.keyClick(popup.search, Qt.Key.Key_Enter)
    assert [n.type_id for n in window.document.graph.nodes.values()] == ["activation.relu"]


def test_connect_ports_with_the_mouse_adds_edge_with_shape_label(window: Any) -> None:
    data = add(window, "data.dataset", (0, 0), source="mnist_5k")
    flat = add(window, "layer.flatten", (300, 40))
    window.view.frame_all()
    mouse_drag(window, port_point(window, data, "features", True), port_point(window, flat, "input", False))
    g = window.document.graph
    assert [e.to_list() for e in g.edges] == [[data, "features", flat, "input"]]
    assert edge_label(window, data, "features", flat, "input") == "64×1×28×28"
    assert window.scene.node_items[flat].in_ports["input"].connected
    assert window.document.undo_stack.count() == 3  # add, add, connect
    assert_scene_matches_model(window)
    # dragging from an input port back to an output works too
    fc = add(window, "layer.linear", (560, 40), out_features=32)
    window.view.frame_all()
    mouse_drag(window, port_point(window, fc, "input", False), port_point(window, flat, "output", True))
    assert edge_label(window, flat, "output", fc, "input") == "64×784"


def test_incompatible_connection_is_refused_while_dragging(window: Any) -> None:
    data = add(window, "data.dataset", (0, 0), source="mnist_5k")
    fc = add(window, "layer.linear", (320, 0), out_features=10)
    window.view.frame_all()
    seen: dict[str, Any] = {}

    def inspect() -> None:
        target = window.scene.drag_target
        seen["state"] = target.state if target is not None else None
        seen["note"] = window.scene.drag_note_text

    mouse_drag(window, port_point(window, data, "target", True), port_point(window, fc, "input", False),
               before_release=inspect)
    assert seen["state"] == "bad"  # the candidate port is drawn red while hovering
    assert "Cannot connect a target output to the tensor input 'input' of Linear 'fc1'" in seen["note"]
    assert "targets only feed a loss's target input" in seen["note"]
    assert window.document.graph.edges == []
    assert window.last_status.startswith("Connection refused: Cannot connect a target output")
    assert window.scene.node_items[fc].in_ports["input"].state == "normal"
    assert scene_counts(window) == (2, 0)
    assert not window.scene.dragging_connection


def test_connection_into_an_occupied_input_is_refused(window: Any) -> None:
    data = add(window, "data.dataset", (0, 0), source="iris")
    a = add(window, "layer.linear", (300, -80), out_features=8)
    b = add(window, "layer.linear", (300, 120), out_features=8)
    c = add(window, "layer.linear", (600, 0), out_features=3)
    connect(window, data, "features", a, "input")
    connect(window, data, "features", b, "input")
    connect(window, a, "output", c, "input")
    window.view.frame_all()
    mouse_drag(window, port_point(window, b, "output", True), port_point(window, c, "input", False))
    assert len(window.document.graph.edges) == 3
    assert "is already connected" in window.last_status


def test_moving_nodes_with_the_mouse_is_one_undo_step(window: Any) -> None:
    a = add(window, "layer.linear", (0, 0))
    b = add(window, "activation.relu", (300, 0))
    connect(window, a, "output", b, "input")
    window.view.frame_all()
    window.view.set_zoom(1.0)
    window.view.centerOn(200, 40)
    stack = window.document.undo_stack
    before = stack.count()
    card = window.scene.node_items[a]
    grab = view_point(window, card.scenePos() + QPointF(60, 12))  # on the header, away from ports
    mouse_drag(window, grab, grab + QPoint(100, 60), steps=8)
    g = window.document.graph
    assert stack.count() == before + 1
    assert g.nodes[a].pos == (100.0, 60.0)  # moved by 100,60 and on the grid
    assert card.pos() == QPointF(100, 60)
    edge_item = next(iter(window.scene.edge_items.values()))
    assert edge_item.path().elementAt(0).x == card.out_ports["output"].scenePos().x()
    stack.undo()
    assert g.nodes[a].pos == (0.0, 0.0) and card.pos() == QPointF(0, 0)
    assert edge_item.path().elementAt(0).y == card.out_ports["output"].scenePos().y()
    stack.redo()
    assert g.nodes[a].pos == (100.0, 60.0)


def test_ctrl_click_box_select_and_delete(window: Any) -> None:
    ids = build_mlp(window)
    window.view.frame_all()
    scene = window.scene
    scene.clearSelection()
    # Ctrl-click two nodes
    for key in ("fc1", "fc2"):
        card = scene.node_items[ids[key]]
        QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                         view_point(window, card.scenePos() + QPointF(card.width / 2, 10)))
    assert set(scene.selected_node_ids()) == {ids["fc1"], ids["fc2"]}
    # box select from empty space around the first two nodes
    r = scene.node_items[ids["data"]].sceneBoundingRect().united(scene.node_items[ids["flat"]].sceneBoundingRect())
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     view_point(window, r.topLeft() - QPointF(30, 60)))
    mouse_drag(window, view_point(window, r.topLeft() - QPointF(20, 20)),
               view_point(window, r.bottomRight() + QPointF(20, 20)))
    assert set(scene.selected_node_ids()) == {ids["data"], ids["flat"]}
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key.Key_Delete)
    g = window.document.graph
    assert ids["data"] not in g.nodes and ids["flat"] not in g.nodes
    assert len(g.edges) == 4
    assert_scene_matches_model(window)
    window.document.undo_stack.undo()
    assert len(g.nodes) == 7 and len(g.edges) == 7
    assert_scene_matches_model(window)


def test_selected_edge_delete_disconnects(window: Any) -> None:
    a = add(window, "layer.linear", (0, 0))
    b = add(window, "activation.relu", (300, 0))
    connect(window, a, "output", b, "input")
    edge_item = next(iter(window.scene.edge_items.values()))
    edge_item.setSelected(True)
    window.delete_selection()
    assert window.document.graph.edges == []
    assert_scene_matches_model(window)


def test_zoom_pan_and_frame_all(window: Any) -> None:
    ids = build_mlp(window)
    view = window.view
    view.set_zoom(1.0)
    view.centerOn(5000, 5000)
    QTest.keyClick(view, Qt.Key.Key_F)  # frame all
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    for nid in ids.values():
        assert visible.contains(window.scene.node_items[nid].sceneBoundingRect())
    z = view.zoom()
    assert z <= 1.0
    center = view.mapToScene(view.viewport().rect().center())
    # middle-button drag pans by the mouse distance (in scene units = pixels / zoom)
    vp = view.viewport()
    QTest.mousePress(vp, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(400, 300))
    QTest.mouseMove(vp, QPoint(300, 300))
    QTest.mouseRelease(vp, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(300, 300))
    moved = view.mapToScene(view.viewport().rect().center())
    assert abs((moved.x() - center.x()) - 100 / z) < 2 / z
    view.set_zoom(z * 2)
    assert abs(view.zoom() - min(3.0, z * 2)) < 1e-6
    # the wheel zooms in and out
    before = view.zoom()
    wheel = QWheelEvent(QPointF(300, 300), QPointF(view.viewport().mapToGlobal(QPoint(300, 300))), QPoint(0, 0),
                        QPoint(0, 240), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    view.wheelEvent(wheel)
    assert view.zoom() > before * 1.3
    view.set_zoom(100)
    assert view.zoom() == pytest.approx(3.0)


def test_auto_layout_orders_left_to_right_as_one_undo_step(window: Any) -> None:
    ids = build_mlp(window)
    g = window.document.graph
    # scramble the positions
    for i, nid in enumerate(reversed(list(ids.values()))):
        g.move_node(nid, (i * 37.0, (i % 3) * 150.0))
    window.document.refresh()
    stack = window.document.undo_stack
    n = stack.count()
    window.scene.auto_layout(fit=(4000.0, 1000.0))  # a view wide enough for one row
    assert stack.count() == n + 1
    order = ["data", "flat", "fc1", "relu", "fc2", "loss", "opt"]
    xs = [g.nodes[ids[k]].pos[0] for k in order]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    # no two cards overlap
    rects = [window.scene.node_items[nid].sceneBoundingRect() for nid in ids.values()]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    # the main chain is a straight line: output port y == next input port y
    items = window.scene.node_items
    for a, b in zip(order[1:4], order[2:5]):
        assert items[ids[a]].out_ports["output"].scenePos().y() == items[ids[b]].in_ports["input"].scenePos().y()
    assert_scene_matches_model(window)
    stack.undo()
    assert [g.nodes[ids[k]].pos[0] for k in order] != xs
    assert_scene_matches_model(window)


def test_long_edges_route_around_cards(window: Any) -> None:
    ids = build_mlp(window)
    window.auto_layout()
    scene = window.scene
    target_edge = next(it for e, it in scene.edge_items.items() if e.dst_port == "target")
    path = target_edge.path()
    others = [scene.node_items[ids[k]].sceneBoundingRect() for k in ("flat", "fc1", "relu", "fc2")]
    for i in range(1, 50):
        p = path.pointAtPercent(i / 50)
        assert not any(r.contains(p) for r in others)
    assert target_edge.label.text == "64"
