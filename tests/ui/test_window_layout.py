"""Issue #11 item 3: the canvas gets the room; every dock shrinks to its title; the layout is remembered.

These drive the real main window with the training dock at 1600x1000 (offscreen). QSettings points
at a tmp folder (the autouse ``isolated_settings`` fixture), never at the user's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QDockWidget

from netstudio.project.io import Project

pytest.importorskip("torch")

W, H = 1600, 1000


def _window(qtbot: Any, recovery_dir: Path, **kw: Any) -> Any:
    from netstudio.ui.main_window import MainWindow

    w = MainWindow(project=kw.pop("project", Project()), recovery_dir=recovery_dir, check_recovery=False,
                   training=True, **kw)
    qtbot.addWidget(w)
    w.resize(W, H)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(50)  # the default dock sizes are applied once the window is laid out
    return w


def _docks(w: Any) -> list[QDockWidget]:
    return [w.palette_dock, w.inspector_dock, w.summary_dock, w.problems_dock, w.training_dock]


def _title_h(dock: QDockWidget) -> int:
    return dock.style().pixelMetric(dock.style().PixelMetric.PM_TitleBarHeight, None, dock) + 4


def test_default_layout_gives_the_canvas_60_percent(qtbot: Any, recovery_dir: Path) -> None:
    w = _window(qtbot, recovery_dir)
    assert w.training_dock is not None
    assert w.view.height() >= 0.6 * w.height(), (w.view.height(), w.height())
    # the docks are still usable by default: the bottom one is not squashed to nothing
    assert w.problems_dock.height() >= 150


def test_every_dock_shrinks_to_its_title(qtbot: Any, recovery_dir: Path) -> None:
    w = _window(qtbot, recovery_dir)
    for dock in _docks(w):
        # a dock's minimum is its title bar (and, for tabbed docks, the tab bar) plus a few pixels,
        # not whatever its widgets would like (the training dock asked for ~400 px)
        assert dock.minimumSizeHint().height() <= _title_h(dock) + 12, (dock.objectName(),
                                                                         dock.minimumSizeHint())
    before = w.view.height()
    w.resizeDocks([w.problems_dock], [10], Qt.Orientation.Vertical)
    qtbot.wait(20)
    assert w.problems_dock.height() <= _title_h(w.problems_dock) + 12
    assert w.training_dock.height() <= _title_h(w.training_dock) + 12
    assert w.view.height() > before + 100
    for small, big in ((w.inspector_dock, w.summary_dock), (w.summary_dock, w.inspector_dock)):
        w.resizeDocks([small, big], [10, 2000], Qt.Orientation.Vertical)
        qtbot.wait(20)
        assert small.height() <= _title_h(small) + 12, small.objectName()


def test_a_refused_train_does_not_grow_the_bottom_dock(qtbot: Any, recovery_dir: Path) -> None:
    w = _window(qtbot, recovery_dir)
    dock = w.training_dock
    w.resizeDocks([w.problems_dock], [160], Qt.Orientation.Vertical)
    qtbot.wait(20)
    h_problems, h_view = w.problems_dock.height(), w.view.height()
    dock.raise_()
    # an empty project: Train is refused (before or after the worker starts, with the reason in the
    # dock's error banner and/or the Problems panel)
    dock.train_button.click()
    qtbot.waitUntil(lambda: dock.state == "idle" and not dock.is_running(), timeout=20000)
    # the worst case: a long, wrapped error in the training dock's banner
    dock.show_error({"message": "The graph has no layers to compile. " * 6,
                     "hint": "Add a layer between the dataset and the loss, then train again."})
    assert dock.error_banner.isVisibleTo(dock)
    qtbot.wait(50)
    w.problems_dock.raise_()
    qtbot.wait(20)
    assert w.problems_dock.height() <= h_problems + 2
    assert w.view.height() >= h_view - 2


def test_dock_layout_and_geometry_are_remembered(qtbot: Any, recovery_dir: Path) -> None:
    w = _window(qtbot, recovery_dir)
    w.resize(760, 720)  # the offscreen screen is 800x800: restoring clamps a bigger window
    qtbot.wait(20)
    w.resizeDocks([w.problems_dock], [170], Qt.Orientation.Vertical)
    w.resizeDocks([w.inspector_dock], [230], Qt.Orientation.Horizontal)
    w.resizeDocks([w.inspector_dock, w.summary_dock], [150, 300], Qt.Orientation.Vertical)
    qtbot.wait(20)
    sizes = {d.objectName(): (d.width(), d.height()) for d in _docks(w) if not d.visibleRegion().isEmpty()}
    assert len(sizes) == 4  # the training dock is tabbed behind Problems
    w.document.set_modified(False)
    assert w.close()
    assert QSettings().value("window/state") is not None
    assert "settings" in QSettings().fileName()  # the tmp folder of the fixture, not the user's

    from netstudio.ui.main_window import MainWindow

    w2 = MainWindow(project=Project(), recovery_dir=recovery_dir, check_recovery=False, training=True)
    qtbot.addWidget(w2)
    w2.show()
    qtbot.waitExposed(w2)
    qtbot.wait(50)
    assert (w2.width(), w2.height()) == (760, 720)
    for d in _docks(w2):
        if d.objectName() not in sizes:
            continue
        got = (d.width(), d.height())
        want = sizes[d.objectName()]
        assert abs(got[0] - want[0]) <= 4 and abs(got[1] - want[1]) <= 4, (d.objectName(), got, want)


def test_layout_is_remembered_when_the_training_dock_comes_after_show(qtbot: Any, recovery_dir: Path) -> None:
    """run_app shows the window first and adds the training dock once torch is imported."""
    from netstudio.ui.main_window import MainWindow

    def launch() -> Any:
        w = MainWindow(project=Project(), recovery_dir=recovery_dir, check_recovery=False, training=False)
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        w.install_training_dock()
        qtbot.wait(50)
        return w

    w = launch()
    w.resize(780, 760)
    qtbot.wait(20)
    w.training_dock.raise_()
    w.resizeDocks([w.training_dock], [300], Qt.Orientation.Vertical)
    w.resizeDocks([w.palette_dock], [150], Qt.Orientation.Horizontal)
    qtbot.wait(20)
    want = {d.objectName(): (d.width(), d.height()) for d in _docks(w) if not d.visibleRegion().isEmpty()}
    assert "TrainingDock" in want and "problemsDock" not in want
    assert w.close()
    w2 = launch()
    got = {d.objectName(): (d.width(), d.height()) for d in _docks(w2) if not d.visibleRegion().isEmpty()}
    assert got.keys() == want.keys()  # the training tab is in front again
    for name, (gw, gh) in got.items():
        assert abs(gw - want[name][0]) <= 4 and abs(gh - want[name][1]) <= 4, (name, got[name], want[name])
