"""The open document: project + graph + undo stack + the latest shape analysis.

Every user edit is one core command (``netstudio.graph.commands``) executed
through :meth:`Document.push`, which runs it on the graph first (so a refused
edit raises and records nothing) and then records it on the ``QUndoStack``
as one :class:`GraphUndoCommand`. The views never change the graph directly;
they follow graph events and :attr:`Document.analysis_changed`.
"""

from __future__ import annotations

import logging
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal
import shiboken6
from PySide6.QtGui import QUndoCommand, QUndoStack

from netstudio.compiler.shapes import Analysis, ShapeChecker
from netstudio.errors import GraphError
from netstudio.graph.commands import Command, InBlock, Macro
from netstudio.graph.model import EventKind, Graph, GraphEvent
from netstudio.project.io import Project

log = logging.getLogger(__name__)


class GraphUndoCommand(QUndoCommand):
    """Adapts a core command to Qt's undo stack.

    ``done=True`` means the command already ran (Document.push executed it to
    learn whether it is valid), so the first ``redo`` that ``QUndoStack.push``
    triggers must not run it again.
    """

    def __init__(self, document: "Document", command: Command, *, done: bool = False) -> None:
        super().__init__(command.text)
        self.document = document
        self.command = command
        self._skip_next_redo = done

    def redo(self) -> None:
        if self._skip_next_redo:
            self._skip_next_redo = False
            return
        self._run(self.command.redo)

    def undo(self) -> None:
        self._run(self.command.undo)

    def _run(self, step: Callable[[Graph], None]) -> None:
        # Exceptions must not escape into Qt's C++ undo stack; they would leave
        # the stack index and the graph out of step without any message.
        try:
            step(self.document.graph)
        except Exception as exc:  # pragma: no cover - core commands are exact inverses
            log.exception("undo/redo failed")
            self.document.error_occurred.emit(f"Undo/redo failed: {exc}")
        self.document._check_path()
        self.document.refresh()


class Document(QObject):
    """Owns the project being edited; the single place edits go through."""

    #: the latest :class:`Analysis` (after each edit, undo, redo or reload)
    analysis_changed = Signal(object)
    #: a different Project (New/Open/restore) replaced the old one
    project_replaced = Signal()
    #: unsaved changes appeared or disappeared
    modified_changed = Signal(bool)
    locked_changed = Signal(bool)
    error_occurred = Signal(str)
    #: every GraphEvent of the current graph, re-emitted (views need not re-subscribe on Open)
    graph_event = Signal(object)
    #: the project's training settings (``project.training``) were edited
    training_changed = Signal()
    #: the editor entered or left a block (:attr:`path`); the canvas shows :attr:`current` now
    path_changed = Signal()

    def __init__(self, project: Project | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.checker = ShapeChecker()
        self._project = project or Project()
        self._analysis: Analysis | None = None
        self._emitted: Analysis | None = None
        self._analysis_key: tuple[int, int, int] | None = None
        #: bumped on every graph event except moves: positions never change an analysis
        self._shape_revision = 0
        self._extra_modified = False
        self._locked = False
        #: the blocks (node ids, outermost first) the editor has opened; [] = the project's graph
        self._path: list[str] = []
        self._unsubscribe = self._project.graph.subscribe(self._on_graph_event)
        # Events that do not come through push/undo/redo (e.g. a tool that edits
        # the graph directly) are coalesced into one analysis per event-loop turn.
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(0)
        self._refresh_timer.timeout.connect(self.refresh)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)

    def _on_clean_changed(self, _clean: bool) -> None:
        # QUndoStack's destructor clears itself and emits; ignore that last gasp
        if shiboken6.isValid(self.undo_stack) and shiboken6.isValid(self):
            self.modified_changed.emit(self.modified)

    # --- state ----------------------------------------------------------
    @property
    def project(self) -> Project:
        return self._project

    @property
    def graph(self) -> Graph:
        return self._project.graph

    @property
    def path(self) -> list[str]:
        """The open blocks, outermost first ([] while the project's own graph is shown)."""
        return list(self._path)

    @property
    def current(self) -> Graph:
        """The graph the editor shows and edits: the project's, or the inner graph of the open block."""
        return self.graph.resolve(self._path)

    def current_analysis(self) -> Analysis | None:
        """The analysis of :attr:`current` (None inside a block that has not been analysed: not fed)."""
        return self.analysis().inner(self._path)

    def current_event(self, event: GraphEvent) -> GraphEvent | None:
        """``event`` (of the project's graph) as an event of :attr:`current`, or None if it is not one."""
        for bid in self._path:
            if event.kind != EventKind.BLOCK_CHANGED or event.node_id != bid or not isinstance(event.new, GraphEvent):
                return None
            event = event.new
        return event

    def path_names(self) -> list[str]:
        """The names of the open blocks, outermost first (the breadcrumb)."""
        names, g = [], self.graph
        for bid in self._path:
            names.append(g.nodes[bid].name)
            g = g.resolve([bid])
        return names

    def enter_block(self, block_id: str) -> None:
        """Show the inner graph of the block ``block_id`` of :attr:`current` (double-click)."""
        if self.current.node(block_id).inner is None:
            raise GraphError(f"'{self.current.nodes[block_id].name}' is not a block", node_id=block_id)
        self._path.append(block_id)
        self.path_changed.emit()

    def leave_to(self, depth: int) -> None:
        """Go back to the ``depth``-th level of the breadcrumb (0: the project's graph)."""
        if 0 <= depth < len(self._path):
            del self._path[depth:]
            self.path_changed.emit()

    def _check_path(self) -> None:
        """After an undo/redo that removed an open block, go back to where the blocks still exist."""
        g, valid = self.graph, 0
        for bid in self._path:
            node = g.nodes.get(bid)
            if node is None or node.inner is None:
                break
            g, valid = node.inner, valid + 1
        if valid < len(self._path):
            del self._path[valid:]
            self.path_changed.emit()

    @property
    def modified(self) -> bool:
        return self._extra_modified or not self.undo_stack.isClean()

    def set_modified(self, modified: bool = True) -> None:
        """Mark changes that are not graph edits (training settings, a restored backup)."""
        was = self.modified
        self._extra_modified = modified
        if not modified:
            self.undo_stack.setClean()
        if self.modified != was:
            self.modified_changed.emit(self.modified)
        # settings such as the batch size change the shapes shown on edges
        self._refresh_timer.start()

    def training_edited(self) -> None:
        """The project's training settings were changed in place: mark unsaved, tell the views."""
        self.set_modified(True)
        self.training_changed.emit()

    @property
    def locked(self) -> bool:
        return self._locked

    def set_locked(self, locked: bool) -> None:
        if locked != self._locked:
            self._locked = locked
            self.locked_changed.emit(locked)

    def replace_project(self, project: Project, *, modified: bool = False) -> None:
        """Swap in another project (New/Open/restore); clears the undo history."""
        self._unsubscribe()
        self._project = project
        self._unsubscribe = project.graph.subscribe(self._on_graph_event)
        self._path = []
        self.undo_stack.clear()
        self._analysis = None
        self._analysis_key = None
        self.project_replaced.emit()
        self.set_modified(modified)
        self.refresh()

    # --- analysis -------------------------------------------------------------
    def analysis(self) -> Analysis:
        """The shape analysis of the current graph (recomputed only when it changed)."""
        g = self.graph
        # not g.revision: moving nodes (a drag, Auto Layout) must not re-analyse and re-notify every view
        key = (id(g), self._shape_revision, int(self._project.training.batch_size))
        if self._analysis is None or key != self._analysis_key:
            self._analysis = self.checker.analyze(g, self._project.training.batch_size)
            self._analysis_key = key
        return self._analysis

    def refresh(self) -> None:
        """Re-run the analysis if the graph changed and tell the views."""
        self._refresh_timer.stop()
        an = self.analysis()
        # compare with what the views last saw, not with the cache: a view may
        # have asked for the new analysis already (e.g. while rebuilding)
        if an is not self._emitted:
            self._emitted = an
            self.analysis_changed.emit(an)

    def _on_graph_event(self, event: GraphEvent) -> None:
        if not _is_move(event):
            self._shape_revision += 1
            self._refresh_timer.start()
        self.graph_event.emit(event)

    # --- edits ----------------------------------------------------------------
    def push(self, command: Command, *, top_level: bool = False) -> bool:
        """Execute ``command`` and record it as one undo step.

        Raises the core's typed error (graph left unchanged) if the edit is
        refused. Returns False, recording nothing, if it changed nothing. Inside
        a block the command edits the block's inner graph (:class:`InBlock`), so
        the document keeps one undo stack across all levels; ``top_level`` edits
        the project's graph whatever block is open (tools that name top-level
        nodes: the lr finder's optimizer).
        """
        if self._locked:
            raise GraphError("The graph is locked while training", hint="stop training to edit the model")
        if self._path and not top_level:
            command = InBlock(list(self._path), command)
        before = self.graph.revision
        _run_atomically(command, self.graph)
        if self.graph.revision == before:
            return False
        self.undo_stack.push(GraphUndoCommand(self, command, done=True))
        self.refresh()
        return True

    def undo(self) -> None:
        if not self._locked:
            self.undo_stack.undo()

    def redo(self) -> None:
        if not self._locked:
            self.undo_stack.redo()


def _is_move(event: GraphEvent) -> bool:
    """A node was moved (also inside a block): nothing a shape analysis reads changed."""
    while event.kind == EventKind.BLOCK_CHANGED and isinstance(event.new, GraphEvent):
        event = event.new
    return event.kind == EventKind.NODE_MOVED


def _run_atomically(command: Command, graph: Graph) -> None:
    """Run a command; if a Macro fails half-way, undo the children that ran."""
    if not isinstance(command, Macro):
        command.redo(graph)
        return
    done: list[Command] = []
    try:
        for child in command.children:
            _run_atomically(child, graph)
            done.append(child)
    except Exception:
        for child in reversed(done):
            child.undo(graph)
        raise
