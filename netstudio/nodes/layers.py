"""Trainable and structural layers, each compiled to one built-in ``torch.nn`` module.

Shape inference here is plain integer arithmetic that mirrors PyTorch's own
formulas exactly (tests compare every layer with the real module), so the
editor can show shapes and precise fix hints without importing torch.
"""

from __future__ import annotations

import math
import operator
from typing import Any, ClassVar, Mapping, Sequence

from netstudio.nodes.base import (AUTO, RESULT, Category, FunctionType, InferContext, LayerType, OutputStep, Param,
                                  Port, PortKind, PortRef, TensorInfo, conv_out, fmt_shape, register)

# ----------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------

_LAYOUT = {1: "N×C×L", 2: "N×C×H×W", 3: "N×C×D×H×W"}


def _square_hint(n: int) -> str:
    """A concrete per-sample shape for ``n`` values: 28, 28 for 784, else n, 1."""
    r = math.isqrt(n)
    return f"{r}, {r}" if r * r == n and r > 1 else f"{n}, 1"


def _require_spatial(ctx: InferContext, x: TensorInfo, nd: int) -> None:
    """Conv/pool layers need N×C×(spatial) input; say what to change otherwise."""
    if len(x.shape) == nd + 2:
        return
    want = _LAYOUT[nd]
    if len(x.shape) == 2:
        hint = ("remove the Flatten before it or use Linear" if nd == 2 else
                f"add a Reshape to 1, {x.shape[1]} before it or use Linear")
    elif nd == 2 and len(x.shape) == 3:
        hint = "use the 1-d variant for N×C×L input, or add a Reshape to C×H×W before it"
    elif nd == 1 and len(x.shape) == 4:
        hint = "use the 2-d variant for N×C×H×W input, or add a Reshape to C×L before it"
    else:
        hint = f"add a Reshape so that it receives {want}"
    raise ctx.error(f"expects {want} input but receives {x.fmt()}", hint=hint)


def _dims(v: int, nd: int) -> str:
    return "×".join([str(v)] * nd)


def _check_channels(ctx: InferContext, x: TensorInfo, param: str = "in_channels") -> None:
    want, got = ctx.params[param], x.shape[1]
    if want != got:
        raise ctx.error(f"expects {want} input channels but receives {got} ({x.fmt()})",
                        hint=f"set {param} to {got} or 'auto'")


def _check_groups(ctx: InferContext, cin: int, cout: int) -> None:
    g = ctx.params["groups"]
    for label, n in (("in_channels", cin), ("out_channels", cout)):
        if n % g:
            raise ctx.error(f"{label} {n} is not divisible by groups {g}",
                            hint=f"set groups to a divisor of both {cin} and {cout}, e.g. {math.gcd(cin, cout)}")


def _conv_spatial(ctx: InferContext, x: TensorInfo, nd: int) -> list[int]:
    """Output sizes of a convolution; error when the (dilated) kernel exceeds the padded input."""
    p = ctx.params
    k, s, pad, d = p["kernel_size"], p["stride"], p["padding"], p["dilation"]
    sizes = list(x.shape[2:])
    eff = d * (k - 1) + 1
    smallest = min(sizes)
    if eff > smallest + 2 * pad:
        dilated = f" (dilated to {_dims(eff, nd)})" if d > 1 else ""
        indesc = fmt_shape(sizes) + (f" (padded to {fmt_shape([v + 2 * pad for v in sizes])})" if pad else "")
        kmax = (smallest + 2 * pad - 1) // d + 1
        pmin = -(-(eff - smallest) // 2)
        raise ctx.error(f"has a {_dims(k, nd)} kernel{dilated} larger than its {indesc} input",
                        hint=f"use kernel_size ≤ {kmax} or padding ≥ {pmin}")
    return [conv_out(v, k, s, pad, d) for v in sizes]


def _pool_out(size: int, k: int, s: int, pad: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output length, including the ceil_mode correction."""
    eff = d * (k - 1) + 1
    out = (size + 2 * pad - eff + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + pad:
        out -= 1  # the last window would start inside the right padding only
    return out


def _pool_spatial(ctx: InferContext, x: TensorInfo, dilation: int) -> list[int]:
    p = ctx.params
    k, pad = p["kernel_size"], p["padding"]
    s = p["stride"] or k  # 0 means "same as the kernel", torch's default
    if pad > k // 2:
        raise ctx.error(f"has padding {pad}, more than half of its {_dims(k, 2)} kernel",
                        hint=f"use padding ≤ {k // 2}")
    sizes = list(x.shape[2:])
    outs = [_pool_out(v, k, s, pad, dilation, p["ceil_mode"]) for v in sizes]
    if min(outs) < 1:
        kmax = max(1, (min(sizes) + 2 * pad - 1) // dilation + 1)
        raise ctx.error(f"would shrink its {fmt_shape(sizes)} input to {fmt_shape([max(0, o) for o in outs])}",
                        hint=f"use kernel_size ≤ {kmax} or remove this pooling layer")
    return outs


def _auto_from(ctx: InferContext, name: str, dim: int) -> dict[str, Any]:
    """Replace an ``auto`` param by the size of input dimension ``dim`` (when it exists)."""
    p = dict(ctx.params)
    x = ctx.inputs.get("input")
    if p.get(name) == AUTO and x is not None and len(x.shape) > max(dim, -dim - 1):
        p[name] = x.shape[dim]
    return p


def _auto_param(name: str, help_text: str) -> Param:
    return Param(name, "int", AUTO, min=1, max=1_000_000, allow_auto=True, help=help_text)


def _conv_params(out_default: int, kernel_default: int, stride_default: int = 1) -> tuple[Param, ...]:
    return (
        _auto_param("in_channels", "channels of the input (dimension 1); 'auto' infers it"),
        Param("out_channels", "int", out_default, min=1, max=100_000),
        Param("kernel_size", "int", kernel_default, min=1, max=1024),
        Param("stride", "int", stride_default, min=1, max=1024),
        Param("padding", "int", 0, min=0, max=1024),
        Param("dilation", "int", 1, min=1, max=1024),
        Param("groups", "int", 1, min=1, max=100_000),
        Param("bias", "bool", True),
    )


# ----------------------------------------------------------------------------
# Dense
# ----------------------------------------------------------------------------


@register
class Linear(LayerType):
    type_id = "layer.linear"
    torch_modules = ("torch.nn.Linear",)
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
        return _auto_from(ctx, "in_features", -1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        p = ctx.params
        if len(x.shape) < 2:
            raise ctx.error(f"needs at least a batch and a feature dimension, got {x.fmt()}")
        got = x.shape[-1]
        want = p["in_features"]
        if want != got:
            flat = x.numel_per_sample
            if len(x.shape) > 3 and flat == want:
                # the classic forgotten Flatten after a conv stack
                raise ctx.error(f"expects {want} input features but receives {x.fmt()} (unflattened)",
                                hint="add a Flatten before it")
            if len(x.shape) > 3:
                raise ctx.error(f"expects {want} input features but receives {x.fmt()}",
                                hint=f"add a Flatten before it and set in_features to {flat}")
            where = f" (last dimension of {x.fmt()})" if len(x.shape) == 3 else ""
            if x.flattened_from is not None and len(x.shape) == 2:
                # the classic LeNet slip: 16×5×5 = 400 assumed, 16×4×4 = 256 arrives from 28×28 images
                where = f" ({'×'.join(map(str, x.flattened_from[1:]))} flattened)"
            raise ctx.error(f"expects {want} input features but receives {got}{where}",
                            hint=f"set in_features to {got} or 'auto'")
        return x.with_shape(*x.shape[:-1], p["out_features"])

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Linear(params["in_features"], params["out_features"], bias=params["bias"])


# ----------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------


class _ConvNd(LayerType):
    nd = 2
    category = Category.LAYER
    name_prefix = "conv"
    summary_params: ClassVar[tuple[str, ...]] = ("out_channels", "kernel_size")

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "in_channels", 1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, self.nd)
        _check_channels(ctx, x)
        _check_groups(ctx, ctx.params["in_channels"], ctx.params["out_channels"])
        return x.with_shape(x.shape[0], ctx.params["out_channels"], *_conv_spatial(ctx, x, self.nd))

    def _args(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return dict(in_channels=params["in_channels"], out_channels=params["out_channels"],
                    kernel_size=params["kernel_size"], stride=params["stride"], padding=params["padding"],
                    dilation=params["dilation"], groups=params["groups"], bias=params["bias"])


@register
class Conv1d(_ConvNd):
    type_id = "layer.conv1d"
    torch_modules = ("torch.nn.Conv1d",)
    title = "Conv1d"
    nd = 1
    description = "1-d convolution over N×C×L sequences (signals, time series)."
    params = _conv_params(16, 3)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Conv1d(**self._args(params))


@register
class Conv2d(_ConvNd):
    type_id = "layer.conv2d"
    torch_modules = ("torch.nn.Conv2d",)
    title = "Conv2d"
    nd = 2
    description = "2-d convolution over N×C×H×W images."
    params = _conv_params(16, 3)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Conv2d(**self._args(params))


@register
class ConvTranspose2d(_ConvNd):
    type_id = "layer.conv_transpose2d"
    torch_modules = ("torch.nn.ConvTranspose2d",)
    title = "ConvTranspose2d"
    nd = 2
    name_prefix = "deconv"
    description = "Transposed 2-d convolution: learnable upsampling (decoders, autoencoders)."
    params = _conv_params(16, 2, stride_default=2) + (
        Param("output_padding", "int", 0, min=0, max=1024,
              help="extra rows/columns on one side; must be smaller than stride or dilation"),
    )
    summary_params = ("out_channels", "kernel_size", "stride")

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, self.nd)
        _check_channels(ctx, x)
        p = ctx.params
        _check_groups(ctx, p["in_channels"], p["out_channels"])
        k, s, pad, d, op = p["kernel_size"], p["stride"], p["padding"], p["dilation"], p["output_padding"]
        if op >= max(s, d):
            raise ctx.error(f"has output_padding {op}, but it must be smaller than stride {s} or dilation {d}",
                            hint=f"use output_padding ≤ {max(s, d) - 1}")
        sizes = list(x.shape[2:])
        outs = [(v - 1) * s - 2 * pad + d * (k - 1) + op + 1 for v in sizes]
        if min(outs) < 1:
            pmax = ((min(sizes) - 1) * s + d * (k - 1) + op) // 2
            raise ctx.error(f"would produce a {fmt_shape([max(0, o) for o in outs])} output from its "
                            f"{fmt_shape(sizes)} input", hint=f"use padding ≤ {pmax}")
        return x.with_shape(x.shape[0], p["out_channels"], *outs)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.ConvTranspose2d(**self._args(params), output_padding=params["output_padding"])


# ----------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------

_POOL_COMMON = (
    Param("kernel_size", "int", 2, min=1, max=1024),
    Param("stride", "int", 0, min=0, max=1024, help="0 = same as kernel_size"),
    Param("padding", "int", 0, min=0, max=512, help="at most half the kernel size"),
)


@register
class MaxPool2d(LayerType):
    type_id = "layer.maxpool2d"
    torch_modules = ("torch.nn.MaxPool2d",)
    torch_functions = ("torch.nn.functional.max_pool2d", "torch.max_pool2d")
    call_params = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    title = "MaxPool2d"
    category = Category.LAYER
    name_prefix = "pool"
    description = "Maximum over each kernel window: halves H and W with the default 2×2 window."
    params = _POOL_COMMON + (
        Param("dilation", "int", 1, min=1, max=1024),
        Param("ceil_mode", "bool", False, help="round the output size up instead of down"),
    )
    summary_params = ("kernel_size",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 2)
        return x.with_shape(*x.shape[:2], *_pool_spatial(ctx, x, ctx.params["dilation"]))

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.MaxPool2d(params["kernel_size"], stride=params["stride"] or None, padding=params["padding"],
                            dilation=params["dilation"], ceil_mode=params["ceil_mode"])


@register
class AvgPool2d(LayerType):
    type_id = "layer.avgpool2d"
    torch_modules = ("torch.nn.AvgPool2d",)
    title = "AvgPool2d"
    category = Category.LAYER
    name_prefix = "pool"
    description = "Average over each kernel window."
    params = _POOL_COMMON + (
        Param("ceil_mode", "bool", False, help="round the output size up instead of down"),
        Param("count_include_pad", "bool", True, help="count padded zeros in the average"),
    )
    summary_params = ("kernel_size",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 2)
        return x.with_shape(*x.shape[:2], *_pool_spatial(ctx, x, 1))

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.AvgPool2d(params["kernel_size"], stride=params["stride"] or None, padding=params["padding"],
                            ceil_mode=params["ceil_mode"], count_include_pad=params["count_include_pad"])


@register
class AdaptiveAvgPool2d(LayerType):
    type_id = "layer.adaptive_avgpool2d"
    torch_modules = ("torch.nn.AdaptiveAvgPool2d",)
    torch_functions = ("torch.nn.functional.adaptive_avg_pool2d",)
    call_params = ("output_size",)
    title = "AdaptiveAvgPool2d"
    category = Category.LAYER
    name_prefix = "gap"
    description = "Averages to a fixed H×W whatever the input size (1×1 = global average pooling)."
    params = (Param("output_size", "ints", [1, 1], help="target height, width (one number = square)"),)
    summary_params = ("output_size",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 2)
        size = list(ctx.params["output_size"])
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) < 1:
            raise ctx.error(f"output_size {fmt_shape(size) or 'empty'} is not a positive height, width pair",
                            hint="use e.g. 1, 1 for global average pooling")
        return x.with_shape(*x.shape[:2], *size)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        size = list(params["output_size"])
        return nn.AdaptiveAvgPool2d(tuple(size * 2 if len(size) == 1 else size))


# ----------------------------------------------------------------------------
# Normalization and regularization
# ----------------------------------------------------------------------------

_NORM_COMMON = (
    Param("eps", "float", 1e-5, min=0.0, max=1.0, log_scale=True),
    Param("momentum", "float", 0.1, min=0.0, max=1.0, help="running-statistics update rate"),
    Param("affine", "bool", True, help="learn a scale and shift per channel"),
)


class _BatchNorm(LayerType):
    category = Category.LAYER
    name_prefix = "bn"
    summary_params = ("num_features",)
    ranks: tuple[int, ...] = (4,)
    layout = "N×C×H×W"

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        params = _auto_from(ctx, "num_features", 1)
        if not params["eps"] > 0:  # torch refuses eps = 0 only once training runs
            from netstudio.errors import ParamError

            raise ParamError(f"{ctx.title} '{ctx.name}' needs an eps greater than 0 (got {params['eps']:g}): it keeps "
                             "the division by the batch's standard deviation finite", node_id=ctx.node_id,
                             hint="set eps to 1e-5 (the default)", param="eps")
        return params

    def single_sample_fails(self, x: TensorInfo) -> bool:
        """True when a training batch of one sample leaves one value per channel (torch refuses it)."""
        return len(x.shape) >= 2 and math.prod(x.shape[2:]) == 1

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        if len(x.shape) not in self.ranks:
            other = "BatchNorm2d" if len(x.shape) == 4 else "BatchNorm1d"
            hint = (f"use {other} for {x.fmt()} input" if len(x.shape) in (2, 3, 4)
                    else f"add a Reshape so that it receives {self.layout}")
            raise ctx.error(f"expects {self.layout} input but receives {x.fmt()}", hint=hint)
        want, got = ctx.params["num_features"], x.shape[1]
        if want != got:
            raise ctx.error(f"expects {want} features (channels) but receives {got} ({x.fmt()})",
                            hint=f"set num_features to {got} or 'auto'")
        if x.shape[0] * math.prod(x.shape[2:]) == 1:
            # torch refuses to compute batch statistics from a single value
            raise ctx.error(f"needs more than one value per channel in training but receives {x.fmt()}",
                            hint="use a batch size of at least 2")
        return x

    def _args(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return dict(num_features=params["num_features"], eps=params["eps"], momentum=params["momentum"],
                    affine=params["affine"])


@register
class BatchNorm1d(_BatchNorm):
    type_id = "layer.batchnorm1d"
    torch_modules = ("torch.nn.BatchNorm1d",)
    title = "BatchNorm1d"
    description = "Normalizes each feature over the batch (N×C or N×C×L input)."
    ranks = (2, 3)
    layout = "N×C or N×C×L"
    params = (_auto_param("num_features", "size of dimension 1; 'auto' infers it"),) + _NORM_COMMON

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.BatchNorm1d(**self._args(params))


@register
class BatchNorm2d(_BatchNorm):
    type_id = "layer.batchnorm2d"
    torch_modules = ("torch.nn.BatchNorm2d",)
    title = "BatchNorm2d"
    description = "Normalizes each channel of N×C×H×W images over the batch and pixels."
    ranks = (4,)
    layout = "N×C×H×W"
    params = (_auto_param("num_features", "channels (dimension 1); 'auto' infers it"),) + _NORM_COMMON

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.BatchNorm2d(**self._args(params))


@register
class LayerNorm(LayerType):
    type_id = "layer.layernorm"
    torch_modules = ("torch.nn.LayerNorm",)
    title = "LayerNorm"
    category = Category.LAYER
    name_prefix = "ln"
    description = "Normalizes each sample over its last dimension (transformers, RNNs)."
    params = (
        _auto_param("normalized_shape", "size of the last dimension; 'auto' infers it"),
        Param("eps", "float", 1e-5, min=0.0, max=1.0, log_scale=True),
        Param("elementwise_affine", "bool", True, label="affine"),
    )
    summary_params = ("normalized_shape",)

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "normalized_shape", -1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        if len(x.shape) < 2:
            raise ctx.error(f"needs at least a batch and a feature dimension, got {x.fmt()}")
        want, got = ctx.params["normalized_shape"], x.shape[-1]
        if want != got:
            raise ctx.error(f"normalizes over {want} values but the last dimension of {x.fmt()} is {got}",
                            hint=f"set normalized_shape to {got} or 'auto'")
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.LayerNorm(params["normalized_shape"], eps=params["eps"],
                            elementwise_affine=params["elementwise_affine"])


@register
class Dropout(LayerType):
    type_id = "layer.dropout"
    torch_modules = ("torch.nn.Dropout",)
    title = "Dropout"
    category = Category.LAYER
    name_prefix = "drop"
    description = "Zeroes a random fraction p of values while training (regularization); identity in eval."
    params = (Param("p", "float", 0.5, min=0.0, max=1.0, step=0.05, help="probability of zeroing a value"),)
    summary_params = ("p",)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Dropout(params["p"])


# ----------------------------------------------------------------------------
# Reshaping
# ----------------------------------------------------------------------------


@register
class Flatten(LayerType):
    type_id = "layer.flatten"
    torch_modules = ("torch.nn.Flatten",)
    torch_functions = ("torch.flatten", "Tensor.flatten",)
    call_params = ("start_dim", "end_dim",)
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
        return x.flattened(*x.shape[:s], math.prod(x.shape[s:e + 1]), *x.shape[e + 1:])

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Flatten(params["start_dim"], params["end_dim"])


def _reshape_suggestion(n: int, shape: Sequence[int]) -> str:
    """Fix one entry of ``shape`` so the product is ``n``, if possible; else ``n`` itself."""
    for i in range(len(shape)):
        rest = math.prod(v for j, v in enumerate(shape) if j != i)
        if rest > 0 and n % rest == 0:
            fixed = list(shape)
            fixed[i] = n // rest
            return ", ".join(str(v) for v in fixed)
    return str(n)


@register
class Reshape(FunctionType):
    type_id = "layer.reshape"
    torch_functions = ("torch.reshape", "Tensor.reshape", "Tensor.view")
    title = "Reshape"

    @classmethod
    def from_call(cls, args: Any, kwargs: Any, is_tensor: Any, out_shape: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        # the traced output shape: the call may compute its sizes from x.shape, which a graph cannot hold
        if not args or not is_tensor(args[0]) or len(out_shape) < 2:
            raise ValueError("not a per-sample reshape")
        return cls.validate_params({"shape": list(out_shape[1:])}), {"input": args[0]}
    category = Category.LAYER
    description = "Gives each sample a new shape with the same number of values (e.g. 784 → 1×28×28)."
    inputs = (Port("input", PortKind.TENSOR),)
    outputs = (Port("output", PortKind.TENSOR),)
    params = (Param("shape", "ints", [1, 28, 28], help="per-sample shape, without the batch dimension"),)
    summary_params = ("shape",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        x = ctx.input("input")
        shape = list(ctx.params["shape"])
        if not shape or min(shape) < 1:
            raise ctx.error(f"shape {fmt_shape(shape) or 'empty'} must list positive sizes",
                            hint=f"use e.g. {_square_hint(x.numel_per_sample)}")
        n, m = x.numel_per_sample, math.prod(shape)
        if n != m:
            # torch would silently change the batch size when the totals happen to divide
            raise ctx.error(f"cannot reshape {x.fmt()} ({n} values per sample) to {fmt_shape(shape)} ({m} values)",
                            hint=f"set shape to {_reshape_suggestion(n, shape)}")
        return {"output": x.with_shape(x.shape[0], *shape)}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.reshape, (PortRef("input"), (-1, *[int(v) for v in params["shape"]])), {}


# ----------------------------------------------------------------------------
# Embeddings and recurrent layers
# ----------------------------------------------------------------------------


@register
class Embedding(LayerType):
    type_id = "layer.embedding"
    torch_modules = ("torch.nn.Embedding",)
    title = "Embedding"
    category = Category.LAYER
    name_prefix = "embed"
    description = "Looks up a learned vector for each integer token id (N×L ids → N×L×dim)."
    params = (
        Param("num_embeddings", "int", 1000, min=1, max=10_000_000, help="vocabulary size (largest id + 1)"),
        Param("embedding_dim", "int", 32, min=1, max=100_000),
    )
    summary_params = ("num_embeddings", "embedding_dim")

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        if not x.dtype.startswith(("int", "uint")):
            raise ctx.error(f"expects integer token ids but receives {x.dtype} values ({x.fmt()})",
                            hint="feed integer indices, or use Linear for continuous features")
        return TensorInfo((*x.shape, ctx.params["embedding_dim"]), "float32")

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Embedding(params["num_embeddings"], params["embedding_dim"])


class _Recurrent(LayerType):
    category = Category.LAYER
    name_prefix = "rnn"
    summary_params = ("hidden_size", "num_layers")
    outputs = (
        Port("output", PortKind.TENSOR,
             help="every time step's hidden state of the last layer, N×L×H (N×L×2H when bidirectional)"),
        Port("h_n", PortKind.TENSOR, label="h_n",
             help="the last layer's final hidden state, N×H; when bidirectional N×2H: the forward "
                  "direction's state after the last step followed by the backward direction's state "
                  "after the first step"),
    )
    #: torch's RNN/LSTM/GRU return (output, state); the ``output`` port is element 0
    output_index = 0
    #: LSTM's state is (h_n, c_n); RNN/GRU's state is h_n itself
    state_is_pair = False
    params: ClassVar[tuple[Param, ...]] = (
        _auto_param("input_size", "features per time step (last dimension); 'auto' infers it"),
        Param("hidden_size", "int", 64, min=1, max=100_000),
        Param("num_layers", "int", 1, min=1, max=64),
        Param("bidirectional", "bool", False,
              help="also read the sequence backwards; outputs hold both directions (2 × hidden_size)"),
        Param("dropout", "float", 0.0, min=0.0, max=0.99, help="between stacked layers (needs num_layers > 1)"),
        Param("bias", "bool", True),
    )

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "input_size", -1)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        out = self.out_info(ctx, ctx.input("input"))
        return {"output": out, "h_n": out.with_shape(out.shape[0], out.shape[2])}

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        p = ctx.params
        if len(x.shape) != 3:
            raise ctx.error(f"expects N×L×F sequence input but receives {x.fmt()}",
                            hint=f"add a Reshape before it, e.g. shape {_square_hint(x.numel_per_sample)}")
        got = x.shape[2]
        if p["input_size"] != got:
            raise ctx.error(f"expects {p['input_size']} features per time step but receives {got} ({x.fmt()})",
                            hint=f"set input_size to {got} or 'auto'")
        hidden = p["hidden_size"] * (2 if p["bidirectional"] else 1)
        return x.with_shape(x.shape[0], x.shape[1], hidden)

    def output_steps(self, params: Mapping[str, Any]) -> dict[str, list[OutputStep]]:
        import torch

        state: list[OutputStep] = [(operator.getitem, (RESULT, 1), {})]
        if self.state_is_pair:
            state.append((operator.getitem, (RESULT, 0), {}))  # h_n of (h_n, c_n)
        # h_n is (num_layers · directions)×N×H, the last layer's directions last
        last: list[OutputStep]
        if params["bidirectional"]:
            last = [(operator.getitem, (RESULT, slice(-2, None)), {}),  # 2×N×H: forward, backward
                    (torch.transpose, (RESULT, 0, 1), {}),               # N×2×H
                    (torch.flatten, (RESULT, 1), {})]                    # N×2H
        else:
            last = [(operator.getitem, (RESULT, -1), {})]
        return {"output": [(operator.getitem, (RESULT, 0), {})], "h_n": state + last}

    def _args(self, params: Mapping[str, Any]) -> dict[str, Any]:
        # dropout only acts between stacked layers; passing it with one layer just makes torch warn
        return dict(input_size=params["input_size"], hidden_size=params["hidden_size"],
                    num_layers=params["num_layers"], bias=params["bias"], batch_first=True,
                    dropout=params["dropout"] if params["num_layers"] > 1 else 0.0,
                    bidirectional=params["bidirectional"])


@register
class LSTM(_Recurrent):
    type_id = "layer.lstm"
    torch_modules = ("torch.nn.LSTM",)
    title = "LSTM"
    name_prefix = "lstm"
    description = ("Long short-term memory over N×L×F sequences; 'output' is every step's hidden state "
                   "N×L×H, 'h_n' the last layer's final hidden state N×H.")
    state_is_pair = True

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.LSTM(**self._args(params))


@register
class GRU(_Recurrent):
    type_id = "layer.gru"
    torch_modules = ("torch.nn.GRU",)
    title = "GRU"
    name_prefix = "gru"
    description = ("Gated recurrent unit over N×L×F sequences; 'output' is every step's hidden state N×L×H, "
                   "'h_n' the last layer's final hidden state N×H.")

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.GRU(**self._args(params))


@register
class RNN(_Recurrent):
    type_id = "layer.rnn"
    torch_modules = ("torch.nn.RNN",)
    title = "RNN"
    name_prefix = "rnn"
    description = ("Plain (Elman) recurrent layer h' = act(W·x + U·h + b) over N×L×F sequences; 'output' is "
                   "every step's hidden state N×L×H, 'h_n' the last layer's final hidden state N×H.")
    params = _Recurrent.params + (
        Param("nonlinearity", "choice", "tanh", choices=("tanh", "relu")),
    )

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.RNN(**self._args(params), nonlinearity=params["nonlinearity"])
