"""The inspector: a form generated from the selected node's ``Param`` declarations.

int → spin box (with an *auto* toggle for ``allow_auto``), float → spin box
(multiplicative steps for ``log_scale`` params such as learning rates),
choice → combo box, bool → check box, str/ints → line edit, path → line edit
with a browse button. Every committed value is one ``SetParam`` undo step; a
refused value shows the ``ParamError`` text under the field.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QFrame, QHBoxLayout,
                               QLabel, QLineEdit, QMenu, QScrollArea, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from netstudio.compiler.shapes import Analysis
from netstudio.errors import NetStudioError, ParamError
from netstudio.graph.commands import RenameNode, SetParam, SetTrainable
from netstudio.graph.model import EventKind, GraphEvent
from netstudio.nodes.base import AUTO, Category, NodeType, Param
from netstudio.nodes.blocks import BLOCK_INPUT, BLOCK_OUTPUT
from netstudio.ui.augment_preview import AugmentPreview
from netstudio.ui.document import Document
from netstudio.ui.theme import CATEGORY_COLORS, theme

_BLOCK_PORTS = (BLOCK_INPUT, BLOCK_OUTPUT)
INT_LIMIT = 2_147_483_647
#: the float boxes' own range: wide, so that a typed value reaches validation unclamped
FLOAT_LIMIT = 1e15


def _fmt_float(v: float) -> str:
    return f"{v:.6g}"


class _SoftRange:
    """Spin boxes that accept any typed number but step only within the param's range.

    Qt clamps a typed value to the box's range without a word (0 became 120, -0.5
    became 0). The box's own range is wide instead; a value outside the param's
    range is committed, refused by the model with a reason shown under the field,
    and the last valid value stays. The arrows never leave the valid range.
    """

    soft_min: float | None = None
    soft_max: float | None = None

    def _soft_clamp(self, v: float) -> float:
        if self.soft_min is not None:
            v = max(self.soft_min, v)
        if self.soft_max is not None:
            v = min(self.soft_max, v)
        return v

    def _soft_step_enabled(self, value: float) -> Any:
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self.soft_max is None or value < self.soft_max:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        if self.soft_min is None or value > self.soft_min:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        return flags


class IntSpinBox(_SoftRange, QSpinBox):
    """Whole numbers: any value can be typed, the arrows stay within the param's range."""

    def __init__(self, spec: Param, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(-INT_LIMIT, INT_LIMIT)
        self.soft_min = max(spec.min, -INT_LIMIT) if spec.min is not None else None
        self.soft_max = min(spec.max, INT_LIMIT) if spec.max is not None else None

    def stepBy(self, steps: int) -> None:
        self.setValue(int(self._soft_clamp(self.value() + steps * self.singleStep())))

    def stepEnabled(self) -> Any:
        return self._soft_step_enabled(self.value())


class FloatSpinBox(_SoftRange, QDoubleSpinBox):
    """Shows compact numbers (1e-05, 0.9) and, for log-scale params, steps ×/÷ on a 1-2-5 ladder."""

    def __init__(self, log_scale: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log_scale = log_scale
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:
        return _fmt_float(value)

    def valueFromText(self, text: str) -> float:
        try:
            return float(text.strip())
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> Any:
        t = text.strip()
        if not t or t in ("-", ".", "-.", "e", "1e", "1e-"):
            return QValidator.State.Intermediate, text, pos
        try:
            float(t)
        except ValueError:
            ok = all(c in "0123456789.eE+-" for c in t)
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid), text, pos
        return QValidator.State.Acceptable, text, pos

    def stepBy(self, steps: int) -> None:
        v = self.value()
        if not self.log_scale:
            self.setValue(self._soft_clamp(v + steps * self.singleStep()))
            return
        for _ in range(abs(steps)):
            v = _ladder_step(v, steps > 0)
        self.setValue(self._soft_clamp(max(self.minimum(), min(self.maximum(), v))))
        self.editingFinished.emit()

    def stepEnabled(self) -> Any:
        return self._soft_step_enabled(self.value())


def _fmt_kept(value: Any) -> str:
    """The value a refused edit left in place, as the field shows it."""
    if isinstance(value, float):
        return _fmt_float(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _ladder_step(v: float, up: bool) -> float:
    """Next value on the 1, 2, 5, 10, 20, ... ladder (learning rates)."""
    if v <= 0:
        return 1e-4 if up else 0.0
    exp = math.floor(math.log10(v))
    ladder = [m * 10.0 ** e for e in (exp - 1, exp, exp + 1) for m in (1, 2, 5)]
    if up:
        return next(x for x in ladder if x > v * (1 + 1e-9))
    return next(x for x in reversed(ladder) if x < v * (1 - 1e-9))


class ParamEditor(QWidget):
    """One param's widget(s). ``committed`` carries the new value (or "auto")."""

    committed = Signal(str, object)

    def __init__(self, spec: Param, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self._value: Any = None
        self._setting = False
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.auto_box: QCheckBox | None = None
        self.widget: QWidget = self._make_widget()
        lay.addWidget(self.widget, 1)
        if spec.kind == "path":
            self.browse = QToolButton(self)
            self.browse.setText("…")
            self.browse.setToolTip("Browse")
            menu = QMenu(self.browse)
            menu.addAction("Choose file…", self._browse_file)
            menu.addAction("Choose folder…", self._browse_folder)
            self.browse.setMenu(menu)
            self.browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
            lay.addWidget(self.browse)
        if spec.allow_auto:
            self.auto_box = QCheckBox("auto", self)
            self.auto_box.setToolTip("infer this value from the input shape")
            self.auto_box.toggled.connect(self._auto_toggled)
            lay.addWidget(self.auto_box)
        tip = spec.help or ""
        if spec.min is not None or spec.max is not None:
            rng = f"range {'' if spec.min is None else f'{spec.min:g}'} … {'' if spec.max is None else f'{spec.max:g}'}"
            tip = f"{tip} ({rng})" if tip else rng
        self.setToolTip(tip)
        self.resolved_hint = ""

    def _make_widget(self) -> QWidget:
        s = self.spec
        if s.kind == "int":
            spin = IntSpinBox(s, self)
            spin.setSingleStep(int(s.step or 1))
            spin.setKeyboardTracking(False)  # commit on Enter/focus-out/arrows, not per keystroke
            spin.valueChanged.connect(lambda v: self._commit(int(v)))
            return spin
        if s.kind == "float":
            fspin = FloatSpinBox(s.log_scale, self)
            fspin.setRange(-FLOAT_LIMIT, FLOAT_LIMIT)  # typed values outside the param's range are refused
            fspin.soft_min, fspin.soft_max = s.min, s.max  # with a reason, not clamped
            fspin.setSingleStep(float(s.step or 0.1))
            fspin.setKeyboardTracking(False)
            fspin.valueChanged.connect(lambda v: self._commit(float(v)))
            return fspin
        if s.kind == "bool":
            check = QCheckBox(self)
            check.toggled.connect(lambda b: self._commit(bool(b)))
            return check
        if s.kind == "choice":
            combo = QComboBox(self)
            combo.addItems(list(s.choices))
            combo.activated.connect(lambda i: self._commit(s.choices[i]))
            return combo
        line = QLineEdit(self)
        if s.kind == "ints":
            line.setPlaceholderText("e.g. 3, 3")
        line.editingFinished.connect(lambda: self._commit(line.text()))
        return line

    # --- value in/out ---------------------------------------------------------
    def set_value(self, value: Any) -> None:
        """Show the model's value without committing anything."""
        self._setting = True
        try:
            self._value = value
            is_auto = value == AUTO
            if self.auto_box is not None:
                self.auto_box.setChecked(is_auto)
            w = self.widget
            if isinstance(w, QSpinBox):
                if not is_auto:
                    w.setValue(int(value))
                w.setEnabled(not is_auto)
            elif isinstance(w, QDoubleSpinBox):
                if not is_auto:
                    w.setValue(float(value))
                w.setEnabled(not is_auto)
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QComboBox):
                w.setCurrentIndex(max(0, w.findText(str(value))))
            elif isinstance(w, QLineEdit):
                text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
                w.setText(text)
                w.setEnabled(not is_auto)
        finally:
            self._setting = False

    def set_resolved(self, resolved: Any) -> None:
        """While on auto, show what auto resolved to (e.g. in_features = 256)."""
        if self._value != AUTO or resolved in (None, AUTO):
            self.resolved_hint = ""
        else:
            self.resolved_hint = str(resolved)
            w = self.widget
            self._setting = True
            try:
                if isinstance(w, QSpinBox) and isinstance(resolved, int):
                    w.setValue(resolved)
                elif isinstance(w, QDoubleSpinBox) and isinstance(resolved, (int, float)):
                    w.setValue(float(resolved))
            finally:
                self._setting = False
        if self.auto_box is not None:
            self.auto_box.setText(f"auto = {self.resolved_hint}" if self.resolved_hint else "auto")

    def _commit(self, value: Any) -> None:
        if self._setting:
            return
        if self.auto_box is not None and self.auto_box.isChecked():
            return
        if value == self._value:
            return
        self.committed.emit(self.spec.name, value)

    def _auto_toggled(self, checked: bool) -> None:
        if self._setting:
            return
        if checked:
            self.committed.emit(self.spec.name, AUTO)
        else:
            w = self.widget
            value: Any = w.value() if isinstance(w, (QSpinBox, QDoubleSpinBox)) else \
                (w.text() if isinstance(w, QLineEdit) else None)
            self.committed.emit(self.spec.name, value)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Choose {self.spec.display}", self._current_text())
        if path:
            self._set_path(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, f"Choose {self.spec.display}", self._current_text())
        if path:
            self._set_path(path)

    def _current_text(self) -> str:
        return self.widget.text() if isinstance(self.widget, QLineEdit) else ""

    def _set_path(self, path: str) -> None:
        if isinstance(self.widget, QLineEdit):
            self.widget.setText(path)
        self._commit(path)


class Inspector(QWidget):
    """Shows and edits the single selected node."""

    #: a user-visible message for the status bar
    message = Signal(str)

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.node_id: str | None = None
        self.editors: dict[str, ParamEditor] = {}
        self.errors: dict[str, QLabel] = {}
        self._rows: dict[str, int] = {}

        self.scroll_area = QScrollArea(self)  # not 'scroll': that is QWidget.scroll()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)

        self.body = QWidget()
        self.scroll_area.setWidget(self.body)
        self.vbox = QVBoxLayout(self.body)
        self.vbox.setContentsMargins(10, 10, 10, 10)
        self.vbox.setSpacing(8)

        self.title = QLabel(self.body)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.description = QLabel(self.body)
        self.description.setWordWrap(True)
        self.problem_label = QLabel(self.body)
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.TextFormat.RichText)
        self.problem_label.hide()
        self.placeholder = QLabel("Select a node to edit its parameters.\n\n"
                                  "Tip: drag from the palette or press Tab on the canvas to add nodes.", self.body)
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        self.form_host = QWidget(self.body)
        self.form = QFormLayout(self.form_host)
        self.form.setContentsMargins(0, 4, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.name_edit: QLineEdit | None = None
        self.name_error: QLabel | None = None
        #: "Trainable" (layers and blocks): off freezes the node's weights
        self.trainable_box: QCheckBox | None = None

        # the Dataset node's augmentation preview strip (netstudio.ui.augment_preview)
        self.augment_preview = AugmentPreview(self.body)
        self.augment_preview.hide()
        for w in (self.title, self.description, self.problem_label, self.placeholder, self.form_host,
                  self.augment_preview):
            self.vbox.addWidget(w)
        self.vbox.addStretch(1)

        document.graph_event.connect(self._on_graph_event)
        document.analysis_changed.connect(self._on_analysis)
        document.project_replaced.connect(lambda: self.show_node(None))
        document.path_changed.connect(lambda: self.show_node(None))
        document.locked_changed.connect(lambda locked: self.form_host.setEnabled(not locked))
        self.show_node(None)

    def _error_label(self) -> QLabel:
        lab = QLabel(self.form_host)
        lab.setWordWrap(True)
        lab.setStyleSheet(f"color: {theme().error.name()};")
        lab.hide()
        return lab

    # --- which node ------------------------------------------------------------
    def set_selection(self, node_ids: list[str]) -> None:
        if len(node_ids) == 1:
            self.show_node(node_ids[0])
        else:
            self.show_node(None, f"{len(node_ids)} nodes selected." if node_ids else None)

    def show_node(self, node_id: str | None, note: str | None = None) -> None:
        graph = self.doc.current
        if node_id is not None and node_id not in graph.nodes:
            node_id = None
        if node_id == self.node_id and node_id is not None:
            return
        focused = QApplication.focusWidget()
        if focused is not None and self.form_host.isAncestorOf(focused):
            focused.clearFocus()  # finish a half-typed value: it belongs to the node shown so far
        self._clear_form()
        self.node_id = node_id
        self._show_augment_preview()
        if node_id is None:
            self.title.hide()
            self.description.hide()
            self.problem_label.hide()
            self.form_host.hide()
            self.placeholder.setText(note or "Select a node to edit its parameters.\n\n"
                                     "Tip: drag from the palette or press Tab on the canvas to add nodes.")
            self.placeholder.show()
            return
        node = graph.nodes[node_id]
        nt = graph.node_type(node)
        self.placeholder.hide()
        color = CATEGORY_COLORS[nt.category].name()
        self.title.setText(f"<span style='color:{color}; font-size:15pt'>■</span> "
                           f"<span style='font-size:12pt; font-weight:600'>{nt.title}</span> "
                           f"<span style='color:gray'>&nbsp;{nt.type_id}</span>")
        self.description.setText(nt.description)
        self.title.show()
        self.description.setVisible(bool(nt.description))
        self._build_form(nt, node.params)
        self.form_host.show()
        self.form_host.setEnabled(not self.doc.locked)
        self._on_analysis(self.doc.analysis())

    def _show_augment_preview(self) -> None:
        node = self.doc.current.nodes.get(self.node_id) if self.node_id is not None else None
        self.augment_preview.set_params(node.params if node is not None and node.type_id == "data.dataset" else None)

    def _clear_form(self) -> None:
        # A focused field emits editingFinished while it is destroyed; by then the
        # inspector may show another node, so silence the old widgets first.
        for ed in self.editors.values():
            ed.blockSignals(True)
            ed.widget.blockSignals(True)
        if self.name_edit is not None:
            self.name_edit.blockSignals(True)
            self.name_edit = None
            self.name_error = None
        if self.trainable_box is not None:
            self.trainable_box.blockSignals(True)
            self.trainable_box = None
        # removeRow deletes the row widgets, so forget our references first
        self.editors.clear()
        self.errors.clear()
        self._rows.clear()
        while self.form.rowCount():
            self.form.removeRow(0)

    def _build_form(self, nt: NodeType, params: dict[str, Any]) -> None:
        assert self.node_id is not None
        self.name_edit = QLineEdit(self.form_host)
        self.name_error = self._error_label()
        self.name_edit.setText(self.doc.current.nodes[self.node_id].name)
        self.name_edit.setToolTip("node name: also the attribute name of its module in the generated code")
        self.name_edit.editingFinished.connect(self._rename)
        self.form.addRow("name", self.name_edit)
        self.form.addRow("", self.name_error)
        self.form.setRowVisible(1, False)
        if nt.category == Category.LAYER and nt.type_id not in _BLOCK_PORTS:
            box = self.trainable_box = QCheckBox("Trainable", self.form_host)
            box.setChecked(self.doc.current.nodes[self.node_id].trainable)
            box.setToolTip("off: the weights stay as they are while training (a block: all weights inside it), "
                           "and BatchNorm keeps its running statistics")
            box.toggled.connect(self._set_trainable)
            self.form.addRow("", box)
        for spec in nt.params:
            ed = ParamEditor(spec, self.form_host)
            ed.set_value(params.get(spec.name, spec.default))
            ed.committed.connect(self._commit)
            err = self._error_label()
            label = QLabel(spec.display, self.form_host)
            label.setToolTip(spec.help)
            self._rows[spec.name] = self.form.rowCount()
            self.form.addRow(label, ed)
            self.form.addRow("", err)
            self.editors[spec.name] = ed
            self.errors[spec.name] = err
        self._update_visibility(params)

    def _update_visibility(self, params: dict[str, Any]) -> None:
        assert self.node_id is not None
        nt = self.doc.current.node_type(self.node_id)
        for spec in nt.params:
            visible = True
            if spec.visible_if is not None:
                ctrl, values = spec.visible_if
                visible = params.get(ctrl) in values
            row = self._rows[spec.name]
            self.form.setRowVisible(row, visible)
            self.form.setRowVisible(row + 1, visible and not self.errors[spec.name].isHidden())

    # --- edits ------------------------------------------------------------------
    def _commit(self, key: str, value: Any) -> None:
        if self.node_id is None:
            return
        err = self.errors.get(key)
        try:
            self.doc.push(SetParam(self.node_id, key, value))
        except ParamError as e:
            kept = self.doc.current.nodes[self.node_id].params.get(key)
            self._show_error(key, f"{e.message}" + (f" — {e.hint}" if e.hint else "") + f"; kept {_fmt_kept(kept)}")
            self.editors[key].set_value(kept)
            self.message.emit(f"{e}; kept {_fmt_kept(kept)}")
            return
        except NetStudioError as e:
            self._show_error(key, str(e))
            self.editors[key].set_value(self.doc.current.nodes[self.node_id].params.get(key))
            self.message.emit(str(e))
            return
        if err is not None and not err.isHidden():
            self._show_error(key, "")

    def _show_error(self, key: str, text: str) -> None:
        err = self.errors[key]
        err.setText(text)
        err.setVisible(bool(text))
        self.form.setRowVisible(self._rows[key] + 1, bool(text))

    def _rename(self) -> None:
        if self.node_id is None or self.name_edit is None or self.name_error is None:
            return
        name = self.name_edit.text().strip()
        node = self.doc.current.nodes[self.node_id]
        if name == node.name:
            self.form.setRowVisible(1, False)
            return
        try:
            self.doc.push(RenameNode(self.node_id, name))
        except NetStudioError as e:
            self.name_error.setText(str(e))
            self.form.setRowVisible(1, True)
            self.name_edit.setText(node.name)
            self.message.emit(str(e))
            return
        self.form.setRowVisible(1, False)
        self.name_edit.setText(self.doc.current.nodes[self.node_id].name)  # sanitised

    def _set_trainable(self, checked: bool) -> None:
        if self.node_id is not None and self.doc.current.nodes[self.node_id].trainable != checked:
            self.doc.push(SetTrainable([self.node_id], checked))

    # --- model → form ---------------------------------------------------------------
    def _on_graph_event(self, event: GraphEvent) -> None:
        ev = self.doc.current_event(event)  # inside a block: the events of the open block
        if ev is None:
            return
        if self.node_id is None or ev.node_id != self.node_id:
            if ev.kind == "reset":
                self.show_node(None)
            return
        node = self.doc.current.nodes.get(self.node_id)
        if ev.kind == "node_removed" or node is None:
            self.show_node(None)
        elif ev.kind == "param_changed" and ev.key in self.editors:
            self.editors[ev.key].set_value(node.params[ev.key])
            self._update_visibility(node.params)
            self._show_augment_preview()
        elif ev.kind == "node_renamed" and self.name_edit is not None:
            self.name_edit.setText(node.name)
        elif ev.kind == EventKind.TRAINABLE_CHANGED and self.trainable_box is not None:
            self.trainable_box.blockSignals(True)
            self.trainable_box.setChecked(node.trainable)
            self.trainable_box.blockSignals(False)

    def _on_analysis(self, analysis: Analysis) -> None:
        if self.node_id is None:
            return
        analysis = analysis.inner(self.doc.path) or Analysis([], {}, [], analysis.batch_size)
        res = analysis.results.get(self.node_id)
        for name, ed in self.editors.items():
            ed.set_resolved(res.params.get(name) if res is not None else None)
        self._explain_phases(analysis)
        problems = analysis.problems_for(self.node_id)
        if problems:
            t = theme()
            html = "<br>".join(
                f"<span style='color:{t.error.name() if p.severity == 'error' else '#e8a317'}'>● {p.message}</span>"
                + (f"<br>&nbsp;&nbsp;<i>Fix: {p.hint}</i>" if p.hint else "") for p in problems)
            self.problem_label.setText(html)
            self.problem_label.show()
        else:
            self.problem_label.hide()

    def _explain_phases(self, analysis: Analysis) -> None:
        """An optimizer of a graph with several (a GAN): its description says the phase order and what it trains."""
        graph = self.doc.current
        node = graph.nodes.get(self.node_id) if self.node_id is not None else None
        if node is None:
            return
        nt = graph.node_type(node)
        if nt.category != Category.OPTIMIZER:
            return
        from netstudio.compiler.phases import explain

        extra = explain(graph, node.id, analysis.order) if analysis.order else ""
        text = nt.description + (f"\n\n{extra}" if extra else "")
        self.description.setText(text)
        self.description.setVisible(bool(text))

    # --- test/automation helpers -------------------------------------------------------
    def editor(self, name: str) -> ParamEditor:
        return self.editors[name]

    def error_text(self, name: str) -> str:
        err = self.errors[name]
        return err.text() if not err.isHidden() else ""


__all__ = ["Inspector", "ParamEditor", "FloatSpinBox"]
