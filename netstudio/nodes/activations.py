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
    torch_modules = ("torch.nn.ReLU",)
    torch_functions = ("torch.relu", "torch.nn.functional.relu", "Tensor.relu",)
    title = "ReLU"
    description = "max(0, x)"
    module = "ReLU"


@register
class LeakyReLU(_Activation):
    type_id = "activation.leaky_relu"
    torch_modules = ("torch.nn.LeakyReLU",)
    torch_functions = ("torch.nn.functional.leaky_relu",)
    call_params = ("negative_slope",)
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
    torch_modules = ("torch.nn.GELU",)
    torch_functions = ("torch.nn.functional.gelu",)
    call_params = ("approximate",)
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
    torch_modules = ("torch.nn.SiLU",)
    torch_functions = ("torch.nn.functional.silu",)
    title = "SiLU"
    description = "x·sigmoid(x) (also called Swish)."
    module = "SiLU"


@register
class Sigmoid(_Activation):
    type_id = "activation.sigmoid"
    torch_modules = ("torch.nn.Sigmoid",)
    torch_functions = ("torch.sigmoid", "Tensor.sigmoid",)
    title = "Sigmoid"
    description = "1 / (1 + exp(-x)); pair with BCE for binary classification."
    module = "Sigmoid"


@register
class Tanh(_Activation):
    type_id = "activation.tanh"
    torch_modules = ("torch.nn.Tanh",)
    torch_functions = ("torch.tanh", "Tensor.tanh",)
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
    torch_modules = ("torch.nn.Softmax",)
    torch_functions = ("torch.softmax", "torch.nn.functional.softmax", "Tensor.softmax",)
    call_params = ("dim",)
    title = "Softmax"
    description = "exp(x) normalized to sum to one along dim; for class probabilities (not before CrossEntropy)."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Softmax(dim=params["dim"])


@register
class LogSoftmax(_Normalizing):
    type_id = "activation.log_softmax"
    torch_modules = ("torch.nn.LogSoftmax",)
    torch_functions = ("torch.log_softmax", "torch.nn.functional.log_softmax", "Tensor.log_softmax",)
    call_params = ("dim",)
    title = "LogSoftmax"
    name_prefix = "log_softmax"
    description = "log(softmax(x)) along dim, numerically stable; pair with NLL loss."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.LogSoftmax(dim=params["dim"])


@register
class PReLU(_Activation):
    type_id = "activation.prelu"
    torch_modules = ("torch.nn.PReLU",)
    title = "PReLU"
    description = "x for x > 0, a·x otherwise, with the slope a learned (one for all, or one per channel)."
    params = (
        Param("num_parameters", "int", 1, min=1, max=100_000,
              help="1 = one slope shared by all values, or the number of channels (dimension 1)"),
        Param("init", "float", 0.25, min=0.0, max=1.0, step=0.05, help="initial slope"),
    )
    summary_params = ("num_parameters",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        super().out_info(ctx, x)
        n = ctx.params["num_parameters"]
        if n != 1 and (len(x.shape) < 2 or x.shape[1] != n):
            got = x.shape[1] if len(x.shape) >= 2 else 1
            raise ctx.error(f"has {n} slopes but its input {x.fmt()} has {got} channels (dimension 1)",
                            hint=f"set num_parameters to {got} or 1")
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.PReLU(num_parameters=params["num_parameters"], init=params["init"])


@register
class ELU(_Activation):
    type_id = "activation.elu"
    torch_modules = ("torch.nn.ELU",)
    title = "ELU"
    description = "x for x > 0, alpha·(exp(x) − 1) otherwise: smooth, with negative outputs."
    params = (Param("alpha", "float", 1.0, min=0.0, max=100.0, step=0.1),)
    summary_params = ("alpha",)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.ELU(alpha=params["alpha"])


@register
class SELU(_Activation):
    type_id = "activation.selu"
    torch_modules = ("torch.nn.SELU",)
    title = "SELU"
    description = "Scaled ELU with fixed constants; keeps activations normalized in deep MLPs."
    module = "SELU"


@register
class Softplus(_Activation):
    type_id = "activation.softplus"
    torch_modules = ("torch.nn.Softplus",)
    title = "Softplus"
    description = "log(1 + exp(beta·x)) / beta, a smooth ReLU; linear above threshold."
    params = (Param("beta", "float", 1.0, min=1e-6, max=1000.0, step=0.5),
              Param("threshold", "float", 20.0, min=0.0, max=1000.0, help="above beta·x > threshold: x itself"))
    summary_params = ("beta",)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Softplus(beta=params["beta"], threshold=params["threshold"])


@register
class Mish(_Activation):
    type_id = "activation.mish"
    torch_modules = ("torch.nn.Mish",)
    title = "Mish"
    description = "x·tanh(softplus(x)), a smooth self-gated ReLU."
    module = "Mish"


@register
class ReLU6(_Activation):
    type_id = "activation.relu6"
    torch_modules = ("torch.nn.ReLU6",)
    torch_functions = ("torch.nn.functional.relu6",)
    title = "ReLU6"
    description = "min(max(0, x), 6), ReLU capped at 6 (mobile networks)."
    module = "ReLU6"


@register
class Hardswish(_Activation):
    type_id = "activation.hardswish"
    torch_modules = ("torch.nn.Hardswish",)
    torch_functions = ("torch.nn.functional.hardswish",)
    title = "Hardswish"
    description = "x·ReLU6(x + 3) / 6, a cheap approximation of SiLU (MobileNetV3)."
    module = "Hardswish"
