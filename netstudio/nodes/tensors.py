"""Learned tensors and broadcasting: a Parameter node (a ViT's class token and position embedding) and
Expand, which repeats a tensor over the batch (the class token for every sample).

A Parameter has no batch dimension of its own: its output is the tensor with its full shape, e.g.
1×1×768. Add broadcasts a size of 1 (the position embedding onto every sample); Expand takes the
batch size from another tensor when the model runs, so the model works for any batch size.
"""

from __future__ import annotations

from typing import Any, Mapping

from netstudio.nodes.base import (Category, DimOf, FunctionType, InferContext, Param, ParameterType, Port,
                                  PortKind, PortRef, TensorInfo, fmt_shape, register, size_of)


@register
class Parameter(ParameterType):
    type_id = "layer.parameter"
    title = "Parameter"
    category = Category.LAYER
    name_prefix = "param"
    description = ("A learned tensor used directly by the model (a transformer's class token or position "
                   "embedding): its full shape without a batch dimension, e.g. 1×1×768; trained like a "
                   "layer's weights. Feed it to Expand (one copy per sample) or Add (broadcast).")
    params = (
        Param("shape", "ints", [1, 1, 64], help="full shape of the tensor (no batch dimension)"),
        Param("init", "choice", "zeros", choices=("zeros", "normal"), help="initial values"),
        Param("std", "float", 0.02, min=0.0, max=10.0, help="standard deviation of the normal initial values",
              visible_if=("init", ("normal",))),
    )
    summary_params = ("shape",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        shape = list(ctx.params["shape"])
        if not shape or min(shape) < 1:
            raise ctx.error(f"shape {fmt_shape(shape) or '(empty)'} must list positive sizes",
                            hint="e.g. 1, 1, 64 for one token of 64 features")
        return {"output": TensorInfo(tuple(shape), "float32")}

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch
        import torch.nn as nn

        data = torch.zeros(*[int(v) for v in params["shape"]])
        if params["init"] == "normal":
            nn.init.normal_(data, std=float(params["std"]))
        return nn.Parameter(data)


@register
class Expand(FunctionType):
    type_id = "layer.expand"
    title = "Expand"
    category = Category.LAYER
    name_prefix = "expand"
    description = ("Repeats a tensor's dimensions of size 1 without copying (Tensor.expand): with 'batch from' "
                   "connected, dimension 0 becomes that tensor's batch size (a class token for every sample); "
                   "sizes gives the other dimensions, -1 keeps one.")
    inputs = (Port("input", PortKind.TENSOR),
              Port("like", PortKind.TENSOR, label="batch from", optional=True,
                   help="the tensor whose batch size (dimension 0) the output takes when the model runs"))
    outputs = (Port("output", PortKind.TENSOR),)
    params = (Param("sizes", "ints", [-1, -1], help="sizes of the dimensions after the batch; -1 keeps the input's"),)
    summary_params = ("sizes",)
    torch_functions = ("Tensor.expand",)

    @classmethod
    def from_call(cls, args: Any, kwargs: Any, is_tensor: Any, out_shape: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        # x.expand(n, -1, -1) / x.expand((n, -1, -1)), n read from a tensor: y.shape[0] or -1 (keep)
        if kwargs or len(args) < 2 or not is_tensor(args[0]):
            raise ValueError("unexpected expand arguments")
        sizes = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        first, rest = sizes[0], sizes[1:]
        ports: dict[str, Any] = {"input": args[0]}
        if isinstance(first, DimOf) and first.dim == 0 and is_tensor(first.value):
            ports["like"] = first.value
        elif first != -1:
            raise ValueError("the batch size is a number fixed when the model was traced")
        if any(not isinstance(v, int) or isinstance(v, bool) for v in rest):
            raise ValueError("a size other than the batch is read from a tensor")
        return cls.validate_params({"sizes": rest}), ports

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        x: TensorInfo = ctx.input("input")
        like: TensorInfo | None = ctx.inputs.get("like")
        sizes = list(ctx.params["sizes"])
        if len(sizes) != len(x.shape) - 1:
            raise ctx.error(f"has {len(sizes)} sizes for the {len(x.shape) - 1} dimensions after the first of "
                            f"{x.fmt()}", hint=f"list {len(x.shape) - 1} sizes (-1 keeps one)")
        batch = like.shape[0] if like is not None else x.shape[0]
        out = [batch]
        for i, (have, want) in enumerate(zip(x.shape[1:], sizes), start=1):
            if want == -1:
                out.append(have)
            elif want < 1 or (have != 1 and have != want):
                raise ctx.error(f"cannot expand dimension {i} of {x.fmt()} (size {have}) to {want}",
                                hint="only a size of 1 can be expanded; use -1 to keep it")
            else:
                out.append(want)
        if x.shape[0] not in (1, batch):
            raise ctx.error(f"cannot expand {x.fmt()} to a batch of {batch}",
                            hint="its first dimension must be 1 (or already the batch size)")
        return {"output": TensorInfo(tuple(out), x.dtype)}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        batch: Any = size_of("like", 0) if "like" in inputs else -1
        return "expand", (PortRef("input"), batch, *[int(v) for v in params["sizes"]]), {}

