"""The Model panel: layer table (output shape, parameters, memory, cost, total) and the generated code.

Compiling imports torch, so it runs debounced after edits and only while the
panel is visible; it builds on the meta device (the code needs no weights). The
table itself needs only the analysis and the meta-device parameter counts; its
Memory column is the training estimate of each layer (weights, gradients,
optimizer state, activations of one batch), see :mod:`netstudio.compiler.memory`. MACs are the
forward multiply-adds per sample (counted on the meta device); Time is each layer's share of a
forward+backward pass, measured on demand on a worker thread (:mod:`netstudio.training.nodecost`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont, QFontDatabase, QShowEvent
from PySide6.QtWidgets import (QHeaderView, QLabel, QPlainTextEdit, QPushButton, QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from netstudio.compiler.memory import MemoryEstimate
from netstudio.compiler.shapes import Analysis
from netstudio.errors import NetStudioError
from netstudio.nodes.base import Category, TensorInfo
from netstudio.ui.document import Document
from netstudio.ui.paramcount import ParamCounter

_MODEL_CATEGORIES = (Category.LAYER, Category.ACTIVATION, Category.MERGE)
#: the node id behind a row of the layer table
NODE_ROLE = Qt.ItemDataRole.UserRole + 1


def _fmt_count(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


#: the panel's worker threads until their result is taken: a panel deleted meanwhile (its window closed)
#: must not take a running QThread with it (Qt aborts on that); they end on their own and are joined at exit
_RUNNING: set[object] = set()


class ModelSummary(QWidget):
    updated = Signal()
    #: a requested time measurement ended (the Time column is filled unless it failed)
    measured = Signal()
    #: the user clicked a layer's row: select and frame this node
    node_activated = Signal(str)
    #: a background count of the MACs column ended (refresh(background=True)); the column is filled
    counted = Signal()

    def __init__(self, document: Document, counter: ParamCounter | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.counter = counter or ParamCounter()
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)

        layers = QWidget()
        self.table = QTableWidget(0, 7, layers)
        self.table.setHorizontalHeaderLabels(["Layer", "Type", "Output shape", "Parameters", "Memory", "MACs",
                                              "Time"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        h = self.table.horizontalHeader()
        for col in (0, 1, 2):  # names and shapes matter most: never elide them
            h.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(4, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(5, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(6, QHeaderView.ResizeMode.Stretch)
        for col, tip in ((5, "Multiply-adds per sample in the forward pass (matrix products and convolutions)"),
                         (6, "Share of a training step's time (forward + backward), measured on demand: "
                             "Measure time")):
            header = self.table.horizontalHeaderItem(col)
            if header is not None:
                header.setToolTip(tip)
        mem_header = self.table.horizontalHeaderItem(4)
        if mem_header is not None:
            mem_header.setToolTip("Estimated memory to train the layer: weights, gradients, optimizer state and its "
                                  "output for one batch")
        self.table.setToolTip("Click a layer to select it on the canvas")
        self.table.cellClicked.connect(self._row_clicked)
        self.table.cellActivated.connect(self._row_clicked)
        self.total = QLabel(layers)
        self.measure_button = QPushButton("Measure time", layers)
        self.measure_button.setToolTip("Time one forward and backward pass per layer (on the CPU, a random batch)")
        self.measure_button.clicked.connect(self.measure_time)
        lay = QVBoxLayout(layers)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.table)
        lay.addWidget(self.total)
        lay.addWidget(self.measure_button, 0, Qt.AlignmentFlag.AlignLeft)  # the total's line can be long
        #: node id -> (multiply-adds per sample, measured time share or None) of the last refresh/measurement
        self.costs: dict[str, tuple[float, float | None]] = {}
        self._counted_key: tuple | None = None  # nodecost.count_key of the model the MACs column counts
        self._cost_thread: object | None = None
        self._count_thread: object | None = None  # the MACs count of a background refresh
        self._count_next: tuple[object, object] | None = None  # (compiled, key) asked for while one ran
        self._count_wanted: object = None  # the key of the latest count asked for: older results are dropped

        self.code = QPlainTextEdit()
        self.code.setReadOnly(True)
        self.code.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.code.setFont(mono)

        self.tabs.addTab(layers, "Layers")
        self.tabs.addTab(self.code, "Code")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.tabs)

        self.total_params = 0
        self.compile_error: str | None = None
        self.memory_error: str | None = None  # training would not fit on the project's device
        self.memory_estimate: object | None = None  # netstudio.compiler.memory.MemoryEstimate
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._refresh_if_visible)
        self._stale = True
        document.analysis_changed.connect(self._schedule)
        document.project_replaced.connect(self._schedule)

    def _schedule(self, *args: object) -> None:
        self._stale = True
        self._timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self._timer.start()

    def _refresh_if_visible(self) -> None:
        if self.isVisible():
            self.refresh(background=True)

    def refresh(self, background: bool = False) -> None:
        """Rebuild the table and the code view now; ``background``: the MACs column is counted on a worker
        thread (after an edit: the count of a big model would hold up the editor) and filled when it ends."""
        self._stale = False
        an = self.doc.analysis()
        graph = self.doc.graph
        rows = []
        total = 0
        est = self._estimate(an)
        for nid in an.order:
            node = graph.nodes[nid]
            nt = graph.node_type(node)
            if nt.category not in _MODEL_CATEGORIES:
                continue
            res = an.results.get(nid)
            out = res.outputs.get(nt.outputs[0].name) if (res is not None and nt.outputs) else None
            shape = out.fmt() if isinstance(out, TensorInfo) else "—"
            count = self.counter.count(graph, an, nid)
            total += count or 0
            mem = est.nodes.get(nid) if est is not None else None
            rows.append((nid, node.name, nt.title, shape, count, None if mem is None else mem.training_bytes))
        from netstudio.compiler.memory import fmt_bytes

        with self._filling():
            self.table.setRowCount(len(rows))
            for r, (nid, name, title, shape, count, mem_bytes) in enumerate(rows):
                cells = [name, title, shape, "?" if count is None else f"{count:,}",
                         "?" if mem_bytes is None else fmt_bytes(mem_bytes)]
                for c, text in enumerate(cells):
                    item = QTableWidgetItem(text)
                    item.setData(NODE_ROLE, nid)
                    if c >= 3:
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    self.table.setItem(r, c, item)
        self.total_params = total
        text = f"  Total: {total:,} parameters in {len(rows)} layers"
        if est is not None:
            text += f" · training needs about {fmt_bytes(est.training_bytes)} (batch {est.batch_size})"
        if self.memory_error:
            text += f"\n  ✗ {self.memory_error}"
        self.total.setText(text)
        self.total.setToolTip(est.summary() if est is not None else "")

        self.compile_error = None
        try:
            import torch

            from netstudio.compiler.build import compile_model

            with torch.device("meta"):  # the code only: no weight is allocated
                compiled = compile_model(graph, self.doc.project.training.batch_size, an)
            self.code.setPlainText(compiled.code.strip() + "\n")
            self._set_macs(compiled, background)
        except NetStudioError as e:
            self.compile_error = str(e)
            self.code.setPlainText(f"# The model cannot be compiled yet:\n#   {e}\n")
        except Exception as e:  # a builder bug must not take the editor down
            self.compile_error = f"internal error: {e!r}"
            self.code.setPlainText(f"# Compilation failed unexpectedly:\n#   {e!r}\n")
        self.updated.emit()

    def _estimate(self, an: Analysis) -> MemoryEstimate | None:
        """The memory estimate of the model (None while it is invalid); sets :attr:`memory_error`."""
        self.memory_error = None
        self.memory_estimate = None
        if not getattr(an, "model_ok", False) or not self.doc.graph.nodes:
            return None
        try:
            from netstudio.compiler import memory
            from netstudio.training.preflight import training_device

            est = memory.estimate(self.doc.graph, an)
            try:
                memory.check_training_fits(self.doc.graph, an, training_device(self.doc.project.training.device),
                                           est)
            except NetStudioError as e:
                self.memory_error = str(e)
        except Exception:  # noqa: BLE001 - an estimate must never take the editor down
            return None
        self.memory_estimate = est
        return est

    def _set_macs(self, compiled: object, background: bool = False) -> None:
        """The MACs column from the meta-device model (shapes only); measured times are kept per node."""
        try:
            from netstudio.training.nodecost import count_key, node_costs

            key = count_key(compiled)  # type: ignore[arg-type]
            if key is not None and key == self._counted_key:  # the same model (an optimizer's edit): same counts
                self._count_wanted, self._count_next = key, None
                self._fill_costs()
                return
            self._counted_key = None
            if background:
                self._count_wanted = key if key is not None else object()  # a unique token: never equal
                self._fill_costs()  # the last counts meanwhile (new layers: "—")
                self._count_in_background(compiled, self._count_wanted)
                return
            self._count_wanted, self._count_next = None, None
            # the meta model was compiled for the code view and this count only: counted without a copy
            costs = node_costs(compiled, 1, measure=False, device="meta", in_place=True)  # type: ignore[arg-type]
            self._counted_key = key
        except Exception:  # noqa: BLE001 - a count must never take the editor down
            return
        self._apply_macs({nid: c.macs_per_sample for nid, c in costs.items()})

    def _apply_macs(self, macs: dict[str, float]) -> None:
        self.costs = {nid: (m, self.costs.get(nid, (0.0, None))[1]) for nid, m in macs.items()}
        self._fill_costs()

    def _count_in_background(self, compiled: object, key: object) -> None:
        if self._count_thread is not None:  # one at a time: the latest request waits for the running one
            self._count_next = (compiled, key)
            return
        from netstudio.ui.training.costs import CountWorker
        from netstudio.ui.training.worker import WorkerThread

        worker = CountWorker(compiled, key)
        worker.done.connect(self._on_counted, Qt.ConnectionType.QueuedConnection)
        thread = WorkerThread(worker, "netstudio-layer-count")
        self._count_thread = thread
        _RUNNING.add(thread)
        thread.start()

    def _on_counted(self, outcome: dict) -> None:
        thread, self._count_thread = self._count_thread, None
        if thread is not None:
            thread.join(2000)  # type: ignore[attr-defined]
            _RUNNING.discard(thread)
        pending, self._count_next = self._count_next, None
        macs = outcome.get("macs") if isinstance(outcome, dict) else None
        key = outcome.get("key") if isinstance(outcome, dict) else None
        if pending is not None and pending[1] is self._count_wanted:
            self._count_in_background(*pending)  # a newer model was asked for meanwhile: count that one
        elif isinstance(macs, dict) and key is self._count_wanted:
            self._counted_key = key if isinstance(key, tuple) else None
            self._apply_macs(macs)
            self.counted.emit()

    @contextmanager
    def _filling(self) -> Iterator[None]:
        """Set many cells: the columns sized to their contents are measured once at the end, not after
        each cell (which made a refill quadratic: seconds for the ~175 rows of a ResNet-50)."""
        h = self.table.horizontalHeader()
        modes = [h.sectionResizeMode(c) for c in range(h.count())]
        for c, mode in enumerate(modes):
            if mode == QHeaderView.ResizeMode.ResizeToContents:
                h.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
        try:
            yield
        finally:
            for c, mode in enumerate(modes):
                if mode == QHeaderView.ResizeMode.ResizeToContents:
                    h.setSectionResizeMode(c, mode)

    def _fill_costs(self) -> None:
        with self._filling():
            for r in range(self.table.rowCount()):
                first = self.table.item(r, 0)
                nid = first.data(NODE_ROLE) if first is not None else None
                macs, share = self.costs.get(nid, (None, None)) if isinstance(nid, str) else (None, None)
                for c, text in ((5, "—" if macs is None else _fmt_count(macs)),
                                (6, "" if share is None else f"{share:.0%}")):
                    item = QTableWidgetItem(text)
                    item.setData(NODE_ROLE, nid)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    self.table.setItem(r, c, item)

    def measure_time(self) -> bool:
        """Profile one forward+backward per layer on a worker thread; False if one is running or no model."""
        if self._cost_thread is not None or self.compile_error is not None or not self.table.rowCount():
            return False
        from netstudio.ui.training.costs import CostWorker
        from netstudio.ui.training.worker import WorkerThread

        worker = CostWorker(self.doc.graph.to_dict(), min(self.doc.project.training.batch_size, 64))
        worker.done.connect(self._on_measured, Qt.ConnectionType.QueuedConnection)
        thread = WorkerThread(worker, "netstudio-layer-cost")
        self._cost_thread = thread
        _RUNNING.add(thread)
        self.measure_button.setEnabled(False)
        self.measure_button.setText("Measuring…")
        thread.start()
        return True

    def _on_measured(self, outcome: dict) -> None:
        thread, self._cost_thread = self._cost_thread, None
        if thread is not None:
            thread.join(2000)  # type: ignore[attr-defined]
            _RUNNING.discard(thread)
        self.measure_button.setEnabled(True)
        self.measure_button.setText("Measure time")
        costs = outcome.get("costs") if isinstance(outcome, dict) else None
        if costs:
            self.costs = {nid: (float(m), s) for nid, (m, s) in costs.items()}
            self._counted_key = None  # measured on the graph of its start: the next refresh counts again
            self._fill_costs()
        self.measured.emit()

    def memory_texts(self) -> list[str]:
        """The Memory column, row by row."""
        return [(it.text() if (it := self.table.item(r, 4)) is not None else "") for r in range(self.table.rowCount())]

    def _row_clicked(self, row: int, _column: int = 0) -> None:
        item = self.table.item(row, 0)
        nid = item.data(NODE_ROLE) if item is not None else None
        if isinstance(nid, str) and nid in self.doc.graph.nodes:
            self.node_activated.emit(nid)

    def row_texts(self) -> list[list[str]]:
        return [[(it.text() if (it := self.table.item(r, c)) is not None else "") for c in range(4)]
                for r in range(self.table.rowCount())]
