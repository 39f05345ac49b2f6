"""Sequence and axis tools: take one step, reduce or reorder dimensions, 1-d pooling.

Dimensions are numbered as in PyTorch, with the batch as dimension 0 (an LSTM's
N×L×F output has the time steps in dimension 1); negative numbers count from the
end. None of these nodes may act on the batch dimension: that would mix samples
and make the result depend on the batch size.
"""

from __future__ import annotations

from typing import Any, Mapping

from netstudio.nodes.base import (Category, FunctionType, InferContext, LayerType, Param, Port, PortKind, PortRef,
                                  TensorInfo, register)
from netstudio.nodes.layers import _POOL_COMMON, _pool_out, _require_spatial


def _sample_dim(ctx: InferContext, x: TensorInfo, d: int, param: str = "dim", batch: bool = False) -> int:
    """``d`` as a non-negative dimension of ``x``; an error for a missing dimension, and for the batch
    unless ``batch``."""
    n = len(x.shape)
    if not -n <= d < n:
        raise ctx.error(f"{param} {d} does not exist in a {x.fmt()} tensor",
                        hint=f"use a dimension between 1 and {n - 1} (or -1 for the last)" if n > 1 else None)
    d %= n
    if d == 0 and not batch:
        raise ctx.error(f"{param} {ctx.params[param]} is the batch dimension of {x.fmt()}",
                        hint=f"use a dimension between 1 and {n - 1}" if n > 1 else "add a dimension first")
    return d


class _Function(FunctionType):
    category = Category.LAYER
    inputs = (Port("input", PortKind.TENSOR),)
    outputs = (Port("output", PortKind.TENSOR),)


@register
class Select(_Function):
    type_id = "layer.select"
    title = "Select"
    name_prefix = "select"
    description = ("Takes one index along a dimension and drops that dimension, e.g. dim 1, index -1: the last "
                   "time step of an N×L×H sequence (N×H).")
    params = (
        Param("dim", "int", 1, min=-8, max=8, help="dimension to index (1 = time steps of N×L×F)"),
        Param("index", "int", -1, min=-1_000_000, max=1_000_000, help="position; -1 = the last"),
    )
    summary_params = ("dim", "index")
    torch_functions = ("torch.select", "Tensor.select", "operator.getitem")
    call_params = ("dim", "index")

    @classmethod
    def from_call(cls, args: Any, kwargs: Any, is_tensor: Any, out_shape: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(args) == 2 and not kwargs and is_tensor(args[0]):  # x[:, 0] (operator.getitem)
            key = args[1] if isinstance(args[1], tuple) else (args[1],)
            whole = slice(None)
            ints = [i for i, k in enumerate(key) if isinstance(k, int) and not isinstance(k, bool)]
            if len(ints) != 1 or ints[0] == 0 or any(k != whole for i, k in enumerate(key) if i != ints[0]):
                raise ValueError("not one index after whole slices")
            return cls.validate_params({"dim": ints[0], "index": key[ints[0]]}), {"input": args[0]}
        return super().from_call(args, kwargs, is_tensor, out_shape)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        x = ctx.input()
        d = _sample_dim(ctx, x, ctx.params["dim"])
        i, size = ctx.params["index"], x.shape[d]
        if not -size <= i < size:
            raise ctx.error(f"index {i} is outside dimension {d} of {x.fmt()} (size {size})",
                            hint=f"use an index between {-size} and {size - 1}")
        return {"output": x.with_shape(*x.shape[:d], *x.shape[d + 1:])}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.select, (PortRef("input"), params["dim"], params["index"]), {}


class _Reduce(_Function):
    params = (
        Param("dim", "int", 1, min=-8, max=8, help="dimension to reduce (1 = time steps of N×L×F)"),
        Param("keepdim", "bool", False, help="keep the reduced dimension with size 1"),
    )
    summary_params = ("dim",)
    op = ""

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        x = ctx.input()
        if self.op == "mean" and not x.is_float:
            raise ctx.error(f"needs floating-point input but receives {x.dtype} values ({x.fmt()})",
                            hint="use Sum, or put an Embedding or Linear layer before it")
        d = _sample_dim(ctx, x, ctx.params["dim"])
        shape = list(x.shape)
        if ctx.params["keepdim"]:
            shape[d] = 1
        else:
            del shape[d]
        return {"output": x.with_shape(*shape)}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return getattr(torch, self.op), (PortRef("input"), params["dim"]), {"keepdim": params["keepdim"]}


@register
class Mean(_Reduce):
    type_id = "layer.mean"
    torch_functions = ("torch.mean", "Tensor.mean",)
    call_params = ("dim", "keepdim",)
    title = "Mean"
    name_prefix = "mean"
    description = "Average over one dimension, e.g. dim 1 averages an N×L×H sequence over its steps (N×H)."
    op = "mean"


@register
class Sum(_Reduce):
    type_id = "layer.sum"
    torch_functions = ("torch.sum", "Tensor.sum",)
    call_params = ("dim", "keepdim",)
    title = "Sum"
    name_prefix = "sum"
    description = "Sum over one dimension, e.g. dim 1 adds up an N×L×H sequence over its steps (N×H)."
    op = "sum"


#: Permute/Transpose: moving the batch dimension is an error unless the node says it means it (a
#: sequence-first model imported from PyTorch: L×N×E tokens for MultiheadAttention(batch_first=False))
_MOVES_BATCH = Param("moves_batch", "bool", False, saved_if_set=True,
                     help="allow moving the batch dimension 0 (to or from a sequence-first L×N×E layout); the "
                          "nodes after it then see the batch elsewhere than in dimension 0")


@register
class Permute(_Function):
    type_id = "layer.permute"
    torch_functions = ("torch.permute", "Tensor.permute")
    title = "Permute"

    @classmethod
    def from_call(cls, args: Any, kwargs: Any, is_tensor: Any, out_shape: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        # torch.permute(x, (0, 2, 1)) and x.permute(0, 2, 1)
        if kwargs or len(args) < 2:
            raise ValueError("unexpected permute arguments")
        dims = list(args[1] if isinstance(args[1], (list, tuple)) else args[1:])
        params = {"dims": dims, "moves_batch": bool(dims) and dims[0] != 0}
        return cls.validate_params(params), {"input": args[0]}
    name_prefix = "permute"
    description = ("Reorders dimensions: dims lists the new order, batch (0) first, e.g. 0, 2, 1 turns N×L×F "
                   "into N×F×L (sequences for Conv1d).")
    params = (Param("dims", "ints", [0, 2, 1], help="new order of all dimensions; starts with 0 (the batch) "
                                                    "unless moves_batch"), _MOVES_BATCH)
    summary_params = ("dims",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        x = ctx.input()
        n = len(x.shape)
        dims = list(ctx.params["dims"])
        norm = [d % n if -n <= d < n else None for d in dims]
        if len(dims) != n or None in norm or sorted(norm) != list(range(n)):  # type: ignore[type-var]
            raise ctx.error(f"dims {', '.join(map(str, dims)) or '(none)'} is not an order of the {n} dimensions of {x.fmt()}",
                            hint=f"list each of 0..{n - 1} once, e.g. {', '.join(map(str, [0, *range(n - 1, 0, -1)]))}")
        if norm[0] != 0 and not ctx.params["moves_batch"]:
            raise ctx.error(f"dims {', '.join(map(str, dims))} moves the batch dimension of {x.fmt()}",
                            hint="keep 0 first (or turn on moves_batch for a sequence-first L×N×E layout)")
        return {"output": x.with_shape(*(x.shape[d] for d in norm))}  # type: ignore[index]

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.permute, (PortRef("input"), tuple(int(d) for d in params["dims"])), {}


@register
class Transpose(_Function):
    type_id = "layer.transpose"
    torch_functions = ("torch.transpose", "Tensor.transpose",)
    call_params = ("dim0", "dim1",)
    title = "Transpose"
    name_prefix = "transpose"
    description = "Swaps two dimensions, e.g. 1 and 2 turn N×L×F into N×F×L."
    params = (Param("dim0", "int", 1, min=-8, max=8), Param("dim1", "int", 2, min=-8, max=8), _MOVES_BATCH)
    summary_params = ("dim0", "dim1")

    @classmethod
    def from_call(cls, args: Any, kwargs: Any, is_tensor: Any, out_shape: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        params, ports = super().from_call(args, kwargs, is_tensor, out_shape)
        if 0 in (params.get("dim0"), params.get("dim1")):  # x.transpose(0, 1): to or from sequence first
            params = cls.validate_params({**params, "moves_batch": True})
        return params, ports

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        x = ctx.input()
        batch = ctx.params["moves_batch"]
        a = _sample_dim(ctx, x, ctx.params["dim0"], "dim0", batch)
        b = _sample_dim(ctx, x, ctx.params["dim1"], "dim1", batch)
        shape = list(x.shape)
        shape[a], shape[b] = shape[b], shape[a]
        return {"output": x.with_shape(*shape)}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.transpose, (PortRef("input"), params["dim0"], params["dim1"]), {}


# ----------------------------------------------------------------------------
# 1-d pooling (N×C×L)
# ----------------------------------------------------------------------------


def _pool1d(ctx: InferContext, x: TensorInfo, dilation: int) -> int:
    p = ctx.params
    k, pad = p["kernel_size"], p["padding"]
    s = p["stride"] or k
    if pad > k // 2:
        raise ctx.error(f"has padding {pad}, more than half of its kernel of {k}", hint=f"use padding ≤ {k // 2}")
    size = x.shape[2]
    out = _pool_out(size, k, s, pad, dilation, p["ceil_mode"])
    if out < 1:
        kmax = max(1, (size + 2 * pad - 1) // dilation + 1)
        raise ctx.error(f"would shrink its length {size} input to {max(0, out)}",
                        hint=f"use kernel_size ≤ {kmax} or remove this pooling layer")
    return out


@register
class MaxPool1d(LayerType):
    type_id = "layer.maxpool1d"
    torch_modules = ("torch.nn.MaxPool1d",)
    title = "MaxPool1d"
    category = Category.LAYER
    name_prefix = "pool"
    description = "Maximum over each window of an N×C×L sequence: halves L with the default window of 2."
    params = _POOL_COMMON + (
        Param("dilation", "int", 1, min=1, max=1024),
        Param("ceil_mode", "bool", False, help="round the output size up instead of down"),
    )
    summary_params = ("kernel_size",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 1)
        return x.with_shape(*x.shape[:2], _pool1d(ctx, x, ctx.params["dilation"]))

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.MaxPool1d(params["kernel_size"], stride=params["stride"] or None, padding=params["padding"],
                            dilation=params["dilation"], ceil_mode=params["ceil_mode"])


@register
class AvgPool1d(LayerType):
    type_id = "layer.avgpool1d"
    torch_modules = ("torch.nn.AvgPool1d",)
    title = "AvgPool1d"
    category = Category.LAYER
    name_prefix = "pool"
    description = "Average over each window of an N×C×L sequence."
    params = _POOL_COMMON + (
        Param("ceil_mode", "bool", False, help="round the output size up instead of down"),
        Param("count_include_pad", "bool", True, help="count padded zeros in the average"),
    )
    summary_params = ("kernel_size",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 1)
        return x.with_shape(*x.shape[:2], _pool1d(ctx, x, 1))

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        # stride 0 means "the kernel size", which is also what torch makes of stride=None
        return nn.AvgPool1d(params["kernel_size"], stride=params["stride"] or params["kernel_size"],
                            padding=params["padding"],
                            ceil_mode=params["ceil_mode"], count_include_pad=params["count_include_pad"])
