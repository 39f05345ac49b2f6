"""Reversible edits on a :class:`Graph`.

Each command changes only the model; views follow through graph events. The
editor wraps these in ``QUndoCommand`` (one per user action), and tests can use
them directly without Qt. A command computes its own inverse data in ``redo``
so it can be redone after an undo any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from netstudio.errors import GraphError
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
class SetTrainable(Command):
    """Freeze (``trainable=False``) or unfreeze the given nodes: one undo step for the whole selection."""

    node_ids: Sequence[str]
    trainable: bool
    _old: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str:  # type: ignore[override]
        return "Unfreeze" if self.trainable else "Freeze"

    def redo(self, graph: Graph) -> None:
        self._old = {nid: graph.node(nid).trainable for nid in self.node_ids}
        for nid in self.node_ids:
            graph.set_trainable(nid, self.trainable)

    def undo(self, graph: Graph) -> None:
        for nid, old in self._old.items():
            graph.set_trainable(nid, old)


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
                block = rec.get("block")  # a block is pasted with its own, independent inner graph
                inner = Graph.from_dict(block, graph.catalog) if block is not None else None
                node = graph.add_node(rec["type"], rec.get("params"),
                                      (pos[0] + self.offset[0], pos[1] + self.offset[1]),
                                      name=graph.unique_name(rec.get("name") or rec["type"].split(".")[-1]),
                                      inner=inner)
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
        """All children or none: a refused child undoes the ones before it (also inside a block)."""
        done: list[Command] = []
        try:
            for c in self.children:
                c.redo(graph)
                done.append(c)
        except Exception:
            for c in reversed(done):
                c.undo(graph)
            raise

    def undo(self, graph: Graph) -> None:
        for c in reversed(self.children):
            c.undo(graph)


# --- blocks ------------------------------------------------------------------------------------------

_BLOCK = "block.block"
_BLOCK_INPUT = "block.input"
_BLOCK_OUTPUT = "block.output"
#: how far left/right of the nodes they feed (or are fed by) a block's new port nodes are placed
_PORT_GAP = 180.0


_BLOCK_HINT = "a block holds layers, activations and merges only; leave the dataset, losses and optimizer outside"


def _fits_in_block(graph: Graph, nid: str) -> bool:
    from netstudio.nodes.base import Category

    return graph.node_type(nid).category in (Category.LAYER, Category.ACTIVATION, Category.MERGE)


@dataclass
class _State:
    """One side of a structural edit: what it removes, what it adds, and the order afterwards."""

    remove: list[str]
    add: list[Node]
    edges: list[Edge]  # the edges of ``add`` afterwards
    order: tuple[list[str], list[Edge]]


def _apply(graph: Graph, st: _State) -> None:
    for nid in st.remove:
        graph.remove_node(nid)
    for node in st.add:
        graph.insert_node(node.copy())
    for e in st.edges:
        graph.add_edge_unchecked(e)
    graph.restore_order(*st.order)


class _Swap(Command):
    """A command that replaces some nodes by others: ``_plan`` works out both states on the first redo;
    redo and undo then swap them exactly (ids, params, positions, edges and their order)."""

    _fwd: _State | None = None
    _back: _State | None = None

    def _plan(self, graph: Graph) -> tuple[_State, _State]:
        raise NotImplementedError

    def redo(self, graph: Graph) -> None:
        if self._fwd is None:
            self._fwd, self._back = self._plan(graph)
        _apply(graph, self._fwd)

    def undo(self, graph: Graph) -> None:
        assert self._back is not None
        _apply(graph, self._back)


def _centroid(nodes: Sequence[Node]) -> tuple[float, float]:
    if not nodes:
        return (0.0, 0.0)
    return (sum(n.pos[0] for n in nodes) / len(nodes), sum(n.pos[1] for n in nodes) / len(nodes))


def _free_name(g: Graph, want: str) -> str:
    from netstudio.graph.model import sanitize_name

    want = sanitize_name(want)
    return want if all(n.name != want for n in g.nodes.values()) else g.unique_name(want)


@dataclass
class MakeBlock(_Swap):
    """Group ``node_ids`` into one block node (one undo step).

    The block's inner graph holds the selected nodes unchanged (ids, names, params, positions) and one
    port node per value crossing the selection's boundary: an input per outside source, an output per
    inside value used outside, ordered as the edges were and named after the inner ports they stand for.
    """

    node_ids: Sequence[str]
    name: str | None = None
    block_id: str | None = None
    text: str = "Make block"

    def _plan(self, graph: Graph) -> tuple[_State, _State]:
        ids = [nid for nid in graph.nodes if nid in set(self.node_ids)]
        missing = [nid for nid in self.node_ids if nid not in graph.nodes]
        if missing:
            raise GraphError(f"No node with id {missing[0]!r}", node_id=missing[0])
        if not ids:
            raise GraphError("Select the nodes to put into a block", hint="select one or more layers first")
        for nid in ids:
            nt = graph.node_type(nid)
            if not _fits_in_block(graph, nid) or nt.type_id in (_BLOCK_INPUT, _BLOCK_OUTPUT):
                raise GraphError(f"{nt.title} '{graph.nodes[nid].name}' cannot go into a block", node_id=nid,
                                 hint=_BLOCK_HINT)
        sel = set(ids)
        before = (list(graph.nodes), list(graph.edges))
        inner = Graph(graph.catalog)
        for nid in ids:
            inner.insert_node(graph.nodes[nid].copy())
        block_id = self.block_id or graph.new_id()
        inputs: dict[tuple[str, str], str] = {}   # outside (src, port) -> input port node id
        outputs: dict[tuple[str, str], str] = {}  # inside (src, port) -> output port node id
        inner_edges: list[Edge] = []
        outer_edges: list[Edge] = []  # the outer graph's edges afterwards, in order
        for e in graph.edges:
            s_in, d_in = e.src in sel, e.dst in sel
            if s_in and d_in:
                inner_edges.append(e)
            elif d_in:
                pid = inputs.get((e.src, e.src_port))
                if pid is None:
                    dst = graph.nodes[e.dst]
                    want = dst.name if e.dst_port == "input" else f"{dst.name}_{e.dst_port}"
                    port = inner.add_node(_BLOCK_INPUT, pos=(dst.pos[0] - _PORT_GAP, dst.pos[1]),
                                          name=_free_name(inner, f"{want}_in"))
                    pid = inputs[(e.src, e.src_port)] = port.id
                    outer_edges.append(Edge(e.src, e.src_port, block_id, pid))
                inner_edges.append(Edge(pid, "output", e.dst, e.dst_port))
            elif s_in:
                pid = outputs.get((e.src, e.src_port))
                if pid is None:
                    src = graph.nodes[e.src]
                    want = src.name if e.src_port == "output" else f"{src.name}_{e.src_port}"
                    port = inner.add_node(_BLOCK_OUTPUT, pos=(src.pos[0] + _PORT_GAP, src.pos[1]),
                                          name=_free_name(inner, f"{want}_out"))
                    pid = outputs[(e.src, e.src_port)] = port.id
                    inner_edges.append(Edge(e.src, e.src_port, pid, "input"))
                outer_edges.append(Edge(block_id, pid, e.dst, e.dst_port))
            else:
                outer_edges.append(e)
        # port nodes first among the nodes, inputs before outputs: that is the order of the block's ports
        ports = [*inputs.values(), *outputs.values()]
        rest = [nid for nid in inner.nodes if nid not in set(ports)]
        inner.restore_order(ports + rest, [])
        inner.edges = inner_edges
        inner.revision = 0
        name = _free_name(graph, self.name) if self.name else graph.unique_name("block")
        block = Node(block_id, _BLOCK, name, {}, _centroid([graph.nodes[n] for n in ids]), inner)
        self.block_id = block_id
        first = ids[0]
        after_nodes = [block_id if nid == first else nid for nid in graph.nodes if nid == first or nid not in sel]
        block_edges = [e for e in outer_edges if block_id in (e.src, e.dst)]
        fwd = _State(ids, [block], block_edges, (after_nodes, outer_edges))
        back = _State([block_id], [graph.nodes[nid].copy() for nid in ids],
                      [e for e in graph.edges if e.src in sel or e.dst in sel], before)
        return fwd, back


@dataclass
class ExpandBlock(_Swap):
    """Replace a block by its inner nodes, wired as the block was (one undo step).

    Inner nodes keep their ids, names and params where the outer graph has no such id or name yet;
    they move with the block (by how far the block is from their centre).
    """

    block_id: str
    new_ids: list[str] = field(default_factory=list)
    text: str = "Expand block"

    def _plan(self, graph: Graph) -> tuple[_State, _State]:
        block = graph.node(self.block_id)
        inner = block.inner
        if inner is None:
            raise GraphError(f"'{block.name}' is not a block", node_id=block.id)
        before = (list(graph.nodes), list(graph.edges))
        kinds = {nid: n.type_id for nid, n in inner.nodes.items()}
        body = [n for n in inner.nodes.values() if kinds[n.id] not in (_BLOCK_INPUT, _BLOCK_OUTPUT)]
        cx, cy = _centroid(body)
        dx, dy = block.pos[0] - cx, block.pos[1] - cy
        # inner ids and names that are free outside are kept; the others get the first free ones
        taken_ids = set(graph.nodes) - {block.id}
        taken_names = {n.name for n in graph.nodes.values() if n.id != block.id}
        keep_ids = {n.id for n in body if n.id not in taken_ids}
        keep_names = {n.name for n in body if n.name not in taken_names}
        taken_ids |= keep_ids
        taken_names |= keep_names
        counter = 1
        idmap: dict[str, str] = {}
        added: list[Node] = []
        for n in body:
            nid = n.id
            if nid not in keep_ids:
                while f"n{counter}" in taken_ids:
                    counter += 1
                nid = f"n{counter}"
                taken_ids.add(nid)
            idmap[n.id] = nid
            name = n.name
            if name not in keep_names:
                stem = name.rstrip("0123456789") or "node"
                i = 1
                while f"{stem}{i}" in taken_names:
                    i += 1
                name = f"{stem}{i}"
                taken_names.add(name)
            copy = n.copy()
            copy.id, copy.name, copy.pos = nid, name, (n.pos[0] + dx, n.pos[1] + dy)
            added.append(copy)
        feeds: dict[str, tuple[str, str]] = {}  # input port id -> outside source
        for e in graph.edges:
            if e.dst == block.id:
                feeds[e.dst_port] = (e.src, e.src_port)
        source_of: dict[str, tuple[str, str] | None] = {}  # output port id -> what feeds it, outside ids
        for e in inner.edges:
            if kinds.get(e.dst) == _BLOCK_OUTPUT:
                source_of[e.dst] = feeds.get(e.src) if kinds.get(e.src) == _BLOCK_INPUT else (idmap[e.src], e.src_port)
        outer_edges: list[Edge] = []
        for e in graph.edges:
            if e.dst == block.id:
                continue
            if e.src == block.id:
                src = source_of.get(e.src_port)
                if src is not None:
                    outer_edges.append(Edge(src[0], src[1], e.dst, e.dst_port))
                continue
            outer_edges.append(e)
        for e in inner.edges:
            if kinds.get(e.dst) == _BLOCK_OUTPUT:
                continue
            if kinds.get(e.src) == _BLOCK_INPUT:
                src = feeds.get(e.src)
                if src is not None:
                    outer_edges.append(Edge(src[0], src[1], idmap[e.dst], e.dst_port))
                continue
            outer_edges.append(Edge(idmap[e.src], e.src_port, idmap[e.dst], e.dst_port))
        dedup: list[Edge] = []
        for e in outer_edges:
            if e not in dedup:
                dedup.append(e)
        new_ids = [n.id for n in added]
        self.new_ids = new_ids
        after_nodes: list[str] = []
        for nid in graph.nodes:
            after_nodes.extend(new_ids if nid == block.id else [nid])
        fresh = set(new_ids)
        fwd = _State([block.id], added, [e for e in dedup if e.src in fresh or e.dst in fresh or
                                         e not in graph.edges], (after_nodes, dedup))
        back = _State(new_ids, [block.copy()], [e for e in graph.edges if block.id in (e.src, e.dst)], before)
        return fwd, back


@dataclass
class InBlock(Command):
    """``command`` applied to the inner graph of the block reached by ``path`` (block node ids from the
    document's graph): editing inside a block is one step on the document's single undo stack.

    An edit that removes a port node also removes the outside edges of that port (undone with it).
    """

    path: Sequence[str]
    command: Command
    _dropped: list[Edge] = field(default_factory=list, repr=False)
    _order: list[Edge] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:  # type: ignore[override]
        return self.command.text

    def redo(self, graph: Graph) -> None:
        if not self.path:
            self.command.redo(graph)
            return
        outer = graph.resolve(self.path[:-1])
        block_id = self.path[-1]
        inner = outer.resolve([block_id])
        self.command.redo(inner)
        stray = next((n for n in inner.nodes.values() if not _fits_in_block(inner, n.id)), None)
        if stray is not None:  # a dataset, loss or optimizer dropped into a block: refused, nothing changed
            self.command.undo(inner)
            nt = inner.node_type(stray)
            raise GraphError(f"A {nt.title} cannot go into a block", node_id=stray.id, hint=_BLOCK_HINT)
        nt = outer.node_type(block_id)
        ins = {p.name for p in nt.inputs}
        outs = {p.name for p in nt.outputs}
        self._order = list(outer.edges)
        self._dropped = [e for e in outer.edges if (e.dst == block_id and e.dst_port not in ins)
                         or (e.src == block_id and e.src_port not in outs)]
        for e in self._dropped:
            outer.disconnect(e)

    def undo(self, graph: Graph) -> None:
        if not self.path:
            self.command.undo(graph)
            return
        outer = graph.resolve(self.path[:-1])
        self.command.undo(outer.resolve([self.path[-1]]))
        for e in self._dropped:
            outer.add_edge_unchecked(e)
        if self._dropped:
            outer.restore_order(list(outer.nodes), self._order)
