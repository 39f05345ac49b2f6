"""Save a PNG of the real editor window (for the README).

    python .ci/screenshots/editor.py OUT.png [PROJECT] [--theme dark|light] [--size 1600x1000]
                                     [--select NODE_NAME] [--no-layout]

Run it under a display, e.g. ``xvfb-run -s "-screen 0 1600x1000x24" python
.ci/screenshots/editor.py resources/screenshots/editor.png`` (``make screenshots``
writes all the README's pictures). A developer tool: it is not part of the package. It opens the
project (default: the MNIST MLP sample), lays it out, frames it, waits until
parameter counts and the model panel are computed, and grabs the window.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer


def pump_events(ms: int) -> None:
    """Run the event loop for ``ms`` milliseconds (layouts, repaints, queued signals)."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(cond: Any, timeout_ms: int) -> bool:
    """Run the event loop until ``cond()`` holds or ``timeout_ms`` have passed; the final ``cond()``."""
    waited = 0
    while not cond() and waited < timeout_ms:
        pump_events(20)
        waited += 20
    return bool(cond())


def screenshot_parser(doc: str | None, project: bool = True) -> argparse.ArgumentParser:
    """The options every screenshot script takes: OUT.png [PROJECT] --theme --size."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("out", help="PNG file to write")
    if project:
        ap.add_argument("project", nargs="?", help="project file (default: the MNIST MLP sample)")
    ap.add_argument("--theme", default="dark", choices=("dark", "light", "system"))
    ap.add_argument("--size", default="1600x1000")
    return ap


def project_copy(path: Any, folder: str) -> Path:
    """A copy of the project ``path`` in ``folder``: runs trained on it are recorded beside the copy
    (``P.runs/``), never beside the original in sample_projects/, so every grab starts from no runs."""
    import shutil

    target = Path(folder) / Path(path).name
    shutil.copyfile(path, target)
    return target


def save_grab(app: Any, window: Any, out: str, dock: Any = None) -> int:
    """Grab ``window`` into ``out`` (a PNG), then stop ``dock``'s run and close the window unsaved."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixmap = window.grab()
    ok = pixmap.save(str(path))
    if dock is not None:
        dock.shutdown(5000)
    document = getattr(window, "document", None)  # the training script's --dock-only window has none
    if document is not None:
        document.set_modified(False)
    window.close()
    app.processEvents()
    if not ok:
        print(f"could not write {path}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({pixmap.width()}×{pixmap.height()})")
    return 0


def show_with_dock(window: Any, dock: Any, w: int, h: int) -> None:
    """Show ``window`` at w×h with ``dock`` in front, taking a bit more than half the height (room for plots)."""
    from PySide6.QtCore import Qt

    window.resize(w, h)
    window.show()
    dock.show()
    dock.raise_()
    pump_events(300)
    window.resizeDocks([dock], [int(h * 0.55)], Qt.Orientation.Vertical)
    pump_events(100)


def grab_when_settled(app: Any, window: Any, out: str, seconds: float = 3.0) -> int:
    """Let late work (shape labels, the Model panel's count) finish for ``seconds``, then save the grab."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        pump_events(50)
    return save_grab(app, window, out)


def start_app(args: argparse.Namespace) -> tuple[Any, int, int]:
    """The NetStudio application in a private settings scope (the user's window layout is never restored or
    overwritten), and the window size of ``--size``."""
    from PySide6.QtCore import QSettings

    from netstudio.ui.app import create_application

    app = create_application([sys.argv[0]])
    QCoreApplication.setOrganizationName("NetStudioScreenshot")
    QSettings().clear()
    w, h = (int(v) for v in args.size.lower().split("x"))
    return app, w, h


def main(argv: list[str] | None = None) -> int:
    ap = screenshot_parser(__doc__)
    ap.add_argument("--select", default="fc1", help="node name to select (inspector content)")
    ap.add_argument("--no-layout", action="store_true", help="keep the positions stored in the project")
    ap.add_argument("--no-training", action="store_true", help="leave out the training dock")
    ap.add_argument("--tab", default="training", choices=("training", "problems"),
                    help="which bottom panel is in front")
    args = ap.parse_args(argv)

    from netstudio.ui.main_window import MainWindow, find_sample

    app, w, h = start_app(args)
    path = args.project or find_sample()
    with tempfile.TemporaryDirectory() as rec:
        window = MainWindow(path, recovery_dir=rec, check_recovery=False, training=not args.no_training)
        window.set_theme(args.theme, persist=False)
        window.resize(w, h)
        window.show()
        pump_events(300)
        import torch  # noqa: F401  (parameter counts)

        if not args.no_layout:
            window.scene.auto_layout()
            window.document.undo_stack.clear()  # a fresh-looking session: nothing to undo, no '*'
            window.document.set_modified(False)
        window.scene.update_param_counts()
        window.summary.refresh()
        if args.select:
            try:
                node = window.document.graph.find(args.select)
            except Exception:  # noqa: BLE001 - optional nicety
                node = None
            if node is not None:
                window.scene.select_nodes([node.id])
        if args.tab == "training" and window.training_dock is not None:
            window.training_dock.raise_()
        window.view.frame_all()
        window.status("Ready", 0)
        return grab_when_settled(app, window, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
