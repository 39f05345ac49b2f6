"""After-training views: metrics table, confusion matrix heatmap, labelled sample grid,
predicted-vs-true scatter for regressions."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QBrush, QColor, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
                               QScrollArea, QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from netstudio.ui.training.plots import plot_colors

#: human names for the metric keys FitResult.metrics / epoch events use
METRIC_LABELS = {
    "train_loss": "Training loss",
    "val_loss": "Validation loss",
    "train_accuracy": "Training accuracy",
    "val_accuracy": "Validation accuracy",
    "lr": "Learning rate",
    "seconds": "Seconds",
    "epochs": "Epochs",
    "best_epoch": "Best epoch",
    "samples_per_s": "Samples / s",
    "epochs_run": "Epochs run",
    "device": "Device",
    "device_id": "Device id",
    "fast_path": "CUDA graph fast path",
    "r2": "R²",
    "mae": "MAE (mean absolute error)",
    "rmse": "RMSE (root mean squared error)",
}


#: metrics that repeat another row (device_id says what device says)
HIDDEN = ("device_id", "metrics_split")


def format_metric(value: Any) -> str:
    """The one formatting rule for metric cells (tests compare against it)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e7):
            return f"{value:.3e}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4f}"
    return str(value)


def to_qimage(img: np.ndarray) -> QImage:
    """uint8 (H,W) or (H,W,3) array → QImage owning a copy of the pixels."""
    a = np.ascontiguousarray(img)
    if a.ndim == 2:
        h, w = a.shape
        q = QImage(a.data, w, h, a.strides[0], QImage.Format.Format_Grayscale8)
    else:
        h, w, _ = a.shape
        q = QImage(a.data, w, h, a.strides[0], QImage.Format.Format_RGB888)
    return q.copy()  # detach from the numpy buffer


def generated_tiles(images: Sequence[Any], shape: Sequence[int]) -> list[np.ndarray]:
    """uint8 tiles of a generator's samples: 1×H×W or 3×H×W images (a flat D-vector: a square of √D), the
    grid's values stretched to 0..255 together (so brightness compares across tiles)."""
    a = np.asarray(images, dtype=np.float32)
    if a.ndim < 2 or a.shape[0] == 0:
        return []
    if a.ndim == 2:
        side = int(round(math.sqrt(a.shape[1])))
        if side * side != a.shape[1]:
            return []
        a = a.reshape(a.shape[0], 1, side, side)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        return []
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if 0.0 <= lo and hi <= 1.0:
        lo, hi = 0.0, 1.0  # already in [0, 1] (a Sigmoid output): keep the absolute scale
    scaled = np.nan_to_num((a - lo) / max(hi - lo, 1e-12), nan=0.0).clip(0.0, 1.0)
    out = (scaled * 255.0 + 0.5).astype(np.uint8)
    return [t[0] if t.shape[0] == 1 else np.ascontiguousarray(t.transpose(1, 2, 0)) for t in out]


class ImageGrid(QWidget):
    """A grid of small images with a caption each (dataset preview, predictions)."""

    def __init__(self, columns: int = 8, cell: int = 56, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = columns
        self.cell = cell
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(2, 2, 2, 2)
        self._grid.setHorizontalSpacing(4)
        self._grid.setVerticalSpacing(2)
        self.tiles: list[tuple[QLabel, QLabel]] = []

    def set_items(self, items: Sequence[dict[str, Any]]) -> None:
        """items: {"image": uint8 array, "caption": str, "ok": bool | None}."""
        while self._grid.count():
            item = self._grid.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        self.tiles = []
        for i, it in enumerate(items):
            pix = QPixmap.fromImage(to_qimage(it["image"])).scaled(
                self.cell, self.cell, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
            img = QLabel()
            img.setPixmap(pix)
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            ok = it.get("ok")
            border = "#3c9d5d" if ok is True else "#d9534f" if ok is False else "palette(mid)"
            img.setStyleSheet(f"border: 2px solid {border}; border-radius: 3px; padding: 1px;")
            cap = QLabel(str(it.get("caption", "")))
            cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
            small = cap.font()
            small.setPointSizeF(max(6.0, small.pointSizeF() * 0.85))
            cap.setFont(small)
            if ok is not None:  # green/red reads on both themes; other captions keep the palette colour
                cap.setStyleSheet(f"color: {border};")
            cap.setToolTip(str(it.get("tooltip", it.get("caption", ""))))
            r, c = divmod(i, self.columns)
            self._grid.addWidget(img, 2 * r, c)
            self._grid.addWidget(cap, 2 * r + 1, c)
            self.tiles.append((img, cap))


def _heat(frac: float, dark: bool) -> QColor:
    """White→blue (light theme) or dark→blue ramp for a 0..1 cell share."""
    frac = min(1.0, max(0.0, frac))
    lo = (40, 43, 51) if dark else (255, 255, 255)
    hi = (38, 104, 178)
    return QColor(*(round(a + (b - a) * frac) for a, b in zip(lo, hi)))


class ConfusionMatrixView(QTableWidget):
    """Rows: true class, columns: predicted class; colour = share of the row."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setToolTip("Rows: true class · columns: predicted class")
        self.matrix: list[list[int]] = []

    def set_matrix(self, matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> None:
        self.matrix = [[int(v) for v in row] for row in matrix]
        n = len(self.matrix)
        names = [str(c) for c in class_names] if len(class_names) == n else [str(i) for i in range(n)]
        self.setRowCount(n)
        self.setColumnCount(n)
        self.setHorizontalHeaderLabels([f"→ {c}" for c in names])
        self.setVerticalHeaderLabels(names)
        dark = self.palette().color(self.backgroundRole()).lightness() < 128
        for r, row in enumerate(self.matrix):
            total = sum(row) or 1
            for c, v in enumerate(row):
                item = QTableWidgetItem(str(v))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                frac = v / total
                item.setBackground(QBrush(_heat(frac, dark)))
                item.setForeground(QBrush(QColor("white") if frac > 0.5 or dark else QColor("#222")))
                if r == c:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                item.setToolTip(f"true {names[r]}, predicted {names[c]}: {v} ({100 * v / total:.1f}% of row)")
                self.setItem(r, c, item)

    def clear_matrix(self) -> None:
        self.matrix = []
        self.setRowCount(0)
        self.setColumnCount(0)


class RegressionView(QWidget):
    """Validation predictions against true targets, the y = x line and R² / RMSE."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self._restyle()
        item = self.plot.getPlotItem()
        item.getAxis("bottom").setLabel("true")
        item.getAxis("left").setLabel("predicted")
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setAspectLocked(True)  # y = x must look like the diagonal it is
        self.ideal = item.plot(pen=pg.mkPen("#9aa3b0", width=1, style=Qt.PenStyle.DashLine))
        self.scatter = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(78, 121, 167, 170))
        item.addItem(self.scatter)
        self.caption = QLabel("")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.caption)
        lay.addWidget(self.plot, 1)

    def _restyle(self) -> None:
        """Plot colours from the application palette (dark or light), like the live plots."""
        bg, fg = plot_colors(self)
        self.plot.setBackground(bg)
        for side in ("bottom", "left"):
            ax = self.plot.getPlotItem().getAxis(side)
            ax.setPen(pg.mkPen(fg))
            ax.setTextPen(pg.mkPen(fg))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._restyle()
        super().changeEvent(event)

    def set_points(self, reg: dict[str, Any]) -> None:
        t = np.asarray(reg["true"], dtype=np.float64)
        p = np.asarray(reg["pred"], dtype=np.float64)
        self.scatter.setData(t, p)
        finite = np.concatenate([t[np.isfinite(t)], p[np.isfinite(p)]])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self.ideal.setData([lo, hi], [lo, hi])
        self.plot.getPlotItem().getViewBox().autoRange()
        which = " (first of {} targets)".format(reg["n_targets"]) if reg.get("n_targets", 1) > 1 else ""
        self.caption.setText(f"R² {format_metric(reg.get('r2'))}  ·  RMSE {format_metric(reg.get('rmse'))}  ·  "
                             f"MAE {format_metric(reg.get('mae'))}  ·  {t.size} points{which}")

    def clear_points(self) -> None:
        self.scatter.setData([], [])
        self.ideal.setData([], [])
        self.caption.setText("")


class ResultsView(QWidget):
    """Metrics of the last run; confusion matrix and predictions once evaluated."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("No results yet: train the model first.")
        self.summary.setWordWrap(True)
        self.metrics_table = QTableWidget(0, 2)
        self.metrics_table.setHorizontalHeaderLabels(["Metric", "Value"])
        self.metrics_table.verticalHeader().hide()
        self.metrics_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.metrics_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.metrics_table.setMinimumWidth(220)
        self.metrics_table.verticalHeader().setDefaultSectionSize(24)
        self.metrics_table.setAlternatingRowColors(True)
        self.metrics: dict[str, Any] = {}

        self.confusion = ConfusionMatrixView()
        self.confusion_box = QGroupBox("Confusion matrix (validation)")
        QVBoxLayout(self.confusion_box).addWidget(self.confusion)
        self.samples = ImageGrid(columns=8, cell=48)
        self.samples_box = QGroupBox("Validation samples: predicted (true)")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.samples)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        QVBoxLayout(self.samples_box).addWidget(scroll)
        self.confusion_box.hide()
        self.samples_box.hide()
        self.regression = RegressionView()
        self.regression_box = QGroupBox("Predicted vs. true (validation)")
        QVBoxLayout(self.regression_box).addWidget(self.regression)
        self.regression_box.hide()
        # a GAN's generator on fixed noise, after every epoch (the run's "samples" events)
        self.generated = ImageGrid(columns=8, cell=56)
        self.generated_box = QGroupBox("Generated samples")
        tiles_layout = self.generated.layout()
        if tiles_layout is not None:  # the tiles keep their size, top left
            tiles_layout.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        gen_scroll = QScrollArea()
        gen_scroll.setWidget(self.generated)
        gen_scroll.setWidgetResizable(True)
        gen_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        QVBoxLayout(self.generated_box).addWidget(gen_scroll)
        self.generated_box.hide()

        left = QVBoxLayout()
        left.addWidget(self.summary)
        left.addWidget(self.metrics_table, 1)
        right = QVBoxLayout()
        right.addWidget(self.confusion_box, 3)
        right.addWidget(self.samples_box, 2)
        right.addWidget(self.regression_box, 3)
        right.addWidget(self.generated_box, 3)
        lay = QHBoxLayout(self)
        lay.addLayout(left, 1)
        lay.addLayout(right, 2)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def show_metrics(self, metrics: dict[str, Any], summary: str = "") -> None:
        self.metrics = dict(metrics)
        # a figure the run has no value for (accuracy of a GAN, best epoch without validation) gets no row
        rows = [(k, v) for k, v in metrics.items()
                if v is not None and not isinstance(v, (dict, list, tuple)) and k not in HIDDEN]
        terms = metrics.get("loss_terms")
        if isinstance(terms, dict):  # a multi-loss project: each term by its node name (they sum to the loss)
            rows.extend((f"loss_terms.{name}", v) for name, v in terms.items())
        self.metrics_table.setRowCount(len(rows))
        for r, (k, v) in enumerate(rows):
            label = f"Loss term {k.split('.', 1)[1]}" if k.startswith("loss_terms.") else \
                METRIC_LABELS.get(k, k.replace("_", " ").capitalize())
            name = QTableWidgetItem(label)
            name.setData(Qt.ItemDataRole.UserRole, k)
            val = QTableWidgetItem(format_metric(v))
            val.setData(Qt.ItemDataRole.UserRole, v)
            val.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.metrics_table.setItem(r, 0, name)
            self.metrics_table.setItem(r, 1, val)
        if summary:
            self.summary.setText(summary)

    def metric_text(self, key: str) -> str | None:
        """The text shown for metric ``key`` (None if absent)."""
        for r in range(self.metrics_table.rowCount()):
            name, value = self.metrics_table.item(r, 0), self.metrics_table.item(r, 1)
            if name is not None and value is not None and name.data(Qt.ItemDataRole.UserRole) == key:
                return value.text()
        return None

    def show_evaluation(self, ev: dict[str, Any]) -> None:
        cm = ev.get("confusion")
        if cm:
            self.confusion.set_matrix(cm, ev.get("class_names") or [])
            self.confusion_box.show()
        else:
            self.confusion.clear_matrix()
            self.confusion_box.hide()
        reg = ev.get("regression")
        if reg and reg.get("true"):
            self.regression.set_points(reg)
            self.regression_box.show()
        else:
            self.regression.clear_points()
            self.regression_box.hide()
        samples = ev.get("samples") or []
        if samples:
            self.samples.set_items([{"image": s["image"], "caption": f"{s['pred']} ({s['true']})",
                                     "ok": bool(s.get("ok")),
                                     "tooltip": f"predicted {s['pred']}, true {s['true']}"} for s in samples])
            self.samples_box.show()
        else:
            self.samples.set_items([])
            self.samples_box.hide()

    def show_generated(self, ev: dict[str, Any]) -> None:
        """A ``samples`` event (plain nested lists): the generator's images of that epoch, in one grid."""
        tiles = generated_tiles(ev.get("images") or [], ev.get("shape") or [])
        self.generated.set_items([{"image": t, "caption": ""} for t in tiles])
        self.generated_box.setTitle(f"Generated samples (epoch {ev.get('epoch')})")
        self.generated_box.setVisible(bool(tiles))

    def clear_generated(self) -> None:
        self.generated.set_items([])
        self.generated_box.hide()

    def clear(self, keep_generated: bool = False) -> None:
        self.metrics = {}
        self.metrics_table.setRowCount(0)
        self.summary.setText("No results yet: train the model first.")
        self.show_evaluation({})
        if not keep_generated:
            self.clear_generated()
