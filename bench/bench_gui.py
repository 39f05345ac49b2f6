"""Editor responsiveness: panning a 500-node graph and shape updates per edit on a 200-node graph.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_gui.py [--frames 200] [--edits 60] [--json]

A) Pan: a 501-node graph (one Dataset feeding 25 parallel chains of 20
   Linear/ReLU nodes), auto-laid-out, in a 1600×1000 window. Each frame scrolls
   the view by 24 px and repaints the viewport synchronously (the whole frame
   is rendered before the timer stops). Measured at 100 % zoom (cards fully
   drawn) and at "frame all" (all 501 cards and 525 edges visible).
B) Edit: a 200-node chain (Dataset → Linear → 198 activations). One edit is
   one undoable SetParam of the first Linear's out_features through
   ``Document.push``: shape analysis (incremental ShapeChecker), then the
   scene updates all 199 edge labels and node outlines; "+paint" adds the
   synchronous repaint of the viewport. Every downstream shape changes, so
   this is the worst case for label updates. Also: undo of such an edit,
   adding a node + connecting it, and the deferred parameter-count refresh.

"Qt scroll + exposed strip" is what an interactive drag costs: the view
scrolls the existing pixels and repaints only the newly exposed strip.

Targets: pan frame ≤ 16.7 ms (60 fps) at 100 % zoom; edit → visible update ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def _stats(ms: list[float]) -> dict[str, float]:
    return {"mean_ms": statistics.fmean(ms), "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95), "max_ms": max(ms),
            "n": len(ms)}


def pan_graph() -> Any:
    from netstudio.graph.model import Graph

    g = Graph()
    data = g.add_node("data.dataset", {"source": "iris"}, name="data")
    for c in range(25):
        prev, port = data.id, "features"
        for i in range(20):
            if i % 2 == 0:
                n = g.add_node("layer.linear", {"out_features": 16 + c}, name=f"fc_{c}_{i}")
            else:
                n = g.add_node("activation.relu", {}, name=f"relu_{c}_{i}")
            g.connect(prev, port, n.id, "input")
            prev, port = n.id, "output"
    return g


def edit_graph() -> Any:
    from netstudio.graph.model import Graph

    g = Graph()
    data = g.add_node("data.dataset", {"source": "wine"}, name="data")
    fc = g.add_node("layer.linear", {"out_features": 64}, name="fc0")
    g.connect(data.id, "features", fc.id, "input")
    prev = fc.id
    for i in range(198):
        n = g.add_node("activation.relu" if i % 2 == 0 else "activation.sigmoid", {}, name=f"act{i}")
        g.connect(prev, "output", n.id, "input")
        prev = n.id
    return g


def make_window(graph: Any, rec: str) -> Any:
    from netstudio.project.io import Project
    from netstudio.ui.main_window import MainWindow

    w = MainWindow(project=Project(graph, name="bench"), recovery_dir=rec, check_recovery=False, training=False)
    w.set_theme("dark", persist=False)
    w.resize(1600, 1000)
    w.show()
    return w


def bench_pan(app: Any, frames: int, rec: str) -> dict[str, Any]:
    w = make_window(pan_graph(), rec)
    app.processEvents()
    t0 = time.perf_counter()
    w.scene.auto_layout()
    layout_ms = (time.perf_counter() - t0) * 1000
    w.scene.update_param_counts()
    app.processEvents()
    view = w.view
    out: dict[str, Any] = {"nodes": len(w.document.graph.nodes), "edges": len(w.document.graph.edges),
                           "auto_layout_ms": layout_ms}
    for label, setup in (("zoom_100", lambda: (view.set_zoom(1.0), view.centerOn(w.scene.nodes_rect().center()))),
                         ("frame_all", view.frame_all)):
        setup()
        app.processEvents()
        vp = view.viewport()
        vp.repaint()  # warm the item caches
        times = []
        for i in range(frames):
            dx = 24 if (i // 50) % 2 == 0 else -24  # back and forth: stays over the graph
            t = time.perf_counter()
            view.pan_by(dx, 0)
            vp.repaint()
            times.append((time.perf_counter() - t) * 1000)
        out[label] = {"zoom": round(view.zoom(), 3), **_stats(times)}
        if label == "zoom_100":
            # what a real drag costs: Qt scrolls the pixels and repaints only the exposed strip
            times = []
            for i in range(frames):
                dx = 24 if (i // 50) % 2 == 0 else -24
                t = time.perf_counter()
                view.pan_by(dx, 0)
                app.processEvents()
                times.append((time.perf_counter() - t) * 1000)
            out["zoom_100_incremental"] = {"zoom": round(view.zoom(), 3), **_stats(times)}
    w.document.set_modified(False)
    w.close()
    return out


def bench_edit(app: Any, edits: int, rec: str) -> dict[str, Any]:
    from netstudio.graph.commands import AddNode, Connect, SetParam

    w = make_window(edit_graph(), rec)
    w.scene.auto_layout()
    w.view.frame_all()
    w.scene.update_param_counts()
    app.processEvents()
    doc = w.document
    fc = doc.graph.find("fc0").id
    last = doc.graph.find(f"act{197}").id
    vp = w.view.viewport()
    push_ms, paint_ms, undo_ms, count_ms = [], [], [], []
    for i in range(edits):
        value = 65 + (i % 50)
        t = time.perf_counter()
        doc.push(SetParam(fc, "out_features", value))
        t1 = time.perf_counter()
        vp.repaint()
        t2 = time.perf_counter()
        w.scene.update_param_counts()
        t3 = time.perf_counter()
        push_ms.append((t1 - t) * 1000)
        paint_ms.append((t2 - t) * 1000)
        count_ms.append((t3 - t2) * 1000)
        got = w.scene.edge_items[doc.graph.in_edges(last)[0]].label.text
        assert got == f"64×{value}", (got, value, doc.analysis().problems[:2])
    for _ in range(min(edits, 30)):
        t = time.perf_counter()
        doc.undo()
        undo_ms.append((time.perf_counter() - t) * 1000)
    add_ms = []
    for i in range(min(edits, 30)):
        t = time.perf_counter()
        cmd = AddNode("activation.relu", (0.0, 400.0 + 60 * i))
        doc.push(cmd)
        assert cmd.node_id is not None
        doc.push(Connect(last, "output", cmd.node_id, "input"))
        add_ms.append((time.perf_counter() - t) * 1000)
        last = cmd.node_id
    res = {"nodes": 200, "edit_ms": _stats(push_ms), "edit_plus_paint_ms": _stats(paint_ms),
           "undo_ms": _stats(undo_ms), "add_and_connect_ms": _stats(add_ms),
           "param_count_refresh_ms": _stats(count_ms),
           "shape_cache": {"hits": doc.checker.hits, "misses": doc.checker.misses}}
    doc.set_modified(False)
    w.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="NetStudio editor benchmark")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--edits", type=int, default=60)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)

    from PySide6.QtCore import QCoreApplication, QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    QCoreApplication.setOrganizationName("NetStudioBench")
    QSettings().clear()
    import torch  # noqa: F401  (parameter counts; imported up front so it is not timed)

    with tempfile.TemporaryDirectory() as rec:
        pan = bench_pan(app, args.frames, rec)
        edit = bench_edit(app, args.edits, rec)
    platform = QApplication.platformName()

    def row(name: str, s: dict[str, float]) -> str:
        return f"  {name:<38} mean {s['mean_ms']:7.2f}  p50 {s['p50_ms']:7.2f}  p95 {s['p95_ms']:7.2f}  " \
               f"max {s['max_ms']:7.2f} ms"

    print(f"NetStudio editor benchmark (Qt platform '{platform}', {os.cpu_count()} CPUs)")
    print(f"A) pan, {pan['nodes']} nodes / {pan['edges']} edges, 1600×1000 window "
          f"(auto layout took {pan['auto_layout_ms']:.0f} ms)")
    names = {"zoom_100": "full repaint", "zoom_100_incremental": "Qt scroll + exposed strip",
             "frame_all": "full repaint, all visible"}
    for key in ("zoom_100", "zoom_100_incremental", "frame_all"):
        s = pan[key]
        print(row(f"zoom {s['zoom']:.2f}, {names[key]}", s) + f"  ≈ {1000 / s['mean_ms']:.0f} fps")
    print(f"B) edits on a {edit['nodes']}-node chain (every downstream shape changes)")
    print(row("SetParam → shapes + labels", edit["edit_ms"]))
    print(row("SetParam → labels + repaint", edit["edit_plus_paint_ms"]))
    print(row("undo", edit["undo_ms"]))
    print(row("add node + connect (2 steps)", edit["add_and_connect_ms"]))
    print(row("parameter-count refresh", edit["param_count_refresh_ms"]))
    c = edit["shape_cache"]
    print(f"  shape cache: {c['hits']} hits, {c['misses']} misses")
    if args.json:
        print(json.dumps({"pan": pan, "edit": edit, "platform": platform}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


