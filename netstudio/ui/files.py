"""The editor window's files: New/Open/Save, recent files, samples, autosave and crash recovery.

:class:`ProjectFiles` is mixed into :class:`~netstudio.ui.main_window.MainWindow`:
these are its File-menu commands. They ask the user through the window's
``ask_*`` / ``show_error`` methods (which tests replace) and load and save
through :mod:`netstudio.project.io` and :class:`~netstudio.ui.recovery.RecoveryStore`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from netstudio.errors import NetStudioError, clip_text
from netstudio.project.io import SUFFIX, Project, load_project, save_project
from netstudio.project.samples import bundled_samples
from netstudio.ui.guard import guarded
from netstudio.ui.recovery import RecoveryInfo

if TYPE_CHECKING:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QMenu

    from netstudio.ui.canvas.view import NodeView
    from netstudio.ui.document import Document
    from netstudio.ui.recovery import RecoveryStore

log = logging.getLogger("netstudio.ui.main_window")

MAX_RECENT = 8
AUTOSAVE_MS = 60_000


class ProjectFiles:
    """File commands of the editor window (a mixin: the window provides what is declared here)."""

    _doc: Document
    recovery: RecoveryStore
    autosave_timer: QTimer
    recent_menu: QMenu
    samples_menu: QMenu
    _import_thread: Any = None
    view: NodeView
    training_session: Any

    if TYPE_CHECKING:  # provided by the window: dialogs (tests replace them), status line, canvas, windows
        def status(self, text: str, timeout_ms: int = 8000) -> None: ...
        def show_error(self, title: str, text: str, details: str | None = None) -> None: ...
        def show_notes(self, title: str, text: str) -> None: ...
        def ask_save_changes(self) -> QMessageBox.StandardButton: ...
        def ask_open_path(self) -> str | None: ...
        def ask_import_request(self) -> Any: ...
        def ask_save_path(self) -> str | None: ...
        def ask_restore_recovery(self, info: RecoveryInfo) -> bool | None: ...
        def ask_trust_code(self, title: str, text: str) -> bool: ...
        def frame_all_later(self) -> None: ...
        def _update_title(self) -> None: ...
        def open_in_new_window(self, path: str | Path | None = None) -> Any: ...

    def _dialog_dir(self) -> str:
        p = self._doc.project.path
        if p is not None:
            return str(p.parent)
        recent = self.recent_files()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def maybe_save(self) -> bool:
        """Ask about unsaved changes; False means the user cancelled."""
        if not self._doc.modified:
            return True
        ans = self.ask_save_changes()
        if ans == QMessageBox.StandardButton.Save:
            return self.save()
        return ans == QMessageBox.StandardButton.Discard

    @guarded
    def new_project(self) -> None:
        if self._doc.locked or not self.maybe_save():
            return
        self._discard_recovery()
        self.recovery.set_base(None)
        self._doc.replace_project(Project())
        self.view.frame_all()
        self.status("New project")

    @guarded
    def open_dialog(self) -> None:
        if self._doc.locked or not self.maybe_save():
            return
        path = self.ask_open_path()
        if path:
            self.open_file(path)

    @guarded
    def import_model_dialog(self) -> None:
        """File → Import model…: import off the GUI thread, then open the project it wrote."""
        if self._doc.locked or getattr(self, "_import_thread", None) is not None or not self.maybe_save():
            return
        request = self.ask_import_request()
        if request is None:
            return
        if not self._confirm_user_code(request):
            return
        from netstudio.ui.importing import ImportWorker
        from netstudio.ui.training.worker import WorkerThread

        worker = ImportWorker(request)
        worker.done.connect(self._on_imported)
        self._import_thread = WorkerThread(worker, "netstudio-import")
        self._import_thread.start()
        self.status(f"Importing {request.spec}…", 0)

    def _on_imported(self, outcome: dict[str, Any]) -> None:
        thread, self._import_thread = self._import_thread, None
        if thread is not None:
            thread.join(5000)
        if outcome.get("status") != "ok":
            hint = outcome.get("hint")
            self.show_error("Cannot import model", str(outcome.get("message")) + (f"\n\n{hint}" if hint else ""))
            self.status("Import failed")
            return
        if self.open_file(outcome["path"]):
            kept = len(outcome.get("opaque", []))
            notes = [str(n) for n in outcome.get("notes", [])]
            self.status(f"Imported {Path(outcome['path']).name}; weights in {Path(outcome['weights']).name}"
                        + (f"; {kept} opaque node{'s' if kept != 1 else ''}" if kept else "")
                        + (f"; {len(notes)} note{'s' if len(notes) != 1 else ''}" if notes else ""), 0)
            if notes:  # e.g. a module called twice whose shared weights became copies
                self.show_notes("Imported with notes", "\n\n".join(notes))

    def _confirm_user_code(self, request: Any) -> bool:
        """A SPEC ``path/model.py:Class`` runs the file: ask first (naming the file and its sha256); yes
        trusts that content from now on (opening the imported project does not ask again)."""
        from netstudio.nodes import usercode
        from netstudio.project import trust, userfile

        file = userfile.spec_file(request.spec)
        if file is None:
            return True
        sha = usercode.file_sha256(file)
        if sha is None:
            return True  # the import says the file is missing
        if not self.ask_trust_code("Run this Python file?", userfile.trust_prompt(file, sha) + "\n\nImport it?"):
            self.status("Import cancelled: the file was not run")
            return False
        try:
            trust.remember(file, sha)
        except NetStudioError as e:
            log.warning("%s", e)
            usercode.allow(file, sha)  # for this session at least
        request.trust = True
        return True

    def _trust_user_code(self, project: Project) -> tuple[list[str], bool]:
        """Ask about each user Python file the project's model runs and that was not trusted before (as it is
        now). Returns (the names of the files left untrusted, whether trusting a changed file updated the
        project). An untrusted file's nodes stay unavailable: nothing of it runs."""
        from netstudio.project import trust

        declined, repinned = [], False
        for r in trust.apply_remembered(project.graph):
            if not self.ask_trust_code("Trust this code?", r.question()):
                declined.append(Path(r.file).name)
                continue
            assert r.current is not None
            try:
                trust.remember(r.file, r.current)
            except NetStudioError as e:
                log.warning("%s", e)
            if r.changed:  # the project now records the content the user reviewed
                for g, nid, params in trust.repin_changes(project.graph, r):
                    g.set_param(nid, "sha256", params["sha256"])
                repinned = True
        return declined, repinned

    def open_file(self, path: str | Path, *, remember: bool = True, as_copy: bool = False) -> bool:
        """Load a project; on error show it and keep the current project.

        ``as_copy`` opens it untitled (samples): Save then asks where to write
        instead of overwriting the bundled file.
        """
        try:
            project = load_project(path)
        except NetStudioError as e:
            self.show_error("Cannot open project", str(e))
            self.status(f"Could not open {Path(path).name}")
            return False
        except Exception as e:  # noqa: BLE001 - e.g. a node type that fails to validate oddly
            log.exception("open failed")
            self.show_error("Cannot open project", f"{Path(path).name}: {e}")
            return False
        declined, repinned = self._trust_user_code(project)
        self._discard_recovery()  # this window's backup of the work the user just let go
        if as_copy:
            project.path = None
        self.recovery.set_base(project.path, based_on=str(path) if as_copy else None)
        weights = project.weights_path()
        self._doc.replace_project(project, modified=repinned)
        if remember and not as_copy:
            self.add_recent(project.path)
        self.frame_all_later()
        if declined:  # the model cannot be built, so neither can its weights be held
            held = f", weights {weights.name} not loaded" if weights else ""
            self.status(f"Opened {Path(path).name}; not trusted, so not run: {', '.join(declined)} (the nodes "
                        f"using it are unavailable{held})")
        else:
            self.status(f"Opened {Path(path).name}" + (self._load_weights(project, weights) if weights else ""))
        return True

    def _load_weights(self, project: Project, path: Path) -> str:
        """Hold the project's weights file (read safely) as the session's model; the status line's note."""
        if self.training_session is None:
            return ""
        from netstudio.project.importer import read_state_dict

        try:
            state = read_state_dict(path)
            self.training_session.hold_weights(state, project.graph.to_dict(), project.training,
                                               label=f"weights from {path.name}")
        except NetStudioError as e:
            log.info("weights not loaded: %s", e)
            return f"; its weights {path.name} were not loaded: {e.message}"
        except OSError as e:
            return f"; its weights {path.name} were not loaded: {e.strerror or e}"
        return f" with its weights {path.name}"

    def save(self) -> bool:
        p = self._doc.project
        if p.path is None:
            return self.save_as()
        return self._save_to(p.path)

    def save_as(self) -> bool:
        path = self.ask_save_path()
        if not path:
            return False
        target = Path(path)
        if target.suffix != SUFFIX:
            target = target.with_name(target.name + SUFFIX)
        return self._save_to(target)

    def _save_to(self, target: Path) -> bool:
        p = self._doc.project
        old_path, old_name = p.path, p.name
        if p.name in ("", "Untitled") or (old_path is not None and p.name == old_path.stem):
            p.name = target.stem
        try:
            save_project(p, target)
        except NetStudioError as e:
            p.name = old_name
            self.show_error("Cannot save project", str(e))
            return False
        self._discard_recovery()
        self.recovery.set_base(target)
        self._doc.set_modified(False)
        self.add_recent(target)
        self._update_title()
        self.status(f"Saved {target.name}")
        return True

    # --- recent files ----------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = QSettings().value("recent_files", [])
        if isinstance(value, str):  # QSettings returns a lone string for one-item lists
            value = [value]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else []

    def add_recent(self, path: Path | str | None) -> None:
        if path is None:
            return
        p = str(Path(path).resolve())
        files = [f for f in self.recent_files() if f != p]
        files.insert(0, p)
        QSettings().setValue("recent_files", files[:MAX_RECENT])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for f in files:
            act = self.recent_menu.addAction(Path(f).name)
            act.setToolTip(f)
            act.triggered.connect(lambda checked=False, f=f: self._open_recent(f))
        if not files:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", lambda: QSettings().setValue("recent_files", []))

    @guarded
    def _open_recent(self, path: str) -> None:
        if self._doc.locked or not self.maybe_save():
            return
        self.open_file(path)

    @guarded
    def _open_sample(self, path: Path) -> None:
        if self._doc.locked or not self.maybe_save():
            return
        self.open_file(path, as_copy=True)

    def _fill_samples_menu(self) -> None:
        self.samples_menu.clear()
        samples = bundled_samples()
        for f in samples:
            act = self.samples_menu.addAction(f.stem.replace("_", " "))
            act.triggered.connect(lambda checked=False, f=f: self._open_sample(f))
        if not samples:
            self.samples_menu.addAction("(no samples found)").setEnabled(False)

    # --- autosave & recovery --------------------------------------------------------------
    def autosave(self) -> Path | None:
        """Write a recovery copy if there are unsaved changes."""
        if not self._doc.modified:
            return None
        try:
            path = self.recovery.write(self._doc.project)
        except (OSError, ValueError) as e:
            self.status(f"Autosave failed: {clip_text(e, 300)}")
            return None
        self.status("Autosaved a recovery copy", 3000)
        return path

    def _discard_recovery(self) -> None:
        try:
            self.recovery.discard()
        except OSError:
            pass

    def check_recovery(self) -> bool:
        """Offer every backup a crashed session left; True if one was restored into this window.

        Each is offered with its time and what it differs from. Restore: the first
        goes into this window, later ones into new windows; the backup stays until
        that work is saved or discarded. Discard deletes it; Decide Later keeps it.
        """
        try:
            pending = self.recovery.pending()
        except OSError:
            return False
        restored = False
        for info in pending:
            answer = self.ask_restore_recovery(info)
            if answer is None:
                continue
            if not answer:
                self.recovery.discard_info(info)
                continue
            try:
                project = load_project(info.path)
            except NetStudioError as e:
                self.show_error("Cannot restore the backup", str(e))
                continue
            project.path = info.original
            project.name = info.name
            if not restored:
                self._restore_into(self, project, info)
                restored = True
            else:
                other = self.open_in_new_window()
                self._restore_into(other, project, info)
        return restored

    @staticmethod
    def _restore_into(window: Any, project: Project, info: RecoveryInfo) -> None:
        window.recovery.adopt(info)
        window._doc.replace_project(project, modified=True)
        window.frame_all_later()
        window.status("Restored unsaved work from the recovery file")

    def _is_current_file(self, path: str | Path) -> bool:
        current = self._doc.project.path
        try:
            return current is not None and Path(current).resolve() == Path(path).resolve()
        except OSError:
            return False


def recovery_offer_text(info: RecoveryInfo) -> str:
    """The offer for one backup: whose work, from when, and what it differs from."""
    import datetime as _dt

    when = _dt.datetime.fromtimestamp(info.saved_at).strftime("%Y-%m-%d %H:%M:%S")
    return (f"A backup of “{clip_text(info.name, 200)}” from {when} was found: "
            f"{clip_text(info.describe(), 600)}.\n\nRestore it?")
