"""Scale: an imported ResNet-50 (blocks and flat) and ViT-B/16 in the editor (#18 item 4).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_scale.py [--models resnet50 resnet50_flat vit_b_16]
        [--repeat 5] [--frames 60] [--json]

Each model is imported first (``import_to_files``: torchvision architecture, seeded random weights, into a
temporary folder; ``resnet50`` with container modules as blocks, ``resnet50_flat`` with ``--flat``). A model
whose import fails is reported as "skipped: <reason>" and the others are still measured.

Per model, against the goals of #18:

* shape check (≤ 50 ms): ``ShapeChecker.analyze`` of the whole project with a fresh checker (no cached
  node results: what opening the project costs), and the re-check the editor runs after an edit
  (``Document.push`` of one ``SetParam`` on the head's ``out_features``: the incremental analysis plus the
  canvas' edge labels and outlines, i.e. everything the edit does before returning);
* compile (≤ 1 s): ``compile_model`` of the project to a ``GraphModule`` with real (CPU) weights;
* open-and-layout (≤ 2 s): in one main window (offscreen Qt, 1600×1000): ``open_file`` of the project
  (read it, rebuild the scene, the analysis, the weights file beside it held for training), Auto Layout
  (``scene.auto_layout`` + ``frame_all``), one synchronous repaint — then "until idle": the deferred
  work the event loop does next (parameter counts, the Model panel's table, code and MACs), counted as the
  time spent inside ``processEvents`` until nothing has run for 0.4 s;
* pan frame (≤ 16 ms): at 100 % zoom, centred on the graph, each frame scrolls the view by a quarter of
  the viewport's width (back and forth, so it stays over the graph) and repaints the whole viewport
  synchronously; median and p95 of ``--frames`` frames after one warm-up repaint.

Also reported: the deferred work after one edit (the Model panel refresh, 250 ms after the edit) —
the event loop is blocked while it runs. Before the models, the window opens a small project and waits
until idle so one-off imports (torch's FLOP counter pulls in torch._dynamo) are not charged to the first
model; that warm-up is printed too.

The 1-minute load average is printed with every figure: on a shared machine compare figures of one run.
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
from typing import Any, Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: model key -> (import spec, as blocks)
MODELS: dict[str, tuple[str, bool]] = {
    "resnet50": ("torchvision:resnet50", True),
    "resnet50_flat": ("torchvision:resnet50", False),
    "vit_b_16": ("torchvision:vit_b_16", True),
}
GOALS_MS = {"shape_full": 50.0, "edit": 50.0, "compile": 1000.0, "open_layout": 2000.0, "open_idle": 2000.0,
            "pan_p50": 16.0, "pan_p95": 16.0}


def _load() -> float:
    return os.getloadavg()[0]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    r = fn()
    return (time.perf_counter() - t) * 1000.0, r


def _fig(samples: list[float]) -> dict[str, Any]:
    return {"median_ms": statistics.median(samples), "p95_ms": _pct(samples, 95), "min_ms": min(samples),
            "n": len(samples), "load": round(_load(), 2)}


def settle(app: Any, quiet_s: float = 0.4, cap_s: float = 60.0) -> float:
    """Run the event loop until nothing has run for ``quiet_s``; the ms spent inside processEvents."""
    busy = 0.0
    start = last = time.perf_counter()
    while True:
        t = time.perf_counter()
        app.processEvents()
        d = time.perf_counter() - t
        busy += d
        now = time.perf_counter()
        if d > 0.002:
            last = now
        if now - last > quiet_s or now - start > cap_s:
            return busy * 1000.0
        time.sleep(0.004)


def import_models(keys: list[str], folder: Path) -> dict[str, dict[str, Any]]:
    from netstudio.project.importer import import_to_files

    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        spec, blocks = MODELS[key]
        t = time.perf_counter()
        try:
            result, path, _ = import_to_files(spec, folder / f"{key}.nsproj", blocks=blocks)
        except Exception as e:  # noqa: BLE001 - any failure is a skip with its reason
            out[key] = {"skipped": f"{type(e).__name__}: {e}".splitlines()[0]}
            continue
        g = result.project.graph
        out[key] = {"path": str(path), "import_s": time.perf_counter() - t, "layers": result.n_layers,
                    "nodes": len(g.nodes), "nodes_all": _count_all(g)}
    return out


def _count_all(graph: Any) -> int:
    return sum(1 + (_count_all(n.inner) if n.inner is not None else 0) for n in graph.nodes.values())


def _head(graph: Any) -> str:
    """The classifier Linear (the last Linear of the top-level graph)."""
    order = graph.topological_order()
    return [nid for nid in order if graph.nodes[nid].type_id == "layer.linear"][-1]


def bench_headless(path: str, repeat: int) -> dict[str, Any]:
    from netstudio.compiler.build import compile_model
    from netstudio.compiler.shapes import ShapeChecker
    from netstudio.project.io import load_project

    project = load_project(path)
    g, bs = project.graph, project.training.batch_size
    an = ShapeChecker().analyze(g, bs)
    assert an.ok, an.problems[:3]
    full = [_ms(lambda: ShapeChecker().analyze(g, bs))[0] for _ in range(repeat)]
    checker = ShapeChecker()
    checker.analyze(g, bs)
    head = _head(g)
    incremental = []
    for i in range(repeat):
        g.set_param(head, "out_features", 11 + i)
        incremental.append(_ms(lambda: checker.analyze(g, bs))[0])
    g.set_param(head, "out_features", 1000)
    compile_ms = [_ms(lambda: compile_model(g, bs))[0] for _ in range(max(3, repeat // 2))]
    return {"shape_full": _fig(full), "shape_incremental": _fig(incremental), "compile": _fig(compile_ms)}


def bench_gui(app: Any, window: Any, path: str, repeat: int, frames: int) -> dict[str, Any]:
    from netstudio.graph.commands import SetParam

    opened, laid, painted, idle = [], [], [], []
    for _ in range(repeat):
        window.document.set_modified(False)
        settle(app)
        t0 = time.perf_counter()
        assert window.open_file(path, remember=False)
        t1 = time.perf_counter()
        window.scene.auto_layout()
        window.view.frame_all()
        t2 = time.perf_counter()
        window.view.viewport().repaint()
        t3 = time.perf_counter()
        busy = settle(app)
        opened.append((t1 - t0) * 1000)
        laid.append((t2 - t1) * 1000)
        painted.append((t3 - t0) * 1000)
        idle.append((t3 - t0) * 1000 + busy)
    res: dict[str, Any] = {"open": _fig(opened), "layout": _fig(laid), "open_layout": _fig(painted),
                           "open_idle": _fig(idle), "scene_nodes": len(window.scene.node_items),
                           "scene_edges": len(window.scene.edge_items)}

    view = window.view
    view.set_zoom(1.0)
    view.centerOn(window.scene.nodes_rect().center())
    settle(app)
    vp = view.viewport()
    vp.repaint()
    step = max(1, vp.width() // 4)
    times = []
    for i in range(frames):
        dx = step if (i // 4) % 2 == 0 else -step
        t = time.perf_counter()
        view.pan_by(dx, 0)
        vp.repaint()
        times.append((time.perf_counter() - t) * 1000)
    res["pan"] = {**_fig(times), "zoom": round(view.zoom(), 3), "p50_ms": _pct(times, 50)}

    doc = window.document
    head = _head(doc.graph)
    edit, after = [], []
    for i in range(repeat):
        settle(app)
        t = time.perf_counter()
        doc.push(SetParam(head, "out_features", 20 + i))
        vp.repaint()
        edit.append((time.perf_counter() - t) * 1000)
        after.append(settle(app))
    res["edit"] = _fig(edit)
    res["edit_deferred"] = _fig(after)
    doc.set_modified(False)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)

    from PySide6.QtCore import QCoreApplication, QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    QCoreApplication.setOrganizationName("NetStudioBench")
    QSettings().clear()
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from netstudio.ui.main_window import MainWindow

    print(f"NetStudio scale benchmark ({os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"Qt platform '{QApplication.platformName()}', load {_load():.2f} at start)", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        imported = import_models(args.models, folder)
        window = MainWindow(recovery_dir=folder / "recovery", check_recovery=False, open_default=False)
        window.set_theme("dark", persist=False)
        window.resize(1600, 1000)
        window.show()
        from netstudio.project.samples import find_sample

        sample = find_sample()
        warm = None
        if sample is not None:
            t = time.perf_counter()
            window.open_file(sample, as_copy=True, remember=False)
            window.summary.refresh()  # the Model panel's first MACs count imports torch._dynamo (seconds)
            warm = (time.perf_counter() - t) * 1000 + settle(app)
            print(f"warm-up: open the sample project until idle {warm:.0f} ms (one-off imports)", flush=True)
        for key in args.models:
            info = imported[key]
            if "skipped" in info:
                print(f"\n{key}: skipped: {info['skipped']}", flush=True)
                results[key] = info
                continue
            print(f"\n{key}: {info['layers']} layers with weights, {info['nodes']} top-level nodes "
                  f"({info['nodes_all']} with the blocks' inner nodes); import took {info['import_s']:.1f} s",
                  flush=True)
            r = {**info, **bench_headless(info["path"], args.repeat)}
            r.update(bench_gui(app, window, info["path"], args.repeat, args.frames))
            results[key] = r
            _print_model(r)
        window.document.set_modified(False)
        window.ask_discard_weights = lambda _text: True  # the weights held from the files: no question
        window.close()
    if args.json:
        print(json.dumps({"models": results, "warm_up_ms": warm}))
    return 0


def _print_model(r: dict[str, Any]) -> None:
    def line(label: str, fig: dict[str, Any], goal: float | None, key: str = "median_ms") -> None:
        v = fig[key]
        verdict = "" if goal is None else f"  goal ≤ {goal:.0f} ms: {'met' if v <= goal else 'MISSED'} " \
                                          f"({v / goal:.2f}×)"
        print(f"  {label:<46} median {fig['median_ms']:8.1f}  p95 {fig['p95_ms']:8.1f} ms  "
              f"(n={fig['n']}, load {fig['load']:.2f}){verdict}", flush=True)

    print(f"  scene: {r['scene_nodes']} node items, {r['scene_edges']} edge items")
    line("shape check, full (fresh checker)", r["shape_full"], GOALS_MS["shape_full"])
    line("shape check, incremental after an edit", r["shape_incremental"], GOALS_MS["shape_full"])
    line("edit in the app (push SetParam + repaint)", r["edit"], GOALS_MS["edit"])
    line("  then deferred work (Model panel)", r["edit_deferred"], None)
    line("compile to GraphModule (CPU weights)", r["compile"], GOALS_MS["compile"])
    line("open file (scene, analysis, weights)", r["open"], None)
    line("auto layout + frame all", r["layout"], None)
    line("open + layout + first frame", r["open_layout"], GOALS_MS["open_layout"])
    line("open + layout until idle", r["open_idle"], GOALS_MS["open_idle"])
    pan = r["pan"]
    line(f"pan frame at {pan['zoom'] * 100:.0f} % zoom", pan, GOALS_MS["pan_p50"])
    line(f"pan frame at {pan['zoom'] * 100:.0f} % zoom, p95", pan, GOALS_MS["pan_p95"], key="p95_ms")


if __name__ == "__main__":
    raise SystemExit(main())
