"""Nodes that combine several tensors; compiled to ``call_function`` nodes."""

from __future__ import annotations

import operator
from typing import Any, Mapping

from netstudio.nodes.base import (Category, FunctionType, InferContext, Param, Port, PortKind, PortRef,
                                  TensorInfo, register)


class SameShapeMerge(FunctionType):
    """Two inputs a and b of equal shape combined element by element into one of that shape. A size of 1
    broadcasts (a Parameter's 1×L×E position embedding onto N×L×E tokens); the ranks must be equal."""

    category = Category.MERGE
    inputs = (Port("a", PortKind.TENSOR), Port("b", PortKind.TENSOR))
    outputs = (Port("output", PortKind.TENSOR),)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        a, b = ctx.input("a"), ctx.input("b")
        if a.shape == b.shape:
            return {"output": a}
        if len(a.shape) != len(b.shape) or any(x != y and 1 not in (x, y) for x, y in zip(a.shape, b.shape)):
            raise ctx.error(f"needs equal shapes but gets {a.fmt()} and {b.fmt()}",
                            hint="make both branches produce the same shape")
        return {"output": TensorInfo(tuple(max(x, y) for x, y in zip(a.shape, b.shape)), a.dtype)}


@register
class Add(SameShapeMerge):
    type_id = "merge.add"
    torch_functions = ("operator.add", "torch.add", "Tensor.add",)
    title = "Add"
    description = ("Element-wise sum of two tensors of equal shape (residual connections); a size of 1 "
                   "broadcasts, e.g. a 1×L×E position embedding onto N×L×E tokens.")

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        return operator.add, (PortRef("a"), PortRef("b")), {}


@register
class Multiply(FunctionType):
    type_id = "merge.multiply"
    torch_functions = ("operator.mul", "torch.mul", "Tensor.mul",)
    title = "Multiply"
    category = Category.MERGE
    name_prefix = "mul"
    description = ("Element-wise product (gating, attention). Shapes must match, except that a size of 1 "
                   "broadcasts, e.g. N×C×H×W · N×C×1×1.")
    inputs = (Port("a", PortKind.TENSOR), Port("b", PortKind.TENSOR))
    outputs = (Port("output", PortKind.TENSOR),)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        a, b = ctx.input("a"), ctx.input("b")
        # Same rank and batch only: silent broadcasting across different ranks hides wiring mistakes.
        ok = len(a.shape) == len(b.shape) and a.shape[:1] == b.shape[:1] and all(
            x == y or x == 1 or y == 1 for x, y in zip(a.shape[1:], b.shape[1:]))
        if not ok:
            raise ctx.error(f"cannot multiply {a.fmt()} by {b.fmt()}",
                            hint="both inputs need the same number of dimensions and batch size, and each "
                                 "other dimension must be equal or 1")
        out = tuple(max(x, y) for x, y in zip(a.shape, b.shape))
        return {"output": TensorInfo(out, a.dtype)}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        return operator.mul, (PortRef("a"), PortRef("b")), {}


@register
class Concat(FunctionType):
    type_id = "merge.concat"
    torch_functions = ("torch.cat", "torch.concat",)
    call_params = ("dim",)
    title = "Concat"
    category = Category.MERGE
    description = "Joins tensors along one dimension (1 = features/channels); other sizes must match."
    inputs = (Port("inputs", PortKind.TENSOR, multi=True),)
    outputs = (Port("output", PortKind.TENSOR),)
    params = (Param("dim", "int", 1, min=-8, max=8),)
    summary_params = ("dim",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        xs: list[TensorInfo] = ctx.inputs["inputs"]
        if len(xs) < 2:
            raise ctx.error("needs at least two inputs", hint="connect a second tensor")
        n = len(xs[0].shape)
        d = ctx.params["dim"]
        d = d + n if d < 0 else d
        if not 0 < d < n:
            raise ctx.error(f"dim {ctx.params['dim']} is invalid for {xs[0].fmt()} tensors",
                            hint="use a dimension between 1 and the last one")
        for x in xs[1:]:
            if len(x.shape) != n or any(x.shape[i] != xs[0].shape[i] for i in range(n) if i != d):
                raise ctx.error(f"cannot concatenate {xs[0].fmt()} and {x.fmt()} along dim {d}",
                                hint="all other dimensions must match")
        total = sum(x.shape[d] for x in xs)
        return {"output": xs[0].with_shape(*xs[0].shape[:d], total, *xs[0].shape[d + 1:])}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.cat, (PortRef("inputs"),), {"dim": params["dim"]}
