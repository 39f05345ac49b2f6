"""Trainable and structural layers, each compiled to one built-in ``torch.nn`` module."""

from __future__ import annotations

import math
from typing import Any, Mapping

from netstudio.nodes.base import AUTO, Category, InferContext, LayerType, Param, TensorInfo, register


@register
class Linear(LayerType):
    type_id = "layer.linear"
    title = "Linear"
    category = Category.LAYER
    description = "Fully connected layer y = xWᵀ + b over the last dimension."
    name_prefix = "fc"
    params = (
        Param("in_features", "int", AUTO, min=1, max=1_000_000, allow_auto=True,
              help="size of the last input dimension; 'auto' infers it"),
        Param("out_features", "int", 10, min=1, max=1_000_000),
        Param("bias", "bool", True),
    )
    summary_params = ("out_features",)

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        p = dict(ctx.params)
        x = ctx.inputs.get("input")
        if p["in_features"] == AUTO and x is not None and x.shape:
            p["in_features"] = x.shape[-1]
        return p

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        p = ctx.params
        if len(x.shape) < 2:
            raise ctx.error(f"needs at least a batch and a feature dimension, got {x.fmt()}")
        got = x.shape[-1]
        if p["in_features"] != got:
            detail = ""
            if len(x.shape) > 2:
                detail = f" ({x.fmt()}: add a Flatten before it"
                flat = math.prod(x.shape[1:])
                detail += f", which gives {flat})"
            raise ctx.error(
                f"expects {p['in_features']} input features but receives {got}{detail}",
                hint=f"set in_features to {got if len(x.shape) == 2 else math.prod(x.shape[1:])} or 'auto'")
        return x.with_shape(*x.shape[:-1], p["out_features"])

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Linear(params["in_features"], params["out_features"], bias=params["bias"])


@register
class Flatten(LayerType):
    type_id = "layer.flatten"
    title = "Flatten"
    category = Category.LAYER
    description = "Flattens dimensions start_dim..end_dim into one (keeps the batch)."
    params = (
        Param("start_dim", "int", 1, min=1, max=8),
        Param("end_dim", "int", -1, min=-8, max=8),
    )

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        n = len(x.shape)
        s, e = ctx.params["start_dim"], ctx.params["end_dim"]
        e = e + n if e < 0 else e
        if not (0 < s <= e < n):
            raise ctx.error(f"cannot flatten dims {s}..{ctx.params['end_dim']} of a {x.fmt()} tensor",
                            hint="use start_dim 1 and end_dim -1")
        return x.with_shape(*x.shape[:s], math.prod(x.shape[s:e + 1]), *x.shape[e + 1:])

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Flatten(params["start_dim"], params["end_dim"])
