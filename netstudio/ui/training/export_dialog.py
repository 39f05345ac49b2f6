"""Export the trained model: format, file, export, then the lines that load it."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QRadioButton, QVBoxLayout,
                               QWidget)

from netstudio.errors import ExportError


@dataclass(frozen=True)
class ExportFormat:
    id: str
    label: str
    suffix: str
    filter: str
    description: str


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("pt", "Full model (.pt)", ".pt", "PyTorch model (*.pt)",
                 "The whole nn.Module, pickled; loads with plain PyTorch (torch.load, weights_only=False)."),
    ExportFormat("weights", "Weights + project (.pt)", ".pt", "PyTorch weights (*.pt)",
                 "A state_dict next to the .nsproj project it was trained from; safe to load (weights_only)."),
    ExportFormat("pt2", "Exported program (.pt2)", ".pt2", "torch.export program (*.pt2)",
                 "torch.export graph with weights; loads with torch.export.load, no Python class needed."),
    ExportFormat("py", "Python source (.py)", ".py", "Python file (*.py)",
                 "A standalone nn.Module class you can read, edit and import."),
    ExportFormat("onnx", "ONNX (.onnx)", ".onnx", "ONNX model (*.onnx)",
                 "For ONNX Runtime and other inference engines."),
)
FORMAT_BY_ID = {f.id: f for f in FORMATS}


def onnx_available() -> str | None:
    """None if ONNX export can work, else the reason it cannot."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return f"ONNX export needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''} " \
               f"(pip install netstudio[onnx])"
    return None


def file_stem(name: str) -> str:
    """A file name from a project name: "MNIST MLP (SGD)" → "mnist_mlp_sgd"."""
    stem = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return stem or "model"


class ExportDialog(QDialog):
    """Export a trained model in the chosen format.

    ``export_to(fmt, path)`` does the work without any modal interaction, so
    the dialog can be driven from tests and scripts; the Export button calls it
    with the widgets' values.
    """

    exported = Signal(str, str)  # format id, path

    def __init__(self, parent: QWidget | None, model: Any, project: Any, plan: Any = None,
                 example_input: Any = None, default_dir: str | Path | None = None,
                 default_name: str | None = None, data: Any = None, note: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Export trained model")
        self.setModal(False)
        self.model = model
        self.project = project
        self.plan = plan
        self.example_input = example_input
        #: the prepared data the model was trained on: its preprocessing becomes the export's first module
        self.data = data
        self.last_path: Path | None = None
        self.snippet_text = ""
        # next to the project when that folder is writable (an installed sample's may not be)
        self._default_dir = Path(default_dir) if default_dir and os.access(default_dir, os.W_OK) else Path.home()
        self._default_name = file_stem(default_name or getattr(project, "name", "") or "")
        self._onnx_reason = onnx_available()

        #: which weights this exports (e.g. the last good ones after a run diverged)
        self.weights_label = QLabel(note)
        self.weights_label.setWordWrap(True)
        self.weights_label.setVisible(bool(note))

        fmt_box = QGroupBox("Format")
        fmt_lay = QVBoxLayout(fmt_box)
        self.format_group = QButtonGroup(self)
        self.format_buttons: dict[str, QRadioButton] = {}
        for i, f in enumerate(FORMATS):
            rb = QRadioButton(f.label)
            rb.setToolTip(f.description)
            self.format_group.addButton(rb, i)
            self.format_buttons[f.id] = rb
            fmt_lay.addWidget(rb)
        reason = self.unavailable_reason("onnx")
        if reason:
            self.format_buttons["onnx"].setEnabled(False)
            self.format_buttons["onnx"].setText("ONNX (.onnx) — unavailable")
            self.format_buttons["onnx"].setToolTip(reason)
        self.format_note = QLabel()
        self.format_note.setWordWrap(True)
        note_font = self.format_note.font()
        note_font.setItalic(True)
        self.format_note.setFont(note_font)
        fmt_lay.addWidget(self.format_note)
        self.format_buttons["pt"].setChecked(True)
        self.format_group.idToggled.connect(self._format_changed)

        self.preprocess_check = QCheckBox("Include the dataset's preprocessing (the model takes raw inputs)")
        self.preprocess_check.setToolTip("Scaling, standardisation, resizing and category encoding become the "
                                         "exported model's first module, 'preprocess'. Untick to export the bare "
                                         "network, which expects features normalized exactly like NetStudio's.")
        has_spec = data is not None and getattr(data, "preprocess", None) is not None
        self.preprocess_check.setChecked(has_spec)
        self.preprocess_check.setEnabled(has_spec)
        self.input_note = QLabel()
        self.input_note.setWordWrap(True)
        self.input_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preprocess_check.toggled.connect(self._update_input_note)
        in_box = QGroupBox("Input of the exported model")
        in_lay = QVBoxLayout(in_box)
        in_lay.addWidget(self.preprocess_check)
        in_lay.addWidget(self.input_note)

        # dynamic int8 quantization: .pt only (torch.export/ONNX/.py cannot hold the quantized layers)
        self.quantize_check = QCheckBox("Quantize Linear/LSTM/GRU weights to int8 (dynamic quantization, .pt only)")
        self.quantize_check.setToolTip("torch.ao.quantization.quantize_dynamic: a smaller file for CPU inference. "
                                       "After exporting, the file size and validation accuracy are shown beside "
                                       "the float model's.")
        self.quantize_check.toggled.connect(self._format_changed)
        fmt_lay.addWidget(self.quantize_check)
        #: sizes and validation figures of the last quantized export (export.compare_quantized)
        self.quantize_result: dict[str, Any] | None = None

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("file to write")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(QLabel("File:"))
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self._export_clicked)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.snippet = QPlainTextEdit()
        self.snippet.setReadOnly(True)
        self.snippet.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.snippet.setPlaceholderText("After exporting, the Python lines that load the file appear here.")
        self.snippet.setMaximumHeight(110)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.snippet_text))
        snip_box = QGroupBox("Load it in Python")
        snip_lay = QHBoxLayout(snip_box)
        snip_lay.addWidget(self.snippet, 1)
        snip_lay.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.ActionRole)

        lay = QVBoxLayout(self)
        lay.addWidget(self.weights_label)
        lay.addWidget(fmt_box)
        lay.addWidget(in_box)
        lay.addLayout(path_row)
        lay.addWidget(self.status)
        lay.addWidget(snip_box)
        lay.addWidget(buttons)
        self._format_changed()
        self._update_input_note()
        self.resize(600, 560)

    # --- API ------------------------------------------------------------------------
    def unavailable_reason(self, fmt: str) -> str | None:
        if fmt == "onnx":
            return self._onnx_reason
        if fmt in ("pt2", "onnx") and self.example_input is None:
            return "needs an example input (train the model first)"
        return None

    def selected_format(self) -> str:
        idx = self.format_group.checkedId()
        return FORMATS[idx].id if 0 <= idx < len(FORMATS) else "pt"

    def select_format(self, fmt: str) -> None:
        self.format_buttons[fmt].setChecked(True)

    def export_to(self, fmt: str, path: str | Path) -> Path:
        """Export now (no dialogs). Returns the written path; raises ExportError."""
        if fmt not in FORMAT_BY_ID:
            raise ExportError(f"Unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMAT_BY_ID)}")
        reason = self.unavailable_reason(fmt)
        if reason:
            self._show_error(f"{FORMAT_BY_ID[fmt].label}: {reason}")
            raise ExportError(f"Cannot export {FORMAT_BY_ID[fmt].label}: {reason}")
        if self.model is None:
            raise ExportError("There is no trained model to export", hint="train the model first")
        p = Path(path).expanduser()
        if not p.suffix:
            p = p.with_suffix(FORMAT_BY_ID[fmt].suffix)
        try:
            written = self._run_export(fmt, p)
        except ExportError as e:
            self._show_error(str(e))
            raise
        except Exception as e:  # noqa: BLE001 - torch.export/onnx raise many kinds; the user needs the text
            self._show_error(f"{type(e).__name__}: {e}")
            raise ExportError(f"Export to {FORMAT_BY_ID[fmt].label} failed: {e}") from e
        self.last_path = written
        from netstudio.project import export as ex

        self.snippet_text = ex.load_snippet(fmt, str(written)).strip()
        self.snippet.setPlainText(self.snippet_text)
        self.copy_button.setEnabled(True)
        self.status.setStyleSheet("color: #3c9d5d;")
        self.status.setText(f"Exported to {written}")
        if self.quantize_result is not None:
            from netstudio.project.export import quantize_summary

            self.status.setText(f"Exported to {written}\n{quantize_summary(self.quantize_result)}")
        self.exported.emit(fmt, str(written))
        return written

    def export_input(self, preprocess: bool | None = None) -> Any:
        """What the export takes (ExportInput), with or without the preprocessing; None without data."""
        if self.data is None:
            return None
        from netstudio.project.preprocess import export_input

        if preprocess is None:
            preprocess = self.preprocess_check.isChecked()
        return export_input(self.data, preprocess=preprocess, plan=self.plan)

    def _update_input_note(self, *_: Any) -> None:
        from netstudio.project.export import generator_note

        gan = generator_note(self.model)  # a GAN: the .pt export is its generator, which takes noise
        if gan is not None:
            self.input_note.setText(gan[:1].upper() + gan[1:] + " (.pt; the other formats cannot hold a GAN).")
            return
        inp = self.export_input()
        self.input_note.setText(inp.text() if inp is not None else
                                "The model takes the features NetStudio trained on (normalized).")

    def _run_export(self, fmt: str, p: Path) -> Path:
        from netstudio.project import export as ex

        inp = self.export_input()
        quantize = "dynamic-int8" if self.quantize_check.isChecked() else None
        self.quantize_result = None
        ex.check_quantize(fmt, quantize)
        if quantize is not None:
            written = ex.export_pt(self.model, p, inp, quantize)
            if ex.generator_note(self.model) is not None:
                return Path(written)  # a GAN's generator: no accuracy to compare
            self.quantize_result = ex.compare_quantized(self.model, self.plan, self.data, inp=inp, mode=quantize)
            return Path(written)
        calls: dict[str, Callable[[], Any]] = {
            "pt": lambda: ex.export_pt(self.model, p, inp),
            # the weights file keeps the full preprocessing, so a later export can still choose
            "weights": lambda: ex.export_weights(self.model, self.project, p, self.export_input(True)),
            "pt2": lambda: ex.export_pt2(self.model, self.example_input, p, inp),
            # the trained module: the plan still holds the weights it was compiled with
            "py": lambda: ex.export_py(self.model, p, example_input=self.example_input,
                                       title=getattr(self.project, "name", None) or "NetStudio model", inp=inp),
            "onnx": lambda: ex.export_onnx(self.model, self.example_input, p, inp),
        }
        out = calls[fmt]()
        return Path(out) if isinstance(out, (str, Path)) else p

    # --- widgets ----------------------------------------------------------------------
    def _show_error(self, text: str) -> None:
        self.status.setStyleSheet("color: #d9534f;")
        self.status.setText(text)

    def _format_changed(self, *_: Any) -> None:
        f = FORMAT_BY_ID[self.selected_format()]
        self.quantize_check.setEnabled(f.id == "pt")
        if f.id != "pt":
            self.quantize_check.setChecked(False)
        self.format_note.setText(f.description)
        cur = self.path_edit.text().strip()
        if not cur:
            self.path_edit.setText(str(self._default_dir / f"{self._default_name}{f.suffix}"))
        else:
            self.path_edit.setText(str(Path(cur).with_suffix(f.suffix)))

    def _browse(self) -> None:
        f = FORMAT_BY_ID[self.selected_format()]
        path, _ = QFileDialog.getSaveFileName(self, "Export trained model", self.path_edit.text(), f.filter)
        if path:
            self.path_edit.setText(path)

    def _export_clicked(self) -> None:
        text = self.path_edit.text().strip()
        if not text:
            self._show_error("Choose a file to write first.")
            return
        try:
            self.export_to(self.selected_format(), text)
        except ExportError:
            pass  # already shown in the status line
