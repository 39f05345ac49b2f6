"""The editor's work per edit on a large model (#18 item 4): what the optimisations must not change.

* moving nodes (a drag, Auto Layout) does not re-run the shape analysis nor notify the views: positions
  are not an input of it; the canvas still follows the move, and the next real edit gives the same
  analysis as a fresh check of the whole graph;
* the Model panel refills its table with the columns sized once at the end: the rows equal those of a
  new panel and the columns still fit their contents.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF
from PySide6.QtGui import QPainterPath
from PySide6.QtWidgets import QHeaderView

from netstudio.compiler.shapes import ShapeChecker
from netstudio.graph.commands import Connect, Macro, MoveNodes, RemoveNodes, RenameNode, SetParam
from netstudio.graph.model import Graph
from netstudio.project.io import Project
from netstudio.ui.summary import ModelSummary

from .helpers import build_mlp, edge_label, mlp_with_block


def _outputs(an: Any) -> dict[str, Any]:
    return {nid: res.outputs for nid, res in an.results.items()}


def _deep_chain(layers: int = 24) -> tuple[Project, list[str]]:
    """Dataset → Flatten → ``layers`` × (Linear(32) → ReLU) → Linear(10) → CrossEntropy → SGD."""
    g = Graph()
    data = g.add_node("data.dataset", {"source": "mnist_5k"}, name="data").id
    flat = g.add_node("layer.flatten", {}, name="flat").id
    g.connect(data, "features", flat, "input")
    prev, linears = flat, []
    for i in range(layers):
        fc = g.add_node("layer.linear", {"out_features": 32}, name=f"fc{i}").id
        act = g.add_node("activation.relu", {}, name=f"relu{i}").id
        g.connect(prev, "output", fc, "input")
        g.connect(fc, "output", act, "input")
        prev = act
        linears.append(fc)
    head = g.add_node("layer.linear", {"out_features": 10}, name="head").id
    loss = g.add_node("loss.cross_entropy", {}, name="loss").id
    opt = g.add_node("optim.sgd", {}, name="opt").id
    g.connect(prev, "output", head, "input")
    g.connect(head, "output", loss, "prediction")
    g.connect(data, "target", loss, "target")
    g.connect(loss, "loss", opt, "loss")
    return Project(g, name="deep"), linears


def test_moves_keep_the_analysis_and_the_next_edit_matches_a_full_check(window: Any, qtbot: Any) -> None:
    ids = build_mlp(window)
    doc = window.document
    before = doc.analysis()
    seen: list[Any] = []
    doc.analysis_changed.connect(seen.append)
    old = doc.graph.nodes[ids["fc1"]].pos
    assert doc.push(MoveNodes({ids["fc1"]: old}, {ids["fc1"]: (460.0, 300.0)}))
    qtbot.wait(20)  # the document's coalescing timer would run here
    assert seen == [] and doc.analysis() is before
    # the canvas follows the move all the same: the card, and its edge ends at its ports
    item = window.scene.node_items[ids["fc1"]]
    assert item.pos() == QPointF(460.0, 300.0)
    window.scene.flush_routes()
    for e, edge_item in window.scene.edge_items.items():
        if ids["fc1"] in (e.src, e.dst):
            path = edge_item.path()
            port = item.in_ports["input"] if e.dst == ids["fc1"] else item.out_ports["output"]
            end = path.pointAtPercent(1.0 if e.dst == ids["fc1"] else 0.0)
            assert (end - port.scenePos()).manhattanLength() < 1.0
    doc.undo()
    window.auto_layout()
    qtbot.wait(20)
    assert seen == [] and doc.analysis() is before
    # a real edit: one analysis, the same as checking the whole graph afresh
    assert doc.push(SetParam(ids["fc1"], "out_features", 64))
    assert len(seen) == 1 and seen[0] is doc.analysis()
    fresh = ShapeChecker().analyze(doc.graph, doc.project.training.batch_size)
    assert _outputs(seen[0]) == _outputs(fresh) and seen[0].problems == fresh.problems
    assert edge_label(window, ids["fc1"], "output", ids["relu"], "input") == "64×64"


def test_moves_inside_a_block_keep_the_analysis(window: Any, qtbot: Any) -> None:
    ids, bid = mlp_with_block(window)
    doc = window.document
    before = doc.analysis()
    seen: list[Any] = []
    doc.analysis_changed.connect(seen.append)
    doc.enter_block(bid)
    inner = doc.current
    fc1 = next(nid for nid, n in inner.nodes.items() if n.type_id == "layer.linear")
    assert doc.push(MoveNodes({fc1: inner.nodes[fc1].pos}, {fc1: (40.0, 400.0)}))
    qtbot.wait(20)
    assert seen == [] and doc.analysis() is before
    assert window.scene.node_items[fc1].pos() == QPointF(40.0, 400.0)
    assert doc.push(SetParam(fc1, "out_features", 32))
    assert len(seen) == 1
    fresh = ShapeChecker().analyze(doc.graph, doc.project.training.batch_size)
    assert _outputs(fresh.blocks[bid]) == _outputs(seen[0].blocks[bid])
    relu = next(nid for nid, n in inner.nodes.items() if n.type_id == "activation.relu")
    assert edge_label(window, fc1, "output", relu, "input") == "64×32"


def _cells(panel: ModelSummary) -> list[list[str]]:
    t = panel.table
    return [[(it.text() if (it := t.item(r, c)) is not None else "") for c in range(t.columnCount())]
            for r in range(t.rowCount())]


def test_model_table_refills_like_a_new_panel_and_fits_its_contents(make_window: Any, qtbot: Any) -> None:
    project, linears = _deep_chain()
    window = make_window(project)
    doc, panel = window.document, window.summary
    panel.refresh()
    assert len(_cells(panel)) == 2 * len(linears) + 2
    # edits that change shapes, counts, names and the number of rows
    assert doc.push(SetParam(linears[3], "out_features", 48))
    assert doc.push(RenameNode(linears[5], "a_layer_with_a_much_longer_name_than_any_other"))
    # fewer rows: the last Linear/ReLU pair goes, the chain is wired around it
    last_relu = next(e.dst for e in doc.graph.out_edges(linears[-1]))
    before_pair = next(e.src for e in doc.graph.in_edges(linears[-1]))
    head = doc.graph.find("head").id
    assert doc.push(Macro([RemoveNodes([linears[-1], last_relu]), Connect(before_pair, "output", head, "input")]))
    panel.refresh()
    assert panel.compile_error is None
    fresh = ModelSummary(doc)
    fresh.refresh()
    cells = _cells(panel)
    assert cells == _cells(fresh) and len(cells) == 2 * len(linears)
    fc3 = next(row for row in cells if row[0] == "fc3")
    fc4 = next(row for row in cells if row[0] == "fc4")
    assert fc3[2] == "64×48" and fc3[3] == f"{32 * 48 + 48:,}" and fc4[3] == f"{48 * 32 + 32:,}"
    assert fc3[5] == f"{32 * 48 / 1e3:.1f}K"  # MACs per sample
    header = panel.table.horizontalHeader()
    assert [header.sectionResizeMode(c) for c in range(6)] == [QHeaderView.ResizeMode.ResizeToContents] * 6
    qtbot.waitUntil(lambda: header.sectionSize(0) >= panel.table.sizeHintForColumn(0))
    assert header.sectionSize(0) >= header.sectionSizeFromContents(0).width()
    fresh.deleteLater()


def _counted_panel(make_window: Any, monkeypatch: Any) -> tuple[Any, Any, list[str], list[str]]:
    """A window with a 6-layer chain, its Model panel filled once; then every MACs count is recorded by the
    name of the thread that ran it."""
    import threading

    import netstudio.training.nodecost as nodecost

    project, linears = _deep_chain(6)
    window = make_window(project)
    window.summary.refresh()
    threads: list[str] = []
    real = nodecost.node_costs

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(nodecost, "node_costs", spy)
    return window.document, window.summary, linears, threads


def test_model_panel_counts_again_only_when_the_model_changes(make_window: Any, monkeypatch: Any) -> None:
    """An edit outside the model (the optimizer's learning rate) keeps the MACs column without counting; an
    edit of a layer counts again. Either way the table equals a new panel's."""
    doc, panel, linears, calls = _counted_panel(make_window, monkeypatch)

    def same_as_new_panel() -> None:
        fresh = ModelSummary(doc)
        fresh.refresh()
        assert _cells(panel) == _cells(fresh)
        fresh.deleteLater()

    assert doc.push(SetParam(doc.graph.find("opt").id, "lr", 0.5))
    panel.refresh()
    assert calls == []
    same_as_new_panel()
    calls.clear()
    assert doc.push(SetParam(linears[2], "out_features", 48))
    panel.refresh()
    assert len(calls) == 1
    fc3 = next(row for row in _cells(panel) if row[0] == "fc3")
    assert fc3[5] == f"{48 * 32 / 1e3:.1f}K"
    same_as_new_panel()


def test_after_an_edit_the_macs_column_is_counted_off_the_gui_thread(make_window: Any, qtbot: Any,
                                                                     monkeypatch: Any) -> None:
    """The timer-driven refresh hands the count to a worker; a count overtaken by a newer edit is dropped."""
    import threading

    doc, panel, linears, threads = _counted_panel(make_window, monkeypatch)

    def fc3() -> list[str]:
        return next(row for row in _cells(panel) if row[0] == "fc3")

    assert doc.push(SetParam(linears[2], "out_features", 48))
    with qtbot.waitSignal(panel.counted, timeout=30_000):
        panel.refresh(background=True)
        assert threads == [] or threads[0] != threading.main_thread().name
        edited = doc.graph.nodes[linears[2]].name
        assert next(row for row in _cells(panel) if row[0] == edited)[2] == "64×48"  # shapes at once, MACs later
    assert threads and threading.main_thread().name not in threads
    assert fc3()[5] == f"{48 * 32 / 1e3:.1f}K"
    # two edits in a row: only the second one's count is shown
    assert doc.push(SetParam(linears[2], "out_features", 40))
    panel.refresh(background=True)
    assert doc.push(SetParam(linears[2], "out_features", 24))
    with qtbot.waitSignal(panel.counted, timeout=30_000):
        panel.refresh(background=True)
    qtbot.wait(200)  # nothing later may overwrite it
    assert fc3()[5] == str(24 * 32)
    fresh = ModelSummary(doc)
    fresh.refresh()
    assert _cells(panel) == _cells(fresh)
    fresh.deleteLater()
    # a panel deleted while it counts (its window closed): the count ends on its own, nothing aborts
    import gc

    import netstudio.ui.summary as summary_mod

    doomed = ModelSummary(doc)
    assert doc.push(SetParam(linears[2], "out_features", 16))
    doomed.refresh(background=True)
    running = list(summary_mod._RUNNING)
    assert running
    doomed.deleteLater()
    del doomed
    qtbot.wait(10)
    gc.collect()
    qtbot.waitUntil(lambda: all(not t.is_running() for t in running), timeout=30_000)


def test_auto_layout_routes_and_labels_every_edge_as_a_full_reroute(make_window: Any) -> None:
    project, _ = _deep_chain(12)
    window = make_window(project)
    scene = window.scene
    window.auto_layout()
    assert scene._pending_routes == set()
    paths = {e: QPainterPath(it.path()) for e, it in scene.edge_items.items()}
    labels = scene.label_rects()
    assert len(labels) == len(scene.edge_items) - 1  # every edge but the loss → optimizer link has a shape
    for e, it in scene.edge_items.items():
        src = scene.node_items[e.src].out_ports[e.src_port].scenePos()
        dst = scene.node_items[e.dst].in_ports[e.dst_port].scenePos()
        assert (it.path().pointAtPercent(0.0) - src).manhattanLength() < 1.0
        assert (it.path().pointAtPercent(1.0) - dst).manhattanLength() < 1.0
    scene.reroute_all()
    assert {e: it.path() for e, it in scene.edge_items.items()} == paths
    assert scene.label_rects() == labels
