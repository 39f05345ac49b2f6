"""Fixtures for the editor tests: isolated settings, no modal dialogs, a ready window."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QMessageBox

from netstudio.project.io import Project


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, qapp: Any) -> Iterator[Path]:
    """Point QSettings at a fresh folder so recent files and geometry never leak between tests."""
    folder = tmp_path / "settings"
    folder.mkdir()
    QCoreApplication.setOrganizationName("NetStudioTests")
    QCoreApplication.setApplicationName("NetStudio")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    QSettings().clear()
    yield folder


class DialogLog:
    """Records what the window would have shown instead of opening modal boxes."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.save_prompts = 0
        self.save_answer = QMessageBox.StandardButton.Discard
        self.open_path: str | None = None
        self.save_path: str | None = None
        self.restore_offers: list[Any] = []
        self.restore_answer = True
        self.weight_warnings: list[str] = []
        self.discard_weights_answer = True
        self.notes: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def dialogs(monkeypatch: pytest.MonkeyPatch) -> DialogLog:
    from netstudio.ui.main_window import MainWindow

    log = DialogLog()

    def show_error(self: Any, title: str, text: str, details: str | None = None) -> None:
        log.errors.append((title, text))

    def ask_save_changes(self: Any) -> QMessageBox.StandardButton:
        log.save_prompts += 1
        return log.save_answer

    def ask_restore(self: Any, info: Any) -> bool:
        log.restore_offers.append(info)
        return log.restore_answer

    def ask_discard_weights(self: Any, text: str) -> bool:
        log.weight_warnings.append(text)
        return log.discard_weights_answer

    monkeypatch.setattr(MainWindow, "show_error", show_error)
    monkeypatch.setattr(MainWindow, "show_notes", lambda self, title, text: log.notes.append((title, text)))
    monkeypatch.setattr(MainWindow, "ask_discard_weights", ask_discard_weights)
    monkeypatch.setattr(MainWindow, "ask_save_changes", ask_save_changes)
    monkeypatch.setattr(MainWindow, "ask_open_path", lambda self: log.open_path)
    monkeypatch.setattr(MainWindow, "ask_save_path", lambda self: log.save_path)
    monkeypatch.setattr(MainWindow, "ask_restore_recovery", ask_restore)
    return log


@pytest.fixture
def recovery_dir(tmp_path: Path) -> Path:
    return tmp_path / "recovery"


@pytest.fixture
def make_window(qtbot: Any, recovery_dir: Path) -> Any:
    """Factory: a shown MainWindow (no training dock unless asked, empty project by default)."""
    from netstudio.ui.main_window import MainWindow

    def make(project: Project | None = None, **kw: Any) -> MainWindow:
        kw.setdefault("recovery_dir", recovery_dir)
        kw.setdefault("training", False)
        if project is None and "path" not in kw and "open_default" not in kw:
            project = Project()
        w = MainWindow(project=project, **kw)
        qtbot.addWidget(w)
        w.resize(1300, 850)
        w.show()
        qtbot.waitExposed(w)
        return w

    return make


@pytest.fixture
def window(make_window: Any) -> Any:
    return make_window()
