"""Kinds and states that were free strings are StrEnums that still read, print and serialise as those strings."""

from __future__ import annotations

import json
import typing

import pytest

from netstudio.enums import StrEnum
from netstudio.errors import Problem, Scope, Severity
from netstudio.graph.model import EventKind, Graph
from netstudio.nodes.base import Param, ParamKind, ParamKindName


@pytest.mark.parametrize("enum", [EventKind, ParamKind, Severity, Scope])
def test_members_are_their_old_strings(enum: type[StrEnum]) -> None:
    for member in enum:
        value = member.value
        assert isinstance(member, str) and member == value and hash(member) == hash(value)
        assert str(member) == value and f"{member}" == value and f"{member:>12}" == f"{value:>12}"
        assert json.dumps({"k": member}) == json.dumps({"k": value})
        assert enum(value) is member
        assert {value: 1}[member] == 1  # dicts keyed by the old strings still find the member


def test_graph_events_carry_event_kinds() -> None:
    g = Graph()
    seen: list[object] = []
    g.subscribe(lambda e: seen.append(e.kind))
    a = g.add_node("layer.linear", {"out_features": 4})
    b = g.add_node("activation.relu")
    g.connect(a.id, "output", b.id, "input")
    g.set_param(a.id, "out_features", 8)
    g.clear()
    assert seen == ["node_added", "node_added", "edge_added", "param_changed", "reset"]
    assert [type(k) for k in seen] == [EventKind] * 5


def test_param_kinds_are_enum_members_and_typos_are_refused() -> None:
    assert set(typing.get_args(ParamKindName)) == {k.value for k in ParamKind}
    p = Param("units", "int", 3)
    assert p.kind is ParamKind.INT and p.kind == "int"
    assert Param("units", ParamKind.INT, 3) == p
    with pytest.raises(ValueError, match="unknown param kind 'integer'"):
        Param("units", "integer", 3)  # type: ignore[arg-type]


def test_problem_severity_and_scope() -> None:
    p = Problem("m", severity="warning", scope="training")  # type: ignore[arg-type]
    assert p.severity is Severity.WARNING and p.scope is Scope.TRAINING
    assert Problem("m").severity is Severity.ERROR and Problem("m").scope is Scope.MODEL
    with pytest.raises(ValueError):
        Problem("m", severity="fatal")  # type: ignore[arg-type]
