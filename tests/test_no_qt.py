"""The core (everything but netstudio.ui) never imports Qt: it runs headless, in scripts and servers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import importlib
    import json
    import pkgutil
    import sys

    import netstudio

    # pkgutil.walk_packages would import netstudio.ui itself to look inside it, so recurse by hand
    imported = []

    def walk(package):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name == "netstudio.ui":
                continue
            module = importlib.import_module(info.name)
            imported.append(info.name)
            if info.ispkg:
                walk(module)

    walk(netstudio)

    # a tiny model end to end: compile, train one epoch, export
    import tempfile, os
    import torch
    import netstudio.data
    from netstudio.compiler.build import build_plan
    from netstudio.graph.model import Graph
    from netstudio.project.export import export_pt
    from netstudio.training.config import TrainConfig
    from netstudio.training.engine import fit

    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    fc = g.add_node("layer.linear", {"out_features": 3})
    ce = g.add_node("loss.cross_entropy", {})
    opt = g.add_node("optim.sgd", {"lr": 0.1})
    g.connect(d.id, "features", fc.id, "input")
    g.connect(fc.id, "output", ce.id, "prediction")
    g.connect(d.id, "target", ce.id, "target")
    g.connect(ce.id, "loss", opt.id, "loss")
    plan = build_plan(g, 16)
    result = fit(plan, netstudio.data.load(plan.dataset_params), TrainConfig(epochs=1, batch_size=16, device="cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        export_pt(result.model, os.path.join(tmp, "m.pt"))

    qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6"))
    print(json.dumps({"imported": imported, "qt": qt, "status": result.status, "epochs": len(result.history)}))
""")


def test_core_imports_and_trains_without_qt() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["qt"] == []
    assert report["status"] == "finished" and report["epochs"] == 1
    imported = set(report["imported"])
    # the walk really covered the core packages
    for name in ("netstudio.cli", "netstudio.__main__", "netstudio.graph.model", "netstudio.compiler.build",
                 "netstudio.nodes.layers", "netstudio.data.core", "netstudio.training.engine",
                 "netstudio.project.io", "netstudio.project.export"):
        assert name in imported, name
    assert not any(n.startswith("netstudio.ui") for n in imported)
