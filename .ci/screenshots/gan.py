"""Save a PNG of the GAN sample after a short training run (for the README).

    xvfb-run -s "-screen 0 1600x1000x24" python .ci/screenshots/gan.py \\
        resources/screenshots/gan.png [--tab results|plots] [--epochs 3]
        [--theme dark|light] [--size 1600x1000]

Opens ``sample_projects/gan_mnist.nsproj`` (Noise → generator, Real | Fake →
discriminator, two Adam optimizers in two phases), trains it for a few epochs on
the CPU with the project's seed, and grabs the window with the Training panel's
Results tab in front (the generator's samples on fixed noise) or, with ``--tab
plots``, the Training panel alone with its Live plots (one loss curve per phase).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any


from editor import project_copy, pump_events, save_grab, screenshot_parser, show_with_dock, start_app, wait_until  # the sibling script (this folder is on sys.path when run)

SAMPLE = Path(__file__).resolve().parents[2] / "sample_projects" / "gan_mnist.nsproj"


def main(argv: list[str] | None = None) -> int:
    ap = screenshot_parser(__doc__, project=False)
    ap.add_argument("--tab", default="results", choices=("results", "plots"), help="the Training panel's tab in front")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    from netstudio.ui.main_window import MainWindow

    app, w, h = start_app(args)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as rec:
        window = MainWindow(project_copy(SAMPLE, tmp), recovery_dir=rec, check_recovery=False)
        window.set_theme(args.theme, persist=False)
        dock = window.training_dock
        if dock is None:
            print("the editor window has no training dock", file=sys.stderr)
            return 1
        show_with_dock(window, dock, w, h)
        window.view.frame_all()
        cfg = dock.project.training
        cfg.epochs, cfg.batch_size, cfg.device, cfg.seed = args.epochs, args.batch_size, "cpu", 0
        dock.load_settings()
        done: list[Any] = []
        dock.training_finished.connect(done.append)
        dock.start_training()
        if not wait_until(lambda: bool(done), 300_000):
            print("training did not finish", file=sys.stderr)
            return 1
        pump_events(300)
        dock.tabs.setCurrentWidget(dock.results if args.tab == "results" else dock.tabs.widget(0))
        dock.plots.redraw()
        window.view.frame_all()
        pump_events(300)
        if args.tab == "results":
            return save_grab(app, window, args.out, dock)
        rc = save_grab(app, dock, args.out, dock)  # the plots: the Training panel alone
        window.document.set_modified(False)
        window.close()
        return rc


if __name__ == "__main__":
    raise SystemExit(main())
