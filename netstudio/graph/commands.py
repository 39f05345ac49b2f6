"""Reversible edits on a :class:`Graph`.

Each command changes only the model; views follow through graph events. The
editor wraps these in ``QUndoCommand`` (one per user action), and tests can use
them directly without Qt. A command computes its own inverse data in ``redo``
so it can be redone after an undo any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from netstudio.graph.model import Edge, Graph, Node


class Command:
    text: str = "Edit"

    def redo(self, graph: Graph) -> None:
        raise NotImplementedError

    def undo(self, graph: Graph) -> None:
        raise NotImplementedError


@dataclass
class AddNode(Command):
    type_id: str
    pos: tuple[float, float] = (0.0, 0.0)
    params: Mapping[str, Any] | None = None
    node_id: str | None = None
    name: str | None = None
    _node: Node | None = field(default=None, repr=False)

    @property
    def text(self) -> str:  # type: ignore[override]
        return "Add node"

    def redo(self, graph: Graph) -> None:
        if self._node is None:
            # keep a copy: later edits mutate the graph's node object in place, and
            # redo after undo must re-insert the node as it was when added
            self._node = graph.add_node(self.type_id, self.params, self.pos, node_id=self.node_id,
                                        name=self.name).copy()
            self.node_id = self._node.id
        else:
            graph.insert_node(self._node.copy())

    def undo(self, graph: Graph) -> None:
        assert self.node_id is not None
        graph.remove_node(self.node_id)


@dataclass
class RemoveNodes(Command):
    """Remove nodes with all their edges; undo restores ids, params and edges."""

    node_ids: Sequence[str]
    _nodes: list[Node] = field(default_factory=list, repr=False)
    _edges: list[Edge] = field(default_factory=list, repr=False)
    _order: tuple[list[str], list[Edge]] = field(default_factory=lambda: ([], []), repr=False)
    text: str = "Delete"

    def redo(self, graph: Graph) -> None:
        self._nodes, self._edges = [], []
        self._order = (list(graph.nodes), list(graph.edges))
        order = list(graph.nodes)
        for nid in sorted(self.node_ids, key=order.index):
            node, edges = graph.remove_node(nid)
            self._nodes.append(node.copy())
            self._edges.extend(e for e in edges if e not in self._edges)

    def undo(self, graph: Graph) -> None:
        for node in self._nodes:
            graph.insert_node(node.copy())
        for e in self._edges:
            graph.add_edge_unchecked(e)
        graph.restore_order(*self._order)


@dataclass
class Connect(Command):
    src: str
    src_port: str
    dst: str
    dst_port: str
    text: str = "Connect"

    def redo(self, graph: Graph) -> None:
        graph.connect(self.src, self.src_port, self.dst, self.dst_port)

    def undo(self, graph: Graph) -> None:
        graph.disconnect(Edge(self.src, self.src_port, self.dst, self.dst_port))


@dataclass
class Disconnect(Command):
    edges: Sequence[Edge]
    _order: list[Edge] = field(default_factory=list, repr=False)
    text: str = "Disconnect"

    def redo(self, graph: Graph) -> None:
        self._order = list(graph.edges)
        for e in self.edges:
            graph.disconnect(e)

    def undo(self, graph: Graph) -> None:
        for e in self.edges:
            graph.add_edge_unchecked(e)
        graph.restore_order(list(graph.nodes), self._order)


@dataclass
class SetParam(Command):
    node_id: str
    key: str
    value: Any
    _old: Any = field(default=None, repr=False)
    text: str = "Change parameter"

    def redo(self, graph: Graph) -> None:
        self._old = graph.set_param(self.node_id, self.key, self.value)

    def undo(self, graph: Graph) -> None:
        graph.set_param(self.node_id, self.key, self._old)


@dataclass
class MoveNodes(Command):
    """Positions before and after a drag: one undo step for the whole move."""

    old: Mapping[str, tuple[float, float]]
    new: Mapping[str, tuple[float, float]]
    text: str = "Move"

    def redo(self, graph: Graph) -> None:
        for nid, pos in self.new.items():
            graph.move_node(nid, pos)

    def undo(self, graph: Graph) -> None:
        for nid, pos in self.old.items():
            graph.move_node(nid, pos)


@dataclass
class RenameNode(Command):
    node_id: str
    name: str
    _old: str = ""
    text: str = "Rename"

    def redo(self, graph: Graph) -> None:
        self._old = graph.rename_node(self.node_id, self.name)

    def undo(self, graph: Graph) -> None:
        graph.rename_node(self.node_id, self._old)


@dataclass
class Paste(Command):
    """Insert a copied subgraph (``Graph.subgraph_dict``) with fresh ids and names, offset."""

    data: Mapping[str, Any]
    offset: tuple[float, float] = (40.0, 40.0)
    new_ids: list[str] = field(default_factory=list)
    _nodes: list[Node] = field(default_factory=list, repr=False)
    _edges: list[Edge] = field(default_factory=list, repr=False)
    text: str = "Paste"

    def redo(self, graph: Graph) -> None:
        if not self._nodes:  # first run: allocate ids and names
            mapping: dict[str, str] = {}
            for rec in self.data.get("nodes", []):
                pos = rec.get("pos", (0.0, 0.0))
                node = graph.add_node(rec["type"], rec.get("params"),
                                      (pos[0] + self.offset[0], pos[1] + self.offset[1]),
                                      name=graph.unique_name(rec.get("name") or rec["type"].split(".")[-1]))
                mapping[rec["id"]] = node.id
                self._nodes.append(node.copy())
            for s, sp, d, dp in self.data.get("edges", []):
                if s in mapping and d in mapping:
                    self._edges.append(graph.connect(mapping[s], sp, mapping[d], dp))
            self.new_ids = [n.id for n in self._nodes]
        else:
            for node in self._nodes:
                graph.insert_node(node.copy())
            for e in self._edges:
                graph.add_edge_unchecked(e)

    def undo(self, graph: Graph) -> None:
        for nid in reversed(self.new_ids):
            graph.remove_node(nid)


@dataclass
class Macro(Command):
    """Several commands as one undo step (e.g. delete + reconnect)."""

    children: list[Command]
    text: str = "Edit"

    def redo(self, graph: Graph) -> None:
        for c in self.children:
            c.redo(graph)

    def undo(self, graph: Graph) -> None:
        for c in reversed(self.children):
            c.undo(graph)
