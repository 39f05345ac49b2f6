"""Issue #11 items 4 and 5: the canvas is readable at the zoom it opens with.

Every sample opens in a 1600x1000 window with node text >= 9 px on screen and edge labels that
cover no node card and no other label; Auto Layout wraps a long chain into rows that fit the view
instead of one long row at 31 %; the grey texts have enough contrast in the dark theme.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QColor, QFontInfo

from netstudio.project.io import Project
from netstudio.ui.canvas.items import BODY_FONT, NAME_FONT, PORT_FONT, TITLE_FONT

from .helpers import add, connect

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "sample_projects").glob("*.nsproj"))
MIN_TEXT_PX = 9.0


def node_text_px(view: Any) -> float:
    """The smallest node-card text on screen, in pixels, at the view's zoom."""
    fonts = [TITLE_FONT, NAME_FONT, BODY_FONT, PORT_FONT]
    return min(QFontInfo(f).pointSizeF() for f in fonts) * view.logicalDpiY() / 72 * view.zoom()


def big_window(qtbot: Any, recovery_dir: Path, **kw: Any) -> Any:
    from netstudio.ui.main_window import MainWindow

    w = MainWindow(recovery_dir=recovery_dir, check_recovery=False, training=True, **kw)
    qtbot.addWidget(w)
    w.resize(1600, 1000)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(100)  # docks settle, then the queued frame-all runs
    return w


def label_overlaps(scene: Any) -> list[str]:
    cards = {nid: it.sceneBoundingRect().adjusted(3, 3, -3, -8) for nid, it in scene.node_items.items()}
    labels = {e: it.label.sceneBoundingRect().adjusted(1, 1, -1, -1)  # the pill, without its 1 px pen margin
              for e, it in scene.edge_items.items() if it.label.isVisible() and it.label.text}
    bad = []
    items = list(labels.items())
    for i, (e, r) in enumerate(items):
        for nid, c in cards.items():
            if r.intersects(c):
                bad.append(f"label {scene.edge_items[e].label.text!r} of {e} covers node {nid}")
        for e2, r2 in items[i + 1:]:
            if r.intersects(r2):
                bad.append(f"labels of {e} and {e2} overlap")
    return bad


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_opens_readable(qtbot: Any, recovery_dir: Path, sample: Path) -> None:
    w = big_window(qtbot, recovery_dir, path=sample)
    scene = w.scene
    assert scene.node_items
    # the whole graph is in view ...
    visible = w.view.mapToScene(w.view.viewport().rect()).boundingRect()
    assert visible.contains(scene.nodes_rect()), (visible, scene.nodes_rect())
    # ... at a zoom where the node text is readable (and the cards are drawn in full)
    assert node_text_px(w.view) >= MIN_TEXT_PX, f"{sample.stem}: zoom {w.view.zoom():.2f}"
    assert w.status_zoom.text() == f"{round(w.view.zoom() * 100)}%"
    # every tensor edge shows its shape, and no label covers a card or another label
    tensor_edges = [it for it in scene.edge_items.values() if it.label.text]
    assert tensor_edges and all(it.label.isVisible() for it in tensor_edges)
    assert label_overlaps(scene) == []
    # labels sit on their edge
    for e, r in scene.label_rects().items():
        assert r == scene.edge_items[e].label.sceneBoundingRect().adjusted(1, 1, -1, -1)
        path = scene.edge_items[e].path()
        assert any(r.contains(path.pointAtPercent(i / 40)) for i in range(41)), e
    # no card overlaps another
    rects = [it.sceneBoundingRect() for it in scene.node_items.values()]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    # Auto Layout keeps it readable too
    w.act_layout.trigger()
    qtbot.wait(20)
    assert node_text_px(w.view) >= MIN_TEXT_PX, f"{sample.stem} after Auto Layout: zoom {w.view.zoom():.2f}"
    assert label_overlaps(scene) == []
    rects = [it.sceneBoundingRect() for it in scene.node_items.values()]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    w.document.set_modified(False)


def lenet_chain(w: Any) -> list[str]:
    """A 15-node LeNet built in a column at x=0 (so Auto Layout does all the work)."""
    spec = [("data.dataset", {"source": "digits", "resize": 28}),
            ("layer.conv2d", {"out_channels": 6, "kernel_size": 5}),
            ("activation.relu", {}), ("layer.maxpool2d", {"kernel_size": 2}),
            ("layer.conv2d", {"out_channels": 16, "kernel_size": 5}), ("activation.relu", {}),
            ("layer.maxpool2d", {"kernel_size": 2}), ("layer.flatten", {}), ("layer.linear", {"out_features": 120}),
            ("activation.relu", {}), ("layer.linear", {"out_features": 84}), ("activation.relu", {}),
            ("layer.linear", {"out_features": 10}), ("loss.cross_entropy", {}), ("optim.adam", {})]
    ids = [add(w, t, (0.0, i * 140.0), **p) for i, (t, p) in enumerate(spec)]
    for a, b, sp, dp in zip(ids[:12], ids[1:13], ["features"] + ["output"] * 11, ["input"] * 12):
        connect(w, a, sp, b, dp)
    connect(w, ids[12], "output", ids[13], "prediction")
    connect(w, ids[0], "target", ids[13], "target")
    connect(w, ids[13], "loss", ids[14], "loss")
    return ids


def test_auto_layout_wraps_a_long_chain_into_rows_that_fit_the_view(qtbot: Any, recovery_dir: Path) -> None:
    w = big_window(qtbot, recovery_dir, project=Project())
    ids = lenet_chain(w)
    w.act_layout.trigger()
    qtbot.wait(20)
    scene, g = w.scene, w.document.graph
    assert node_text_px(w.view) >= MIN_TEXT_PX, f"zoom {w.view.zoom():.2f}"
    # rows: cards whose vertical extents overlap share a row
    items = [scene.node_items[n] for n in ids]
    tops = sorted({round(it.pos().y()) for it in items})
    assert len(tops) > 1
    # the data flow reads like text: row by row, each left to right
    chain = ids[:13]
    for a, b in zip(chain, chain[1:]):
        ra, rb = scene.node_items[a].sceneBoundingRect(), scene.node_items[b].sceneBoundingRect()
        same_row = ra.top() < rb.bottom() and rb.top() < ra.bottom()
        if same_row:
            assert rb.left() > ra.right(), (g.nodes[a].name, g.nodes[b].name)
        else:
            assert rb.top() > ra.bottom(), (g.nodes[a].name, g.nodes[b].name)  # the next row is below
    rects = [it.sceneBoundingRect() for it in items]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    assert label_overlaps(scene) == []
    # edges wrapping to the next row run between the rows, not through cards
    for e, it in scene.edge_items.items():
        path = it.path()
        others = [scene.node_items[n].sceneBoundingRect().adjusted(2, 2, -2, -2)
                  for n in scene.node_items if n not in (e.src, e.dst)]
        for i in range(1, 60):
            p = path.pointAtPercent(i / 60)
            assert not any(r.contains(p) for r in others), (e, p)
    assert w.status_zoom.text() == f"{round(w.view.zoom() * 100)}%"
    w.document.set_modified(False)


def _luminance(c: QColor) -> float:
    def ch(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * ch(c.redF()) + 0.7152 * ch(c.greenF()) + 0.0722 * ch(c.blueF())


def contrast(a: QColor, b: QColor) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("name", ["dark", "light"])
def test_grey_canvas_text_has_enough_contrast(name: str) -> None:
    from netstudio.ui.theme import DARK, LIGHT

    t = DARK if name == "dark" else LIGHT
    # small text (8-9 pt) on the cards and edge pills: WCAG AAA for normal text is 7:1
    assert contrast(t.text_muted, t.node_body) >= 7.0
    assert contrast(t.text_muted, t.node_body_alt) >= 6.0
    assert contrast(t.edge_label_text, t.edge_label_bg) >= 7.0


def test_wrap_layers_balances_rows_and_keeps_short_graphs_in_one() -> None:
    from netstudio.ui.layout import wrap_layers

    def layers(n: int) -> tuple[list[float], list[float], list[tuple[float, float] | None]]:
        return [i * 250.0 for i in range(n)], [172.0] * n, [(0.0, 90.0)] * n

    assert wrap_layers(*layers(3), (1100, 650)) == [[0, 1, 2]]  # fits at 100 %: no wrapping
    rows = wrap_layers(*layers(15), (1100, 650))
    assert [li for r in rows for li in r] == list(range(15))  # consecutive, in order
    sizes = [len(r) for r in rows]
    assert 2 <= len(rows) <= 5 and max(sizes) - min(sizes) <= 1  # balanced: no lonely last layer
    width = (max(sizes) - 1) * 250 + 172
    height = len(rows) * 90 + (len(rows) - 1) * 72
    assert min(1100 / (width + 72), 650 / (height + 72)) >= 0.75
    # a tall, narrow view wraps more
    assert len(wrap_layers(*layers(15), (500, 1400))) > len(rows)


def test_labels_make_room_shorten_and_keep_the_full_shape_in_the_tooltip(window: Any) -> None:
    w = window
    data = add(w, "data.dataset", (0, 0), source="mnist_5k")
    flat = add(w, "layer.flatten", (230, 0))  # 58 px between the cards: too tight for 64×1×28×28
    connect(w, data, "features", flat, "input")
    # parallel edges: one output feeding three cards stacked close together
    fcs = [add(w, "layer.linear", (520, y), out_features=8) for y in (0, 90, 180)]
    for fc in fcs:
        connect(w, flat, "output", fc, "input")
    scene = w.scene
    assert label_overlaps(scene) == []
    long = next(it for e, it in scene.edge_items.items() if e.src == data)
    assert long.label.text == "64×1×28×28" and long.label.isVisible()
    assert long.label.shown != long.label.text and long.label.shown.startswith("…")
    assert long.label.shown.endswith("×28") and len(long.label.shown) < len(long.label.text)
    assert long.label.toolTip() == "64×1×28×28"
    fans = [it for e, it in scene.edge_items.items() if e.src == flat]
    assert all(it.label.text == "64×784" and it.label.shown == "64×784" for it in fans)
    # moving a card apart gives the full text back; moving one onto a label moves the label
    from netstudio.graph.commands import MoveNodes

    w.document.push(MoveNodes({flat: (230.0, 0.0)}, {flat: (330.0, 0.0)}))
    w.scene.flush_routes()
    assert long.label.shown == "64×1×28×28" and long.label.toolTip() == ""
    w.document.push(MoveNodes({fcs[0]: (520.0, 0.0)}, {fcs[0]: (1000.0, 0.0)}))
    w.scene.flush_routes()
    rect = scene.label_rects()[fans[0].edge]
    relu = add(w, "activation.relu", (0.0, 600.0))
    w.document.push(MoveNodes({relu: (0.0, 600.0)}, {relu: (rect.center().x() - 58, rect.center().y() - 20)}))
    w.scene.flush_routes()
    assert label_overlaps(scene) == []
    assert scene.label_rects()[fans[0].edge] != rect and fans[0].label.shown == "64×784"
