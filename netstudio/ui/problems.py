"""The Problems panel: every finding of the latest shape analysis.

Clicking a problem selects and frames its node. When the hint is a concrete
assignment ("set in_features to 256 …") and the node has that parameter, *Apply
fix* performs it as one undo step.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QHeaderView, QLabel, QPushButton, QTreeWidget, QTreeWidgetItem,
                               QVBoxLayout, QWidget)

from netstudio.compiler.shapes import Analysis
from netstudio.errors import NetStudioError, Problem
from netstudio.graph.commands import SetParam
from netstudio.ui.document import Document
from netstudio.ui.icons import icon

_FIX = re.compile(r"^set (?P<param>[a-z_][a-z0-9_]*) to (?P<value>[^\s,;]+)")
PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 2


def suggested_fix(problem: Problem, document: Document) -> tuple[str, str, str] | None:
    """(node id, param, value) if the hint names a value for one of the node's params."""
    if not problem.hint or problem.node_id is None or problem.node_id not in document.graph.nodes:
        return None
    m = _FIX.match(problem.hint.strip())
    if m is None:
        return None
    nt = document.graph.node_type(problem.node_id)
    param = m.group("param")
    if not any(p.name == param for p in nt.params):
        return None
    return problem.node_id, param, m.group("value").strip("'\"")


class ProblemsPanel(QWidget):
    #: the user picked a problem: select and frame this node
    node_activated = Signal(str)
    message = Signal(str)

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.problems: list[Problem] = []
        #: findings of the last training run (e.g. a flat loss), listed after the graph's own
        self.run_problems: list[Problem] = []
        self._analysis: Analysis | None = None
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["Problem", "Node", "How to fix"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.summary = QLabel(self)
        self.fix_button = QPushButton(icon("fix"), "Apply fix", self)
        self.fix_button.setEnabled(False)
        self.fix_button.setToolTip("perform the suggested fix (undoable)")
        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(self.summary, 1)
        top.addWidget(self.fix_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.tree)

        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        self.tree.currentItemChanged.connect(lambda cur, prev: self._update_fix_button())
        self.fix_button.clicked.connect(self.apply_fix)
        document.analysis_changed.connect(self.set_analysis)
        self.set_analysis(document.analysis())

    def set_run_problems(self, problems: list[Problem]) -> None:
        """Show what the training run found (the Training dock calls this); [] clears them."""
        if list(problems) == self.run_problems:
            return
        self.run_problems = list(problems)
        self.set_analysis(self._analysis if self._analysis is not None else self.doc.analysis())

    def set_analysis(self, analysis: Analysis) -> None:
        current = self._current_problem()
        self._analysis = analysis
        self.problems = list(analysis.problems) + self.run_problems
        self.tree.clear()
        graph = self.doc.graph
        select: QTreeWidgetItem | None = None
        for p in self.problems:
            node = graph.nodes.get(p.node_id) if p.node_id else None
            item = QTreeWidgetItem([p.message, node.name if node else "—", p.hint or ""])
            item.setIcon(0, icon("error" if p.severity == "error" else "warning"))
            item.setToolTip(0, p.text())
            item.setToolTip(2, p.hint or "")
            item.setData(0, PROBLEM_ROLE, p)
            self.tree.addTopLevelItem(item)
            if current is not None and p == current:
                select = item
        if select is not None:
            self.tree.setCurrentItem(select)
        n_err = sum(p.severity == "error" for p in self.problems)
        n_warn = len(self.problems) - n_err
        if not self.problems:
            self.summary.setText("No problems: the model is ready to train.")
        else:
            parts = [f"{n_err} error{'s' if n_err != 1 else ''}"] + ([f"{n_warn} warning{'s' if n_warn != 1 else ''}"]
                                                                      if n_warn else [])
            self.summary.setText(", ".join(parts))
        self._update_fix_button()

    def _current_problem(self) -> Problem | None:
        item = self.tree.currentItem()
        return item.data(0, PROBLEM_ROLE) if item is not None else None

    def _update_fix_button(self) -> None:
        p = self._current_problem()
        fix = suggested_fix(p, self.doc) if p is not None else None
        self.fix_button.setEnabled(fix is not None and not self.doc.locked)
        self.fix_button.setText(f"Apply fix: {fix[1]} = {fix[2]}" if fix else "Apply fix")

    def _clicked(self, item: QTreeWidgetItem, column: int = 0) -> None:
        p: Problem | None = item.data(0, PROBLEM_ROLE)
        if p is not None and p.node_id is not None:
            self.node_activated.emit(p.node_id)

    def select_problem(self, index: int) -> None:
        item = self.tree.topLevelItem(index)
        if item is not None:
            self.tree.setCurrentItem(item)
            self._clicked(item)

    def apply_fix(self) -> bool:
        p = self._current_problem()
        fix = suggested_fix(p, self.doc) if p is not None else None
        if fix is None:
            return False
        node_id, param, value = fix
        self.doc.leave_to(0)  # problems name nodes of the project's graph
        try:
            self.doc.push(SetParam(node_id, param, value))
        except NetStudioError as e:
            self.message.emit(f"Cannot apply the fix: {e}")
            return False
        self.message.emit(f"Set {param} to {value}")
        return True

    def texts(self) -> list[str]:
        """Every listed problem as 'message — hint' (tests, copy)."""
        return [p.text() for p in self.problems]
