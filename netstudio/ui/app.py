"""Application start-up: ``run_app`` is what ``netstudio`` (no sub-command) calls."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

from PySide6.QtCore import QCoreApplication
from PySide6.QtWidgets import QApplication, QMessageBox

from netstudio.ui.main_window import MainWindow

log = logging.getLogger(__name__)

ORGANIZATION = "NetStudio"
APPLICATION = "NetStudio"


def _install_excepthook(app: QApplication) -> None:
    """Show unexpected errors in a dialog and keep running instead of aborting."""
    showing = False

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        nonlocal showing
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unhandled exception:\n%s", text)
        sys.stderr.write(text)
        if showing:  # an error inside the error dialog: do not stack dialogs
            return
        showing = True
        try:
            box = QMessageBox(QMessageBox.Icon.Critical, "Unexpected error",
                              f"NetStudio hit an unexpected error and kept running:\n\n{exc}",
                              QMessageBox.StandardButton.Ok, app.activeWindow())
            box.setDetailedText(text)
            box.exec()
        finally:
            showing = False

    sys.excepthook = hook


def create_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(argv if argv is not None else sys.argv[:1])
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("NetStudio")
    return app


def run_app(path: str | None = None) -> int:
    """Open the main window (``path`` or the MNIST sample) and run the event loop."""
    app = create_application()
    _install_excepthook(app)
    # The window comes first; torch (several seconds to import) loads once it is visible.
    window = MainWindow(path, training=False)
    window.show()
    app.processEvents()
    window.status("Loading PyTorch…", 0)
    app.processEvents()
    # PySide6's import hook can crash when a module is first imported inside a
    # QThread; load dynamo (which training uses) here, on the main thread,
    # before the training dock could start its worker thread.
    import torch._dynamo  # noqa: F401

    from netstudio.ui.training.worker import reserve_cores_for_workers

    reserve_cores_for_workers()  # the GUI thread computes single-threaded (see there)
    window.install_training_dock()
    from netstudio.ui.main_window import _EXTRA_WINDOWS

    for other in list(_EXTRA_WINDOWS):  # restored backups beyond the first, or the file passed at start-up
        other.install_training_dock()
    window.scene.update_param_counts()
    window.status("Ready", 3000)
    return int(app.exec())


def main() -> int:  # pragma: no cover - convenience: python -m netstudio.ui.app [FILE]
    return run_app(sys.argv[1] if len(sys.argv) > 1 else None)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
