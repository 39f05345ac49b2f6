"""The Runs tab of the Training dock: the project's run history (:mod:`netstudio.project.runs`).

Every run the session finishes is recorded beside the saved project (an unsaved
project has nowhere to keep them: the tab says so). The table lists the runs and
sorts by any column; selecting runs overlays their loss curves, two selected runs
show the settings that differ; a run's weights can be loaded back into the session
(for export, evaluation or continued training) and runs can be deleted.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QMessageBox, QPushButton,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from netstudio.errors import NetStudioError
from netstudio.project import runs as R

COLUMNS = ("Run", "Started", "Status", "Epochs", "Val loss", "Val acc", "lr", "Seconds", "Device", "Weights",
           "Sweep")
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


class _NumberItem(QTableWidgetItem):
    def __lt__(self, other: QTableWidgetItem) -> bool:  # numeric sort on the value kept beside the text
        a = self.data(Qt.ItemDataRole.UserRole + 1)
        b = other.data(Qt.ItemDataRole.UserRole + 1)
        if a is None or b is None:
            return (a is None) and (b is not None)
        return float(a) < float(b)


def _number(v: Any, fmt: str) -> QTableWidgetItem:
    item = _NumberItem("—")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        item.setText(format(v, fmt))
        item.setData(Qt.ItemDataRole.UserRole + 1, float(v))
    return item


class RunsPanel(QWidget):
    """Lists, compares, reloads and deletes the runs of the document's project."""

    runs_changed = Signal()  # the list was re-read (a run recorded, deleted, another project opened)

    def __init__(self, document: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document, self.session = document, session
        self.runs: list[R.RunRecord] = []
        self._started: dict[int, tuple[float, datetime.datetime]] = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setSortingEnabled(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        split.addWidget(self.table)
        lower = QWidget()
        ll = QHBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", "validation loss")
        self.plot.addLegend(offset=(-10, 10))
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        ll.addWidget(self.plot, 3)
        self.diff_label = QLabel("Select two runs to see the settings that differ.")
        self.diff_label.setWordWrap(True)
        self.diff_label.setTextFormat(Qt.TextFormat.RichText)
        self.diff_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.diff_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        ll.addWidget(self.diff_label, 2)
        split.addWidget(lower)
        lay.addWidget(split, 1)
        row = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.load_button = QPushButton("Load weights")
        self.load_button.setToolTip("Hold this run's weights, as after training (export, continue)")
        self.load_button.clicked.connect(lambda: self.load_weights())
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        for b in (self.refresh_button, self.load_button, self.delete_button):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        document.project_replaced.connect(self.refresh)
        session.run_started.connect(self._on_run_started)
        session.run_finished.connect(self._on_run_finished)
        self.refresh()

    # --- the list ------------------------------------------------------------------------
    def project_path(self) -> Any:
        return getattr(self.document.project, "path", None)

    @Slot()
    def refresh(self) -> None:
        path = self.project_path()
        self.runs = R.list_runs(path) if path is not None else []
        if path is None:
            self.note.setText("Save the project to keep its runs (they are stored beside the project file).")
        elif not R.recording_enabled():
            self.note.setText(f"Runs are not recorded ({R.NO_RUNS_ENV} is set).")
        else:
            self.note.setText(f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''} in {R.runs_dir(path)}")
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.runs))
        for r, run in enumerate(self.runs):
            s = run.summary()
            first = QTableWidgetItem(run.id)
            first.setData(Qt.ItemDataRole.UserRole, run.id)
            started = str(s.get("started") or "")[:19].replace("T", " ")
            cells = [first, QTableWidgetItem(started), QTableWidgetItem(str(s.get("status") or "")),
                     _number(s.get("epochs_run"), "d"), _number(s.get("val_loss"), ".4f"),
                     _number(s.get("val_accuracy"), ".4f"), _number(s.get("lr"), ".3g"),
                     _number(s.get("seconds"), ".1f"), QTableWidgetItem(str(s.get("device") or "—")),
                     QTableWidgetItem("yes" if s.get("weights") else "—"),
                     QTableWidgetItem(f"{s['sweep']} #{s.get('trial')} {s.get('trial_state') or ''}".rstrip()
                                      if s.get("sweep") else "—")]
            for c, item in enumerate(cells):
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self._selection_changed()
        self.runs_changed.emit()

    def _row_id(self, row: int) -> Any:
        item = self.table.item(row, 0)
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def selected_runs(self) -> list[R.RunRecord]:
        ids = {self._row_id(i.row()) for i in self.table.selectionModel().selectedRows()}
        return [r for r in self.runs if r.id in ids]

    def select(self, ids: list[str]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.table.rowCount()):
            if self._row_id(row) in ids:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    @Slot()
    def _selection_changed(self) -> None:
        runs = self.selected_runs()
        self.plot.clear()
        legend = self.plot.getPlotItem().legend
        if legend is not None:
            legend.clear()
        for i, run in enumerate(runs):
            hist = run.history()
            key = "val_loss" if any(e.get("val_loss") is not None for e in hist) else "train_loss"
            pts = [(e.get("epoch"), e.get(key)) for e in hist if isinstance(e.get(key), (int, float))]
            if pts:
                self.plot.plot([p[0] for p in pts], [p[1] for p in pts], name=run.id,
                               pen=pg.mkPen(COLOURS[i % len(COLOURS)], width=2), symbol="o", symbolSize=5)
        if len(runs) == 2:
            a, b = runs
            diff = R.param_diff(a, b)
            if not diff:
                self.diff_label.setText("These two runs have the same settings.")
            else:
                rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_fmt(x))}</td><td>{_esc(_fmt(y))}</td></tr>"
                               for k, x, y in diff)
                self.diff_label.setText(f"<b>Differences</b><table cellspacing='4'><tr><th></th>"
                                        f"<th>{_esc(a.id)}</th><th>{_esc(b.id)}</th></tr>{rows}</table>")
        else:
            self.diff_label.setText("Select two runs to see the settings that differ.")
        self.load_button.setEnabled(len(runs) == 1 and runs[0].weights_path is not None)
        self.delete_button.setEnabled(bool(runs))

    # --- recording -----------------------------------------------------------------------
    @Slot(int)
    def _on_run_started(self, run: int) -> None:
        self._started[run] = (time.perf_counter(), datetime.datetime.now(datetime.timezone.utc))

    @Slot(object)
    def _on_run_finished(self, end: Any) -> None:
        t0, started = self._started.pop(end.run_index, (time.perf_counter(), None))
        if end.refused or end.result is None or self.project_path() is None or not R.recording_enabled():
            return
        from netstudio.graph.model import Graph
        from netstudio.training.config import TrainConfig

        result = end.result
        model = getattr(result, "model", None)
        try:
            graph = Graph.from_dict(self.session.job_graph or {})
            R.record_run(self.project_path(), graph, self.session.job_config or TrainConfig(),
                         status=str(result.status), message=str(result.message or ""),
                         history=list(result.history or []), metrics=dict(result.metrics or {}),
                         seconds=time.perf_counter() - t0, device=(result.metrics or {}).get("device"),
                         source="app", state_dict=model.state_dict() if model is not None else None,
                         started=started)
        except (OSError, NetStudioError) as e:
            self.note.setText(f"This run was not recorded: {e}")
            return
        self.refresh()

    # --- actions -------------------------------------------------------------------------
    def load_weights(self, run: R.RunRecord | None = None) -> bool:
        """Hold the run's weights in the session (as after training); False if impossible (note says why)."""
        runs = [run] if run is not None else self.selected_runs()
        if len(runs) != 1:
            return False
        try:
            state = R.load_run_weights(runs[0])
            self.session.hold_weights(state, self.document.project.graph.to_dict(),
                                      self.document.project.training, label=f"run {runs[0].id}")
        except NetStudioError as e:
            self.note.setText(f"Cannot load the weights of {runs[0].id}: {e.message}"
                              + (f" ({e.hint})" if e.hint else ""))
            return False
        self.note.setText(f"Holding the weights of run {runs[0].id}")
        return True

    def delete_selected(self, confirm: bool = True) -> int:
        runs = self.selected_runs()
        if not runs:
            return 0
        if confirm:
            answer = QMessageBox.question(self, "Delete runs",
                                          f"Delete {len(runs)} run{'s' if len(runs) != 1 else ''} and their "
                                          "weights from disk?")
            if answer != QMessageBox.StandardButton.Yes:
                return 0
        for run in runs:
            try:
                R.delete_run(run)
            except (OSError, NetStudioError) as e:
                self.note.setText(f"Cannot delete {run.id}: {e}")
        self.refresh()
        return len(runs)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
