"""Issue #11 item 9 (canvas parts): paste position, live zoom %, the empty-canvas hint, the edge
selection box and box-select of edges. Real widgets, offscreen."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QCursor, QImage, QPainter, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QStyle, QStyleOptionGraphicsItem

from netstudio.ui.canvas.items import EdgeItem, NodeItem

from .helpers import add, connect, mouse_drag, view_point


def _rects_overlap(w: Any, a: list[str], b: list[str]) -> bool:
    ra = [w.scene.node_items[n].sceneBoundingRect() for n in a]
    rb = [w.scene.node_items[n].sceneBoundingRect() for n in b]
    return any(x.intersects(y) for x in ra for y in rb)


def test_paste_lands_at_the_cursor_or_clear_of_the_originals(window: Any) -> None:
    w = window
    a = add(w, "layer.linear", (0, 0), out_features=8)
    b = add(w, "activation.relu", (240, 0))
    connect(w, a, "output", b, "input")
    w.view.set_zoom(1.0)
    w.view.centerOn(QPointF(200, 40))
    w.scene.select_nodes([a, b])
    w.view.setFocus()
    QTest.keyClick(w.view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)

    # the cursor is over the canvas: the copy's top-left lands under it (snapped to the grid)
    at_view = QPoint(w.view.viewport().width() - 260, w.view.viewport().height() - 160)
    QCursor.setPos(w.view.viewport().mapToGlobal(at_view))
    QApplication.processEvents()
    QTest.keyClick(w.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    new = w.scene.selected_node_ids()
    assert len(new) == 2
    want = w.scene.snap_point(w.view.mapToScene(at_view))
    top_left = min(w.document.graph.nodes[n].pos for n in new)
    assert top_left == (want.x(), want.y())
    assert not _rects_overlap(w, new, [a, b])
    # again without moving the mouse: below the last copy, not on top of it
    QTest.keyClick(w.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    second = w.scene.selected_node_ids()
    assert min(w.document.graph.nodes[n].pos for n in second)[0] == want.x()
    assert not _rects_overlap(w, second, new) and not _rects_overlap(w, second, [a, b])
    new += second

    # the cursor is elsewhere (on the toolbar): the copy goes next to the originals, not on top
    QCursor.setPos(w.mapToGlobal(QPoint(5, 5)))
    QApplication.processEvents()
    w.scene.select_nodes([a, b])
    QTest.keyClick(w.view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    earlier: list[str] = []
    for _ in range(2):
        QTest.keyClick(w.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
        again = w.scene.selected_node_ids()
        assert len(again) == 2 and not set(again) & set(new + earlier)
        assert not _rects_overlap(w, again, [a, b]), "pasted on top of the originals"
        assert not earlier or not _rects_overlap(w, again, earlier), "pasted on top of the last paste"
        earlier += again


def test_status_bar_zoom_is_always_current(window: Any) -> None:
    w = window
    add(w, "layer.linear", (0, 0))
    add(w, "layer.linear", (1400, 600))

    def shown() -> str:
        return w.status_zoom.text()

    def actual() -> str:
        return f"{round(w.view.zoom() * 100)}%"

    w.view.setFocus()
    w.act_zoom_reset.trigger()
    assert shown() == actual() == "100%"
    w.act_zoom_out.trigger()
    w.act_zoom_out.trigger()
    assert shown() == actual() == "64%"
    w.act_zoom_in.trigger()
    assert shown() == actual()
    w.act_frame.trigger()
    assert w.view.zoom() < 0.9 and shown() == actual()
    w.act_zoom_reset.trigger()
    assert shown() == actual() == "100%"
    vp = w.view.viewport()
    c = QPointF(vp.rect().center())
    ev = QWheelEvent(c, QPointF(vp.mapToGlobal(c.toPoint())), QPoint(0, 0), QPoint(0, -240),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)
    assert w.view.zoom() < 0.9 and shown() == actual()


def _window_image(w: Any) -> QImage:
    """What is on screen: the offscreen platform's backing store, without repainting anything."""
    QApplication.processEvents()
    return w.screen().grabWindow(w.winId()).toImage()


def test_the_empty_canvas_hint_disappears_with_the_first_node(window: Any, qtbot: Any) -> None:
    w = window
    qtbot.wait(50)
    vp = w.view.viewport()
    center = QRect(vp.mapTo(w, vp.rect().center()) - QPoint(200, 25), QRect(0, 0, 400, 50).size())
    hint = _window_image(w).copy(center)
    # the hint is there on the empty canvas: more than one colour in the middle
    assert len({hint.pixel(x, y) for x in range(0, 400, 3) for y in range(0, 50, 3)}) > 2

    add(w, "layer.linear", w.view.mapToScene(QPoint(20, 20)).toTuple())  # a node away from the middle
    qtbot.wait(50)
    after = _window_image(w).copy(center)
    vp.repaint()
    clean = _window_image(w).copy(center)
    assert after == clean, "the hint text stayed on the canvas after the first node was added"
    assert after != hint


def test_a_selected_edge_has_no_dashed_focus_box(window: Any) -> None:
    w = window
    a = add(w, "layer.linear", (0, 0))
    b = add(w, "layer.linear", (400, 200))  # a diagonal edge: its bounding box corners are empty
    connect(w, a, "output", b, "input")
    edge: EdgeItem = next(iter(w.scene.edge_items.values()))
    edge.setSelected(True)
    br = edge.boundingRect()
    img = QImage(int(br.width()) + 4, int(br.height()) + 4, QImage.Format.Format_ARGB32)
    img.fill(QColor(0, 0, 0, 0))
    p = QPainter(img)
    p.translate(-br.left() + 2, -br.top() + 2)
    opt = QStyleOptionGraphicsItem()
    opt.state = QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_Enabled
    opt.exposedRect = br
    edge.paint(p, opt, None)
    p.end()

    def painted(x: float, y: float) -> bool:
        return img.pixelColor(int(x - br.left() + 2), int(y - br.top() + 2)).alpha() > 0

    path = edge.path()
    assert painted(path.pointAtPercent(0.5).x(), path.pointAtPercent(0.5).y())  # the edge itself
    # along the bounding box border, away from where the curve touches it: nothing (Qt draws a dashed box)
    border = [QPointF(br.left() + br.width() * f, br.top() + dy) for f in (0.25, 0.3, 0.35) for dy in range(5)] + \
        [QPointF(br.left() + br.width() * f, br.bottom() - dy) for f in (0.65, 0.7, 0.75) for dy in range(5)]
    assert not any(painted(pt.x(), pt.y()) for pt in border)


def test_box_select_takes_only_edges_between_selected_nodes(window: Any) -> None:
    w = window
    a = add(w, "layer.linear", (0, 0))
    b = add(w, "layer.linear", (300, 0))
    c = add(w, "layer.linear", (600, 0))
    connect(w, a, "output", b, "input")
    connect(w, b, "output", c, "input")
    w.view.set_zoom(1.0)
    w.view.centerOn(QPointF(380, 40))
    nb = w.scene.node_items[b]

    def box(r: QRectF) -> tuple[list[str], list[tuple[str, str]]]:
        w.scene.clearSelection()
        mouse_drag(w, view_point(w, r.topLeft()), view_point(w, r.bottomRight()))
        nodes = w.scene.selected_node_ids()
        edges = sorted((e.src, e.dst) for e in w.scene.selected_edges())
        return nodes, edges

    # a box around b alone crosses both edges: it selects b only
    r = nb.sceneBoundingRect().adjusted(-30, -30, 30, 30)
    assert box(r) == ([b], [])
    # a box over a and b: their edge, not the one leaving towards c
    ra = w.scene.node_items[a].sceneBoundingRect().united(nb.sceneBoundingRect()).adjusted(-30, -30, 30, 30)
    assert box(ra) == ([a, b], [(a, b)])
    # a thin box across the middle of an edge only: nothing
    mid = w.scene.edge_items[next(e for e in w.scene.edge_items if e.src == a)].path().pointAtPercent(0.5)
    assert box(QRectF(mid.x() - 10, mid.y() - 60, 20, 120)) == ([], [])
    # Ctrl + box adds to the selection: an edge clicked before stays selected
    bc = w.scene.edge_items[next(e for e in w.scene.edge_items if e.src == b)]
    w.scene.clearSelection()
    bc.setSelected(True)
    ctrl = Qt.KeyboardModifier.ControlModifier
    vp = w.view.viewport()
    start, end = view_point(w, r.topLeft()), view_point(w, r.bottomRight())
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, ctrl, start)
    for i in range(1, 7):
        QTest.mouseMove(vp, QPoint(start.x() + (end.x() - start.x()) * i // 6,
                                   start.y() + (end.y() - start.y()) * i // 6))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, ctrl, end)
    assert w.scene.selected_node_ids() == [b] and w.scene.selected_edges() == [bc.edge]
    assert all(isinstance(it, (NodeItem, EdgeItem)) for it in w.scene.selectedItems())
