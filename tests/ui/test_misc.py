"""Theme, panning with Space, error resilience, layout rules, path browsing, context menu."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog

from netstudio.ui.canvas.items import EdgeItem, NodeItem
from netstudio.ui.layout import assign_layers, layered_layout
from netstudio.ui.theme import DARK, LIGHT, theme

from .helpers import add, build_mlp, connect, view_point


def test_dark_and_light_themes_restyle_the_app_and_canvas(window: Any) -> None:
    build_mlp(window)
    window.set_theme("dark", persist=False)
    assert theme() is DARK
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 80
    port = next(iter(window.scene.node_items.values())).out_ports["features"]
    assert port.brush().color() == DARK.node_body or port.pen().color() == DARK.node_body
    window.set_theme("light", persist=False)
    assert theme() is LIGHT
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() > 200
    assert port.pen().color() == LIGHT.node_body  # connected ports are re-styled for the new theme
    assert window.theme_actions["light"].isChecked()


@pytest.mark.parametrize("mode", ["dark", "light"])
def test_an_unchecked_box_is_visible_in_both_themes(qtbot: Any, mode: str) -> None:
    """Fusion outlines check boxes with a darker Window colour, which vanished on the dark theme."""
    from PySide6.QtWidgets import QCheckBox, QRadioButton, QVBoxLayout, QWidget

    from netstudio.ui.theme import apply_theme

    apply_theme(mode)
    try:
        host = QWidget()
        host.setAutoFillBackground(True)
        lay = QVBoxLayout(host)
        boxes = [QCheckBox("bias"), QRadioButton("Full model")]
        for b in boxes:
            lay.addWidget(b)
        qtbot.addWidget(host)
        host.resize(160, 70)
        host.show()
        qtbot.waitExposed(host)
        bg = QApplication.palette().color(QPalette.ColorRole.Window).lightness()
        for b in boxes:
            img = b.grab().toImage()
            # the indicator sits at the left, vertically centred
            contrast = max(abs(img.pixelColor(x, y).lightness() - bg)
                           for x in range(0, 18) for y in range(2, img.height() - 2))
            assert contrast > 40, (type(b).__name__, contrast)
    finally:
        apply_theme("light")


def test_space_drag_pans_the_view(window: Any) -> None:
    build_mlp(window)
    view = window.view
    view.set_zoom(1.0)
    view.setFocus()
    before = view.mapToScene(view.viewport().rect().center())
    QTest.keyPress(view, Qt.Key.Key_Space)
    vp = view.viewport()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(500, 300))
    for x in (480, 450, 420, 400):
        QTest.mouseMove(vp, QPoint(x, 300))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(400, 300))
    QTest.keyRelease(view, Qt.Key.Key_Space)
    after = view.mapToScene(view.viewport().rect().center())
    assert after.x() - before.x() == pytest.approx(100, abs=2)
    assert window.scene.selected_node_ids() == []  # panning selected nothing
    assert view.dragMode() == view.DragMode.RubberBandDrag


def test_an_unexpected_error_in_a_slot_is_reported_not_raised(window: Any, dialogs: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise RuntimeError("layout exploded")

    monkeypatch.setattr(window.scene, "auto_layout", boom)
    window.act_layout.trigger()  # guarded: must not propagate
    assert dialogs.errors and dialogs.errors[-1][0] == "Unexpected error"
    assert "layout exploded" in dialogs.errors[-1][1]
    assert window.last_status == "Unexpected error: layout exploded"


def test_layer_assignment_is_longest_path_with_sources_pulled_right() -> None:
    nodes = ["d", "a", "b", "c", "late_src"]
    edges = [("d", "o", "a", "i"), ("a", "o", "b", "i"), ("b", "o", "c", "i"), ("d", "t", "c", "t2"),
             ("late_src", "o", "c", "t3")]
    layers = assign_layers(nodes, edges)
    assert layers == {"d": 0, "a": 1, "b": 2, "c": 3, "late_src": 2}
    sizes = {n: (100.0, 50.0) for n in nodes}
    pos = layered_layout(nodes, edges, sizes, lambda n, p, out: 25.0, x_gap=40.0, grid=20.0)
    xs = {n: p[0] for n, p in pos.items()}
    assert xs["d"] < xs["a"] < xs["b"] < xs["c"] and xs["late_src"] == xs["b"]
    # b and late_src share a layer: stacked, not overlapping
    assert abs(pos["b"][1] - pos["late_src"][1]) >= 50
    # the d → c edge spans layers: its dummy lane keeps a and b in line with d
    assert pos["a"][1] == pos["b"][1] == pos["d"][1]


def test_layout_gaps_make_room_for_shape_labels() -> None:
    nodes, edges = ["a", "b", "c"], [("a", "o", "b", "i"), ("b", "o", "c", "i")]
    sizes = {n: (100.0, 40.0) for n in nodes}
    pos = layered_layout(nodes, edges, sizes, lambda n, p, out: 20.0, x_gap=40.0, grid=10.0,
                         edge_gap=lambda e: 150.0 if e[0] == "a" else 0.0)
    assert pos["b"][0] - pos["a"][0] == 250.0
    assert pos["c"][0] - pos["b"][0] == 140.0


def test_path_params_have_a_browse_button(window: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    data = add(window, "data.dataset", (0, 0), source="csv")
    window.select_node(data)
    editor = window.inspector.editor("path")
    assert editor.browse is not None
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n", encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(csv), "")))
    editor.browse.menu().actions()[0].trigger()
    assert window.document.graph.nodes[data].params["path"] == str(csv)
    assert window.document.undo_stack.count() == 2


def test_canvas_context_menus_offer_the_right_actions(window: Any) -> None:
    a = add(window, "layer.linear", (0, 0))
    b = add(window, "activation.relu", (300, 0))
    connect(window, a, "output", b, "input")
    node_menu = window._context_menu(window.scene.node_items[a].pos(), window.scene.node_items[a])
    assert window.act_delete in node_menu.actions() and window.act_duplicate in node_menu.actions()
    edge_item = next(iter(window.scene.edge_items.values()))
    assert isinstance(edge_item, EdgeItem)
    edge_menu = window._context_menu(edge_item.label.scenePos(), edge_item)
    assert [x.text() for x in edge_menu.actions()] == ["Remove connection"]
    empty = window._context_menu(window.view.mapToScene(QPoint(5, 5)), None)
    assert "Add Node…" in [x.text() for x in empty.actions()]
    window.set_editing_locked(True)
    locked = window._context_menu(window.scene.node_items[a].pos(), window.scene.node_items[a])
    assert not any(x.isEnabled() for x in locked.actions() if x is window.act_delete)
    window.set_editing_locked(False)
    assert isinstance(window.scene.node_items[a], NodeItem)
    assert view_point(window, window.scene.node_items[a].pos()) is not None


def test_excepthook_shows_unexpected_errors_and_keeps_running(qapp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from PySide6.QtWidgets import QMessageBox

    from netstudio.ui import app as app_module

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda self: shown.append((self.text(), self.detailedText())) or 0)
    old = sys.excepthook
    try:
        app_module._install_excepthook(qapp)
        try:
            raise ValueError("slot went wrong")
        except ValueError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = old
    assert len(shown) == 1
    assert "slot went wrong" in shown[0][0] and "kept running" in shown[0][0]
    assert "ValueError: slot went wrong" in shown[0][1]
