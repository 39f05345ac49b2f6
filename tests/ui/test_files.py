"""Files, recovery, settings, the lock API, the model panel and start-up."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from netstudio.graph.commands import SetParam
from netstudio.project.io import Project, load_project, save_project
from netstudio.ui.canvas.view import NODE_MIME
from netstudio.ui.main_window import MainWindow, find_sample
from netstudio.ui.recovery import RecoveryStore

from .helpers import assert_scene_matches_model, build_mlp, edge_label, simulate_crash


def test_title_shows_project_name_and_unsaved_marker(window: Any, tmp_path: Path, dialogs: Any) -> None:
    assert window.windowTitle() == "Untitled — NetStudio"
    build_mlp(window)
    assert window.windowTitle() == "Untitled* — NetStudio"
    dialogs.save_path = str(tmp_path / "my_mlp")
    assert window.save()
    assert (tmp_path / "my_mlp.nsproj").is_file()
    assert window.windowTitle() == "my_mlp — NetStudio"
    window.document.undo()
    assert window.windowTitle() == "my_mlp* — NetStudio"
    window.document.redo()
    assert window.windowTitle() == "my_mlp — NetStudio"  # back at the saved state


def test_save_reopen_and_compare_the_model(window: Any, make_window: Any, tmp_path: Path, dialogs: Any) -> None:
    ids = build_mlp(window)
    window.document.push(SetParam(ids["fc1"], "out_features", 64))
    window.document.project.training.batch_size = 32
    dialogs.save_path = str(tmp_path / "round.nsproj")
    window.act_save.trigger()
    saved = tmp_path / "round.nsproj"
    assert saved.is_file() and not window.document.modified
    other = make_window(path=str(saved))
    assert other.document.graph.to_dict() == window.document.graph.to_dict()
    assert other.document.project.training.batch_size == 32
    assert other.document.project.path == saved
    assert_scene_matches_model(other)
    assert edge_label(other, ids["fc1"], "output", ids["relu"], "input") == "32×64"
    assert str(saved.resolve()) == other.recent_files()[0]
    # compiled code is the same model
    other.summary.refresh()
    window.summary.refresh()
    assert other.summary.code.toPlainText() == window.summary.code.toPlainText()
    assert "self.fc1" in other.summary.code.toPlainText()


def test_corrupt_file_shows_a_message_and_keeps_the_current_project(window: Any, tmp_path: Path,
                                                                    dialogs: Any) -> None:
    build_mlp(window)
    before = window.document.graph.to_dict()
    bad = tmp_path / "broken.nsproj"
    bad.write_text('{"format_version": 1, "graph": {"nodes": [', encoding="utf-8")
    dialogs.open_path = str(bad)
    dialogs.save_answer = QMessageBox.StandardButton.Discard
    window.act_open.trigger()
    assert dialogs.errors and dialogs.errors[-1][0] == "Cannot open project"
    assert "Cannot open broken.nsproj: The project file is not valid JSON" in dialogs.errors[-1][1]
    assert window.document.graph.to_dict() == before
    assert window.document.modified  # still the unsaved work
    # a file with an unknown node type
    odd = tmp_path / "odd.nsproj"
    odd.write_text(json.dumps({"format_version": 1, "graph": {"nodes": [{"id": "a", "type": "layer.warp"}],
                                                               "edges": []}}), encoding="utf-8")
    assert not window.open_file(odd)
    assert "Unknown node type 'layer.warp'" in dialogs.errors[-1][1]
    assert window.document.graph.to_dict() == before
    assert_scene_matches_model(window)


def test_unsaved_changes_prompt_on_close_and_new(window: Any, dialogs: Any, tmp_path: Path) -> None:
    build_mlp(window)
    dialogs.save_answer = QMessageBox.StandardButton.Cancel
    assert not window.close()
    assert window.isVisible() and dialogs.save_prompts == 1
    window.act_new.trigger()  # cancelled too
    assert len(window.document.graph.nodes) == 7 and dialogs.save_prompts == 2
    dialogs.save_answer = QMessageBox.StandardButton.Save
    dialogs.save_path = str(tmp_path / "kept.nsproj")
    window.act_new.trigger()
    assert (tmp_path / "kept.nsproj").is_file()
    assert len(window.document.graph.nodes) == 0 and not window.document.modified
    assert len(load_project(tmp_path / "kept.nsproj").graph.nodes) == 7
    assert window.close()


def test_recent_files_and_window_geometry_persist(make_window: Any, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        p = Project(name=f"p{i}")
        paths.append(save_project(p, tmp_path / f"p{i}.nsproj"))
    w = make_window()
    for p in paths:
        assert w.open_file(p)
    assert w.recent_files() == [str(p.resolve()) for p in reversed(paths)]
    w._fill_recent_menu()
    assert [a.text() for a in w.recent_menu.actions()][:3] == ["p2.nsproj", "p1.nsproj", "p0.nsproj"]
    w.resize(701, 503)  # fits the offscreen screen, so restoring does not clamp it
    assert w.close()
    assert QSettings().value("window/geometry") is not None
    w2 = make_window()
    assert w2.recent_files()[0] == str(paths[2].resolve())
    # restored geometry (the fixture resizes after construction, so check the stored value round-trips)
    w3 = MainWindow(project=Project(), training=False, check_recovery=False)
    try:
        assert (w3.width(), w3.height()) == (701, 503)
    finally:
        w3.deleteLater()


def test_recovery_file_is_offered_after_a_crash_and_restores_the_graph(make_window: Any, recovery_dir: Path,
                                                                        tmp_path: Path, dialogs: Any) -> None:
    # a session edits a saved project, autosaves, then "crashes" (never closes)
    saved = tmp_path / "work.nsproj"
    first = make_window()
    ids = build_mlp(first)
    dialogs.save_path = str(saved)
    assert first.save()
    first.document.push(SetParam(ids["fc1"], "out_features", 300))
    time.sleep(0.01)  # the backup must be newer than the saved file on coarse-mtime filesystems
    backup = first.autosave()
    assert backup is not None and backup.parent == recovery_dir
    os.utime(saved, (time.time() - 60, time.time() - 60))
    expected = first.document.graph.to_dict()
    simulate_crash(first)

    dialogs.restore_answer = True
    second = make_window(open_default=True, check_recovery=True)
    assert len(dialogs.restore_offers) == 1
    info = dialogs.restore_offers[0]
    assert info.original == saved and info.name == "work"
    assert second.document.graph.to_dict() == expected
    assert second.document.graph.nodes[ids["fc1"]].params["out_features"] == 300
    assert second.document.project.path == saved
    assert second.document.modified and second.windowTitle() == "work* — NetStudio"
    assert_scene_matches_model(second)
    # saving removes the backup; the next start offers nothing
    assert second.save()
    assert RecoveryStore(recovery_dir).pending() == []
    make_window(open_default=True, check_recovery=True)
    assert len(dialogs.restore_offers) == 1


def test_declined_recovery_files_are_discarded_and_touched_ones_stay_offered(make_window: Any, recovery_dir: Path,
                                                                             tmp_path: Path, dialogs: Any) -> None:
    store = RecoveryStore(recovery_dir)
    store.write(Project(name="scratch"))
    store.release()  # its window is gone
    dialogs.restore_answer = False
    w = make_window(check_recovery=True)
    assert len(dialogs.restore_offers) == 1 and len(w.document.graph.nodes) == 0
    assert store.pending() == []
    # a backup older than its project file (git checkout, a sync client touched it after the crash)
    # is still the only copy of that work: offered, with a note, never deleted silently
    proj = save_project(Project(name="saved"), tmp_path / "saved.nsproj")
    other = RecoveryStore(recovery_dir)
    other.set_base(proj)
    other.write(load_project(proj))
    other.release()
    backup = other.file_for()
    os.utime(backup, (time.time() - 120, time.time() - 120))
    save_project(Project(name="changed by git"), proj)
    pending = store.pending()
    assert [i.path for i in pending] == [backup] and backup.exists()
    assert pending[0].file_changed and "changed on disk" in pending[0].describe()


def test_autosave_timer_writes_only_when_modified(window: Any, recovery_dir: Path) -> None:
    assert window.autosave_timer.isActive() and window.autosave_timer.interval() == 60_000
    assert window.autosave() is None
    build_mlp(window)
    path = window.autosave()
    assert path is not None and path.is_file()
    assert load_project(path).graph.to_dict() == window.document.graph.to_dict()
    assert window.close()  # a clean exit removes the backup
    assert not path.exists()


def test_editing_lock_makes_the_graph_read_only(window: Any) -> None:
    ids = build_mlp(window)
    before = window.document.graph.to_dict()
    window.set_editing_locked(True)
    assert window.banner.isVisible()
    assert window.banner.text() == "Training in progress — the graph is locked"
    assert not window.inspector.form_host.isEnabled() or window.inspector.node_id is None
    window.select_node(ids["fc1"])
    assert not window.inspector.form_host.isEnabled()
    assert not window.act_delete.isEnabled() and not window.act_undo.isEnabled()
    assert not window.palette_panel.isEnabled()
    assert not window.scene.node_items[ids["fc1"]].flags() & window.scene.node_items[ids["fc1"]].GraphicsItemFlag.ItemIsMovable
    mime = QMimeData()
    mime.setData(NODE_MIME, b"layer.linear")
    window.view.dropEvent(QDropEvent(QPointF(100, 100), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                     Qt.KeyboardModifier.NoModifier))
    window.scene.select_nodes([ids["fc1"]])
    window.delete_selection()
    window.document.undo()
    with pytest.raises(Exception, match="locked"):
        window.document.push(SetParam(ids["fc1"], "out_features", 5))
    assert window.document.graph.to_dict() == before
    window.set_editing_locked(False)
    assert not window.banner.isVisible() and window.act_delete.isEnabled()
    assert window.inspector.form_host.isEnabled()
    window.delete_selection()
    assert ids["fc1"] not in window.document.graph.nodes


def test_model_panel_shows_layers_totals_code_and_compile_errors(window: Any) -> None:
    ids = build_mlp(window)
    window.summary.refresh()
    rows = window.summary.row_texts()
    assert rows == [["flatten1", "Flatten", "64×784", "0"], ["fc1", "Linear", "64×128", "100,480"],
                    ["relu1", "ReLU", "64×128", "0"], ["fc2", "Linear", "64×10", "1,290"]]
    assert window.summary.total_params == 101_770
    assert "101,770 parameters" in window.summary.total.text()
    code = window.summary.code.toPlainText()
    assert "def forward(self, x):" in code and "self.fc2" in code
    assert window.summary.code.isReadOnly()
    window.document.push(SetParam(ids["fc2"], "in_features", 5))
    window.summary.refresh()
    assert window.summary.compile_error is not None
    assert "expects 5 input features but receives 128" in window.summary.code.toPlainText()


def test_default_start_opens_the_mnist_sample_or_an_empty_project(make_window: Any) -> None:
    w = make_window(open_default=True)
    sample = find_sample()
    if sample is None:
        assert len(w.document.graph.nodes) == 0 and w.windowTitle() == "Untitled — NetStudio"
    else:
        # opened as an untitled copy: Save must not overwrite the bundled sample
        assert w.document.project.path is None
        assert w.document.project.name == load_project(sample).name
        assert w.windowTitle() == f"{load_project(sample).name} — NetStudio"
        assert w.recent_files() == []
        assert w.document.graph.to_dict() == load_project(sample).graph.to_dict()
        assert w.problems.problems == []  # the sample is ready to train
        assert all(it.label.text for e, it in w.scene.edge_items.items() if e.dst_port != "loss")


def test_run_app_opens_the_file_and_adds_the_training_dock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           qtbot: Any) -> None:
    from PySide6.QtWidgets import QApplication

    from netstudio.ui import app as app_module

    path = save_project(Project(name="cli"), tmp_path / "cli.nsproj")
    opened: list[MainWindow] = []
    real_init = MainWindow.__init__

    def spy_init(self: MainWindow, *a: Any, **kw: Any) -> None:
        kw.setdefault("recovery_dir", tmp_path / "rec")
        real_init(self, *a, **kw)
        opened.append(self)

    monkeypatch.setattr(MainWindow, "__init__", spy_init)
    monkeypatch.setattr(QApplication, "exec", lambda self=None: 0)
    try:
        assert app_module.run_app(str(path)) == 0
        w = opened[0]
        qtbot.addWidget(w)
        assert w.windowTitle() == "cli — NetStudio"
        try:
            import netstudio.ui.training  # noqa: F401
        except ImportError:
            assert w.training_dock is None
        else:
            assert w.training_dock is not None
            assert any(a.text() == "Train" for a in w.toolbar.actions())
            assert w.training_dock.toggleViewAction() in w.panels_menu.actions()
    finally:
        import sys

        sys.excepthook = sys.__excepthook__
