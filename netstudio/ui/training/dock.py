"""The Training dock: dataset summary, settings, run controls, live plots, results.

The dock is widgets over two explicit dependencies: the :class:`Document` it
trains (project, graph, training settings; their changes arrive as the
document's signals) and the :class:`TrainingSession` that owns the runs
(state, threads, trained model, results; its signals drive the controls,
progress and plots). It never reaches into the window it is docked in: what
the editor should do (select a node, show a message) it emits as signals.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QDoubleSpinBox, QFrame, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton, QScrollArea, QSizePolicy,
                               QSpinBox, QSplitter, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from netstudio.errors import NetStudioError
from netstudio.training.config import TrainConfig
from netstudio.ui.document import Document
from netstudio.ui.training import exporting
from netstudio.ui.training.plots import LivePlots
from netstudio.ui.training.results import ImageGrid, ResultsView, format_metric
from netstudio.ui.training.session import RunEnd, RunState, TrainedModel, TrainingSession

#: The progress bar and speed label are redrawn by a timer from the newest event, not per
#: event: QProgressBar.setValue repaints synchronously, and GUI-thread time is taken from
#: the training loop (GIL). 4 Hz is plenty to read a number.
PROGRESS_REFRESH_MS = 250


def _run_summary(metrics: dict[str, Any]) -> str:
    """One line under the progress bar once a run has ended: its final figures."""
    parts = []
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss"), ("val_accuracy", "val accuracy")):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            parts.append(f"{label} {format_metric(float(v))}")
    parts.append(_rate_text(metrics.get("samples_per_s")))
    return _figures(parts)


def _rate_text(sps: Any) -> str:
    """"12,345 samples/s", or "" when there is no finite rate."""
    return f"{float(sps):,.0f} samples/s" if isinstance(sps, (int, float)) and math.isfinite(sps) else ""


def _figures(parts: Any) -> str:
    """Rich text "a · b · c" that wraps between figures, never inside one ("samples/s")."""
    return " · ".join(f"<nobr>{_esc(p)}</nobr>" for p in parts if p)


def _fmt_duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(s) or s < 0:
        return "—"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class WrapLabel(QLabel):
    """A word-wrapped label that always gets the height its text needs at its width.

    A wrapped QLabel's size hint assumes a guess at its width; in a column that is
    short of room the layout then squeezes it and the last line is cut off.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt API
        super().setText(text)
        self._fit()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self.width() <= 0:
            return
        h = self.heightForWidth(self.width()) if self.text() else 0
        if h >= 0 and h != self.minimumHeight():
            self.setMinimumHeight(h)


class TrainingDock(QDockWidget):
    """Train the current project and watch it learn."""

    training_started = Signal(int)        # run index
    training_finished = Signal(object)    # outcome dict, after the thread has ended and the UI is updated
    evaluation_finished = Signal(object)  # evaluation dict (confusion matrix, samples)
    state_changed = Signal(object)        # RunState (a StrEnum: idle | starting | running | ...)
    #: a failure names a node: the editor may select it
    node_activated = Signal(str)
    #: a line for the editor's status bar
    message = Signal(str)

    def __init__(self, document: Document, session: TrainingSession | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        self.setObjectName("TrainingDock")
        self.document = document
        self.session = session if session is not None else TrainingSession(self)
        self.batch_events = 0        # batch events shown (after throttling)
        self.last_batch: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self._metric: str | None = None
        self._loading_settings = False
        self._editing_settings = False
        self._val_applies = True
        #: the project/graph changed while a run was busy: catch up once it is idle
        self._stale_project = False
        self._stale_graph = False
        self._running_text = "Training"
        self._paused_text = ""
        self._run_started_plot = False
        self._export_dialog: Any = None
        self._pending_progress: dict[str, Any] | None = None  # newest batch/epoch event not yet shown
        self._steps_per_epoch: Any = None  # from the run's start event

        self._build_ui()
        from PySide6.QtCore import QSettings

        self.more_button.setChecked(str(QSettings().value("training/more_settings", False)).lower() == "true")
        self.load_settings()
        self.refresh_dataset()
        self._progress_timer = QTimer(self)  # runs only while training
        self._progress_timer.setInterval(PROGRESS_REFRESH_MS)
        self._progress_timer.timeout.connect(self._refresh_progress)
        self._connect()
        self._show_state(self.session.state)

    # ======================================================================
    # UI
    # ======================================================================
    def _build_ui(self) -> None:
        root = QWidget()
        outer = QVBoxLayout(root)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.setSpacing(6)

        # error banner (hidden until something goes wrong)
        self.error_banner = QFrame()
        self.error_banner.setObjectName("errorBanner")
        self._style_banner()
        bl = QHBoxLayout(self.error_banner)
        bl.setContentsMargins(8, 4, 4, 4)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.clear_error)
        bl.addWidget(self.error_label, 1)
        bl.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.error_banner.hide()
        outer.addWidget(self.error_banner)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        outer.addWidget(split, 1)

        # --- left column: the dataset summary scrolls; settings, controls and progress
        # stay in view below it, however short the dock is (a small screen, a tall canvas)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 4, 0)
        ll.setSpacing(8)
        pinned = QWidget()
        pinl = QVBoxLayout(pinned)
        pinl.setContentsMargins(0, 4, 4, 0)
        pinl.setSpacing(6)

        ds_box = QGroupBox("Dataset")
        dl = QVBoxLayout(ds_box)
        self.dataset_label = QLabel("—")
        self.dataset_label.setWordWrap(True)
        self.dataset_label.setTextFormat(Qt.TextFormat.RichText)
        dl.addWidget(self.dataset_label)
        self.preview_grid = ImageGrid(columns=8, cell=22)
        dl.addWidget(self.preview_grid)
        ll.addWidget(ds_box)

        set_box = QGroupBox("Settings")
        form = QGridLayout(set_box)
        form.setHorizontalSpacing(8)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1_000_000)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1_000_000)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_147_483_647)
        self.device_combo = QComboBox()
        self.device_combo.setToolTip("Where the model trains; Auto picks a GPU when there is one")
        self.device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device_combo.setMinimumContentsLength(8)
        for row, col, text, w in ((0, 0, "Epochs", self.epochs_spin), (0, 2, "Batch", self.batch_spin),
                                  (1, 0, "Device", self.device_combo), (1, 2, "Seed", self.seed_spin)):
            label = QLabel(text)
            label.setBuddy(w)
            form.addWidget(label, row, col)
            form.addWidget(w, row, col + 1)
        form.setColumnStretch(1, 3)
        form.setColumnStretch(3, 2)
        self.batch_spin.setToolTip("Samples per optimisation step")
        self.seed_spin.setToolTip("Random seed: same seed, same data order and initial weights")
        for spin in (self.epochs_spin, self.batch_spin, self.seed_spin):
            spin.valueChanged.connect(self._settings_edited)
        self.device_combo.currentIndexChanged.connect(self._settings_edited)
        # the less common settings fold out under the four everyday ones (the dock stays short)
        self.more_button = QToolButton()
        self.more_button.setCheckable(True)
        self.more_button.setAutoRaise(True)
        self.more_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more_button.setArrowType(Qt.ArrowType.RightArrow)
        self.more_button.setText("More: early stopping, validation, threads, clipping…")
        self.more_button.setToolTip("Show every training setting of the project")
        form.addWidget(self.more_button, 2, 0, 1, 4)
        pinl.addWidget(set_box)
        self.more_settings = self._build_more_settings()
        self.more_settings.hide()
        pinl.addWidget(self.more_settings)
        self.more_button.toggled.connect(self._show_more_settings)

        self.train_button = QPushButton("▶  Train")
        self.train_button.setToolTip("Train from freshly initialised weights")
        self.train_button.setDefault(True)
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Train more epochs starting from the current weights")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("■  Stop")
        self.stop_button.setToolTip("Stop after the current batch, keeping the weights so far")
        self.reset_button = QPushButton("Reset weights")
        self.reset_button.setToolTip("Forget the trained weights (the next run starts from scratch)")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the trained model (.pt, weights, .pt2, .py, ONNX)")
        self.train_button.clicked.connect(self.start_training)
        self.continue_button.clicked.connect(self.continue_training)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        self.reset_button.clicked.connect(self.reset_weights)
        self.export_button.clicked.connect(self.open_export_dialog)
        row1 = QHBoxLayout()
        row1.addWidget(self.train_button, 2)
        row1.addWidget(self.continue_button, 1)
        row2 = QHBoxLayout()
        for b in (self.pause_button, self.resume_button, self.stop_button):
            row2.addWidget(b)
        row3 = QHBoxLayout()
        row3.addWidget(self.reset_button)
        row3.addWidget(self.export_button)
        for r in (row1, row2, row3):
            pinl.addLayout(r)

        prog_box = QGroupBox("Progress")
        pl = QVBoxLayout(prog_box)
        # long messages ("Run 2 stopped: Stopped by the user after 1 complete epoch") wrap, never clip
        self.status_label = WrapLabel("Ready")
        # fonts, not style sheets: a style sheet would freeze the text colour across theme switches
        bold = self.status_label.font()
        bold.setBold(True)
        self.status_label.setFont(bold)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("—")
        self.speed_label = WrapLabel("")  # the end-of-run summary can be longer than the column
        self.speed_label.setTextFormat(Qt.TextFormat.RichText)
        pl.addWidget(self.status_label)
        pl.addWidget(self.progress_bar)
        pl.addWidget(self.speed_label)
        pinl.addWidget(prog_box)
        ll.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        column = QWidget()
        cl = QVBoxLayout(column)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(scroll, 1)
        cl.addWidget(pinned)
        column.setMinimumWidth(350)
        split.addWidget(column)

        # --- right: plots and results ---------------------------------------------
        self.tabs = QTabWidget()
        self.plots = LivePlots()
        plot_page = QWidget()
        pp = QVBoxLayout(plot_page)
        pp.setContentsMargins(2, 2, 2, 2)
        pp.addWidget(self.plots, 1)
        exp_row = QHBoxLayout()
        exp_row.addStretch(1)
        self.export_png_button = QPushButton("Save plots as PNG…")
        self.export_csv_button = QPushButton("Save history as CSV…")
        self.clear_plots_button = QPushButton("Clear runs")
        self.export_png_button.clicked.connect(self._export_png_clicked)
        self.export_csv_button.clicked.connect(self._export_csv_clicked)
        self.clear_plots_button.clicked.connect(self.plots.clear)
        for b in (self.clear_plots_button, self.export_csv_button, self.export_png_button):
            exp_row.addWidget(b)
        pp.addLayout(exp_row)
        self.results = ResultsView()
        self.tabs.addTab(plot_page, "Live plots")
        self.tabs.addTab(self.results, "Results")
        from netstudio.ui.training.runs_panel import RunsPanel

        self.runs_panel = RunsPanel(self.document, self.session)  # every run kept beside the project
        self.tabs.addTab(self.runs_panel, "Runs")
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([360, 900])

        root.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setWidget(root)

        # actions the main window can show in its toolbar/menus
        self.train_action = QAction("Train", self)
        self.train_action.setShortcut(QKeySequence("Ctrl+T"))
        self.train_action.setToolTip("Train the model (Ctrl+T)")
        self.train_action.triggered.connect(self.start_training)
        self.stop_action = QAction("Stop", self)
        self.stop_action.setToolTip("Stop training after the current batch")
        self.stop_action.triggered.connect(self.stop)
        self.export_action = QAction("Export trained model…", self)
        self.export_action.triggered.connect(self.open_export_dialog)

    def _build_more_settings(self) -> QGroupBox:
        """The rest of the project's training settings (below the dataset; it scrolls in a short dock)."""
        box = QGroupBox("More settings")
        box.setFlat(True)
        grid = QGridLayout(box)
        grid.setHorizontalSpacing(8)
        self.patience_spin = QSpinBox()
        self.patience_spin.setRange(0, 1_000_000)
        self.patience_spin.setSpecialValueText("off")
        self.patience_spin.setSuffix(" epochs")
        self.patience_spin.setToolTip("Early stopping: stop when the validation loss has not improved for this "
                                      "many epochs (off: train every epoch)")
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setDecimals(2)
        self.val_spin.setToolTip("Share of the dataset held out for validation (the Dataset node's "
                                 "val_fraction)")
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 1024)
        self.threads_spin.setSpecialValueText("auto")
        self.threads_spin.setToolTip("CPU threads for training; auto adapts to the machine and its load")
        self.shuffle_check = QCheckBox("Shuffle")
        self.shuffle_check.setToolTip("Shuffle the training samples every epoch")
        self.keep_best_check = QCheckBox("Keep best")
        self.keep_best_check.setToolTip("At the end, restore the weights of the epoch with the lowest "
                                        "validation loss")
        self.fast_path_check = QCheckBox("CUDA graph")
        self.fast_path_check.setToolTip("Fast path: replay the whole training step as a captured CUDA graph "
                                        "when the model allows it (GPU only)")
        for row, col, text, w in ((0, 0, "Early stop", self.patience_spin), (0, 2, "Validation", self.val_spin),
                                  (1, 0, "Threads", self.threads_spin)):
            label = QLabel(text)
            label.setBuddy(w)
            grid.addWidget(label, row, col)
            grid.addWidget(w, row, col + 1)
        grid.addWidget(self.fast_path_check, 1, 2, 1, 2)
        checks = QHBoxLayout()
        checks.addWidget(self.shuffle_check)
        checks.addWidget(self.keep_best_check)
        checks.addStretch(1)
        grid.addLayout(checks, 2, 0, 1, 4)
        self._build_step_controls(grid, 3)
        grid.setColumnStretch(1, 3)
        grid.setColumnStretch(3, 2)
        for spin in (self.patience_spin, self.threads_spin):
            spin.valueChanged.connect(self._settings_edited)
        for check in (self.shuffle_check, self.keep_best_check, self.fast_path_check):
            check.toggled.connect(self._settings_edited)
        self.val_spin.setKeyboardTracking(False)
        self.val_spin.valueChanged.connect(self._val_fraction_edited)
        return box

    def _build_step_controls(self, grid: QGridLayout, row: int) -> None:
        """Clipping, warm-up and mixed precision (TrainConfig; netstudio.training.controls)."""
        from PySide6.QtWidgets import QComboBox

        self.clip_norm_spin = QDoubleSpinBox()
        self.clip_value_spin = QDoubleSpinBox()
        for spin in (self.clip_norm_spin, self.clip_value_spin):
            spin.setRange(0.0, 1e9)
            spin.setDecimals(4)
            spin.setSingleStep(0.1)
            spin.setSpecialValueText("off")
            spin.setKeyboardTracking(False)
        self.clip_norm_spin.setToolTip("Gradient clipping by norm: scale the gradients so that their total L2 norm "
                                       "is at most this (off: no clipping)")
        self.clip_value_spin.setToolTip("Gradient clipping by value: clamp every gradient element to ± this "
                                        "(off: no clipping)")
        self.warmup_spin = QSpinBox()
        self.warmup_spin.setRange(0, 1_000_000)
        self.warmup_spin.setSpecialValueText("off")
        self.warmup_spin.setSuffix(" epochs")
        self.warmup_spin.setToolTip("Learning-rate warm-up: raise the learning rate linearly, batch by batch, over "
                                    "these first epochs; works with any scheduler")
        self.precision_combo = QComboBox()
        for text, value, tip in (("float32", "off", "no mixed precision"),
                                 ("bf16", "bf16", "bfloat16 autocast (CPU and recent GPUs)"),
                                 ("fp16", "fp16", "float16 autocast with a gradient scaler (CUDA GPUs)")):
            self.precision_combo.addItem(text, value)
            self.precision_combo.setItemData(self.precision_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.precision_combo.setToolTip("Mixed precision: forward and loss in a 16-bit type, weights in float32")
        for r, c, text, w in ((row, 0, "Clip norm", self.clip_norm_spin), (row, 2, "Clip value", self.clip_value_spin),
                              (row + 1, 0, "Warm-up", self.warmup_spin),
                              (row + 1, 2, "Precision", self.precision_combo)):
            label = QLabel(text)
            label.setBuddy(w)
            grid.addWidget(label, r, c)
            grid.addWidget(w, r, c + 1)
        self.lr_find_button = QPushButton("Find learning rate…")
        self.lr_find_button.setToolTip("Range test: train a copy of the model briefly with a growing learning rate, "
                                       "plot the loss and suggest a learning rate for the optimizer node")
        self.lr_find_button.clicked.connect(self.open_lr_finder)
        grid.addWidget(self.lr_find_button, row + 2, 0, 1, 2)
        self.lr_finder: Any = None
        self.sweep_button = QPushButton("Sweep…")
        self.sweep_button.setToolTip("Hyperparameter search (Optuna): train trials with values drawn from ranges you "
                                     "give, prune the poor ones early, apply the best")
        self.sweep_button.clicked.connect(self.open_sweep_dialog)
        grid.addWidget(self.sweep_button, row + 2, 2, 1, 2)
        self.sweep_dialog: Any = None
        self._build_tensorboard_setting(grid, row + 3)
        self.clip_norm_spin.valueChanged.connect(self._settings_edited)
        self.clip_value_spin.valueChanged.connect(self._settings_edited)
        self.warmup_spin.valueChanged.connect(self._settings_edited)
        self.precision_combo.currentIndexChanged.connect(self._settings_edited)

    @Slot()
    def open_lr_finder(self) -> Any:
        """The learning-rate finder window (one per dock), started at once; returns it."""
        from netstudio.ui.training.lrfinder import LrFinderDialog

        if self.lr_finder is None:
            self.lr_finder = LrFinderDialog(self.document, self.session, self)
        self.lr_finder.show()
        self.lr_finder.raise_()
        if not self.lr_finder.is_running():
            self.lr_finder.start()
        return self.lr_finder

    @Slot()
    def open_sweep_dialog(self) -> Any:
        """The Sweep window (one per dock); returns it. A run starts from its Run button."""
        from netstudio.ui.training.sweep_dialog import SweepDialog

        if self.sweep_dialog is None:
            self.sweep_dialog = SweepDialog(self.document, self.session, self)
        self.sweep_dialog.show()
        self.sweep_dialog.raise_()
        return self.sweep_dialog

    def _build_tensorboard_setting(self, grid: QGridLayout, row: int) -> None:
        """Log every run's epoch scalars for TensorBoard (an app setting, not the project's)."""
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QLineEdit

        from netstudio.training.tensorboard import INSTALL_HINT, tensorboard_installed

        settings = QSettings()
        self.tensorboard_check = QCheckBox("TensorBoard log")
        self.tensorboard_dir_edit = QLineEdit(str(settings.value("training/tensorboard_dir", "") or ""))
        self.tensorboard_dir_edit.setPlaceholderText("folder (empty: PROJECT.tensorboard beside the project)")
        installed = tensorboard_installed()
        self.tensorboard_check.setChecked(installed and str(settings.value("training/tensorboard", False)).lower()
                                          == "true")
        self.tensorboard_check.setEnabled(installed)
        self.tensorboard_check.setToolTip(
            "Write each epoch's losses, accuracies and learning rate for TensorBoard, one folder per run "
            "(view with: tensorboard --logdir FOLDER)" if installed
            else f"TensorBoard is not installed: {INSTALL_HINT}")
        grid.addWidget(self.tensorboard_check, row, 0)
        grid.addWidget(self.tensorboard_dir_edit, row, 1, 1, 3)
        self.tensorboard_check.toggled.connect(lambda on: QSettings().setValue("training/tensorboard", bool(on)))
        self.tensorboard_dir_edit.editingFinished.connect(
            lambda: QSettings().setValue("training/tensorboard_dir", self.tensorboard_dir_edit.text().strip()))

    def tensorboard_dir(self) -> str | None:
        """Where this run's TensorBoard folder goes (None: not logging)."""
        if not self.tensorboard_check.isChecked():
            return None
        text = self.tensorboard_dir_edit.text().strip()
        if text:
            return text
        path = self.project.path
        if path is not None:
            from pathlib import Path

            p = Path(path)
            return str(p.with_name(p.stem + ".tensorboard"))
        from pathlib import Path

        return str(Path.home() / "netstudio-tensorboard")

    @Slot(bool)
    def _show_more_settings(self, shown: bool) -> None:
        self.more_settings.setVisible(shown)
        self.more_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.more_button.setText("Fewer settings" if shown else "More: early stopping, validation, threads, clipping…")
        from PySide6.QtCore import QSettings

        QSettings().setValue("training/more_settings", shown)

    def _settings_widgets(self) -> tuple[QWidget, ...]:
        return (self.epochs_spin, self.batch_spin, self.seed_spin, self.device_combo, self.patience_spin,
                self.val_spin, self.threads_spin, self.shuffle_check, self.keep_best_check, self.fast_path_check,
                self.clip_norm_spin, self.clip_value_spin, self.warmup_spin, self.precision_combo)

    def _style_banner(self) -> None:
        dark = self.palette().color(self.backgroundRole()).lightness() < 128
        bg, border, fg = ("#4a1f1c", "#8c3b33", "#ffd7d2") if dark else ("#fdecea", "#e0a09b", "#8a1f17")
        self.error_banner.setStyleSheet(f"#errorBanner {{ background: {bg}; border: 1px solid {border}; "
                                        f"border-radius: 4px; }} #errorBanner QLabel {{ color: {fg}; }}")

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) \
                and hasattr(self, "error_banner"):
            self._style_banner()
            if self.evaluation is not None and self.evaluation.get("confusion"):
                self.results.show_evaluation(self.evaluation)
        super().changeEvent(event)

    def _connect(self) -> None:
        doc, ses = self.document, self.session
        doc.project_replaced.connect(self._on_project_replaced)
        doc.analysis_changed.connect(self._on_graph_changed)
        doc.training_changed.connect(self._on_training_changed)
        ses.state_changed.connect(self._show_state)
        ses.run_started.connect(self._on_run_started)
        ses.phase.connect(self._on_phase)
        ses.data_ready.connect(self._on_data_ready)
        ses.report.connect(self._on_report)
        ses.run_finished.connect(self._on_run_finished)
        ses.evaluation_done.connect(self._on_evaluation_done)

    # ======================================================================
    # project access
    # ======================================================================
    @property
    def project(self) -> Any:
        return self.document.project

    @property
    def graph(self) -> Any:
        return self.document.graph

    def _config(self) -> TrainConfig:
        return self.project.training

    def load_settings(self) -> None:
        """Show the project's TrainConfig in the settings widgets."""
        cfg = self._config()
        self._loading_settings = True
        try:
            self.epochs_spin.setValue(cfg.epochs)
            self.batch_spin.setValue(cfg.batch_size)
            self.seed_spin.setValue(cfg.seed)
            self._fill_devices(cfg.device)
            self.patience_spin.setValue(cfg.early_stopping_patience)
            self.threads_spin.setValue(cfg.threads)
            self.shuffle_check.setChecked(cfg.shuffle)
            self.keep_best_check.setChecked(cfg.keep_best)
            self.fast_path_check.setChecked(cfg.fast_path != "off")
            self.clip_norm_spin.setValue(cfg.clip_norm)
            self.clip_value_spin.setValue(cfg.clip_value)
            self.warmup_spin.setValue(cfg.warmup_epochs)
            self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(cfg.precision)))
        finally:
            self._loading_settings = False
        self._load_val_fraction()

    def _load_val_fraction(self) -> None:
        """The Dataset node's validation share; disabled where the source has a fixed split."""
        node = self._dataset_node()
        spec = None
        if node is not None:
            try:
                nt = self.graph.catalog.get(node.type_id)
                spec = next((p for p in nt.params if p.name == "val_fraction"), None)
            except Exception:  # noqa: BLE001 - an unknown type is the editor's problem to show
                spec = None
        applies = spec is not None and (spec.visible_if is None
                                        or node.params.get(spec.visible_if[0]) in spec.visible_if[1])
        self._val_applies = applies
        self._loading_settings = True
        try:
            if spec is not None:
                self.val_spin.setValue(float(node.params.get("val_fraction", spec.default)))
        finally:
            self._loading_settings = False
        self.val_spin.setEnabled(applies and self.session.state == RunState.IDLE)
        if node is None:
            self.val_spin.setToolTip("Add a Dataset node to set its validation share")
        elif not applies:
            self.val_spin.setToolTip("This dataset comes with its own validation split")
        else:
            self.val_spin.setToolTip(f"Share of '{node.name}' held out for validation (its val_fraction)")

    @Slot()
    def _val_fraction_edited(self) -> None:
        if self._loading_settings:
            return
        node = self._dataset_node()
        if node is None:
            return
        value = round(float(self.val_spin.value()), 6)
        if node.params.get("val_fraction") == value:
            return
        from netstudio.graph.commands import SetParam

        try:  # one undoable edit of the Dataset node, as the inspector makes
            self.document.push(SetParam(node.id, "val_fraction", value))
        except NetStudioError as e:
            self.show_error({"message": e.message, "hint": e.hint, "node_id": node.id})
            self._load_val_fraction()

    def _fill_devices(self, current: str) -> None:
        devices: list[tuple[str, str]] = [("auto", "Auto")]
        try:
            from netstudio.training import available_devices

            devices += [(str(i), str(label)) for i, label in available_devices(self.torch_threads)
                        if str(i) != "auto"]
        except Exception:  # noqa: BLE001 - the engine may be missing or probing may fail; CPU always works
            devices.append(("cpu", "CPU"))
        if not any(d == "cpu" for d, _ in devices):
            devices.insert(1, ("cpu", "CPU"))
        if current not in [d for d, _ in devices]:  # e.g. a project saved on a CUDA machine
            devices.append((current, f"{current} (not available here)"))
        self.device_combo.clear()
        for dev, label in devices:
            self.device_combo.addItem(label, dev)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(current)))

    @Slot()
    def _settings_edited(self) -> None:
        if self._loading_settings:
            return
        cfg = self._config()
        before = cfg.to_dict()
        cfg.epochs = int(self.epochs_spin.value())
        cfg.batch_size = int(self.batch_spin.value())
        cfg.seed = int(self.seed_spin.value())
        dev = self.device_combo.currentData()
        if isinstance(dev, str) and dev:
            cfg.device = dev
        cfg.early_stopping_patience = int(self.patience_spin.value())
        cfg.threads = int(self.threads_spin.value())
        cfg.shuffle = bool(self.shuffle_check.isChecked())
        cfg.keep_best = bool(self.keep_best_check.isChecked())
        cfg.fast_path = "auto" if self.fast_path_check.isChecked() else "off"
        cfg.clip_norm = float(self.clip_norm_spin.value())
        cfg.clip_value = float(self.clip_value_spin.value())
        cfg.warmup_epochs = int(self.warmup_spin.value())
        precision = self.precision_combo.currentData()
        if isinstance(precision, str) and precision:
            cfg.precision = precision
        if cfg.to_dict() != before:
            self._editing_settings = True
            try:
                self.document.training_edited()
            finally:
                self._editing_settings = False

    @Slot()
    def _on_training_changed(self) -> None:
        """Someone else changed the project's training settings: show them."""
        if not self._editing_settings:
            self.load_settings()

    @Slot()
    def _on_project_replaced(self) -> None:
        if self.session.state != RunState.IDLE:
            self._stale_project = True  # caught up once the run has ended
            return
        # runs, plots, results, counters and weights belong to the project they were trained for
        self.forget_runs()
        self._catch_up(project=True)

    @Slot(object)
    def _on_graph_changed(self, _analysis: Any = None) -> None:
        """A graph edit (or undo): the dataset summary follows while idle, after the run otherwise."""
        if self.session.state != RunState.IDLE:
            self._stale_graph = True
            return
        self.refresh_dataset()

    def _catch_up(self, project: bool = False) -> None:
        """Show the project/graph as they are now (after a run, edits and Open wait for it)."""
        if project or self._stale_project:
            self.load_settings()
        self._stale_project = self._stale_graph = False
        self.refresh_dataset()

    def forget_runs(self) -> None:
        """Back to a fresh dock: no weights, no curves, no results, the next run is run 1."""
        if not self.session.forget_runs():
            return
        self.last_error = None
        self.batch_events = 0
        self.last_batch = None
        self._pending_progress = None
        self.plots.clear()
        self.results.clear()
        self.preview_grid.set_items([])
        self.clear_error()
        self.status_label.setText("Ready")
        self._set_progress(0, "—")
        self.speed_label.setText("")

    def _dataset_node(self) -> Any:
        g = self.graph
        if g is None:
            return None
        from netstudio.nodes.adversarial import NOISE
        from netstudio.nodes.base import Category

        for node in g.nodes.values():
            try:
                if g.catalog.get(node.type_id).category == Category.DATA and node.type_id != NOISE:
                    return node  # (a Noise node is a source of random values, not the dataset)
            except Exception:  # noqa: BLE001 - an unknown type is the editor's problem to show
                continue
        return None

    def refresh_dataset(self) -> None:
        """Dataset summary from ``describe`` (static facts, no loading)."""
        self._load_val_fraction()
        node = self._dataset_node()
        if node is None:
            self.dataset_label.setText("<i>No Dataset node in the graph.</i>")
            return
        try:
            from netstudio.data import describe

            info = describe(node.params)
        except NetStudioError as e:
            self.dataset_label.setText(f"<span style='color:#c0392b'>{_esc(str(e))}</span>")
            return
        except Exception as e:  # noqa: BLE001
            self.dataset_label.setText(f"<span style='color:#c0392b'>{_esc(type(e).__name__)}: {_esc(str(e))}</span>")
            return
        self.dataset_label.setText(_dataset_html(node.name, info))
        if not info.is_image:
            self.preview_grid.set_items([])

    # ======================================================================
    # state (the session's, shown)
    # ======================================================================
    @property
    def state(self) -> RunState:
        return self.session.state

    def is_running(self) -> bool:
        """True while the training thread exists and runs."""
        return self.session.is_running()

    def is_paused(self) -> bool:
        """True once the training loop has confirmed that it is waiting."""
        return self.session.state == RunState.PAUSED

    @property
    def worker(self) -> Any:
        return self.session.worker

    @property
    def trained(self) -> TrainedModel | None:
        return self.session.trained

    @property
    def outcome(self) -> dict[str, Any] | None:
        return self.session.outcome

    @property
    def evaluation(self) -> dict[str, Any] | None:
        return self.session.evaluation

    @property
    def run_count(self) -> int:
        return self.session.run_count

    @property
    def failed_run(self) -> int | None:
        return self.session.failed_run

    @property
    def torch_threads(self) -> int | None:
        return self.session.torch_threads

    @Slot(object)
    def _show_state(self, state: RunState) -> None:
        running = state.busy
        has_model = self.session.trained is not None
        self.train_button.setEnabled(not running)
        self.continue_button.setEnabled(not running and has_model)
        self.pause_button.setEnabled(state in (RunState.RUNNING, RunState.STARTING))
        self.resume_button.setEnabled(state in (RunState.PAUSING, RunState.PAUSED))
        self.stop_button.setEnabled(state in (RunState.STARTING, RunState.RUNNING, RunState.PAUSING,
                                              RunState.PAUSED))
        self.reset_button.setEnabled(not running and has_model)
        self.export_button.setEnabled(not running and has_model)
        self._label_export()
        self.train_action.setEnabled(not running)
        self.stop_action.setEnabled(self.stop_button.isEnabled())
        self.export_action.setEnabled(self.export_button.isEnabled())
        for w in self._settings_widgets():
            w.setEnabled(not running)
        if not running:
            self.val_spin.setEnabled(self._val_applies)
        # the graph is read-only while a run exists (the editor follows document.locked_changed)
        self.document.set_locked(running)
        if state == RunState.RUNNING:
            self.status_label.setText(self._running_text)
        elif state == RunState.PAUSING:
            self.status_label.setText("Pausing after the current batch…")
        elif state == RunState.PAUSED:
            self.status_label.setText(self._paused_text)
        elif state == RunState.STOPPING:
            self.status_label.setText("Stopping…")
        self.state_changed.emit(state)

    def weights_note(self) -> str:
        """Which weights Export writes; after a failed run, that they are the last good ones."""
        return self.session.weights_note()

    def _label_export(self) -> None:
        last_good = self.session.trained is not None and self.session.failed_run is not None
        self.export_button.setText("Export last good…" if last_good else "Export…")
        tip = "Save the trained model (.pt, weights, .pt2, .py, ONNX)"
        note = self.weights_note()
        self.export_button.setToolTip(f"{tip}\n{note}" if note else tip)
        self.export_action.setText("Export last good weights…" if last_good else "Export trained model…")

    # ======================================================================
    # commands
    # ======================================================================
    @Slot()
    def start_training(self) -> bool:
        """Train from fresh weights. Returns False if training could not start."""
        return self._start(continuing=False)

    @Slot()
    def continue_training(self) -> bool:
        """Train again starting from the current weights."""
        if self.session.trained is None:
            self.show_error({"message": "There are no trained weights to continue from",
                             "hint": "press Train first"})
            return False
        return self._start(continuing=True)

    def _start(self, continuing: bool) -> bool:
        if self.session.state != RunState.IDLE or self.session.is_running():
            return False
        self.session.cancel_evaluation()
        self._settings_edited()
        self.clear_error()
        cfg = self._config()
        try:
            cfg.validate()
        except NetStudioError as e:
            self.show_error({"message": e.message, "hint": e.hint})
            return False
        # Frozen snapshot: the editor may change the graph while we train.
        graph_dict = self.project.graph.to_dict()
        config = TrainConfig.from_dict(cfg.to_dict())
        n = self.session.run_count + 1
        self._run_started_plot = False
        self.batch_events = 0
        self.last_batch = None
        self._steps_per_epoch = None
        self._pending_progress = None
        self._running_text = f"Run {n}: training"
        start = None if continuing else self.project.weights_path()  # an imported model's weights beside it
        return bool(self.session.start(graph_dict, config, continue_training=continuing,
                                       start_weights=str(start) if start is not None and start.is_file() else None,
                                       tensorboard_dir=self.tensorboard_dir(), run_name=self._run_name()))

    def _run_name(self) -> str:
        path = self.project.path
        if path is not None:
            from pathlib import Path

            return Path(path).stem
        return str(getattr(self.project, "name", "") or "run")

    @Slot(int)
    def _on_run_started(self, run: int) -> None:
        self.status_label.setText(f"Run {run}: starting…")
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("preparing")
        self.speed_label.setText("")
        self._progress_timer.start()
        self.tabs.setCurrentIndex(0)
        self.training_started.emit(run)

    @Slot()
    def pause(self) -> None:
        """Ask the loop to pause after the current batch; it confirms with a "paused" report."""
        self.session.pause()

    @Slot()
    def resume(self) -> None:
        self.session.resume()

    @Slot()
    def stop(self) -> None:
        """Ask the loop to stop after the current batch (set directly: the worker never waits on Qt)."""
        self.session.stop()

    @Slot()
    def reset_weights(self) -> None:
        if not self.session.reset_weights():
            return
        self.results.clear()
        self.status_label.setText("Weights reset: the next run starts from scratch")

    # ======================================================================
    # session signals
    # ======================================================================
    @Slot(object)
    def _on_phase(self, payload: dict[str, Any]) -> None:
        self.status_label.setText(f"Run {self.session.run_count}: {payload.get('phase')}…")

    @Slot(object)
    def _on_data_ready(self, summary: dict[str, Any]) -> None:
        self._metric = summary.get("metric")
        if summary.get("images"):
            self.preview_grid.set_items([{"image": it["image"], "caption": it["label"]}
                                         for it in summary["images"]])
        classification = summary.get("task") == "classification" and self._metric is not None
        last = self.plots.current if self.session.continuing else None
        self.plots.new_run(classification, continue_from=last, epochs=self._epochs_total(),
                           index=summary.get("run"))
        self._run_started_plot = True

    @Slot(object)
    def _on_report(self, ev: dict[str, Any]) -> None:
        """One event of the current run (the session changes its state after it, if the event does)."""
        kind = ev.get("kind")
        if kind == "batch":
            self.batch_events += 1
            self.last_batch = ev
            if self._run_started_plot:
                self.plots.add_batch(ev)
            self._pending_progress = ev
        elif kind == "epoch":
            if self._run_started_plot:
                self.plots.add_epoch(ev)
            self._pending_progress = ev
        elif kind == "phases":  # a multi-phase run (GAN): one loss curve per phase
            if self._run_started_plot:
                self.plots.add_phases(ev)
        elif kind == "samples":  # a GAN's generator after an epoch: the Results tab's grid
            self.results.show_generated(ev)
        elif kind == "paused":
            self._refresh_progress()
            # the event names the batch that waits; the bar and the message both count batches done
            epoch = int(ev.get("epoch", 1) or 1)
            done = max(0, int(ev.get("batch", 1) or 1) - 1)
            nb = self._batches_per_epoch()
            self._show_batch_position(epoch, done, nb)
            self._paused_text = f"Run {self.session.run_count}: paused in epoch {epoch} after batch {done}/{nb}"
            if self.session.state == RunState.PAUSED:
                self.status_label.setText(self._paused_text)
        elif kind == "resumed":
            if self.session.state == RunState.RUNNING:
                self.status_label.setText(self._running_text)
        elif kind == "start":
            self.results.clear_generated()
            self._steps_per_epoch = ev.get("steps_per_epoch")
            spe, n_epochs = ev.get("steps_per_epoch"), ev.get("epochs")
            if isinstance(spe, int) and isinstance(n_epochs, int):
                self.plots.plan_steps(spe * n_epochs)
            dev = ev.get("device")
            self._running_text = f"Run {self.session.run_count}: training" + (f" on {dev}" if dev else "")
            threads = ev.get("threads")
            if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0:
                job_config = self.session.job_config
                auto = job_config is None or job_config.threads == 0
                self._running_text += f" · {threads} thread{'s' if threads != 1 else ''}" + (" (auto)" if auto else "")
            if ev.get("fast_path"):
                self._running_text += " (CUDA graph)"
            elif ev.get("fast_path_reason") and str(ev.get("device_id", "")).startswith("cuda"):
                self._running_text += f" (no CUDA graph: {ev.get('fast_path_reason')})"
            if ev.get("precision") in ("bf16", "fp16"):
                self._running_text += f" · {ev.get('precision')}"
            if ev.get("augmentation"):
                self._running_text += f" · augmented ({ev.get('augmentation')})"
            if ev.get("phases"):
                self._running_text += f" · phases {' → '.join(map(str, ev['phases']))}"
            if self.session.state == RunState.RUNNING:
                self.status_label.setText(self._running_text)

    @property
    def run_problems(self) -> list[Any]:
        """What the last run found (e.g. a flat loss); the editor lists it in Problems."""
        return self.session.run_problems

    def _batches_per_epoch(self) -> int:
        for n in ((self.last_batch or {}).get("n_batches"), self._steps_per_epoch):
            if isinstance(n, int) and n > 0:
                return n
        return 1

    def _epochs_total(self) -> int:
        cfg = self.session.job_config
        return cfg.epochs if cfg is not None else max(1, self.epochs_spin.value())

    @Slot()
    def _refresh_progress(self) -> None:
        ev, self._pending_progress = self._pending_progress, None
        if ev is None:
            return
        if ev.get("kind") == "epoch":
            self._show_epoch(ev)
        else:
            self._show_batch(ev)

    def _show_batch(self, ev: dict[str, Any]) -> None:
        self._show_batch_position(int(ev.get("epoch", 1) or 1), int(ev.get("batch", 0) or 0),
                                  int(ev.get("n_batches", 1) or 1))
        sps_text = _rate_text(ev.get("samples_per_s"))
        loss = ev.get("loss")
        loss_text = f"loss {format_metric(float(loss))}" if isinstance(loss, (int, float)) else ""
        eta = f"ETA {_fmt_duration(ev.get('eta_s'))}" if ev.get("eta_s") is not None else ""
        self.speed_label.setText(_figures((loss_text, sps_text, eta)))

    def _show_batch_position(self, epoch: int, b: int, nb: int) -> None:
        """The bar at batch ``b`` (done) of ``nb`` in ``epoch``."""
        epochs = self._epochs_total()
        nb = max(1, nb)
        frac = ((epoch - 1) + min(b, nb) / nb) / max(1, epochs)
        self._set_progress(int(round(1000 * min(1.0, max(0.0, frac)))), f"Epoch {epoch}/{epochs} · batch {b}/{nb}")

    def _set_progress(self, value: int, text: str) -> None:
        bar = self.progress_bar
        # QProgressBar.setValue repaints synchronously (a styled paint and a flush of its own);
        # with updates off it only schedules a repaint, merged into the window's next paint pass
        bar.setUpdatesEnabled(False)
        bar.setValue(value)
        bar.setFormat(text)
        bar.setUpdatesEnabled(True)

    def _show_epoch(self, ev: dict[str, Any]) -> None:
        epochs = self._epochs_total()
        epoch = int(ev.get("epoch", 0) or 0)
        self._set_progress(int(round(1000 * min(1.0, epoch / max(1, epochs)))), f"Epoch {epoch}/{epochs} done")

    @Slot(object)
    def _on_run_finished(self, end: RunEnd) -> None:
        """The run's thread has ended and the session took over its weights: show how it ended."""
        outcome, status, run_index = end.outcome, end.status, end.run_index
        self._progress_timer.stop()
        if end.refused:
            self._pending_progress = None
            self.show_error(outcome)
            self.status_label.setText("Not started: " + str(outcome.get("message") or "the model cannot be built"))
            self._set_progress(0, "—")
            self.speed_label.setText("")
            self._after_run()
            self.training_finished.emit(outcome)
            return
        self._refresh_progress()
        if self._run_started_plot:
            self.plots.redraw()
        metrics = dict(outcome.get("metrics") or {})
        best_epoch = getattr(end.result, "best_epoch", None)
        if best_epoch is not None:
            metrics.setdefault("best_epoch", best_epoch)
        if end.failed:
            self.show_error(outcome)
            self.status_label.setText(f"Run {run_index} failed")
        else:
            self.clear_error()
            word = {"finished": "finished", "stopped": "stopped", "early_stopped": "stopped early"}.get(status,
                                                                                                       status)
            msg = outcome.get("message") or ""
            self.status_label.setText(f"Run {run_index} {word}" + (f": {msg}" if msg else ""))
        # the last batch's loss/speed/ETA would read as the result: show the run's own figures
        self.speed_label.setText(_run_summary(metrics))
        # Results show this run only: never its figures beside an older run's matrix (its generated samples stay)
        self.results.clear(keep_generated=True)
        where = "weights kept from the last good epoch" if end.failed and self.session.trained is not None else ""
        self.results.show_metrics(metrics, f"Run {run_index}: {status}" + (f" — {where}" if where else ""))
        self._after_run()
        self.training_finished.emit(outcome)

    def _after_run(self) -> None:
        """Edits and an Open that waited for the run show now."""
        if self._stale_project or self._stale_graph:
            # a project opened mid-run shows its settings and dataset now (the finished run's
            # figures stay until the next Open)
            self._catch_up()

    @Slot(object, bool)
    def _on_evaluation_done(self, ev: dict[str, Any], announce: bool) -> None:
        if ev.get("status") == "ok":
            self.results.show_evaluation(ev)
        elif ev.get("status") == "error":
            self.show_error({**ev, "message": f"Evaluation failed: {ev.get('message')}"})
        if announce:
            self.evaluation_finished.emit(ev)

    # ======================================================================
    # errors
    # ======================================================================
    def show_error(self, record: dict[str, Any]) -> None:
        """Show a failure in the banner and the status line; the app keeps running."""
        self.last_error = dict(record)
        msg = str(record.get("message") or "Training failed")
        hint = record.get("hint")
        node_id = record.get("node_id")
        text = f"<b>{_esc(msg)}</b>"
        if hint:
            text += f"<br>{_esc(str(hint))}"
        if node_id and node_id in self.graph.nodes:
            text += f"<br><small>Node: {_esc(self.graph.nodes[node_id].name)}</small>"
            self.node_activated.emit(node_id)
        self.error_label.setText(text)
        self.error_banner.show()
        self.status_label.setText("Error")
        self.message.emit(f"Training failed: {msg}")

    def error_text(self) -> str:
        return self.error_label.text() if self.error_banner.isVisibleTo(self) else ""

    @Slot()
    def clear_error(self) -> None:
        self.error_banner.hide()
        self.error_label.clear()

    # ======================================================================
    # results and export
    # ======================================================================
    def predict(self, x: Any) -> Any:
        """Outputs of the current trained model for features ``x`` (CPU, eval mode, no grad)."""
        return self.session.predict(x)

    def export_project(self) -> Any:
        """The project the current weights were trained from (the graph snapshot, not later edits)."""
        return exporting.trained_project(self.session.trained, self.project)

    def make_export_dialog(self) -> Any:
        return exporting.make_export_dialog(self, self.session.trained, self.project, self.weights_note())

    @Slot()
    def open_export_dialog(self) -> None:
        if self.session.trained is None or self.session.state != RunState.IDLE:
            return
        dlg = self.make_export_dialog()
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self._export_dialog = dlg

    def _export_png_clicked(self) -> None:
        text = exporting.save_plots_png(self, self.plots)
        if text:
            self.status_label.setText(text)

    def _export_csv_clicked(self) -> None:
        text = exporting.save_history_csv(self, self.plots)
        if text:
            self.status_label.setText(text)

    # ======================================================================
    # closing
    # ======================================================================
    def confirm_close(self) -> bool:
        """May the window close? Asks while training runs; on yes, stops and joins the thread."""
        ses = self.session
        if not ses.is_running() and not ses.evaluating:
            return True
        if ses.is_running():
            answer = QMessageBox.question(
                self, "Training is running",
                "Training is still running. Stop it and close?\n\nThe weights trained so far are discarded "
                "unless you export them first.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return False
        return self.shutdown()

    def may_close(self, ask_discard_weights: Callable[[str], bool] | None = None) -> bool:
        """The editor window is closing: may it? Unexported weights are offered to ``ask_discard_weights``
        (True: discard) before a running run is confirmed and stopped."""
        if not self.session.is_running():
            lost = self.unexported_weights()
            if lost and ask_discard_weights is not None and not ask_discard_weights(lost):
                return False
        if self.session.is_running() or self.session.evaluating:
            return self.confirm_close()
        return True

    def unexported_weights(self) -> str | None:
        """A warning if trained weights that were never exported would be lost (None: nothing to lose)."""
        return self.session.unexported_weights()

    def shutdown(self, timeout_ms: int = 2000) -> bool:
        """Stop every worker thread and wait for it; True if all ended within ``timeout_ms``."""
        finder_done = self.lr_finder.shutdown(timeout_ms) if self.lr_finder is not None else True
        sweep_done = self.sweep_dialog.shutdown(timeout_ms) if self.sweep_dialog is not None else True
        return self.session.shutdown(timeout_ms) and finder_done and sweep_done

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        # Closing the dock only hides it; training goes on in the background.
        super().closeEvent(event)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _dataset_html(node_name: str, info: Any) -> str:
    from netstudio.data.core import SOURCES

    src = SOURCES.get(info.source)
    label = src.label if src else info.source
    shape = "×".join(str(d) for d in info.feature_shape)
    rows = [f"<b>{_esc(label)}</b> <span style='color:gray'>({_esc(node_name)})</span>",
            f"{info.n_train:,} training · {info.n_val:,} validation samples",
            f"features: {shape}" + (" (image)" if info.is_image else "")]
    if info.task == "classification":
        names = ", ".join(info.class_names[:10]) + (" …" if len(info.class_names) > 10 else "")
        rows.append(f"{info.num_classes} classes: {_esc(names)}")
    else:
        rows.append("regression" + (f", {info.target_shape[0]} target(s)" if info.target_shape else ""))
    return "<br>".join(rows)
