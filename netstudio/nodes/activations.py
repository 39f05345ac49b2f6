"""Element-wise activations (shape-preserving), compiled to ``torch.nn`` modules."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from netstudio.nodes.base import Category, InferContext, LayerType, Param, TensorInfo, register


class _Activation(LayerType):
    category = Category.ACTIVATION
    #: name of the parameterless ``torch.nn`` module it builds; types with params override ``build``
    module: ClassVar[str] = ""

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return getattr(nn, self.module)()

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        if not x.is_float:
            raise ctx.error(f"needs floating-point input but receives {x.dtype} values ({x.fmt()})",
                            hint="put an Embedding or Linear layer before it")
        return x


@register
class ReLU(_Activation):
    type_id = "activation.relu"
    title = "ReLU"
    description = "max(0, x)"
    module = "ReLU"


@register
class LeakyReLU(_Activation):
    type_id = "activation.leaky_relu"
    title = "LeakyReLU"
    name_prefix = "lrelu"
    description = "x for x > 0, negative_slope·x otherwise; keeps a small gradient for negative inputs."
    params = (Param("negative_slope", "float", 0.01, min=0.0, max=1.0, step=0.01),)
    summary_params = ("negative_slope",)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.LeakyReLU(params["negative_slope"])


@register
class GELU(_Activation):
    type_id = "activation.gelu"
    title = "GELU"
    description = "x·Φ(x), the smooth ReLU used by transformers."
    params = (Param("approximate", "choice", "none", choices=("none", "tanh"),
                    help="'tanh' uses the faster tanh approximation"),)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.GELU(approximate=params["approximate"])


@register
class SiLU(_Activation):
    type_id = "activation.silu"
    title = "SiLU"
    description = "x·sigmoid(x) (also called Swish)."
    module = "SiLU"


@register
class Sigmoid(_Activation):
    type_id = "activation.sigmoid"
    title = "Sigmoid"
    description = "1 / (1 + exp(-x)); pair with BCE for binary classification."
    module = "Sigmoid"


@register
class Tanh(_Activation):
    type_id = "activation.tanh"
    title = "Tanh"
    description = "Hyperbolic tangent, output in (-1, 1)."
    module = "Tanh"


class _Normalizing(_Activation):
    """Softmax-like activations that normalize along one dimension."""

    params = (Param("dim", "int", 1, min=-8, max=8, help="dimension that sums to one (1 = classes)"),)
    summary_params = ("dim",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        super().out_info(ctx, x)
        n, d = len(x.shape), ctx.params["dim"]
        if not -n <= d < n:
            raise ctx.error(f"dim {d} does not exist in a {x.fmt()} tensor",
                            hint=f"use a dimension between 1 and {n - 1}")
        if d % n == 0:
            # normalizing across the batch mixes samples and depends on the batch size
            raise ctx.error(f"dim {d} is the batch dimension of {x.fmt()}", hint="use dim 1 (the classes)")
        return x


@register
class Softmax(_Normalizing):
    type_id = "activation.softmax"
    title = "Softmax"
    description = "exp(x) normalized to sum to one along dim; for class probabilities (not before CrossEntropy)."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Softmax(dim=params["dim"])


@register
class LogSoftmax(_Normalizing):
    type_id = "activation.log_softmax"
    title = "LogSoftmax"
    name_prefix = "log_softmax"
    description = "log(softmax(x)) along dim, numerically stable; pair with NLL loss."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.LogSoftmax(dim=params["dim"])
