"""File → Import model…: the dialog that asks for a SPEC and the worker that imports off the GUI thread.

The import itself is :func:`netstudio.project.importer.import_to_files` (the same as
``netstudio import``); the window opens the project it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QWidget)

from netstudio.ui.training.worker import _ThreadedWorker


@dataclass
class ImportRequest:
    spec: str
    out: str
    input_shape: str | None = None
    weights: str | None = None
    #: every layer in one flat graph instead of one block per container module (``netstudio import --flat``)
    flat: bool = False
    #: path/model.py:Class: the user confirmed that the file's code may run (the window asks, naming its sha256)
    trust: bool = False
    #: path/model.py:Class: the constructor's keyword arguments as a JSON object ("" / None: none)
    args: str | None = None


class ImportWorker(_ThreadedWorker):
    """Runs one import on its thread; ``done`` carries {"status": "ok", "path", "weights", "opaque", "notes"} or an
    error (``notes``: the import's remarks, e.g. a module whose shared weights became copies)."""

    def __init__(self, request: ImportRequest) -> None:
        super().__init__()
        self.request = request

    def _work(self) -> dict[str, Any]:
        from netstudio.project.importer import import_to_files

        r = self.request
        result, out, w_out = import_to_files(r.spec, r.out, input_shape=r.input_shape or None,
                                             weights=r.weights or None, blocks=not r.flat, trust=r.trust,
                                             args=r.args or None)
        return {"status": "ok", "path": str(out), "weights": str(w_out), "opaque": list(result.opaque),
                "notes": list(result.notes), "diff": result.max_abs_diff}


class ImportDialog(QDialog):
    """SPEC (torchvision:NAME, a .pt2 file or path/model.py:Class), optional input shape and local weights, and
    where to save."""

    def __init__(self, parent: QWidget | None = None, default_dir: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Import model")
        self.default_dir = default_dir
        form = QFormLayout(self)
        note = QLabel("A torchvision architecture (random weights, nothing is downloaded) or a model saved "
                      "with torch.export (.pt2): its code is not run, layers are referenced by name.\n"
                      "Or a class in your own Python file (path/model.py:ClassName): importing RUNS that file's "
                      "code, so you are asked first.")
        note.setWordWrap(True)
        form.addRow(note)
        self.spec = QLineEdit()
        self.spec.setPlaceholderText("torchvision:resnet18, path/to/model.pt2 or path/to/model.py:ClassName")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_pt2)
        row = QHBoxLayout()
        row.addWidget(self.spec)
        row.addWidget(browse)
        form.addRow("Model", row)
        self.shape = QLineEdit()
        self.shape.setPlaceholderText("1,3,224,224 (a .pt2: its own; a .py class: required)")
        form.addRow("Input shape", self.shape)
        self.args = QLineEdit()
        self.args.setPlaceholderText('a .py class: constructor arguments as JSON, e.g. {"width": 16} (default none)')
        form.addRow("Arguments", self.args)
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("optional: a local state_dict (.pth), loaded safely")
        form.addRow("Weights", self.weights)
        self.out = QLineEdit()
        self.out.setPlaceholderText("where to save the project (.nsproj)")
        out_browse = QPushButton("Browse…")
        out_browse.clicked.connect(self._browse_out)
        row2 = QHBoxLayout()
        row2.addWidget(self.out)
        row2.addWidget(out_browse)
        form.addRow("Save as", row2)
        self.flat = QCheckBox("Flat graph (no blocks for container modules such as a ResNet's layer1.0)")
        form.addRow(self.flat)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse_pt2(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a model", self.default_dir,
                                              "torch.export program (*.pt2);;Python file (*.py)")
        if path:
            self.spec.setText(path + (":" if path.endswith(".py") else ""))  # then the class name

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the imported project", self.default_dir,
                                              "NetStudio project (*.nsproj)")
        if path:
            self.out.setText(path)

    def request(self) -> ImportRequest | None:
        spec, out = self.spec.text().strip(), self.out.text().strip()
        if not spec or not out:
            return None
        if not Path(out).suffix:
            out += ".nsproj"
        return ImportRequest(spec, out, self.shape.text().strip() or None, self.weights.text().strip() or None,
                             self.flat.isChecked(), args=self.args.text().strip() or None)
