"""Blocks: one node that holds a subgraph (``Node.inner``).

A block's inner graph marks where values enter and leave with port nodes:
each :class:`BlockInput` node is one input port of the block, each
:class:`BlockOutput` node one output port, in the inner graph's node order.
A port is named by its port node's id (stable when the port node is renamed)
and labelled with its name, so ``Graph.node_type`` gives every block instance
its own ports (:meth:`BlockType.for_node`). Shapes and code come from the inner
nodes: the analyzer and the compiler walk into blocks (netstudio.compiler).
"""

from __future__ import annotations

from typing import Any, ClassVar

from netstudio.nodes.base import Category, NodeType, Port, PortKind, register

BLOCK = "block.block"
BLOCK_INPUT = "block.input"
BLOCK_OUTPUT = "block.output"


@register
class BlockInput(NodeType):
    """Inside a block: the value of one of the block's inputs."""

    type_id = BLOCK_INPUT
    title = "Block input"
    category = Category.LAYER
    description = "Enters the block; a value from outside, one input port of the block."
    outputs = (Port("output", PortKind.TENSOR),)
    name_prefix = "input"
    hidden = True


@register
class BlockOutput(NodeType):
    """Inside a block: the value of one of the block's outputs."""

    type_id = BLOCK_OUTPUT
    title = "Block output"
    category = Category.LAYER
    description = "Leaves the block; a value used outside, one output port of the block."
    inputs = (Port("input", PortKind.TENSOR),)
    name_prefix = "output"
    hidden = True


_PORT_TYPES: dict[tuple[tuple[Port, ...], tuple[Port, ...]], "BlockType"] = {}


@register
class BlockType(NodeType):
    """A group of nodes shown as one node; compiles to a nested module named after the block."""

    type_id = BLOCK
    title = "Block"
    category = Category.LAYER
    description = "A group of nodes shown as one node. Double-click to edit its inside."
    name_prefix = "block"
    holds_graph = True
    hidden = True
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()

    def for_node(self, node: Any) -> NodeType:
        inner = getattr(node, "inner", None)
        if inner is None:
            return self
        ins, outs = block_ports(inner)
        key = (ins, outs)
        bound = _PORT_TYPES.get(key)
        if bound is None:
            if len(_PORT_TYPES) > 1024:
                _PORT_TYPES.clear()
            # a subclass per port set: the class-level port lookups of NodeType then see these ports
            cls = type("Block", (BlockType,), {"inputs": ins, "outputs": outs, "__module__": __name__})
            bound = _PORT_TYPES[key] = cls()
        return bound


def block_ports(inner: Any) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    """(inputs, outputs) of a block with this inner graph: one port per port node, in node order."""
    ins = tuple(Port(n.id, PortKind.TENSOR, label=n.name) for n in inner.nodes.values() if n.type_id == BLOCK_INPUT)
    outs = tuple(Port(n.id, PortKind.TENSOR, label=n.name) for n in inner.nodes.values()
                 if n.type_id == BLOCK_OUTPUT)
    return ins, outs
