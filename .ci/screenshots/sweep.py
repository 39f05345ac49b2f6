"""Save a PNG of the Sweep window after a small finished sweep (for the README).

    xvfb-run -s "-screen 0 1600x1000x24" python .ci/screenshots/sweep.py \\
        resources/screenshots/sweep.png [--trials 5] [--epochs 1] [--theme dark|light] [--size 900x640]

Opens a copy of the MNIST MLP sample in the editor window (trials are recorded
beside the copy, never in sample_projects/), opens Training panel → More →
Sweep… with its default search space (the optimizer's lr, the first Linear
layer's width), runs a few one-epoch trials on the CPU (seeded: the project's
seed and Optuna's sampler seed) and grabs the Sweep window with its sorted
results table and the best trial.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any


from editor import project_copy, pump_events, save_grab, screenshot_parser, start_app, wait_until  # the sibling script (this folder is on sys.path when run)


def main(argv: list[str] | None = None) -> int:
    ap = screenshot_parser(__doc__, project=False)
    ap.set_defaults(size="900x640")  # the Sweep window's size
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args(argv)

    from netstudio.ui.main_window import MainWindow, find_sample

    app, w, h = start_app(args)
    sample = find_sample()
    if sample is None:
        print("the MNIST MLP sample is missing", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as rec:
        window = MainWindow(project_copy(sample, tmp), recovery_dir=rec, check_recovery=False)
        window.set_theme(args.theme, persist=False)
        dock = window.training_dock
        if dock is None:
            print("the editor window has no training dock", file=sys.stderr)
            return 1
        window.resize(1600, 1000)
        window.show()
        pump_events(300)
        cfg = dock.project.training
        cfg.device, cfg.seed = "cpu", 0
        dock.load_settings()
        dialog = dock.open_sweep_dialog()
        dialog.resize(w, h)
        dialog.trials_spin.setValue(args.trials)
        dialog.epochs_spin.setValue(args.epochs)
        done: list[Any] = []
        dialog.finished_sweep.connect(done.append)
        if not dialog.start():
            print(f"the sweep did not start: {dialog.status_label.text()}", file=sys.stderr)
            return 1
        if not wait_until(lambda: bool(done), 600_000):
            print("the sweep did not finish", file=sys.stderr)
            return 1
        if done[0].get("status") == "error":
            print(f"the sweep failed: {dialog.status_label.text()}", file=sys.stderr)
            return 1
        dialog.results.selectRow(0)  # the best trial (sorted by loss)
        pump_events(300)
        rc = save_grab(app, dialog, args.out)
        dock.shutdown(5000)
        window.document.set_modified(False)
        window.close()
        return rc


if __name__ == "__main__":
    raise SystemExit(main())
