"""Per-node health of a training run for the editor, built from its ``stats`` events.

Plain Python (no torch, no Qt): the app imports it at start-up. The figures come from
:mod:`netstudio.training.nodestats` through the ``stats`` event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any



#: how bad each finding is for the health strip: 2 = error, 1 = warning
_LEVEL = {"nonfinite": 2, "exploding": 2, "dead_relu": 1, "vanishing": 1, "saturated": 1, "frozen": 1}


@dataclass
class NodeHealth:
    """What the canvas shows for one node: its latest figures, its gradient norm over the samples,
    the worst signal (0 ok, 1 warning, 2 error) and the findings behind it."""

    figures: dict[str, float | None] = field(default_factory=dict)
    grad_norms: list[float] = field(default_factory=list)
    level: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    #: (step, {"output"/"grad": [lo, hi, counts...]}) of the recent samples, oldest first
    histograms: list[tuple[int, dict[str, list[float]]]] = field(default_factory=list)


class HealthBook:
    """Per node id the health of the current run, built from its ``stats`` events (no Qt, no torch)."""

    HISTORY = 60  # samples kept for a sparkline

    def __init__(self) -> None:
        self.nodes: dict[str, NodeHealth] = {}
        self.nan_origin: str | None = None
        self.step = 0
        self.diagnoses: dict[tuple[str, str], dict[str, Any]] = {}  # (code, node id) -> the latest finding

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def add(self, event: dict[str, Any]) -> None:
        self.step = int(event.get("global_step") or 0)
        if event.get("nan_origin"):
            self.nan_origin = str(event["nan_origin"])
        current = {(d["code"], d["node_id"]) for d in event.get("diagnoses") or []}
        # a finding that no longer holds goes (a layer that started to learn); NaN findings stay
        self.diagnoses = {k: d for k, d in self.diagnoses.items() if k in current or d["code"] == "nonfinite"}
        for d in event.get("diagnoses") or []:
            self.diagnoses[(d["code"], d["node_id"])] = dict(d, step=self.step)
        for nid, fig in (event.get("nodes") or {}).items():
            h = self.nodes.setdefault(nid, NodeHealth())
            h.figures = dict(fig)
            g = fig.get("grad_norm")
            if g is not None:
                h.grad_norms = (h.grad_norms + [float(g)])[-self.HISTORY:]
        for nid, hist in (event.get("histograms") or {}).items():
            h = self.nodes.setdefault(nid, NodeHealth())
            h.histograms = (h.histograms + [(self.step, dict(hist))])[-self.HISTORY:]
        for h in self.nodes.values():
            h.findings, h.level = [], 0
        for d in self.diagnoses.values():
            h = self.nodes.setdefault(d["node_id"], NodeHealth())
            h.findings.append(d)
            h.level = max(h.level, _LEVEL.get(d["code"], 1))
        if self.nan_origin is not None:
            self.nodes.setdefault(self.nan_origin, NodeHealth()).level = 2
