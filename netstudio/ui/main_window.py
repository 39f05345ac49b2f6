"""The main window: canvas in the middle, palette left, inspector right,
problems / model summary / training at the bottom.

The Training dock (``netstudio.ui.training``) gets the document and a
:class:`TrainingSession` explicitly; the window wires its actions, signals and
close guard here and follows ``document.locked_changed`` (graph read-only while training).

Dialogs go through small methods (``ask_save_changes``, ``ask_open_path``,
``ask_save_path``, ``ask_restore_recovery``, ``show_error``) so tests can
replace them instead of clicking modal boxes.
"""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QFrame, QLabel, QMainWindow, QMenu,
                               QMessageBox, QScrollArea, QToolBar, QVBoxLayout, QWidget)

import netstudio
import shiboken6
from netstudio.errors import NetStudioError, Scope
from netstudio.graph.commands import Disconnect, ExpandBlock, Macro, MakeBlock, Paste, RemoveNodes, SetTrainable
from netstudio.project.io import BLOCK_SUFFIX, SUFFIX, Project, load_block, save_block
from netstudio.project.samples import find_sample
from netstudio.ui import icons
from netstudio.ui.canvas.breadcrumb import BreadcrumbBar
from netstudio.ui.canvas.items import EdgeItem, NodeItem
from netstudio.ui.canvas.scene import NodeScene
from netstudio.ui.canvas.view import NodeView
from netstudio.ui.clipboard import NodeClipboard, parse_clipboard
from netstudio.ui.document import Document
from netstudio.ui.files import AUTOSAVE_MS, ProjectFiles, recovery_offer_text
from netstudio.ui.guard import guarded
from netstudio.ui.inspector import Inspector
from netstudio.ui.palette import PaletteWidget
from netstudio.ui.problems import ProblemsPanel
from netstudio.ui.recovery import RecoveryInfo, RecoveryStore
from netstudio.ui.summary import ModelSummary
from netstudio.ui.theme import apply_theme, theme, theme_mode

log = logging.getLogger(__name__)

#: default height of the bottom docks (problems, training) as a share of the window height
BOTTOM_DOCK_SHARE = 0.30


class MainWindow(ProjectFiles, QMainWindow):
    def __init__(self, path: str | Path | None = None, *, project: Project | None = None,
                 open_default: bool = True, recovery_dir: str | Path | None = None,
                 check_recovery: bool = True, training: bool = True) -> None:
        super().__init__()
        self.setObjectName("NetStudioMainWindow")
        self.setWindowIcon(icons.icon("app"))
        self.setDockNestingEnabled(True)
        self._doc = Document(project or Project(), self)
        self.recovery = RecoveryStore(recovery_dir)
        self.last_status = ""

        # --- canvas ---------------------------------------------------------------
        self.scene = NodeScene(self._doc, self)
        self.view = NodeView(self.scene)
        self.clipboard = NodeClipboard(self._doc, self.scene, self.view, self)
        self.banner = QLabel("Training in progress — the graph is locked", self)
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setObjectName("lockBanner")
        self.banner.hide()
        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.banner)
        self.breadcrumb = BreadcrumbBar(self._doc, central)
        lay.addWidget(self.breadcrumb)
        lay.addWidget(self.view, 1)
        self.setCentralWidget(central)

        # --- panels -------------------------------------------------------------------
        self.palette_panel = PaletteWidget()  # not 'palette': that is QWidget.palette()
        self.inspector = Inspector(self._doc)
        self.problems = ProblemsPanel(self._doc)
        self.summary = ModelSummary(self._doc, self.scene.param_counter)
        self.palette_dock = self._make_dock("Nodes", "paletteDock", self.palette_panel)
        self.inspector_dock = self._make_dock("Inspector", "inspectorDock", self.inspector)
        self.problems_dock = self._make_dock("Problems", "problemsDock", self.problems)
        self.summary_dock = self._make_dock("Model", "modelDock", self.summary)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.palette_dock)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.inspector_dock)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.summary_dock)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.problems_dock)
        self._default_dock_sizes()

        # --- status bar ----------------------------------------------------------------------
        self.status_shapes = QLabel(self)
        self.status_params = QLabel(self)
        self.status_zoom = QLabel(self)
        for w in (self.status_params, self.status_shapes, self.status_zoom):
            w.setContentsMargins(8, 0, 8, 0)
            self.statusBar().addPermanentWidget(w)

        self._create_actions()
        self._create_menus_and_toolbar()
        self._connect()

        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()

        settings = QSettings()
        self.set_theme(str(settings.value("theme", theme_mode()) or "system"), persist=False)
        geometry = settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1480, 920)

        state = settings.value("window/state")
        self._saved_state = state
        self._state_restored = state is not None and bool(self.restoreState(state))
        self._shown_once = False

        self.training_dock: Any = None  # TrainingDock, once installed (it imports torch)
        self.training_session: Any = None
        if training:
            self.install_training_dock()

        # --- initial project -----------------------------------------------------------------
        # Backups of a crashed session come first: opening a file or the sample must not
        # replace (or delete) work that only exists in a recovery file.
        restored = self.check_recovery() if check_recovery else False
        if project is None:
            if path is not None:
                if not restored:
                    self.open_file(path)
                elif not self._is_current_file(path):
                    self.open_in_new_window(path=path)  # the restored work keeps this window
            elif open_default and not restored:
                sample = find_sample()
                if sample is not None:
                    self.open_file(sample, as_copy=True)
        self._update_title()
        self._update_status()
        self.frame_all_later()

    # ======================================================================
    # public API
    # ======================================================================
    @property
    def document(self) -> Document:
        return self._doc

    @property
    def project(self) -> Project:
        return self._doc.project

    def add_dock(self, dock: QDockWidget, area: Qt.DockWidgetArea = Qt.DockWidgetArea.BottomDockWidgetArea) -> None:
        """Add a panel (the training dock uses this) and list it under View → Panels."""
        if not dock.objectName():
            dock.setObjectName(f"dock{len(self.findChildren(QDockWidget))}")
        self.addDockWidget(area, dock)
        self.panels_menu.addAction(dock.toggleViewAction())

    def _install_health_overlay(self) -> None:
        """Per-node health strips on the canvas while training (View → Node Health While Training)."""
        from netstudio.ui.canvas.health import HealthOverlay

        self.health_overlay = HealthOverlay(self.scene, self.training_session, self)
        self.act_health = QAction("Node &Health While Training", self)
        self.act_health.setCheckable(True)
        self.act_health.setChecked(True)
        self.act_health.toggled.connect(self.health_overlay.set_enabled)
        self.view_menu.addAction(self.act_health)
        self.act_edge_std = QAction("Colour &Edges by Activation Std", self)
        self.act_edge_std.setCheckable(True)
        self.act_edge_std.setChecked(True)
        self.act_edge_std.setToolTip("While training: edges fading (std < 0.01) violet, healthy green, exploding red")
        self.act_edge_std.toggled.connect(self.health_overlay.set_edges_by_std)
        self.view_menu.addAction(self.act_edge_std)
        from netstudio.ui.training.histograms import NodeHistograms

        # the selected node's activation/gradient histograms over the run, under the inspector's form
        # (inside its scroll area, before the closing stretch)
        self.node_histograms = NodeHistograms(self.training_session, self.inspector.body)
        self.inspector.vbox.insertWidget(self.inspector.vbox.count() - 1, self.node_histograms)
        self.scene.node_selection_changed.connect(self.node_histograms.set_selection)

    def install_training_dock(self) -> QDockWidget | None:
        """Add the Training dock if that package is installed (run_app calls this after
        the window is shown, because the dock imports torch)."""
        if self.training_dock is not None:
            return self.training_dock
        # The training dock is developed separately and optional until it lands.
        try:
            from netstudio.ui.training import TrainingDock, TrainingSession
        except ImportError:
            return None
        self.training_session = TrainingSession(self)
        dock = TrainingDock(self._doc, self.training_session, self)
        dock.setObjectName(dock.objectName() or "trainingDock")
        self.toolbar.addSeparator()
        self.toolbar.addAction(dock.train_action)
        self.toolbar.addAction(dock.stop_action)
        self.file_menu.addAction(dock.export_action)
        dock.node_activated.connect(self.select_node)
        dock.message.connect(lambda text: self.status(text, 10000))
        self.training_session.run_problems_changed.connect(self.problems.set_run_problems)
        self._install_health_overlay()
        shrinkable_dock(dock)
        self.add_dock(dock, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.problems_dock, dock)
        self.problems_dock.raise_()
        self.training_dock = dock
        for act, icon_name in ((dock.train_action, "train"), (dock.stop_action, "stop")):
            if act.icon().isNull():  # match the toolbar's look
                act.setIcon(icons.icon(icon_name))
                act.setData(icon_name)
                self._themed_actions.append(act)
        if self._saved_state is not None:
            self.restoreState(self._saved_state)  # now including where the user put this dock
        else:
            self._default_dock_sizes()
        return dock

    def set_editing_locked(self, locked: bool) -> None:
        """Make the graph read-only while training, with a banner saying so."""
        self._doc.set_locked(locked)

    def _on_locked_changed(self, locked: bool) -> None:
        self.banner.setVisible(locked)
        self.palette_panel.setEnabled(not locked)
        for act in self._edit_actions:
            act.setEnabled(not locked)
        self._update_undo_actions()
        self.problems._update_fix_button()

    @property
    def editing_locked(self) -> bool:
        return self._doc.locked

    def select_node(self, node_id: str) -> None:
        """Select a node of the project's graph (leaving an open block), frame it and show it in the inspector."""
        if node_id not in self._doc.graph.nodes:
            return
        self._doc.leave_to(0)
        self.scene.select_nodes([node_id])
        self.view.frame_nodes([node_id])
        self.inspector.show_node(node_id)

    def status(self, text: str, timeout_ms: int = 8000) -> None:
        self.last_status = text
        self.statusBar().showMessage(text, timeout_ms)

    def report_unexpected(self, exc: BaseException) -> None:
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.status(f"Unexpected error: {exc}")
        self.show_error("Unexpected error", f"Something went wrong: {exc}\n\nThe editor keeps running.", details)

    # --- dialogs (replaced in tests) --------------------------------------------
    def show_error(self, title: str, text: str, details: str | None = None) -> None:
        if not details:
            QMessageBox.critical(self, title, text)
            return
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, self)
        box.setDetailedText(details)
        box.exec()

    def show_notes(self, title: str, text: str) -> None:
        """Something the user should know that is not an error (an import's remarks)."""
        QMessageBox.information(self, title, text)

    def ask_save_changes(self) -> QMessageBox.StandardButton:
        return QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to “{self.display_name()}” before closing it?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)

    def ask_discard_weights(self, text: str) -> bool:
        """Quit although trained weights were never exported? True: quit (the training dock asks)."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Trained weights not exported", text,
                          QMessageBox.StandardButton.Cancel, self)
        quit_button = box.addButton("Quit without exporting", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is quit_button

    def ask_trust_code(self, title: str, text: str) -> bool:
        """Run code from a user's Python file? Like an editor's "trust this workspace"; default: no."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Cancel, self)
        trust = box.addButton("Trust and Run", QMessageBox.ButtonRole.AcceptRole)
        box.button(QMessageBox.StandardButton.Cancel).setText("Don't Run")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is trust

    def ask_open_path(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", self._dialog_dir(),
                                              f"NetStudio projects (*{SUFFIX});;All files (*)")
        return path or None

    def ask_import_request(self) -> Any:
        from netstudio.ui.importing import ImportDialog

        dlg = ImportDialog(self, self._dialog_dir())
        return dlg.request() if dlg.exec() == ImportDialog.DialogCode.Accepted else None

    def ask_save_path(self) -> str | None:
        p = self._doc.project
        stem = p.path.stem if p.path is not None else (re.sub(r"[^\w\-]+", "_", self.display_name()).strip("_")
                                                       or "untitled")
        suggested = str(Path(self._dialog_dir()) / f"{stem}{SUFFIX}")
        path, _ = QFileDialog.getSaveFileName(self, "Save project", suggested,
                                              f"NetStudio projects (*{SUFFIX})")
        return path or None

    def ask_restore_recovery(self, info: RecoveryInfo) -> bool | None:
        """True: restore, False: delete the backup, None: keep it and ask again next time."""
        box = QMessageBox(QMessageBox.Icon.Question, "Restore unsaved work?",
                          "NetStudio did not close properly last time.\n\n" + recovery_offer_text(info), parent=self)
        restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Decide Later", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(restore)
        box.exec()
        clicked = box.clickedButton()
        if clicked is restore:
            return True
        return False if clicked is discard else None

    # ======================================================================
    # actions
    # ======================================================================
    def _act(self, text: str, slot: Callable[[], Any], shortcut: Any = None, icon_name: str | None = None,
             tip: str | None = None, context_widget: QWidget | None = None) -> QAction:
        act = QAction(text, self)
        if icon_name:
            act.setIcon(icons.icon(icon_name))
            act.setData(icon_name)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(s) for s in seqs])
        if tip or shortcut is not None:
            keys = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            act.setToolTip(f"{tip or text.replace('…', '')}" + (f" ({keys})" if keys else ""))
        act.triggered.connect(lambda checked=False: slot())
        if context_widget is not None:
            # canvas-only keys (Delete, F, Ctrl+C) must not fire while typing in a form field
            act.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            context_widget.addAction(act)
        return act

    def _create_actions(self) -> None:
        v = self.view
        self.act_new = self._act("&New", self.new_project, QKeySequence.StandardKey.New, "new", "New project")
        self.act_open = self._act("&Open…", self.open_dialog, QKeySequence.StandardKey.Open, "open", "Open project")
        self.act_import = self._act("&Import Model…", self.import_model_dialog, None, None,
                                    "Import a torchvision architecture or a torch.export .pt2 as a project")
        self.act_save = self._act("&Save", self.save, QKeySequence.StandardKey.Save, "save", "Save project")
        self.act_save_as = self._act("Save &As…", self.save_as, QKeySequence("Ctrl+Shift+S"))
        self.act_quit = self._act("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_undo = self._act("&Undo", self._doc.undo, QKeySequence("Ctrl+Z"), "undo")
        self.act_redo = self._act("&Redo", self._doc.redo, [QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")],
                                  "redo")
        self.act_cut = self._act("Cu&t", self.cut, QKeySequence.StandardKey.Cut, "cut", context_widget=v)
        self.act_copy = self._act("&Copy", self.copy, QKeySequence.StandardKey.Copy, "copy", context_widget=v)
        self.act_paste = self._act("&Paste", self.paste, QKeySequence.StandardKey.Paste, "paste", context_widget=v)
        self.act_duplicate = self._act("&Duplicate", self.duplicate, QKeySequence("Ctrl+D"), context_widget=v)
        self.act_delete = self._act("&Delete", self.delete_selection,
                                    [QKeySequence(Qt.Key.Key_Delete), QKeySequence(Qt.Key.Key_Backspace)],
                                    "delete", context_widget=v)
        self.act_select_all = self._act("Select &All", self.select_all, QKeySequence.StandardKey.SelectAll,
                                        context_widget=v)
        self.act_add_node = self._act("&Add Node…", lambda: self.view.open_quick_add(self.view.cursor_scene_pos()))
        self.act_make_block = self._act("&Make Block", self.make_block, QKeySequence("Ctrl+G"), context_widget=v,
                                        tip="Group the selected nodes into one block")
        self.act_expand_block = self._act("E&xpand Block", self.expand_block, QKeySequence("Ctrl+Shift+G"),
                                          context_widget=v, tip="Replace the selected block by its nodes")
        self.act_open_block = self._act("&Open Block", self.open_block, tip="Edit the inside of the selected block")
        self.act_save_block = self._act("Save Block to &Library…", self.save_block_dialog)
        self.act_load_block = self._act("Insert Block from Li&brary…", self.load_block_dialog)
        self.act_add_node.setToolTip("Search node types and add one (Tab on the canvas)")
        self.act_frame = self._act("&Frame All", self.view.frame_all, QKeySequence(Qt.Key.Key_F), "frame",
                                   "Frame all nodes", context_widget=v)
        self.act_layout = self._act("Auto &Layout", self.auto_layout, QKeySequence("Ctrl+L"), "layout",
                                    "Arrange the graph left to right")
        self.act_zoom_in = self._act("Zoom &In", lambda: self.view.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn,
                                     "zoom_in")
        self.act_zoom_out = self._act("Zoom &Out", lambda: self.view.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut,
                                      "zoom_out")
        self.act_zoom_reset = self._act("&Actual Size", lambda: self.view.set_zoom(1.0), QKeySequence("Ctrl+0"))
        self.act_snap = self._act("&Snap to Grid", lambda: None, None, "grid")
        self.act_snap.setCheckable(True)
        self.act_snap.setChecked(True)
        self.act_snap.toggled.connect(lambda on: setattr(self.scene, "snap_enabled", on))
        self.act_about = self._act("&About NetStudio", self.about)
        self.act_shortcuts = self._act("&Keyboard Shortcuts", self.show_shortcuts)
        self._edit_actions = [self.act_cut, self.act_paste, self.act_duplicate, self.act_delete, self.act_add_node,
                              self.act_layout, self.act_new, self.act_open]
        self._themed_actions = [a for a in self.findChildren(QAction) if a.data()]

    def _create_menus_and_toolbar(self) -> None:
        mb = self.menuBar()
        self.file_menu = mb.addMenu("&File")
        self.file_menu.addActions([self.act_new, self.act_open, self.act_import])
        self.recent_menu = self.file_menu.addMenu("Open &Recent")
        self.samples_menu = self.file_menu.addMenu("Open &Sample")
        self.file_menu.addSeparator()
        self.file_menu.addActions([self.act_save, self.act_save_as])
        self.file_menu.addSeparator()
        self.file_menu.addAction(self.act_quit)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.samples_menu.aboutToShow.connect(self._fill_samples_menu)

        self.edit_menu = mb.addMenu("&Edit")
        self.edit_menu.addActions([self.act_undo, self.act_redo])
        self.edit_menu.addSeparator()
        self.edit_menu.addActions([self.act_cut, self.act_copy, self.act_paste, self.act_duplicate, self.act_delete])
        self.edit_menu.addSeparator()
        self.edit_menu.addActions([self.act_select_all, self.act_add_node])
        self.edit_menu.addSeparator()
        self.edit_menu.addActions([self.act_make_block, self.act_expand_block, self.act_open_block,
                                   self.act_save_block, self.act_load_block])

        self.view_menu = mb.addMenu("&View")
        self.view_menu.addActions([self.act_frame, self.act_layout])
        self.view_menu.addSeparator()
        self.view_menu.addActions([self.act_zoom_in, self.act_zoom_out, self.act_zoom_reset, self.act_snap])
        self.view_menu.addSeparator()
        theme_menu = self.view_menu.addMenu("&Theme")
        group = QActionGroup(self)
        self.theme_actions: dict[str, QAction] = {}
        for mode, label in (("system", "Follow &System"), ("dark", "&Dark"), ("light", "&Light")):
            a = QAction(label, self, checkable=True)
            a.triggered.connect(lambda checked=False, m=mode: self.set_theme(m))
            group.addAction(a)
            theme_menu.addAction(a)
            self.theme_actions[mode] = a
        self.panels_menu = self.view_menu.addMenu("&Panels")
        for d in (self.palette_dock, self.inspector_dock, self.problems_dock, self.summary_dock):
            self.panels_menu.addAction(d.toggleViewAction())

        self.help_menu = mb.addMenu("&Help")
        self.help_menu.addActions([self.act_shortcuts, self.act_about])

        tb = QToolBar("Main", self)
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addActions([self.act_new, self.act_open, self.act_save])
        tb.addSeparator()
        tb.addActions([self.act_undo, self.act_redo])
        tb.addSeparator()
        tb.addActions([self.act_layout, self.act_frame])
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        #: the training dock appends Train/Stop here
        self.toolbar = tb

    def _connect(self) -> None:
        doc = self._doc
        doc.modified_changed.connect(lambda _m: self._update_title())
        doc.project_replaced.connect(self._update_title)
        doc.analysis_changed.connect(lambda _a: self._update_status())
        doc.error_occurred.connect(self.status)
        doc.locked_changed.connect(self._on_locked_changed)
        doc.undo_stack.canUndoChanged.connect(lambda _b: self._update_undo_actions())
        doc.undo_stack.canRedoChanged.connect(lambda _b: self._update_undo_actions())
        doc.undo_stack.indexChanged.connect(lambda _i: self._update_undo_actions())
        self.scene.message.connect(self.status)
        self.clipboard.message.connect(self.status)
        self.scene.node_selection_changed.connect(self.inspector.set_selection)
        self.inspector.message.connect(self.status)
        self.problems.message.connect(self.status)
        self.problems.node_activated.connect(self.select_node)
        self.summary.node_activated.connect(self.select_node)
        self.palette_panel.add_requested.connect(self._add_from_palette)
        self.view.context_menu_provider = self._context_menu
        self.summary.updated.connect(self._update_status)
        self.view.zoom_changed.connect(self._update_zoom_label)
        hints = QGuiApplication.styleHints()
        hints.colorSchemeChanged.connect(lambda _s: self.set_theme("system", persist=False)
                                         if theme_mode() == "system" else None)
        self._update_undo_actions()

    def _update_undo_actions(self) -> None:
        st = self._doc.undo_stack
        if not (shiboken6.isValid(st) and shiboken6.isValid(self.act_undo)):
            return  # the stack emits while it is being destroyed at exit
        locked = self._doc.locked
        self.act_undo.setEnabled(st.canUndo() and not locked)
        self.act_redo.setEnabled(st.canRedo() and not locked)
        self.act_undo.setText(f"&Undo {st.undoText()}".strip())
        self.act_redo.setText(f"&Redo {st.redoText()}".strip())
        self.act_undo.setIconText("Undo")  # the toolbar keeps a short label
        self.act_redo.setIconText("Redo")

    # ======================================================================
    # title, status
    # ======================================================================
    def display_name(self) -> str:
        """The project's name, or its file name when it has none."""
        p = self._doc.project
        if p.name and p.name != "Untitled":
            return p.name
        return p.path.stem if p.path is not None else "Untitled"

    def window_title(self) -> str:
        return f"{self.display_name()}{'*' if self._doc.modified else ''} — NetStudio"

    def _update_title(self) -> None:
        self.setWindowTitle(self.window_title())

    def _update_status(self) -> None:
        an = self._doc.analysis()
        errors = an.errors()
        model_errors = an.errors(Scope.MODEL)
        if not errors:
            text, color = "✔ Ready to train", theme().ok
        else:
            what = "model" if model_errors else "training setup"
            text, color = f"✖ {len(errors)} problem{'s' if len(errors) != 1 else ''} in the {what}", theme().error
        self.status_shapes.setText(text)
        pal = self.status_shapes.palette()
        if pal.color(QPalette.ColorRole.WindowText) != color:  # palette, not a style sheet: cheap per edit
            pal.setColor(QPalette.ColorRole.WindowText, color)
            self.status_shapes.setPalette(pal)
        if not self.summary._stale:
            self.status_params.setText(f"{self.summary.total_params:,} parameters")
        self._update_zoom_label()

    def _update_zoom_label(self, *_args: Any) -> None:
        self.status_zoom.setText(f"{round(self.view.zoom() * 100)}%")

    def open_in_new_window(self, path: str | Path | None = None) -> "MainWindow":
        """Another top-level window (restored backups beyond the first, a file given at start-up)."""
        other = MainWindow(path, project=None if path is not None else Project(), open_default=False,
                           recovery_dir=self.recovery.dir, check_recovery=False, training=False)
        if self.training_dock is not None:
            other.install_training_dock()
        other.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        _EXTRA_WINDOWS.append(other)
        other.destroyed.connect(lambda _o=None, w=other: _EXTRA_WINDOWS.remove(w) if w in _EXTRA_WINDOWS else None)
        other.show()
        return other

    # ======================================================================
    # editing
    # ======================================================================
    def _push(self, command: Any) -> bool:
        try:
            return self._doc.push(command)
        except NetStudioError as e:
            self.status(str(e))
            return False

    @guarded
    def copy(self) -> bool:
        return self.clipboard.copy()

    @guarded
    def cut(self) -> None:
        self.clipboard.cut()

    @guarded
    def paste(self, at: QPointF | None = None) -> list[str]:
        """Paste the copied nodes at ``at``, else under the mouse cursor, else next to the originals."""
        return self.clipboard.paste(at)

    @guarded
    def duplicate(self) -> list[str]:
        return self.clipboard.duplicate()

    @guarded
    def delete_selection(self) -> None:
        ids = self.scene.selected_node_ids()
        edges = [e for e in self.scene.selected_edges() if e.src not in ids and e.dst not in ids]
        if not ids and not edges:
            return
        if ids and edges:
            cmd: Any = Macro([Disconnect(edges), RemoveNodes(ids)], text="Delete")
        elif ids:
            cmd = RemoveNodes(ids)
        else:
            cmd = Disconnect(edges)
        if self._push(cmd):
            self.status(f"Deleted {len(ids)} node(s)" if ids else f"Removed {len(edges)} connection(s)")

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze the selected nodes: one undo step."""
        graph = self._doc.current
        ids = [n for n in self.scene.selected_node_ids() if graph.nodes[n].trainable != trainable]
        if ids and self._push(SetTrainable(ids, trainable)):
            self.status(f"{'Unfroze' if trainable else 'Froze'} {len(ids)} node(s)")

    # --- blocks -------------------------------------------------------------------
    def _selected_block(self) -> str | None:
        ids = self.scene.selected_node_ids()
        graph = self._doc.current
        return ids[0] if len(ids) == 1 and graph.nodes[ids[0]].inner is not None else None

    def make_block(self) -> str | None:
        """Group the selected nodes into a block (one undo step); returns the block's id."""
        ids = self.scene.selected_node_ids()
        if not ids:
            self.status("Select the nodes to group into a block")
            return None
        cmd = MakeBlock(ids)
        if not self._push(cmd):
            return None
        self.scene.select_nodes([cmd.block_id] if cmd.block_id else [])
        self.status(f"Made block {self._doc.current.nodes[cmd.block_id].name!r} of {len(ids)} node(s)"
                    if cmd.block_id else "Made block")
        return cmd.block_id

    def expand_block(self) -> list[str]:
        """Replace the selected block by its nodes (one undo step); returns their ids."""
        bid = self._selected_block()
        if bid is None:
            self.status("Select one block to expand")
            return []
        cmd = ExpandBlock(bid)
        if not self._push(cmd):
            return []
        self.scene.select_nodes(cmd.new_ids)
        self.status(f"Expanded the block into {len(cmd.new_ids)} node(s)")
        return cmd.new_ids

    def open_block(self) -> None:
        bid = self._selected_block()
        if bid is not None:
            self._doc.enter_block(bid)

    def save_block_dialog(self, path: str | None = None) -> Path | None:
        """Save the selected block to a library file (``path``, or asked for)."""
        bid = self._selected_block()
        if bid is None:
            self.status("Select one block to save")
            return None
        if path is None:
            name = self._doc.current.nodes[bid].name + BLOCK_SUFFIX
            path, _ = QFileDialog.getSaveFileName(self, "Save block", str(Path(self._dialog_dir()) / name),
                                                  f"NetStudio blocks (*{BLOCK_SUFFIX})")
            if not path:
                return None
        try:
            saved = save_block(self._doc.current, bid, path)
        except NetStudioError as e:
            self.status(str(e))
            return None
        self.status(f"Saved block to {saved.name}")
        return saved

    def load_block_dialog(self, path: str | None = None, pos: QPointF | None = None) -> str | None:
        """Insert the block of a library file (``path``, or asked for) as a new block; returns its id."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Insert block", self._dialog_dir(),
                                                  f"NetStudio blocks (*{BLOCK_SUFFIX})")
            if not path:
                return None
        try:
            rec = load_block(path)
        except NetStudioError as e:
            self.status(str(e))
            return None
        at = pos if pos is not None else self.view.mapToScene(self.view.viewport().rect().center())
        cmd = Paste({"nodes": [rec], "edges": []}, offset=(at.x(), at.y()))
        if not self._push(cmd):
            return None
        self.scene.select_nodes(cmd.new_ids)
        self.status(f"Inserted block {rec['name']!r}")
        return cmd.new_ids[0] if cmd.new_ids else None

    def select_all(self) -> None:
        for item in self.scene.node_items.values():
            item.setSelected(True)

    @guarded
    def auto_layout(self) -> None:
        if self._doc.locked:
            return
        self.scene.auto_layout()
        self.view.frame_all()

    def frame_all_later(self) -> None:
        # the view has its final size only after the window is laid out
        QTimer.singleShot(0, self.view.frame_all)
        self.view.frame_all()

    @guarded
    def _add_from_palette(self, type_id: str) -> None:
        if self._doc.locked:
            return
        center = self.view.mapToScene(self.view.viewport().rect().center())
        self.view.add_node(type_id, center)

    def _context_menu(self, pos: QPointF, item: Any) -> QMenu | None:
        menu = QMenu(self)
        if isinstance(item, NodeItem):
            menu.addActions([self.act_cut, self.act_copy, self.act_duplicate, self.act_delete])
            menu.addSeparator()
            menu.addAction(self.act_make_block)
            graph = self._doc.current
            if any(graph.nodes[n].trainable for n in self.scene.selected_node_ids()):
                menu.addAction("Freeze", lambda: self.set_trainable(False))
            else:
                menu.addAction("Unfreeze", lambda: self.set_trainable(True))
            if self._selected_block() is not None:
                menu.addActions([self.act_open_block, self.act_expand_block, self.act_save_block])
            menu.addSeparator()
            menu.addAction("Frame", lambda: self.view.frame_nodes(self.scene.selected_node_ids()))
        elif isinstance(item, EdgeItem):
            menu.addAction(icons.icon("delete"), "Remove connection", self.delete_selection)
        else:
            menu.addAction("Add Node…", lambda: self.view.open_quick_add(pos))
            paste = menu.addAction(icons.icon("paste"), "Paste here", lambda: self.paste(pos))
            paste.setEnabled(parse_clipboard(QApplication.clipboard().text()) is not None)
            menu.addAction(self.act_load_block)
            menu.addSeparator()
            menu.addActions([self.act_layout, self.act_frame, self.act_select_all])
        if self._doc.locked:
            for a in menu.actions():
                if a not in (self.act_copy, self.act_frame, self.act_select_all):
                    a.setEnabled(False)
        return menu

    # ======================================================================
    # theme, help, close
    # ======================================================================
    def set_theme(self, mode: str, persist: bool = True) -> None:
        apply_theme(mode)
        icons.clear_cache()
        for a in self._themed_actions:
            a.setIcon(icons.icon(str(a.data())))
        self.setWindowIcon(icons.icon("app"))
        if mode in self.theme_actions:
            self.theme_actions[mode].setChecked(True)
        self.banner.setStyleSheet(f"background: {theme().banner_bg.name()}; color: {theme().banner_text.name()};"
                                  "padding: 6px; font-weight: 600;")
        for item in self.scene.items():
            refresh = getattr(item, "refresh_theme", None)
            if refresh is not None:  # items styled by pen/brush rather than paint()
                refresh()
            item.update()
        self.view.resetCachedContent()
        self.view.viewport().update()
        self.palette_panel.populate()
        self.problems.set_analysis(self._doc.analysis())
        self._update_status()
        if persist:
            QSettings().setValue("theme", mode)

    def about(self) -> None:
        QMessageBox.about(self, "About NetStudio",
                          f"<b>NetStudio {netstudio.__version__}</b><br>A visual neural-network builder for "
                          "PyTorch: design, train and export models.")

    def show_shortcuts(self) -> None:
        rows = [("Tab / double-click", "search and add a node"), ("Drag port → port", "connect"),
                ("Delete", "delete selection"), ("Ctrl+C / Ctrl+V / Ctrl+D", "copy / paste / duplicate"),
                ("Ctrl+Z / Ctrl+Shift+Z", "undo / redo"), ("F", "frame all"), ("Ctrl+L", "auto layout"),
                ("Wheel", "zoom"), ("Middle drag / Space+drag", "pan"), ("Ctrl+click, drag box", "multi-select")]
        html = "<table>" + "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in rows) + \
            "</table>"
        QMessageBox.information(self, "Keyboard shortcuts", html)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if not self._state_restored:
                # dock sizes requested before the first layout get lost; apply them again
                QTimer.singleShot(0, self._default_dock_sizes)
            self.frame_all_later()

    def closeEvent(self, event: QCloseEvent) -> None:
        # trained weights nobody exported are offered first, then a running run is confirmed and stopped
        dock = self.training_dock
        if dock is not None and not dock.may_close(self.ask_discard_weights):
            event.ignore()
            return
        if not self.maybe_save():
            event.ignore()
            return
        settings = QSettings()
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue("window/state", self.saveState())
        self.autosave_timer.stop()
        self._discard_recovery()
        self.recovery.release()
        event.accept()

    def _default_dock_sizes(self) -> None:
        # the canvas gets most of the room (>= 60 % of the height at 1600x1000); a saved
        # layout (restoreState) replaces this
        self.resizeDocks([self.palette_dock, self.inspector_dock], [185, 300], Qt.Orientation.Horizontal)
        self.resizeDocks([self.inspector_dock, self.summary_dock], [430, 290], Qt.Orientation.Vertical)
        bottom = max(150, min(300, round(self.height() * BOTTOM_DOCK_SHARE)))
        self.resizeDocks([self.problems_dock], [bottom], Qt.Orientation.Vertical)

    def _make_dock(self, title: str, name: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        shrinkable_dock(dock)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        return dock


class _DockScroll(QScrollArea):
    """What a dock shows: its panel, scrolled when the dock is shorter than the panel wants.

    A dock cannot be made smaller than its widget's minimum size; the training panel alone
    asked for ~400 px, which kept the bottom docks at ~45 % of the window. Inside this
    area every dock shrinks down to its title bar and the panel scrolls instead.
    """

    def __init__(self, panel: QWidget) -> None:
        super().__init__()
        self.setObjectName("dockScroll")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumSize(60, 1)  # explicit, so the panel's own minimum does not propagate
        self.setWidget(panel)

    def panel(self) -> QWidget | None:
        return self.widget()


def shrinkable_dock(dock: QDockWidget) -> QDockWidget:
    """Put the dock's panel in a scroll area so the dock can be shrunk to its title (idempotent)."""
    panel = dock.widget()
    if panel is not None and not isinstance(panel, _DockScroll):
        dock.setWidget(_DockScroll(panel))
    return dock


#: windows opened besides the first (kept referenced while they are open)
_EXTRA_WINDOWS: list["MainWindow"] = []


__all__ = ["MainWindow", "find_sample", "guarded"]
