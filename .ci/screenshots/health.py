"""Save a PNG of the editor showing per-node health while training (issue #14, for the README).

    xvfb-run -s "-screen 0 1600x1000x24" python .ci/screenshots/health.py \\
        resources/screenshots/health.png [--theme dark|light] [--size 1600x1000]

Opens the MNIST MLP sample, trains it (statistics every 10 steps), then continues
from weights whose first layer's bias is set to -1000, so the ReLU after it dies:
its strip turns amber and Problems lists the dead ReLUs with the fix. The window is
grabbed with the Problems panel in front and the last layer selected (the inspector
shows its activation and gradient histograms over the samples).
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any


from editor import project_copy, pump_events, save_grab, screenshot_parser, start_app, wait_until  # the sibling script (this folder is on sys.path when run)


def main(argv: list[str] | None = None) -> int:
    ap = screenshot_parser(__doc__, project=False)
    args = ap.parse_args(argv)

    import torch

    from netstudio.ui.main_window import MainWindow, find_sample

    app, w, h = start_app(args)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as rec:
        window = MainWindow(project_copy(find_sample(), tmp), recovery_dir=rec, check_recovery=False)
        window.set_theme(args.theme, persist=False)
        dock = window.training_dock
        window.resize(w, h)
        window.show()
        pump_events(300)
        window.view.frame_all()
        cfg = dock.project.training
        cfg.epochs, cfg.batch_size, cfg.device, cfg.stats_every = 2, 64, "cpu", 10
        dock.load_settings()
        done: list[Any] = []
        dock.training_finished.connect(done.append)
        dock.start_training()
        if not wait_until(lambda: len(done) == 1, 300_000):
            print("run 1 did not finish", file=sys.stderr)
            return 1
        wait_until(lambda: dock.evaluation is not None, 30_000)
        graph = window.document.project.graph
        fc1 = next(n for n in graph.nodes.values() if n.type_id == "layer.linear")
        module = dock.trained.model.get_submodule(fc1.name)
        with torch.no_grad():
            module.bias.fill_(-1000.0)
        dock.continue_training()
        if not wait_until(lambda: len(done) == 2, 300_000):
            print("run 2 did not finish", file=sys.stderr)
            return 1
        window.problems_dock.raise_()
        window.view.frame_all()
        last = [n for n in graph.nodes.values() if n.type_id == "layer.linear"][-1]
        window.scene.select_nodes([last.id])  # the inspector shows its histograms over both runs
        pump_events(300)
        return save_grab(app, window, args.out, dock)


if __name__ == "__main__":
    raise SystemExit(main())
