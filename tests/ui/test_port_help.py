"""A port's help text (e.g. what an LSTM's h_n holds) is its tooltip on the canvas."""

from __future__ import annotations

from typing import Any

from .helpers import add


def test_lstm_ports_explain_output_and_h_n(window: Any) -> None:
    nid = add(window, "layer.lstm", (0, 0), bidirectional=True)
    ports = window.scene.node_items[nid].out_ports
    assert list(ports) == ["output", "h_n"]
    tip = ports["h_n"].toolTip()
    assert tip.startswith("output 'h_n' (tensor): the last layer's final hidden state")
    assert "forward direction's state after the last step followed by the backward" in tip
    assert ports["output"].toolTip().startswith("output 'output' (tensor): every time step's hidden state")
