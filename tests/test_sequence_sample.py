"""The sequence_classifier sample: digits read row by row by an LSTM, trained through the CLI."""

from __future__ import annotations

import json

import pytest

from conftest import SAMPLES
from netstudio.cli import main
from netstudio.project.io import load_project


def test_sequence_classifier_is_lstm_then_last_step_then_linear() -> None:
    g = load_project(SAMPLES / "sequence_classifier.nsproj").graph
    by_name = {n.name: n for n in g.nodes.values()}
    assert [by_name[n].type_id for n in ("rows", "lstm", "last_step", "classifier")] == \
        ["layer.reshape", "layer.lstm", "layer.select", "layer.linear"]
    assert by_name["rows"].params["shape"] == [8, 8] and by_name["data"].params["source"] == "digits"
    assert by_name["last_step"].params == {"dim": 1, "index": -1}


def test_sequence_classifier_reaches_90_percent(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    rc = main(["train", str(SAMPLES / "sequence_classifier.nsproj"), "--epochs", "4", "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads([line for line in out.splitlines() if line.strip()][-1])
    assert result["epochs"] == 4
    assert result["val_accuracy"] >= 0.90, result
