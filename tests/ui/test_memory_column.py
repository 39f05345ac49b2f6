"""The Model panel's Memory column: the training estimate of each layer, and a refusal shown
when the project's device cannot hold the run."""

from __future__ import annotations

from typing import Any

import pytest

from netstudio.compiler import memory
from netstudio.compiler.memory import fmt_bytes

from .helpers import build_mlp


def test_memory_column_and_total(window: Any) -> None:
    build_mlp(window)  # batch 64, SGD with the default momentum: one state tensor per parameter
    window.summary.refresh()
    assert [r[0] for r in window.summary.row_texts()] == ["flatten1", "fc1", "relu1", "fc2"]
    header = window.summary.table.horizontalHeaderItem(4).text()
    assert header == "Memory"
    # weights + gradients + momentum buffers + its output for one batch
    fc1 = 3 * (784 * 128 + 128) * 4 + 64 * 128 * 4
    fc2 = 3 * (128 * 10 + 10) * 4 + 64 * 10 * 4
    assert window.summary.memory_texts() == [fmt_bytes(64 * 784 * 4), fmt_bytes(fc1), fmt_bytes(64 * 128 * 4),
                                             fmt_bytes(fc2)]
    total = 64 * 784 * 4 + fc1 + 64 * 128 * 4 + fc2 + 64 * 784 * 4  # + the input batch
    assert f"training needs about {fmt_bytes(total)} (batch 64)" in window.summary.total.text()
    assert window.summary.memory_error is None
    assert "def forward(self, x):" in window.summary.code.toPlainText()  # compiled on the meta device


def test_a_run_that_cannot_fit_is_shown_in_the_model_panel(window: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    build_mlp(window)
    monkeypatch.setattr(memory, "available_ram", lambda: 100_000)
    window.document.project.training.device = "cpu"
    window.summary.refresh()
    assert window.summary.memory_error is not None
    assert window.summary.memory_error.startswith("Training (batch 64) needs about")
    assert "Linear 'fc1' alone needs" in window.summary.memory_error
    assert "✗ Training (batch 64)" in window.summary.total.text()
