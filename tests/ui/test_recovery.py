"""Crash recovery: every crash scenario of issue #17 item 2, damaged sidecars (item 3), file hygiene (item 9)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from netstudio.graph.commands import SetParam
from netstudio.project.io import Project, load_project, save_project
from netstudio.ui.files import recovery_offer_text
from netstudio.ui.main_window import find_sample
from netstudio.ui.recovery import SUFFIX, RecoveryStore

from .helpers import build_mlp, simulate_crash


def _backups(recovery_dir: Path) -> list[Path]:
    return sorted(recovery_dir.glob(f"*{SUFFIX}")) if recovery_dir.is_dir() else []


def test_untitled_work_is_offered_before_the_default_sample_opens(make_window: Any, recovery_dir: Path,
                                                                   dialogs: Any) -> None:
    first = make_window()
    build_mlp(first)
    expected = first.document.graph.to_dict()
    assert first.autosave() is not None
    simulate_crash(first)
    dialogs.restore_answer = None  # "Decide Later": the backup stays
    second = make_window(open_default=True, check_recovery=True)
    assert len(dialogs.restore_offers) == 1
    assert dialogs.restore_offers[0].original is None
    assert "never saved" in recovery_offer_text(dialogs.restore_offers[0])
    assert len(_backups(recovery_dir)) == 1  # opening the sample deleted nothing
    simulate_crash(second)
    dialogs.restore_answer = True
    third = make_window(open_default=True, check_recovery=True)
    assert len(dialogs.restore_offers) == 2
    assert third.document.graph.to_dict() == expected and third.document.modified
    # the backup lives on until the restored work is saved
    assert len(_backups(recovery_dir)) == 1
    third.autosave()
    assert len(_backups(recovery_dir)) == 1  # autosaves update the restored slot, no second copy


@pytest.mark.skipif(find_sample() is None, reason="the bundled samples are not installed")
def test_edits_to_the_bundled_sample_are_offered_with_what_they_differ_from(make_window: Any, recovery_dir: Path,
                                                                           dialogs: Any) -> None:
    first = make_window(open_default=True, check_recovery=True)
    assert dialogs.restore_offers == []
    fc = next(n for n in first.document.graph.nodes.values() if n.type_id == "layer.linear")
    first.document.push(SetParam(fc.id, "out_features", 77))
    first.autosave()
    simulate_crash(first)
    second = make_window(open_default=True, check_recovery=True)
    info = dialogs.restore_offers[0]
    assert info.based_on is not None and Path(info.based_on).name == find_sample().name
    assert "unsaved copy of" in info.describe()
    assert second.document.graph.nodes[fc.id].params["out_features"] == 77
    assert second.document.project.path is None  # still a copy: Save asks where


def test_two_untitled_windows_keep_two_backups(make_window: Any, recovery_dir: Path, dialogs: Any) -> None:
    a, b = make_window(), make_window()
    build_mlp(a)
    ids = build_mlp(b)
    b.document.push(SetParam(ids["fc1"], "out_features", 42))
    assert a.autosave() != b.autosave()
    graphs = [a.document.graph.to_dict(), b.document.graph.to_dict()]
    assert len(_backups(recovery_dir)) == 2
    simulate_crash(a)
    simulate_crash(b)
    w = make_window(check_recovery=True)
    assert len(dialogs.restore_offers) == 2  # every backup is offered
    from netstudio.ui import main_window as mw

    others = list(mw._EXTRA_WINDOWS)
    try:
        assert len(others) == 1  # the second restored project gets its own window
        restored = [w.document.graph.to_dict(), others[0].document.graph.to_dict()]
        assert sorted(map(json.dumps, restored)) == sorted(map(json.dumps, graphs))
        assert others[0].document.modified
    finally:
        for o in others:
            o.document.set_modified(False)
            o.close()


def test_a_saved_project_touched_after_the_crash_keeps_its_backup_offered(make_window: Any, recovery_dir: Path,
                                                                          tmp_path: Path, dialogs: Any) -> None:
    saved = tmp_path / "work.nsproj"
    first = make_window()
    ids = build_mlp(first)
    dialogs.save_path = str(saved)
    assert first.save()
    first.document.push(SetParam(ids["fc1"], "out_features", 300))
    first.autosave()
    simulate_crash(first)
    time.sleep(0.02)
    save_project(Project(name="from git"), saved)  # the file changes after the crash
    os.utime(saved, (time.time() + 5, time.time() + 5))
    dialogs.restore_answer = True
    second = make_window(path=str(saved), check_recovery=True)
    assert len(dialogs.restore_offers) == 1
    info = dialogs.restore_offers[0]
    assert info.original == saved and info.file_changed
    assert "changed on disk" in recovery_offer_text(info)
    assert second.document.graph.nodes[ids["fc1"]].params["out_features"] == 300
    # saving the restored work deletes the backup; the next start offers nothing
    assert second.save()
    assert _backups(recovery_dir) == []
    assert load_project(saved).graph.nodes[ids["fc1"]].params["out_features"] == 300


def test_declining_with_a_file_argument_deletes_the_backup_and_opens_the_file(make_window: Any, recovery_dir: Path,
                                                                              tmp_path: Path, dialogs: Any) -> None:
    other = save_project(Project(name="other"), tmp_path / "other.nsproj")
    first = make_window()
    build_mlp(first)
    first.autosave()
    simulate_crash(first)
    dialogs.restore_answer = False
    w = make_window(path=str(other), check_recovery=True)
    assert len(dialogs.restore_offers) == 1
    assert w.document.project.path == other and len(w.document.graph.nodes) == 0
    assert _backups(recovery_dir) == []


def test_restoring_with_a_file_argument_opens_that_file_in_another_window(make_window: Any, recovery_dir: Path,
                                                                          tmp_path: Path, dialogs: Any) -> None:
    other = save_project(Project(name="other"), tmp_path / "other.nsproj")
    first = make_window()
    build_mlp(first)
    first.autosave()
    simulate_crash(first)
    from netstudio.ui import main_window as mw

    w = make_window(path=str(other), check_recovery=True)
    extra = list(mw._EXTRA_WINDOWS)
    try:
        assert len(w.document.graph.nodes) == 7 and w.document.modified
        assert [o.document.project.path for o in extra] == [other]
    finally:
        for o in extra:
            o.close()


def test_a_window_that_is_still_open_is_not_offered_as_a_crash(make_window: Any, recovery_dir: Path,
                                                                dialogs: Any) -> None:
    first = make_window()
    build_mlp(first)
    first.autosave()
    make_window(check_recovery=True)
    assert dialogs.restore_offers == []
    # nor the backup of another running NetStudio (its process id is alive)
    sidecar = next(recovery_dir.glob("*.json"))
    meta = json.loads(sidecar.read_text())
    meta["pid"] = os.getppid()
    sidecar.write_text(json.dumps(meta))
    first.recovery.release()
    assert RecoveryStore(recovery_dir).pending() == []


@pytest.mark.parametrize("sidecar", ['{"saved_at": "x"}', "null", "[]", '{"saved_at": 1e400, "original": 5}',
                                     '{"name": ["x"], "pid": 99999999999999999999, "base": [1]}', "{", ""])
def test_a_damaged_sidecar_does_not_stop_the_app(make_window: Any, recovery_dir: Path, dialogs: Any,
                                                 sidecar: str) -> None:
    store = RecoveryStore(recovery_dir)
    store.write(Project(name="scratch"))
    store.release()
    store.file_for().with_suffix(".json").write_text(sidecar, encoding="utf-8")
    w = make_window(open_default=True, check_recovery=True)
    assert len(dialogs.restore_offers) == 1
    info = dialogs.restore_offers[0]
    assert abs(info.saved_at - store.file_for().stat().st_mtime) < 5
    assert w.document.modified  # restored
    assert recovery_offer_text(info)


def test_temp_files_left_by_a_crash_are_removed_at_the_next_start(make_window: Any, recovery_dir: Path,
                                                                  dialogs: Any) -> None:
    recovery_dir.mkdir(parents=True)
    dead = 2**31 - 7  # no such process
    stale = recovery_dir / f".untitled.recovery.nsproj.{dead}.0badc0de.nstmp"
    stale.write_text("{half a proj")
    unrelated = recovery_dir / "notes.tmp"
    unrelated.write_text("not ours")
    legacy = recovery_dir / ".untitled.recovery.nsproj.k2j_3x9a.tmp"  # leaked by older versions' autosave
    legacy.write_text("{")
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    make_window(check_recovery=True)
    assert not stale.exists() and not legacy.exists() and unrelated.exists()


def test_a_lone_surrogate_in_the_name_does_not_break_autosave_or_save(window: Any, recovery_dir: Path,
                                                                       tmp_path: Path, dialogs: Any) -> None:
    build_mlp(window)
    window.document.project.name = "net\ud800work"
    path = window.autosave()
    assert path is not None and load_project(path).name == "net\ud800work"
    dialogs.save_path = str(tmp_path / "s.nsproj")
    assert window.save()
    assert load_project(tmp_path / "s.nsproj").name == "net\ud800work"
    leftovers = [p for d in (tmp_path, recovery_dir) for p in d.iterdir() if ".nstmp" in p.name or
                 p.name.endswith(".tmp")]
    assert leftovers == []


def test_recovery_files_follow_the_umask(window: Any, recovery_dir: Path) -> None:
    build_mlp(window)
    old = os.umask(0o022)
    try:
        path = window.autosave()
    finally:
        os.umask(old)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o644



def test_run_app_offers_the_backup_before_opening_the_file_argument(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path, qtbot: Any,
                                                                    dialogs: Any) -> None:
    import sys

    from PySide6.QtWidgets import QApplication

    from netstudio.ui import app as app_module
    from netstudio.ui import main_window as mw

    rec_dir = tmp_path / "rec"
    store = RecoveryStore(rec_dir)
    store.write(Project(name="lost work"))
    store.release()
    path = save_project(Project(name="cli"), tmp_path / "cli.nsproj")
    opened: list[Any] = []
    real_init = mw.MainWindow.__init__

    def spy_init(self: Any, *a: Any, **kw: Any) -> None:
        kw.setdefault("recovery_dir", rec_dir)
        real_init(self, *a, **kw)
        opened.append(self)

    monkeypatch.setattr(mw.MainWindow, "__init__", spy_init)
    monkeypatch.setattr(QApplication, "exec", lambda self=None: 0)
    try:
        assert app_module.run_app(str(path)) == 0
        main = next(w for w in opened if w not in mw._EXTRA_WINDOWS)
        qtbot.addWidget(main)  # the extra windows delete themselves on close (below)
        assert [i.name for i in dialogs.restore_offers] == ["lost work"]
        assert main.document.project.name == "lost work" and main.document.modified
        extra = [w for w in opened if w in mw._EXTRA_WINDOWS]
        assert [w.document.project.path for w in extra] == [path]
        if main.training_dock is not None:
            assert all(w.training_dock is not None for w in extra)
    finally:
        sys.excepthook = sys.__excepthook__
        for w in list(mw._EXTRA_WINDOWS):
            w.close()
