"""B5 — start-up time: process launch → main window shown → PyTorch loaded (training ready).

    .venv/bin/python bench/bench_startup.py [--repeats 5] [--json]

The parent takes ``time.time()`` just before it spawns each child and passes it
in ``NS_BENCH_T0``; the child reports its times relative to that launch stamp,
so interpreter start-up and every import are included. Each case runs in a
fresh process, ``--repeats`` times; the table shows the median (and min/max).

Cases:
* ``python -c "import torch"`` — time until torch is imported, and until the
  process has exited (measured by the parent).
* empty PySide6 window — QApplication + QMainWindow.show(), events processed
  until the window is exposed (no torch).
* NetStudio — the steps of ``netstudio.ui.app.run_app`` without the final
  ``app.exec()``: create_application, excepthook, ``MainWindow(None,
  training=False)`` (opens the MNIST sample), show(), events processed until
  the window is exposed → "window shown"; then ``import torch._dynamo``,
  ``install_training_dock()``, ``update_param_counts()`` and one more event
  pass → "training ready".

Children run with QT_QPA_PLATFORM=offscreen (unless already set) and a
throw-away XDG config/data dir, so saved window state, recent files and crash
recovery files of the user never affect the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

T0_VAR = "NS_BENCH_T0"

CHILD_IMPORT_TORCH = f"""
import os, time, json
t0 = float(os.environ["{T0_VAR}"])
t_py = time.time() - t0
import torch
print(json.dumps({{"python_started_s": t_py, "torch_imported_s": time.time() - t0}}), flush=True)
"""

WAIT_EXPOSED = """
def wait_exposed(app, w, limit=10.0):
    from PySide6.QtCore import QEventLoop
    end = time.monotonic() + limit
    app.processEvents()
    while time.monotonic() < end:
        h = w.windowHandle()
        if w.isVisible() and h is not None and h.isExposed():
            return True
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 10)
    return False
"""

CHILD_EMPTY_WINDOW = f"""
import os, sys, time, json
t0 = float(os.environ["{T0_VAR}"])
t_py = time.time() - t0
{WAIT_EXPOSED}
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1])
w = QMainWindow()
w.resize(1480, 920)
w.show()
ok = wait_exposed(app, w)
print(json.dumps({{"python_started_s": t_py, "window_shown_s": time.time() - t0, "exposed": ok}}), flush=True)
"""

CHILD_NETSTUDIO = f"""
import os, sys, time, json
t0 = float(os.environ["{T0_VAR}"])
t_py = time.time() - t0
{WAIT_EXPOSED}
from netstudio.ui import app as ns_app
from netstudio.ui.main_window import MainWindow
t_imports = time.time() - t0
torch_before_show = "torch" in sys.modules
app = ns_app.create_application()
ns_app._install_excepthook(app)
window = MainWindow(None, training=False)
window.show()
ok = wait_exposed(app, window)
t_shown = time.time() - t0
window.status("Loading PyTorch…", 0)
app.processEvents()
import torch._dynamo
t_torch = time.time() - t0
window.install_training_dock()
window.scene.update_param_counts()
window.status("Ready", 3000)
app.processEvents()
t_ready = time.time() - t0
print(json.dumps({{"python_started_s": t_py, "ui_imported_s": t_imports, "window_shown_s": t_shown,
                  "torch_imported_s": t_torch, "training_ready_s": t_ready, "exposed": ok,
                  "torch_loaded_before_show": torch_before_show,
                  "nodes": len(window.document.graph.nodes)}}), flush=True)
"""

CASES = {"import_torch": CHILD_IMPORT_TORCH, "empty_window": CHILD_EMPTY_WINDOW, "netstudio": CHILD_NETSTUDIO}


def run_once(case: str, base_env: dict[str, str]) -> dict[str, Any]:
    env = dict(base_env)
    t0 = time.time()
    env[T0_VAR] = repr(t0)
    p = subprocess.run([sys.executable, "-c", CASES[case]], capture_output=True, text=True, env=env,
                       cwd=str(ROOT))
    exited = time.time() - t0
    lines = [ln for ln in p.stdout.strip().splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{case} failed (rc {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    res = json.loads(lines[-1])
    res["exited_s"] = exited
    return res


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), float)]
        if len(vals) == len(runs):
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()

    import platform

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        env["XDG_CONFIG_HOME"] = os.path.join(tmp, "config")
        env["XDG_DATA_HOME"] = os.path.join(tmp, "data")
        # one untimed warm-up of each case: the page cache, not the first-ever disk read, is measured
        for case in CASES:
            run_once(case, env)
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CASES}
        for _ in range(args.repeats):  # interleaved, so drift hits every case alike
            for case in CASES:
                runs[case].append(run_once(case, env))
    stats = {c: summarize(r) for c, r in runs.items()}
    ns_last = runs["netstudio"][-1]

    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    print(f"B5 start-up — {platform.machine()}, {os.cpu_count()} cores, torch {torch_version}, "
          f"python {platform.python_version()}, QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']}, "
          f"{args.repeats} repeats (median [min–max], seconds from spawn)")
    rows = [
        ("python -c 'import torch': torch imported", "import_torch", "torch_imported_s"),
        ("python -c 'import torch': process exited", "import_torch", "exited_s"),
        ("empty PySide6 window: shown", "empty_window", "window_shown_s"),
        ("NetStudio: ui modules imported", "netstudio", "ui_imported_s"),
        ("NetStudio: main window shown", "netstudio", "window_shown_s"),
        ("NetStudio: torch imported (after show)", "netstudio", "torch_imported_s"),
        ("NetStudio: training ready", "netstudio", "training_ready_s"),
        ("python interpreter started (NetStudio)", "netstudio", "python_started_s"),
    ]
    print(f"{'milestone':<46}{'median':>8}   {'range':<13}")
    for label, case, key in rows:
        s = stats[case][key]
        print(f"{label:<46}{s['median']:>8.2f}   {s['min']:.2f}–{s['max']:.2f}")
    print(f"NetStudio window shown with torch already loaded: {ns_last['torch_loaded_before_show']}; "
          f"exposed: {all(r['exposed'] for r in runs['netstudio'])}; nodes in opened sample: {ns_last['nodes']}")
    if args.json:
        print(json.dumps({"repeats": args.repeats, "torch": torch_version, "stats": stats}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
