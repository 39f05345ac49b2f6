"""Save a PNG of the real window while a model trains (for the README).

    xvfb-run -s "-screen 0 1600x1000x24" python .ci/screenshots/training.py \\
        resources/screenshots/training.png [--theme dark|light] [--size 1600x1000]

Opens the MNIST MLP sample in the editor window, trains it once to the end
(run 1), starts a second run with a smaller batch and grabs the window while
that run is live, so the plots show two overlaid runs, the progress bar and
the throughput. Falls back to the dock alone in a plain window if the editor
window cannot be created.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QSettings, Qt
from PySide6.QtWidgets import QApplication, QMainWindow

from editor import project_copy, pump_events, save_grab, screenshot_parser, show_with_dock, wait_until  # the sibling script (this folder is on sys.path when run)


def _editor_window(project_path: Path | None, theme: str, rec: str, tmp: str) -> tuple[QMainWindow, Any]:
    from netstudio.ui.main_window import MainWindow, find_sample

    window = MainWindow(project_copy(project_path or find_sample(), tmp), recovery_dir=rec, check_recovery=False)
    window.set_theme(theme, persist=False)
    dock = window.training_dock
    if dock is None:
        raise RuntimeError("the editor window has no training dock")
    return window, dock


def main(argv: list[str] | None = None) -> int:
    ap = screenshot_parser(__doc__)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--grab-at-epoch", type=int, default=7, help="epoch of run 2 after which to grab")
    ap.add_argument("--dock-only", action="store_true", help="screenshot the dock in a plain window")
    args = ap.parse_args(argv)

    try:
        from netstudio.ui.app import create_application

        app = create_application([sys.argv[0]])
    except ImportError:
        app = QApplication.instance() or QApplication([sys.argv[0]])
    QCoreApplication.setOrganizationName("NetStudioScreenshot")
    QSettings().clear()  # never restore or overwrite the user's layout
    w, h = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as rec:
        if args.dock_only:
            window, dock = _dock_window(args.project)
        else:
            try:
                window, dock = _editor_window(Path(args.project) if args.project else None, args.theme, rec, tmp)
            except Exception as e:  # noqa: BLE001 - say why, then fall back
                print(f"editor window unavailable ({e}); screenshotting the dock alone", file=sys.stderr)
                window, dock = _dock_window(args.project)
        show_with_dock(window, dock, w, h)
        if hasattr(window, "view"):
            window.view.frame_all()

        cfg = dock.project.training
        cfg.epochs, cfg.batch_size, cfg.device = args.epochs, 32, "cpu"
        dock.load_settings()
        # run 1: to the end
        done: list[Any] = []
        dock.training_finished.connect(done.append)
        dock.start_training()
        if not wait_until(lambda: bool(done), 300_000):
            print("run 1 did not finish", file=sys.stderr)
            return 1
        wait_until(lambda: dock.evaluation is not None, 30_000)
        # run 2: smaller batches, grabbed while live
        dock.batch_spin.setValue(16)
        dock.start_training()
        if not wait_until(lambda: len(dock.plots.runs) == 2 and len(dock.plots.runs[1].epochs) >= args.grab_at_epoch
                           and dock.batch_events > 0, 300_000):
            print("run 2 did not get far enough", file=sys.stderr)
            return 1
        dock.tabs.setCurrentIndex(0)
        dock.plots.redraw()
        pump_events(120)
        return save_grab(app, window, args.out, dock)


def _dock_window(project_path: str | None) -> tuple[QMainWindow, Any]:
    from netstudio.project.io import Project, load_project
    from netstudio.ui.training import TrainingDock

    sample = Path(__file__).resolve().parents[2] / "sample_projects" / "mnist_mlp_adam.nsproj"
    project = load_project(project_path or sample) if (project_path or sample.exists()) else Project()

    from netstudio.ui.document import Document
    from netstudio.ui.training import TrainingSession

    window = QMainWindow()
    window.setWindowTitle("NetStudio — Training")
    document = Document(project, window)
    dock = TrainingDock(document, TrainingSession(window))
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    return window, dock


if __name__ == "__main__":
    raise SystemExit(main())
