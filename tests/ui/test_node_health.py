"""Per-node health while training (issue #14): strips on the canvas, diagnoses in Problems."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pytestqt")

import torch  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402

from netstudio.project.io import Project  # noqa: E402
from netstudio.training.config import TrainConfig  # noqa: E402
from netstudio.ui.canvas.health import LEVEL_COLORS, STD_COLORS, HealthStrip  # noqa: E402

from tests.ui.test_training_dock import TRAIN_TIMEOUT_MS, digits_graph  # noqa: E402


def strips(win: Any) -> dict[str, HealthStrip]:
    out = {}
    for nid, item in win.scene.node_items.items():
        for child in item.childItems():
            if isinstance(child, HealthStrip):
                out[nid] = child
    return out


def strip_pixel(win: Any, strip: HealthStrip) -> QColor:
    """The colour the view shows most often inside the strip (its fill; the sparkline is thin)."""
    r = strip.mapRectToScene(strip._strip_rect())
    img = win.view.viewport().grab().toImage()
    counts: dict[int, int] = {}
    for i in range(5, 95, 5):
        for j in (0.3, 0.5, 0.7):
            pt = win.view.mapFromScene(r.left() + r.width() * i / 100, r.top() + r.height() * j)
            rgb = img.pixel(pt)
            counts[rgb] = counts.get(rgb, 0) + 1
    return QColor.fromRgb(max(counts, key=lambda k: counts[k]))


def close_to(c: QColor, want: QColor, tol: int = 60) -> bool:
    return abs(c.red() - want.red()) + abs(c.green() - want.green()) + abs(c.blue() - want.blue()) < tol * 3


def laid_out(graph: Any) -> Any:
    for i, nid in enumerate(graph.nodes):  # one row, left to right: no card hides another's strip
        graph.move_node(nid, (i * 260.0, 0.0))
    return graph


def test_training_paints_health_strips_and_dead_relus_reach_problems(make_window: Any, qtbot: Any) -> None:
    graph = laid_out(digits_graph())
    win = make_window(Project(graph, TrainConfig(epochs=2, device="cpu", stats_every=5)), training=True)
    dock = win.training_dock
    ids = {n.name: nid for nid, n in win.document.project.graph.nodes.items()}
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_action.trigger()
    assert dock.outcome["status"] == "finished"
    shown = strips(win)
    for name in ("fc1", "relu", "fc2", "flatten"):
        assert ids[name] in shown, name
    assert ids["loss"] not in shown and ids["opt"] not in shown  # not part of the model's forward
    relu = shown[ids["relu"]]
    assert relu.level == 0 and len(shown[ids["fc1"]].grad_norms) >= 2
    win.view.centerOn(relu)
    qtbot.wait(50)
    healthy = strip_pixel(win, relu)
    assert close_to(healthy, LEVEL_COLORS[0]), healthy.name()
    assert "gradient norm" in shown[ids["fc1"]].toolTip() and "zeros" in relu.toolTip()
    assert not [p for p in win.problems.problems if p.node_id == ids["relu"]]
    # edges carry their source's activation std: a healthy MLP's are green, with the figure on hover
    fc1_out = [item for e, item in win.scene.edge_items.items() if e.src == ids["fc1"]]
    assert fc1_out and all(item.signal == STD_COLORS["ok"] for item in fc1_out)
    assert "activation std" in fc1_out[0].toolTip() and "healthy" in fc1_out[0].toolTip()

    # continue from weights whose first layer's bias kills every ReLU after it
    fc1 = dock.trained.model.get_submodule("fc1")
    with torch.no_grad():
        fc1.bias.fill_(-1000.0)
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        assert dock.continue_training()
    rows = [p for p in win.problems.problems if p.node_id == ids["relu"]]
    assert rows and "dead ReLUs" in rows[0].message and rows[0].hint
    assert win.problems.tree.topLevelItemCount() >= 1
    shown = strips(win)
    relu = shown[ids["relu"]]
    assert relu.level == 1 and "dead ReLUs" in relu.toolTip()
    win.view.centerOn(relu)
    qtbot.wait(50)
    assert close_to(strip_pixel(win, relu), LEVEL_COLORS[1]), strip_pixel(win, relu).name()
    relu_out = [item for e, item in win.scene.edge_items.items() if e.src == ids["relu"]]
    assert relu_out and all(item.signal == STD_COLORS["low"] for item in relu_out)  # all zeros: nothing flows on
    assert "fading" in relu_out[0].toolTip()
    win.act_edge_std.setChecked(False)  # the View toggle gives the edges their port colours back
    assert all(item.signal is None for item in win.scene.edge_items.values())
    win.act_edge_std.setChecked(True)
    assert all(item.signal == STD_COLORS["low"] for item in relu_out)

    # the View toggle takes the strips away and brings them back
    win.act_health.setChecked(False)
    assert strips(win) == {}
    win.act_health.setChecked(True)
    assert strips(win)[ids["relu"]].level == 1


def test_nan_origin_is_outlined(make_window: Any, qtbot: Any) -> None:
    graph = laid_out(digits_graph(optimizer="optim.sgd", lr=1e6))
    win = make_window(Project(graph, TrainConfig(epochs=1, device="cpu")), training=True)
    dock = win.training_dock
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_action.trigger()
    assert dock.outcome["status"] == "error"
    origin = win.training_session.health.nan_origin
    assert origin is not None
    name = win.document.project.graph.nodes[origin].name
    assert f"NaN first appears at '{name}'" in dock.outcome["message"]
    outlined = [nid for nid, s in strips(win).items() if s.nan_origin]
    assert outlined == [origin] and strips(win)[origin].level == 2


def test_selected_node_shows_its_activation_and_gradient_histograms(make_window: Any, qtbot: Any) -> None:
    graph = laid_out(digits_graph())
    win = make_window(Project(graph, TrainConfig(epochs=1, device="cpu", stats_every=4)), training=True)
    dock = win.training_dock
    ids = {n.name: nid for nid, n in win.document.project.graph.nodes.items()}
    hist = win.node_histograms
    win.scene.select_nodes([ids["fc1"]])
    assert not hist.isVisible()  # no run yet
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_action.trigger()
    assert hist.isVisible() and hist.node_id == ids["fc1"]
    samples = win.training_session.health.nodes[ids["fc1"]].histograms
    assert len(samples) == 6  # 1437 digits / 64 = 23 steps: steps 1, 5, ..., 21
    image = hist.plots["output"][1].image
    assert image.shape == (6, 24) and image.max() == 1.0
    assert hist.plots["grad"][0].isVisible()
    win.scene.select_nodes([ids["relu"]])  # no parameters: activations only
    assert hist.isVisible() and not hist.plots["grad"][0].isVisible()
    win.scene.select_nodes([ids["loss"]])
    assert not hist.isVisible()


def test_conv_kernels_of_the_trained_weights_are_drawn(make_window: Any, qtbot: Any) -> None:
    import numpy as np

    from netstudio.graph.model import Graph

    g = Graph()
    d = g.add_node("data.dataset", {"source": "digits"}, name="data")
    conv = g.add_node("layer.conv2d", {"out_channels": 6, "kernel_size": 3}, name="conv")
    relu = g.add_node("activation.relu", name="relu")
    flat = g.add_node("layer.flatten", name="flatten")
    fc = g.add_node("layer.linear", {"out_features": 10}, name="fc")
    ce = g.add_node("loss.cross_entropy", name="loss")
    opt = g.add_node("optim.adam", {"lr": 0.01}, name="opt")
    for edge in [(d.id, "features", conv.id, "input"), (conv.id, "output", relu.id, "input"),
                 (relu.id, "output", flat.id, "input"), (flat.id, "output", fc.id, "input"),
                 (fc.id, "output", ce.id, "prediction"), (d.id, "target", ce.id, "target"),
                 (ce.id, "loss", opt.id, "loss")]:
        g.connect(*edge)
    win = make_window(Project(laid_out(g), TrainConfig(epochs=1, device="cpu", stats_every=5)), training=True)
    dock = win.training_dock
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_action.trigger()
    hist = win.node_histograms
    win.scene.select_nodes([conv.id])
    assert hist.isVisible() and hist.kernels.isVisible()
    img = hist.kernel_image.image
    assert img.shape == (3 * 4 - 1, 2 * 4 - 1)  # 6 kernels of 3×3: 3 columns, 2 rows, 1-pixel gaps
    weight = dock.trained.model.get_submodule("conv").weight.detach()[0, 0].numpy()
    k = (weight - weight.min()) / (weight.max() - weight.min())
    assert np.allclose(img[0:3, 0:3], k.T[:, ::-1])  # the first kernel, top left
    win.scene.select_nodes([fc.id])
    assert hist.isVisible() and not hist.kernels.isVisible()


def test_layer_table_shows_multiply_adds_and_measured_time_shares(make_window: Any, qtbot: Any) -> None:
    win = make_window(Project(laid_out(digits_graph()), TrainConfig(epochs=1, device="cpu")))
    summary = win.summary
    summary.refresh()
    names = [r[0] for r in summary.row_texts()]
    assert names == ["flatten", "fc1", "relu", "fc2"]

    def column(c: int) -> list[str]:
        return [summary.table.item(r, c).text() for r in range(summary.table.rowCount())]

    # digits: 64 features → 32 → 10: multiply-adds per sample are in × out of each linear layer
    assert column(5) == ["0", "2.0K", "0", "320"]
    assert column(6) == ["", "", "", ""]
    with qtbot.waitSignal(summary.measured, timeout=60_000):
        assert summary.measure_time()
    shares = [summary.costs[nid][1] for nid in summary.costs]
    assert all(s is not None and s >= 0 for s in shares) and abs(sum(shares) - 1.0) < 1e-6
    assert all(t.endswith("%") for t in column(6))
    assert summary.measure_button.isEnabled()
