"""The search space of a hyperparameter sweep: ``NODE.PARAM=DISTRIBUTION`` texts, parsed strictly.

``NODE`` is a node's id or name, or ``optimizer`` / ``scheduler`` for the graph's node of that kind;
``PARAM`` one of its parameters. The distributions:

* ``log(a,b)``    — a float (an int for a whole-number parameter) drawn log-uniformly from [a, b], 0 < a < b
* ``float(a,b)``  — a float drawn uniformly from [a, b], a < b
* ``int(a,b)``    — a whole number from a to b (both included), a < b
* ``choice(v,…)`` — one of two or more distinct values (numbers, true/false, or words)

Every error is a :class:`netstudio.errors.SweepError` that quotes the token at fault. Parsing needs
no Optuna and no torch; :func:`resolve` checks a parsed space against a graph (the node exists, has
the parameter, and every value the distribution can give is one the parameter accepts).
Nothing here imports Qt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from netstudio.errors import NetStudioError, SweepError

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.graph.model import Graph, Node

KINDS = ("log", "float", "int", "choice")
#: the node kinds a space may name instead of a node (``optimizer.lr``)
ROLES = {"optimizer": "optimizer", "scheduler": "scheduler"}

_DIST = re.compile(r"^\s*([A-Za-z_][A-Za-z_0-9]*)\s*\((.*)\)\s*$", re.S)
_INT = re.compile(r"^[+-]?\d+$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z_0-9\-]*$")

SYNTAX_HINT = ("write NODE.PARAM=log(a,b), float(a,b), int(a,b) or choice(v1,v2,...), "
               "e.g. optimizer.lr=log(1e-4,1e-1)")


@dataclass(frozen=True)
class Distribution:
    kind: str                              # log | float | int | choice
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        if self.kind == "choice":
            return "choice(" + ",".join(_value_text(v) for v in self.choices) + ")"
        return f"{self.kind}({_value_text(self.low)},{_value_text(self.high)})"


@dataclass(frozen=True)
class ParamSpace:
    """One ``NODE.PARAM=DISTRIBUTION`` as written (``key`` is ``NODE.PARAM``: the trial's parameter name)."""

    node: str
    param: str
    dist: Distribution
    source: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return f"{self.node}.{self.param}"

    def text(self) -> str:
        return f"{self.key}={self.dist.text()}"


@dataclass(frozen=True)
class Target:
    """A parsed space resolved on a graph: the node it changes and whether that parameter is whole-numbered."""

    space: ParamSpace
    node_id: str
    node_name: str
    param_kind: str        # int | float | choice | bool | ...

    @property
    def key(self) -> str:
        return self.space.key


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _fail(source: str, token: str, why: str) -> SweepError:
    return SweepError(f"Sweep parameter {source!r}: {token!r} {why}", hint=SYNTAX_HINT)


def _number(source: str, token: str) -> float:
    t = token.strip()
    if not t:
        raise _fail(source, token, "is empty where a number was expected")
    try:
        v = float(t)
    except ValueError:
        raise _fail(source, t, "is not a number") from None
    if not math.isfinite(v):
        raise _fail(source, t, "is not a finite number")
    return v


def _whole(source: str, token: str) -> int:
    t = token.strip()
    if not _INT.match(t):
        raise _fail(source, t or token, "is not a whole number")
    return int(t)


def _choice_value(source: str, token: str) -> Any:
    t = token.strip()
    if not t:
        raise _fail(source, token, "is an empty choice")
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if _INT.match(t):
        return int(t)
    try:
        v = float(t)
    except ValueError:
        v = None
    if v is not None:
        if not math.isfinite(v):
            raise _fail(source, t, "is not a finite number")
        return v
    if not _WORD.match(t):
        raise _fail(source, t, "is not a number, true/false or a plain word (quote other text)")
    return t


def parse_distribution(text: str, source: str | None = None) -> Distribution:
    """``log(1e-4,1e-1)`` → Distribution; SweepError naming the bad token otherwise."""
    source = text if source is None else source
    m = _DIST.match(text)
    if m is None:
        raise _fail(source, text.strip(), "is not a distribution")
    name, body = m.group(1), m.group(2)
    if name not in KINDS:
        raise _fail(source, name, f"is not a distribution (use {', '.join(KINDS)})")
    if "(" in body or ")" in body:
        raise _fail(source, body.strip(), "has unbalanced or nested brackets")
    args = body.split(",")
    if name == "choice":
        values = [_choice_value(source, a) for a in args]
        if len(values) < 2:
            raise _fail(source, text.strip(), "needs at least two values to choose from")
        seen: list[Any] = []
        for a, v in zip(args, values):
            if any(type(v) is type(s) and v == s for s in seen):
                raise _fail(source, a.strip(), "appears twice in the choice")
            seen.append(v)
        return Distribution("choice", choices=tuple(values))
    if len(args) != 2:
        raise _fail(source, text.strip(), f"needs exactly two bounds, {name}(low,high); got {len(args)}")
    if name == "int":
        lo_i, hi_i = _whole(source, args[0]), _whole(source, args[1])
        if lo_i >= hi_i:
            raise _fail(source, args[1].strip(), f"must be above the lower bound {lo_i}")
        return Distribution("int", lo_i, hi_i)
    lo, hi = _number(source, args[0]), _number(source, args[1])
    if name == "log" and lo <= 0:
        raise _fail(source, args[0].strip(), "must be above 0 for a log-uniform range")
    if lo >= hi:
        raise _fail(source, args[1].strip(), f"must be above the lower bound {_value_text(lo)}")
    return Distribution(name, lo, hi)


def parse_param(text: str) -> ParamSpace:
    """``optimizer.lr=log(1e-4,1e-1)`` → ParamSpace (SweepError naming the bad token otherwise)."""
    source = text
    if "=" not in text:
        raise _fail(source, text.strip(), "has no '=' between NODE.PARAM and the distribution")
    left, right = text.split("=", 1)
    target = left.strip()
    if "." not in target:
        raise _fail(source, target, "is not NODE.PARAM (a node name or id, a dot, a parameter)")
    node, param = target.rsplit(".", 1)
    node, param = node.strip(), param.strip()
    if not node:
        raise _fail(source, target, "names no node before the dot")
    if not re.match(r"^[A-Za-z_][A-Za-z_0-9]*$", param):
        raise _fail(source, param or target, "is not a parameter name")
    return ParamSpace(node, param, parse_distribution(right, source), source)


def parse_space(texts: Iterable[str]) -> list[ParamSpace]:
    """Every ``--param`` text parsed; the same NODE.PARAM twice is an error."""
    out: list[ParamSpace] = []
    for t in texts:
        sp = parse_param(t)
        if any(o.key == sp.key for o in out):
            raise _fail(t, sp.key, "is searched twice")
        out.append(sp)
    if not out:
        raise SweepError("A sweep needs at least one parameter to search", hint=SYNTAX_HINT)
    return out


def find_node(graph: "Graph", name: str, source: str = "") -> "Node":
    """A node by id or name, or the graph's optimizer / scheduler node."""
    if name in graph.nodes:
        return graph.nodes[name]
    named = [n for n in graph.nodes.values() if n.name == name]
    if named:
        return named[0]
    role = ROLES.get(name.lower())
    if role is not None:
        found = [n for n in graph.nodes.values() if graph.node_type(n).category.value == role]
        if len(found) == 1:
            return found[0]
        if not found:
            raise _fail(source or name, name, f"names no node: the graph has no {role} node")
        raise _fail(source or name, name, f"is ambiguous: the graph has {len(found)} {role} nodes "
                                          f"({', '.join(n.name for n in found)}); name one of them")
    raise _fail(source or name, name, "is not the name or id of a node in the graph (nor optimizer/scheduler)")


def _check_value(target_spec: Any, node_id: str, space: ParamSpace, value: Any) -> None:
    try:
        target_spec.coerce(value, node_id=node_id)
    except NetStudioError as e:
        raise SweepError(f"Sweep parameter {space.source or space.text()!r}: {_value_text(value)!r} does not fit "
                         f"{space.key}: {e.message}", node_id=node_id, hint=e.hint or SYNTAX_HINT) from None


def resolve(graph: "Graph", spaces: Iterable[ParamSpace]) -> list[Target]:
    """Check every space against the graph; the nodes they change (SweepError otherwise)."""
    out: list[Target] = []
    for sp in spaces:
        src = sp.source or sp.text()
        node = find_node(graph, sp.node, src)
        nt = graph.node_type(node)
        try:
            spec = nt.param(sp.param)
        except KeyError:
            names = ", ".join(p.name for p in nt.params) or "none"
            raise SweepError(f"Sweep parameter {src!r}: {sp.param!r} is not a parameter of {nt.title} "
                             f"'{node.name}' (its parameters: {names})", node_id=node.id, hint=SYNTAX_HINT) from None
        kind = str(spec.kind)
        d = sp.dist
        if d.kind == "choice":
            for v in d.choices:
                _check_value(spec, node.id, sp, v)
        else:
            if kind not in ("int", "float"):
                raise SweepError(f"Sweep parameter {src!r}: {sp.key} is a {kind} setting; search it with "
                                 f"choice(...), not {d.kind}(...)", node_id=node.id, hint=SYNTAX_HINT)
            if kind == "int" and d.kind == "float":
                raise SweepError(f"Sweep parameter {src!r}: {sp.key} takes whole numbers; use int(a,b) or "
                                 f"log(a,b), not float(...)", node_id=node.id, hint=SYNTAX_HINT)
            if kind == "int":
                for b in (d.low, d.high):
                    if b is not None and not float(b).is_integer():
                        raise SweepError(f"Sweep parameter {src!r}: {_value_text(b)!r} is not a whole number, "
                                         f"and {sp.key} takes whole numbers", node_id=node.id, hint=SYNTAX_HINT)
            for b in (d.low, d.high):
                _check_value(spec, node.id, sp, int(b) if kind == "int" and b is not None else b)
        if any(t.node_id == node.id and t.space.param == sp.param for t in out):
            raise _fail(src, sp.key, f"changes the same setting as another parameter ({node.name}.{sp.param})")
        out.append(Target(sp, node.id, node.name, kind))
    return out


def suggest(trial: Any, target: Target) -> Any:
    """Draw the target's value from an Optuna trial (``trial.suggest_*``), named by its key."""
    d, key = target.space.dist, target.key
    if d.kind == "choice":
        return trial.suggest_categorical(key, list(d.choices))
    assert d.low is not None and d.high is not None
    if target.param_kind == "int":
        return trial.suggest_int(key, int(d.low), int(d.high), log=d.kind == "log")
    return trial.suggest_float(key, float(d.low), float(d.high), log=d.kind == "log")


def apply_values(graph: "Graph", targets: Iterable[Target], values: Mapping[str, Any]) -> "Graph":
    """A copy of ``graph`` with every target's value set (validated like an edit in the editor)."""
    g = graph.clone()
    for t in targets:
        if t.key in values:
            g.set_param(t.node_id, t.space.param, values[t.key])
    return g
