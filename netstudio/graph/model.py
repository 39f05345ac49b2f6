"""The observable graph model: nodes, edges and the edits on them.

Knows nothing of Qt or torch. Every mutation emits a :class:`GraphEvent`; the
editor's scene subscribes and mirrors the model, so the model is the single
source of truth and can be tested without a display. Edits that would break the
graph (cycle, wrong port kind, second edge into a single input) are refused with
a typed error and leave the graph unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from netstudio.enums import StrEnum
from netstudio.errors import (CycleError, DuplicateEdgeError, GraphError, NetStudioError, PortError,
                              UnknownNodeTypeError)

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.nodes.base import Catalog, NodeType


def default_catalog() -> "Catalog":
    # Imported lazily: the graph package must not depend on the node package at import.
    from netstudio.nodes import CATALOG

    return CATALOG


@dataclass
class Node:
    id: str
    type_id: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    pos: tuple[float, float] = (0.0, 0.0)
    #: a block's inner graph (its ports are the inner graph's port nodes); None for every other node
    inner: "Graph | None" = field(default=None, compare=False, repr=False)
    #: False: the node's weights (a block's: all weights inside it) are frozen for training
    trainable: bool = True

    def copy(self) -> "Node":
        """An independent copy (a block's inner graph is copied too, ids and all)."""
        return Node(self.id, self.type_id, self.name, _deep_copy(self.params), self.pos,
                    None if self.inner is None else self.inner.clone(), self.trainable)


@dataclass(frozen=True, order=True)
class Edge:
    src: str
    src_port: str
    dst: str
    dst_port: str

    def to_list(self) -> list[str]:
        return [self.src, self.src_port, self.dst, self.dst_port]


class EventKind(StrEnum):
    """What a :class:`GraphEvent` reports; members equal the old strings ("node_added", ...)."""

    NODE_ADDED = "node_added"
    NODE_REMOVED = "node_removed"
    EDGE_ADDED = "edge_added"
    EDGE_REMOVED = "edge_removed"
    PARAM_CHANGED = "param_changed"
    NODE_MOVED = "node_moved"
    NODE_RENAMED = "node_renamed"
    #: a node's ``trainable`` flag changed (``old``/``new``: the flags)
    TRAINABLE_CHANGED = "trainable_changed"
    #: something inside the block ``node_id`` changed; ``new`` is the inner graph's event
    BLOCK_CHANGED = "block_changed"
    RESET = "reset"


@dataclass(frozen=True)
class GraphEvent:
    kind: EventKind
    node_id: str | None = None
    edge: Edge | None = None
    key: str | None = None
    old: Any = None
    new: Any = None


Listener = Callable[[GraphEvent], None]

_IDENT = re.compile(r"[^0-9a-zA-Z_]")


def sanitize_name(name: str) -> str:
    """A legal Python identifier: node names become fx module attribute names."""
    s = _IDENT.sub("_", name.strip()) or "node"
    if s[0].isdigit():
        s = "n_" + s
    return s


class Graph:
    """Nodes by id (insertion ordered) and a set of edges, with change events."""

    def __init__(self, catalog: "Catalog | None" = None) -> None:
        self._catalog = catalog
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self._listeners: list[Listener] = []
        self._next_id = 1
        self.revision = 0  # bumped on every change; caches key on it
        #: (outer graph, block node id) when this graph is a block's inner graph
        self._parent: tuple[Graph, str] | None = None

    # --- infrastructure -------------------------------------------------
    @property
    def catalog(self) -> "Catalog":
        if self._catalog is None:
            self._catalog = default_catalog()
        return self._catalog

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: GraphEvent) -> None:
        self.revision += 1
        for listener in list(self._listeners):
            listener(event)
        if self._parent is not None:  # the outer graph changed too: its shapes, its file
            outer, block_id = self._parent
            outer._emit(GraphEvent(EventKind.BLOCK_CHANGED, block_id, new=event))

    def _adopt(self, node: Node) -> None:
        """Make ``node``'s inner graph (if any) report its changes to this graph."""
        if node.inner is not None:
            node.inner._parent = (self, node.id)
            if node.inner._catalog is None:
                node.inner._catalog = self._catalog

    @property
    def parent(self) -> "tuple[Graph, str] | None":
        """(outer graph, block node id) of a block's inner graph, else None."""
        return self._parent

    def resolve(self, path: Iterable[str]) -> "Graph":
        """The inner graph reached by following block node ids from this graph (``[]``: this graph)."""
        g = self
        for nid in path:
            inner = g.node(nid).inner
            if inner is None:
                raise GraphError(f"Node {g.nodes[nid].name!r} is not a block", node_id=nid)
            g = inner
        return g

    def clone(self) -> "Graph":
        """An independent, exact copy (ids, names, params, positions, edge order, inner graphs)."""
        g = Graph(self._catalog)
        for nid, node in self.nodes.items():
            g.nodes[nid] = node.copy()
            g._adopt(g.nodes[nid])
        g.edges = list(self.edges)
        g._next_id = self._next_id
        return g

    def node_type(self, node_or_id: Node | str) -> "NodeType":
        node = self.nodes[node_or_id] if isinstance(node_or_id, str) else node_or_id
        return self.catalog.get(node.type_id).for_node(node)

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"No node with id {node_id!r}", node_id=node_id) from None

    def find(self, name: str) -> Node:
        """Node by its display name (tests and CLI use names)."""
        for n in self.nodes.values():
            if n.name == name:
                return n
        raise GraphError(f"No node named {name!r}")

    def new_id(self) -> str:
        while f"n{self._next_id}" in self.nodes:
            self._next_id += 1
        nid = f"n{self._next_id}"
        self._next_id += 1
        return nid

    def unique_name(self, base: str) -> str:
        """``base`` plus the first free counter: linear1, linear2, ..."""
        stem = sanitize_name(base).rstrip("0123456789") or "node"
        taken = {n.name for n in self.nodes.values()}
        i = 1
        while f"{stem}{i}" in taken:
            i += 1
        return f"{stem}{i}"

    # --- node edits -------------------------------------------------------
    def add_node(self, type_id: str, params: Mapping[str, Any] | None = None,
                 pos: tuple[float, float] = (0.0, 0.0), *, node_id: str | None = None,
                 name: str | None = None, inner: "Graph | None" = None) -> Node:
        nt = self.catalog.get(type_id)
        nid = node_id or self.new_id()
        if nid in self.nodes:
            raise GraphError(f"Node id {nid!r} already exists", node_id=nid)
        values = nt.validate_params(params or {}, node_id=nid)
        if name is None:
            name = self.unique_name(nt.default_name_prefix())
        else:
            name = sanitize_name(name)
            if any(n.name == name for n in self.nodes.values()):
                name = self.unique_name(name)
        if nt.holds_graph and inner is None:
            inner = Graph(self._catalog)
        elif not nt.holds_graph and inner is not None:
            raise GraphError(f"A {nt.title} node cannot hold an inner graph", node_id=nid)
        node = Node(nid, self.catalog.canonical_id(type_id), name, values, (float(pos[0]), float(pos[1])), inner)
        self.nodes[nid] = node
        self._adopt(node)
        self._emit(GraphEvent(EventKind.NODE_ADDED, nid))
        return node

    def insert_node(self, node: Node) -> Node:
        """Re-insert a node exactly as it was (undo of a removal, paste, load)."""
        if node.id in self.nodes:
            raise GraphError(f"Node id {node.id!r} already exists", node_id=node.id)
        self.catalog.get(node.type_id)
        self.nodes[node.id] = node
        self._adopt(node)
        self._emit(GraphEvent(EventKind.NODE_ADDED, node.id))
        return node

    def remove_node(self, node_id: str) -> tuple[Node, list[Edge]]:
        """Remove a node and its edges; return both so the removal can be undone."""
        node = self.node(node_id)
        removed = [e for e in self.edges if e.src == node_id or e.dst == node_id]
        for e in removed:
            self.disconnect(e)
        del self.nodes[node_id]
        if node.inner is not None:
            node.inner._parent = None
        self._emit(GraphEvent(EventKind.NODE_REMOVED, node_id, old=node))
        return node, removed

    def set_param(self, node_id: str, key: str, value: Any) -> Any:
        """Validate and set one param; returns the old value. Raises ParamError."""
        node = self.node(node_id)
        nt = self.node_type(node)
        try:
            spec = nt.param(key)
        except KeyError:
            raise GraphError(f"{nt.title} has no parameter {key!r}", node_id=node_id) from None
        new = spec.coerce(value, node_id=node_id)
        old = node.params.get(key)
        if old == new:
            return old
        node.params[key] = new
        self._emit(GraphEvent(EventKind.PARAM_CHANGED, node_id, key=key, old=old, new=new))
        return old

    def move_node(self, node_id: str, pos: tuple[float, float]) -> tuple[float, float]:
        node = self.node(node_id)
        old = node.pos
        new = (float(pos[0]), float(pos[1]))
        if old != new:
            node.pos = new
            self._emit(GraphEvent(EventKind.NODE_MOVED, node_id, old=old, new=new))
        return old

    def rename_node(self, node_id: str, name: str) -> str:
        node = self.node(node_id)
        name = sanitize_name(name)
        if any(n.name == name and n.id != node_id for n in self.nodes.values()):
            raise GraphError(f"Another node is already named {name!r}", node_id=node_id,
                             hint="node names must be unique")
        old = node.name
        if old != name:
            node.name = name
            self._emit(GraphEvent(EventKind.NODE_RENAMED, node_id, old=old, new=name))
        return old

    def set_trainable(self, node_id: str, trainable: bool) -> bool:
        """Freeze (False) or unfreeze a node's weights; returns the old flag."""
        node = self.node(node_id)
        old = node.trainable
        if old != bool(trainable):
            node.trainable = bool(trainable)
            self._emit(GraphEvent(EventKind.TRAINABLE_CHANGED, node_id, old=old, new=node.trainable))
        return old

    # --- edges --------------------------------------------------------------
    def check_connect(self, src: str, src_port: str, dst: str, dst_port: str) -> Edge:
        """Validate a prospective edge without adding it (the editor calls this while dragging)."""
        edge, dp = self._check_edge_ports(src, src_port, dst, dst_port)
        d_t = self.node_type(dst)
        if edge in self.edges:
            raise DuplicateEdgeError("These ports are already connected", node_id=dst)
        if self._reaches(dst, src):
            raise _cycle_error(self, src, dst)
        if not dp.multi and any(e.dst == dst and e.dst_port == dst_port for e in self.edges):
            raise _occupied_error(self, d_t, dp, dst)
        return edge

    def _check_edge_ports(self, src: str, src_port: str, dst: str, dst_port: str) -> tuple[Edge, Any]:
        """The checks of one edge that need no other edge: ends exist, ports exist, kinds match."""
        from netstudio.nodes.base import can_connect

        if src not in self.nodes or dst not in self.nodes:
            raise GraphError("Both ends of a connection must be existing nodes")
        s_t, d_t = self.node_type(src), self.node_type(dst)
        sp, dp = s_t.output_port(src_port), d_t.input_port(dst_port)
        if sp is None:
            raise PortError(f"{s_t.title} '{self.nodes[src].name}' has no output {src_port!r}", node_id=src)
        if dp is None:
            raise PortError(f"{d_t.title} '{self.nodes[dst].name}' has no input {dst_port!r}", node_id=dst)
        if src == dst:
            raise CycleError("A node cannot feed itself", node_id=dst, hint="connect to another node")
        if not can_connect(sp.kind, dp.kind):
            raise PortError(
                f"Cannot connect a {sp.kind.value} output to the {dp.kind.value} input "
                f"'{dp.display}' of {d_t.title} '{self.nodes[dst].name}'",
                node_id=dst, hint=_kind_hint(sp.kind.value, dp.kind.value))
        return Edge(src, src_port, dst, dst_port), dp

    def connect(self, src: str, src_port: str, dst: str, dst_port: str) -> Edge:
        edge = self.check_connect(src, src_port, dst, dst_port)
        self.edges.append(edge)
        self._emit(GraphEvent(EventKind.EDGE_ADDED, edge=edge))
        return edge

    def restore_order(self, node_order: list[str], edge_order: list[Edge]) -> None:
        """Put nodes and edges back in a recorded order (undo of a removal).

        Order is not semantic, but restoring it keeps undo exact, so a saved file
        is byte-identical after edit + undo.
        """
        rank = {nid: i for i, nid in enumerate(node_order)}
        self.nodes = dict(sorted(self.nodes.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        erank = {e: i for i, e in enumerate(edge_order)}
        self.edges.sort(key=lambda e: erank.get(e, len(erank)))

    def add_edge_unchecked(self, edge: Edge) -> None:
        """Restore an edge exactly (undo); ports are trusted, still no duplicates."""
        if edge not in self.edges:
            self.edges.append(edge)
            self._emit(GraphEvent(EventKind.EDGE_ADDED, edge=edge))

    def disconnect(self, edge: Edge) -> None:
        if edge not in self.edges:
            raise GraphError("No such connection")
        self.edges.remove(edge)
        self._emit(GraphEvent(EventKind.EDGE_REMOVED, edge=edge))

    def _reaches(self, start: str, goal: str) -> bool:
        """Is ``goal`` reachable from ``start`` along edges?"""
        out = self.successors_map()
        stack, seen = [start], set()
        while stack:
            n = stack.pop()
            if n == goal:
                return True
            if n in seen:
                continue
            seen.add(n)
            stack.extend(out.get(n, ()))
        return False

    # --- queries ---------------------------------------------------------------
    def successors_map(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for e in self.edges:
            out.setdefault(e.src, []).append(e.dst)
        return out

    def in_edges(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == node_id]

    def out_edges(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.src == node_id]

    def topological_order(self) -> list[str]:
        """Kahn's algorithm, stable in insertion order. Raises CycleError naming a node."""
        order = _kahn(self.nodes, self.edges)
        if len(order) != len(self.nodes):
            done = set(order)
            stuck = next(nid for nid in self.nodes if nid not in done)
            raise CycleError(f"The graph contains a cycle through '{self.nodes[stuck].name}'",
                             node_id=stuck, hint="remove one connection of the loop")
        return order

    # --- bulk -------------------------------------------------------------------
    def clear(self) -> None:
        self.nodes.clear()
        self.edges.clear()
        self._next_id = 1
        self._emit(GraphEvent(EventKind.RESET))

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [_node_record(n, [round(n.pos[0], 2), round(n.pos[1], 2)], self._unsaved_defaults(n))
                      for n in self.nodes.values()],
            "edges": [e.to_list() for e in self.edges],
        }

    def _unsaved_defaults(self, n: Node) -> set[str]:
        """The node's params that stay out of the file: ``saved_if_set`` params at their default."""
        if n.type_id not in self.catalog:
            return set()
        return {p.name for p in self.catalog.get(n.type_id).params
                if p.saved_if_set and n.params.get(p.name) == p.default}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], catalog: "Catalog | None" = None) -> "Graph":
        """Build a graph from plain records; every type and param is validated.

        Every edge gets the checks of :meth:`connect`, so a hand-edited file cannot
        smuggle in a cycle or a wrong connection, but in time linear in the size of
        the graph: duplicates and occupied inputs are looked up in sets, and cycles
        are found once, at the end, instead of one graph walk per edge.
        """
        g = cls(catalog)
        names: set[str] = set()
        counters: dict[str, int] = {}  # per stem: numbers below are taken (names are only added while loading)
        for rec in data.get("nodes", []):
            if not isinstance(rec, Mapping):
                raise GraphError("A node record is not an object")
            type_id, nid = str(rec["type"]), str(rec["id"])
            if type_id not in g.catalog:
                label = str(rec.get("name") or "")
                named = f"node {nid!r}" + (f" ({label!r})" if label and label != nid else "")
                raise UnknownNodeTypeError(
                    f"Unknown node type {type_id!r} for {named}: this version of NetStudio does not "
                    "know this type", node_id=nid,
                    hint="check the type id in the file for a typo, or remove that node and its connections")
            nt = g.catalog.get(type_id)
            if nid in g.nodes:
                raise GraphError(f"Node id {nid!r} already exists", node_id=nid)
            values = nt.validate_params(rec.get("params") or {}, node_id=nid)
            raw = str(rec.get("name") or "")
            name = sanitize_name(raw) if raw else ""
            if not name or name in names:
                stem = sanitize_name(name or nt.default_name_prefix()).rstrip("0123456789") or "node"
                name = _first_free(stem, names, counters)
            pos = _pos(rec.get("pos"))
            inner = None
            block = rec.get("block")
            if nt.holds_graph:
                if not isinstance(block, Mapping):
                    raise GraphError(f"The block {name!r} has no inner graph ('block' object)", node_id=nid)
                try:
                    inner = cls.from_dict(block, catalog)
                except NetStudioError as e:
                    raise GraphError(f"In block {name!r}: {e.message}", node_id=nid, hint=e.hint) from e
            elif block is not None:
                raise GraphError(f"Node {name!r} is not a block but has an inner graph", node_id=nid)
            trainable = rec.get("trainable", True)
            if not isinstance(trainable, bool):
                raise GraphError(f"Node {name!r}: 'trainable' must be true or false, not {trainable!r}",
                                 node_id=nid, hint="write \"trainable\": false, or remove the key")
            g.nodes[nid] = Node(nid, g.catalog.canonical_id(type_id), name, values, pos, inner, trainable)
            g._adopt(g.nodes[nid])
            names.add(name)
        # The first refused edge decides the error, as if each edge were added with connect(): a
        # later problem is held back until the cycle check has seen the edges before it.
        seen: set[Edge] = set()
        occupied: set[tuple[str, str]] = set()
        refused: GraphError | None = None
        for rec in data.get("edges", []):
            if not isinstance(rec, (list, tuple)) or len(rec) != 4:
                refused = GraphError(f"Malformed edge record {rec!r}")
                break
            src, src_port, dst, dst_port = (str(x) for x in rec)
            try:
                edge, dp = g._check_edge_ports(src, src_port, dst, dst_port)
            except GraphError as e:
                refused = e
                break
            if edge in seen:
                refused = DuplicateEdgeError("These ports are already connected", node_id=dst)
                break
            g.edges.append(edge)
            if not dp.multi:
                if (dst, dst_port) in occupied:  # connect() checks the cycle first, so this edge stays in
                    refused = _occupied_error(g, g.node_type(dst), dp, dst)
                    break
                occupied.add((dst, dst_port))
            seen.add(edge)
        if len(_kahn(g.nodes, g.edges)) != len(g.nodes):
            src, dst = _first_cycle_edge(g.nodes, g.edges)
            raise _cycle_error(g, src, dst)
        if refused is not None:
            raise refused
        g._next_id = 1
        g.revision = 0
        return g

    def subgraph_dict(self, node_ids: Iterable[str]) -> dict[str, Any]:
        """Nodes plus the edges between them (copy/paste)."""
        ids = set(node_ids)
        return {
            "nodes": [_node_record(n, list(n.pos), self._unsaved_defaults(n)) for n in self.nodes.values()
                      if n.id in ids],
            "edges": [e.to_list() for e in self.edges if e.src in ids and e.dst in ids],
        }


def _node_record(n: Node, pos: list[float], omit: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    params = {k: v for k, v in n.params.items() if k not in omit} if omit else n.params
    rec: dict[str, Any] = {"id": n.id, "type": n.type_id, "name": n.name, "pos": pos,
                           "params": _deep_copy(params)}
    if not n.trainable:  # written only when frozen: files without frozen nodes stay as they were
        rec["trainable"] = False
    if n.inner is not None:
        rec["block"] = n.inner.to_dict()
    return rec


def _first_free(stem: str, taken: set[str], counters: dict[str, int]) -> str:
    """``stem`` plus the first free number (what :meth:`Graph.unique_name` gives), resuming where the
    previous search for this stem stopped, so naming n unnamed nodes costs O(n), not O(n²)."""
    i = counters.get(stem, 1)
    while f"{stem}{i}" in taken:
        i += 1
    counters[stem] = i + 1
    return f"{stem}{i}"


def _kahn(nodes: Mapping[str, Any], edges: list[Edge]) -> list[str]:
    """Kahn's topological order, stable in insertion order; shorter than ``nodes`` when there is a cycle."""
    from collections import deque

    indeg = dict.fromkeys(nodes, 0)
    succ: dict[str, list[str]] = {}
    for e in edges:
        indeg[e.dst] += 1
        succ.setdefault(e.src, []).append(e.dst)
    ready = deque(nid for nid, d in indeg.items() if d == 0)
    order: list[str] = []
    while ready:
        nid = ready.popleft()
        order.append(nid)
        for d in succ.get(nid, ()):
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    return order


def _first_cycle_edge(nodes: Mapping[str, Any], edges: list[Edge]) -> tuple[str, str]:
    """The first edge (in file order) that closes a cycle: the one connect() would have refused.

    Binary search over prefixes, one linear check each: O((V + E) log E).
    """
    lo, hi = 0, len(edges)  # the prefix of length hi has a cycle; length lo has none
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(_kahn(nodes, edges[:mid])) != len(nodes):
            hi = mid
        else:
            lo = mid
    e = edges[hi - 1]
    return e.src, e.dst


def _cycle_error(g: "Graph", src: str, dst: str) -> CycleError:
    return CycleError(f"Connecting '{g.nodes[src].name}' to '{g.nodes[dst].name}' would create a cycle",
                      node_id=dst, hint="networks must be acyclic; feed an earlier layer instead")


def _occupied_error(g: "Graph", d_t: Any, dp: Any, dst: str) -> DuplicateEdgeError:
    return DuplicateEdgeError(f"Input '{dp.display}' of {d_t.title} '{g.nodes[dst].name}' is already connected",
                              node_id=dst, hint="remove the existing connection first, or use an Add/Concat node")


def _kind_hint(out_kind: str, in_kind: str) -> str:
    if in_kind == "tensor" and out_kind == "target":
        return "targets only feed a loss's target input"
    if in_kind == "loss":
        return "connect the output of a loss node here"
    if in_kind == "optimizer":
        return "connect an optimizer's output here"
    if out_kind == "loss":
        return "a loss output feeds an optimizer"
    return "connect matching port kinds"


def _pos(v: Any) -> tuple[float, float]:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (float(v[0]), float(v[1]))
    return (0.0, 0.0)


def _deep_copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _deep_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_copy(x) for x in v]
    return v
