"""Live training plots: loss and accuracy per epoch, loss per batch, runs overlaid.

Each curve is created once per run and fed with ``setData`` on numpy buffers
that grow by doubling, so an update is O(new points) in Python. Updates are
coalesced: signals only append to buffers and mark the plots dirty; a 50 ms
timer redraws, so the GUI never repaints faster than the eye can see whatever
rate events arrive at. The per-batch curve uses peak downsampling and clip to
view, which keeps a 10^6-point curve smooth.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QGraphicsItem, QGridLayout, QSizePolicy, QVBoxLayout, QWidget

#: distinct, colour-blind friendly run colours (Tableau 10)
RUN_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
              "#9c755f", "#bab0ac")
#: Redraw tick. Each tick updates at most ONE plot (round robin over the dirty ones), so
#: one event-loop iteration never repaints all three: a pyqtgraph repaint is GUI-thread
#: Python that competes with the training loop for the GIL (see bench/bench_gui_latency.py).
REDRAW_INTERVAL_MS = 100
#: Shortest time between two repaints of one plot. A repaint costs ~1 ms of GUI-thread
#: Python (axes cached as pixmaps), time the training loop waits for the GIL: the batch
#: curve 3 times a second, and epoch points once a second when epochs end faster than
#: that (the sample models' epochs can end 25 times a second; slower epochs are drawn
#: as each one ends).
MIN_REFRESH_S = {"batch": 0.33, "loss": 1.0, "acc": 1.0}
#: ... and never more often than keeps each plot's repaints under this share of wall time
PAINT_BUDGET = 0.03
#: which curves live in which plot
_PLOT_CURVES = {"loss": ("train_loss", "val_loss"), "acc": ("train_acc", "val_acc"), "batch": ("batch_loss",)}
#: a multi-phase run's curves: "phase_epoch:<optimizer>" in the epoch loss plot, "phase_batch:<optimizer>" per batch
_PHASE_PREFIX = {"loss": "phase_epoch:", "batch": "phase_batch:"}
#: the phases' colours (dotted lines), the same in every run
PHASE_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#8c564b")


def _phase_ys(runs: Any, plot: str) -> list[np.ndarray]:
    return [s.y for r in runs for k, s in r.phase_series.items() if k.startswith(_PHASE_PREFIX[plot]) and s.n]


def plot_colors(widget: QWidget) -> tuple[QColor, QColor]:
    """(background, foreground) of a plot matching the widget's palette, dark or light."""
    dark = widget.palette().color(QPalette.ColorRole.Window).lightness() < 128
    return (QColor("#1b1e23"), QColor("#c3c8d0")) if dark else (QColor("#ffffff"), QColor("#30343b"))


class IntegerAxis(pg.AxisItem):
    """Epoch axis: ticks only on whole numbers."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:  # noqa: N802,N803
        levels = [(max(1.0, float(round(sp))), off) for sp, off in super().tickSpacing(minVal, maxVal, size)
                  if sp >= 0.5]
        return levels[:1] or [(1.0, 0.0)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        return [str(int(round(v))) for v in values]


class TimedPlotWidget(pg.PlotWidget):
    """A PlotWidget that measures its own repaints (a moving average, in seconds).

    A pyqtgraph repaint runs Python paint code and keeps the GIL for most of
    its duration, stalling a training loop on another thread, so LivePlots
    spaces repaints by their measured cost.
    """

    paint_cost = 0.004  # prior: a few ms per repaint

    def paintEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        t0 = time.perf_counter()
        super().paintEvent(ev)
        self.paint_cost = 0.8 * self.paint_cost + 0.2 * (time.perf_counter() - t0)


class GrowingSeries:
    """x/y float64 buffers that double when full; ``x``/``y`` are views of the filled part."""

    def __init__(self, capacity: int = 64) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        if need <= self._x.size:
            return
        cap = max(need, 2 * self._x.size)
        for name in ("_x", "_y"):
            buf = np.empty(cap, dtype=np.float64)
            buf[:self.n] = getattr(self, name)[:self.n]
            setattr(self, name, buf)

    def append(self, x: float, y: float) -> None:
        self._reserve(1)
        self._x[self.n] = x
        self._y[self.n] = y
        self.n += 1

    def extend(self, xs: Any, ys: Any) -> None:
        xs = np.asarray(xs, dtype=np.float64).reshape(-1)
        ys = np.asarray(ys, dtype=np.float64).reshape(-1)
        k = min(xs.size, ys.size)
        self._reserve(k)
        self._x[self.n:self.n + k] = xs[:k]
        self._y[self.n:self.n + k] = ys[:k]
        self.n += k

    @property
    def x(self) -> np.ndarray:
        return self._x[:self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[:self.n]


@dataclass
class RunCurves:
    """The data and curves of one training run."""

    index: int
    name: str
    color: str
    classification: bool
    epoch_offset: int = 0
    step_offset: int = 0
    train_loss: GrowingSeries = field(default_factory=GrowingSeries)
    val_loss: GrowingSeries = field(default_factory=GrowingSeries)
    train_acc: GrowingSeries = field(default_factory=GrowingSeries)
    val_acc: GrowingSeries = field(default_factory=GrowingSeries)
    batch_loss: GrowingSeries = field(default_factory=lambda: GrowingSeries(1024))
    curves: dict[str, pg.PlotDataItem] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    drawn: dict[str, int] = field(default_factory=dict)  # points per curve at the last setData
    planned_epochs: int = 0  # epochs this run will train (fixes the epoch axis in advance)
    planned_steps: int = 0  # optimizer steps this run will train, once its start event tells (the batch axis)
    #: a multi-phase run (GAN): each phase's loss, keyed like its curve ("phase_epoch:<name>", "phase_batch:<name>")
    phase_series: dict[str, GrowingSeries] = field(default_factory=dict)


def _finite(v: Any) -> float:
    """NaN for missing values: pyqtgraph leaves a gap (connect='finite')."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


class LivePlots(QWidget):
    """Three plots: epoch loss, epoch accuracy (classification) and batch loss."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[RunCurves] = []
        self._dirty: set[str] = set()   # plots ("loss", "acc", "batch") with undrawn points
        self._next = 0                  # round-robin position
        self._drawn_at: dict[str, float] = {}  # plot -> monotonic time of its last timer redraw
        self._bg, self._fg = self._colors()
        self._titles: dict[pg.PlotWidget, str] = {}
        self._grids: dict[pg.PlotWidget, bool] = {}

        self.loss_plot = self._make_plot("Loss per epoch", "epoch", "loss", integer_x=True)
        self.acc_plot = self._make_plot("Accuracy per epoch", "epoch", "accuracy", integer_x=True,
                                        legend_offset=(-8, -8))
        self.batch_plot = self._make_plot("Loss per batch", "step", "loss", grid=False, legend_columns=4)
        # Ranges are managed here, in coarse steps (see _update_range), not auto-ranged on
        # every update: a changed range makes pyqtgraph rebuild the axes, the costliest part
        # of a repaint. Zooming or panning by hand hands the plot back to the user.
        self._plots = {"loss": self.loss_plot, "acc": self.acc_plot, "batch": self.batch_plot}
        self._ranges: dict[str, tuple[float, float, float, float]] = {}
        self._user_range: set[str] = set()
        for key, w in self._plots.items():
            vb = w.getPlotItem().getViewBox()
            vb.disableAutoRange()
            vb.sigRangeChangedManually.connect(lambda *_, k=key: self._user_range.add(k))
        self.acc_plot.setYRange(0.0, 1.0, padding=0.02)
        self.acc_plot.setXLink(self.loss_plot)

        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        grid.addWidget(self.loss_plot, 0, 0)
        grid.addWidget(self.acc_plot, 0, 1)
        grid.addWidget(self.batch_plot, 1, 0, 1, 2)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(grid, 1)

        # runs only while some plot has undrawn points: an idle window never wakes for it
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)

    def _colors(self) -> tuple[QColor, QColor]:
        return plot_colors(self)

    def _make_plot(self, title: str, xlabel: str, ylabel: str, integer_x: bool = False,
                   legend_offset: tuple[int, int] = (-8, 8), grid: bool = True,
                   legend_columns: int = 2) -> pg.PlotWidget:
        axes = {"bottom": IntegerAxis("bottom")} if integer_x else None
        w = TimedPlotWidget(background=self._bg, axisItems=axes)
        w.setMinimumSize(220, 150)
        w.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        item = w.getPlotItem()
        item.getAxis("bottom").setLabel(xlabel)
        item.getAxis("left").setLabel(ylabel)
        for side in ("bottom", "left"):
            ax = item.getAxis(side)
            ax.setStyle(maxTickLevel=1)  # grid lines for major/minor ticks only: half the cost
            ax.enableAutoSIPrefix(False)  # "loss (x0.001)" reads worse than 0.2
            # Axes (with their grid lines) change only when the range does, yet every new
            # point repainted them through Python; as a cached pixmap a repaint is a C++
            # blit: the epoch plots' repaint cost drops from ~5 ms to ~1.2 ms.
            ax.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # side by side (one row per run: "train | val"), so the legend covers less of a short plot
        item.addLegend(offset=legend_offset, colCount=legend_columns)
        item.legend.hide()  # an empty legend still draws its frame: shown with the first run
        item.setMenuEnabled(True)
        self._titles[w] = title
        # Grid lines are drawn by the axes and cost ~3× the repaint time; the batch
        # plot repaints continuously, so it goes without (measured in bench_gui_latency).
        self._grids[w] = grid
        self._style_plot(w)
        return w

    def _style_plot(self, w: pg.PlotWidget) -> None:
        fg = self._fg.name()
        w.setBackground(self._bg)
        item = w.getPlotItem()
        item.setTitle(f"<span style='color:{fg};font-size:10pt;font-weight:600'>{self._titles[w]}</span>")
        for side in ("bottom", "left"):
            ax = item.getAxis(side)
            ax.setPen(pg.mkPen(self._fg))
            ax.setTextPen(pg.mkPen(self._fg))
            ax.setLabel(ax.labelText, color=fg)
        item.showGrid(x=self._grids[w], y=self._grids[w], alpha=0.15)
        legend = item.legend
        if legend is not None:
            legend.setLabelTextColor(self._fg)
            legend.setLabelTextSize("8pt")
            legend.setBrush(pg.mkBrush(self._bg.red(), self._bg.green(), self._bg.blue(), 210))
            legend.setPen(pg.mkPen(self._fg.red(), self._fg.green(), self._fg.blue(), 60))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        # Follow the editor's dark/light switch (it sets the application palette).
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            colors = self._colors()
            if colors != (self._bg, self._fg):
                self._bg, self._fg = colors
                for w in self._titles:
                    self._style_plot(w)
                for run in self.runs:
                    for key in ("val_loss", "val_acc"):
                        if key in run.curves:
                            run.curves[key].setSymbolBrush(self._bg)
        super().changeEvent(event)

    # --- runs -----------------------------------------------------------------
    def new_run(self, classification: bool, continue_from: RunCurves | None = None,
                epochs: int = 0, index: int | None = None) -> RunCurves:
        """Start a run: its curves get the next colour and a legend entry ``run N``.

        ``epochs``: how many epochs the run will train, so the epoch axis is laid out once.
        ``index``: the run's number as the dock counts it (default: the next one here).
        """
        idx = int(index) if index is not None else len(self.runs) + 1
        color = RUN_COLORS[len(self.runs) % len(RUN_COLORS)]
        run = RunCurves(idx, f"run {idx}", color, classification, planned_epochs=max(0, int(epochs)))
        self._user_range.clear()  # a new run: show all of it again
        for w in self._plots.values():
            w.getPlotItem().getViewBox().disableAutoRange()
        if continue_from is not None:  # continued training goes on where the last run ended
            run.epoch_offset = continue_from.epoch_offset + len(continue_from.epochs)
            run.step_offset = int(continue_from.batch_loss.x[-1]) if continue_from.batch_loss.n else 0
        solid = pg.mkPen(color, width=2)
        dashed = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine)
        sym = dict(symbol="o", symbolSize=6, symbolPen=pg.mkPen(color), connect="finite")
        lp, ap, bp = self.loss_plot.getPlotItem(), self.acc_plot.getPlotItem(), self.batch_plot.getPlotItem()
        run.curves["train_loss"] = lp.plot(pen=solid, symbolBrush=color, name=f"{run.name} train", **sym)
        run.curves["val_loss"] = lp.plot(pen=dashed, symbolBrush=self._bg, name=f"{run.name} val", **sym)
        if classification:
            run.curves["train_acc"] = ap.plot(pen=solid, symbolBrush=color, name=f"{run.name} train", **sym)
            run.curves["val_acc"] = ap.plot(pen=dashed, symbolBrush=self._bg, name=f"{run.name} val", **sym)
        batch = bp.plot(pen=pg.mkPen(color, width=1), name=run.name)
        batch.setDownsampling(auto=True, method="peak")
        batch.setClipToView(True)
        run.curves["batch_loss"] = batch
        self.runs.append(run)
        self.acc_plot.setVisible(any(r.classification for r in self.runs))
        for w in self._plots.values():
            w.getPlotItem().legend.setVisible(bool(w.getPlotItem().legend.items))
        return run

    @property
    def current(self) -> RunCurves | None:
        return self.runs[-1] if self.runs else None

    def plan_steps(self, steps: int) -> None:
        """The current run will train ``steps`` batches in all: the batch axis ends there, not at a round
        number past it."""
        run = self.current
        if run is not None and steps > 0:
            run.planned_steps = int(steps)
            self._mark_dirty("batch")

    def add_batch(self, event: dict[str, Any]) -> None:
        run = self.current
        if run is None:
            return
        step = event.get("global_step")
        if step is None:
            step = run.batch_loss.n + 1
        run.batch_loss.append(run.step_offset + float(step), _finite(event.get("loss")))
        self._mark_dirty("batch")

    def add_batch_points(self, steps: Any, losses: Any) -> None:
        """Bulk append (used to load a long history at once)."""
        run = self.current
        if run is None:
            return
        run.batch_loss.extend(np.asarray(steps, dtype=np.float64) + run.step_offset, losses)
        self._mark_dirty("batch")

    def add_epoch(self, event: dict[str, Any]) -> None:
        run = self.current
        if run is None:
            return
        run.epochs.append(dict(event))
        e = run.epoch_offset + float(event.get("epoch", len(run.epochs)))
        run.train_loss.append(e, _finite(event.get("train_loss")))
        run.val_loss.append(e, _finite(event.get("val_loss")))
        if run.classification:
            run.train_acc.append(e, _finite(event.get("train_accuracy")))
            run.val_acc.append(e, _finite(event.get("val_accuracy")))
        self._mark_dirty("loss", "acc")  # drawn by a timer tick, like batches (epochs can be fast)

    def add_phases(self, event: dict[str, Any]) -> None:
        """A ``phases`` event: each phase's loss as its own curve, in the epoch loss plot (scope "epoch") or
        the batch plot ("batch"), dotted, one colour per phase."""
        run = self.current
        if run is None:
            return
        epoch_scope = event.get("scope") == "epoch"
        plot = "loss" if epoch_scope else "batch"
        if epoch_scope:
            x = run.epoch_offset + float(event.get("epoch", 0) or 0)
        else:
            x = run.step_offset + float(event.get("global_step", 0) or 0)
        losses = event.get("losses") or {}
        for i, (name, value) in enumerate(losses.items()):
            key = f"{_PHASE_PREFIX[plot]}{name}"
            series = run.phase_series.get(key)
            if series is None:
                series = run.phase_series[key] = GrowingSeries(64 if epoch_scope else 1024)
                color = PHASE_COLORS[i % len(PHASE_COLORS)]
                pen = pg.mkPen(color, width=2 if epoch_scope else 1, style=Qt.PenStyle.DotLine)
                item = self._plots[plot].getPlotItem()
                if epoch_scope:
                    curve = item.plot(pen=pen, symbol="t", symbolSize=6, symbolPen=pg.mkPen(color),
                                      symbolBrush=color, connect="finite", name=f"{run.name} {name}")
                else:
                    curve = item.plot(pen=pen, name=f"{run.name} {name}")
                    curve.setDownsampling(auto=True, method="peak")
                    curve.setClipToView(True)
                run.curves[key] = curve
                item.legend.setVisible(True)
            series.append(x, _finite(value))
        self._mark_dirty(plot)

    def _mark_dirty(self, *plots: str) -> None:
        self._dirty.update(plots)
        if not self._timer.isActive():
            self._timer.start()

    def _tick(self) -> None:
        if not self._dirty:
            self._timer.stop()
            return
        order = ("batch", "loss", "acc")
        now = time.monotonic()
        for i in range(len(order)):
            plot = order[(self._next + i) % len(order)]
            cost = getattr(self._plots[plot], "paint_cost", 0.0)
            wait = max(MIN_REFRESH_S[plot], cost / PAINT_BUDGET)
            if plot in self._dirty and now - self._drawn_at.get(plot, 0.0) >= wait:
                self._next = (self._next + i + 1) % len(order)
                self._drawn_at[plot] = now
                self.redraw((plot,))
                return

    def redraw(self, plots: tuple[str, ...] = ("loss", "acc", "batch")) -> None:
        """Push new points of the given plots (default: all) into their curves."""
        todo = self._dirty.intersection(plots)
        if not todo:
            return
        self._dirty.difference_update(todo)
        for run in self.runs:
            keys = [k for p in todo for k in _PLOT_CURVES[p]]
            keys += [k for k in run.phase_series if any(k.startswith(_PHASE_PREFIX[p]) for p in todo if p != "acc")]
            for key in keys:
                curve = run.curves.get(key)
                series = run.phase_series[key] if key in run.phase_series else getattr(run, key)
                if curve is None or run.drawn.get(key) == series.n:
                    continue  # no such curve, or unchanged since the last redraw
                curve.setData(series.x, series.y)
                run.drawn[key] = series.n
            has_val = bool(np.isfinite(run.val_loss.y).any()) if run.val_loss.n else False
            for key in ("val_loss", "val_acc"):
                if key in run.curves:
                    run.curves[key].setVisible(has_val)
        for plot in todo:
            self._update_range(plot)

    def _update_range(self, plot: str) -> None:
        """Grow the plot's range in "nice" steps so that most updates keep the axes as they are."""
        vb = self._plots[plot].getPlotItem().getViewBox()
        if plot in self._user_range or any(vb.autoRangeEnabled()) or not self.runs:
            return  # the user zoomed/panned, or asked for pyqtgraph's auto range ("A" button)
        if plot == "batch":
            xs = [r.batch_loss.x[-1] for r in self.runs if r.batch_loss.n]
            ys = np.concatenate([r.batch_loss.y for r in self.runs if r.batch_loss.n] + _phase_ys(self.runs, "batch")
                                or [np.zeros(0)])
            last_x = max(xs, default=1.0)
            ends = [float(r.step_offset + r.planned_steps) if r.planned_steps else float(r.batch_loss.x[-1])
                    for r in self.runs if r.planned_steps or (r is not self.current and r.batch_loss.n)]
            if self.current is not None and not self.current.planned_steps:
                x0, x1 = 0.0, _nice_ceil(last_x * 1.1)  # grown in nice steps: most batches keep the axis
            else:  # laid out once, like the epoch axis: it ends where the training does
                x0, x1 = 0.0, max(ends + [last_x])
        else:
            last = max((r.epoch_offset + max(r.planned_epochs, len(r.epochs)) for r in self.runs), default=1)
            x0, x1 = 0.5, max(1, last) + 0.5
            series = [getattr(r, k) for r in self.runs for k in _PLOT_CURVES[plot]]
            ys = np.concatenate([s.y for s in series if s.n] + (_phase_ys(self.runs, "loss") if plot == "loss" else [])
                                or [np.zeros(0)])
        ys = ys[np.isfinite(ys)]
        if plot == "acc":
            y0, y1 = 0.0, 1.0
        elif ys.size:
            lo, hi = float(ys.min()), float(ys.max())
            y0 = 0.0 if lo >= 0 else -_nice_ceil(-lo)
            y1 = _nice_ceil(hi) if hi > 0 else 0.0
            if y1 <= y0:
                y1 = y0 + 1.0
        else:
            y0, y1 = 0.0, 1.0
        target = (x0, x1, y0, y1)
        if self._ranges.get(plot) != target:
            self._ranges[plot] = target
            vb.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0.02)

    def clear(self) -> None:
        for w in (self.loss_plot, self.acc_plot, self.batch_plot):
            item = w.getPlotItem()
            item.clear()
            if item.legend is not None:
                item.legend.clear()
                item.legend.hide()
        self.runs.clear()
        self._ranges.clear()
        self._user_range.clear()

    # --- export ------------------------------------------------------------------
    def export_png(self, path: str | Path, width: int = 1200) -> list[Path]:
        """One PNG per visible plot: ``<stem>-loss.png``, ``-accuracy.png``, ``-batch.png``."""
        import pyqtgraph.exporters as exporters

        self.redraw()
        p = Path(path)
        stem = p.with_suffix("")
        written: list[Path] = []
        for tag, w in (("loss", self.loss_plot), ("accuracy", self.acc_plot), ("batch", self.batch_plot)):
            if not w.isVisibleTo(self) and tag == "accuracy":
                continue
            out = Path(f"{stem}-{tag}.png")
            exp = exporters.ImageExporter(w.getPlotItem())
            exp.parameters()["width"] = width
            exp.export(str(out))
            written.append(out)
        return written

    def export_csv(self, path: str | Path) -> Path:
        """Long format: run, kind (epoch|batch), x, and every metric column."""
        p = Path(path)
        cols = ["run", "kind", "x", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr",
                "seconds", "batch_loss"]
        import io

        from netstudio.fileio import atomic_write

        f = io.StringIO(newline="")
        w = csv.writer(f)
        w.writerow(cols)
        for run in self.runs:
            for ev in run.epochs:
                x = run.epoch_offset + int(ev.get("epoch", 0))
                w.writerow([run.name, "epoch", x] + [_cell(ev.get(c)) for c in cols[3:9]] + [""])
            for x, y in zip(run.batch_loss.x.tolist(), run.batch_loss.y.tolist()):
                w.writerow([run.name, "batch", int(x)] + [""] * 6 + [_cell(y)])
        atomic_write(p, f.getvalue())  # whole or not at all; follows the umask like every export
        return p


def _nice_ceil(v: float) -> float:
    """Smallest 1, 2, 2.5 or 5 × 10^k that is ≥ v (v > 0)."""
    if not math.isfinite(v) or v <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * base >= v * (1 - 1e-12):
            return m * base
    return 10.0 * base


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)
