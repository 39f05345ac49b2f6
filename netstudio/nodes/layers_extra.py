"""More layers: resampling, 3-d and transposed 1-d convolution, group/instance norm, padding,
attention and transformer blocks, and the Subtract/MatMul merges.

Same rules as :mod:`netstudio.nodes.layers`: shapes are integer arithmetic that
mirrors PyTorch (tests compare each type with the real module), each type builds
one built-in ``torch.nn`` module or calls one torch function, so exported models
need nothing but PyTorch.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Mapping

from netstudio.nodes.base import (Call, Category, FunctionType, InferContext, LayerType, Param, Port, PortKind,
                                  PortRef, TensorInfo, fmt_shape, register, size_of)
from netstudio.nodes.merge import SameShapeMerge
from netstudio.nodes.layers import (_NORM_COMMON, AdaptiveAvgPool2d, ConvTranspose2d, _auto_from, _auto_param,
                                    _conv_params, _ConvNd, _require_spatial)


def _divisors(n: int) -> str:
    ds = [str(d) for d in range(1, n + 1) if n % d == 0]
    return ", ".join(ds if len(ds) <= 8 else ds[:4] + ["…"] + ds[-2:])


# ----------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------


@register
class Conv3d(_ConvNd):
    type_id = "layer.conv3d"
    torch_modules = ("torch.nn.Conv3d",)
    title = "Conv3d"
    nd = 3
    description = "3-d convolution over N×C×D×H×W volumes (video clips, medical scans)."
    params = _conv_params(16, 3)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Conv3d(**self._args(params))


@register
class ConvTranspose1d(ConvTranspose2d):
    type_id = "layer.conv_transpose1d"
    torch_modules = ("torch.nn.ConvTranspose1d",)
    title = "ConvTranspose1d"
    nd = 1
    description = "Transposed 1-d convolution: learnable upsampling of N×C×L sequences."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.ConvTranspose1d(**self._args(params), output_padding=params["output_padding"])


# ----------------------------------------------------------------------------
# Resampling and padding
# ----------------------------------------------------------------------------

_UPSAMPLE_RANKS = {"nearest": (3, 4, 5), "linear": (3,), "bilinear": (4,), "bicubic": (4,), "trilinear": (5,)}
_ALIGNABLE = ("linear", "bilinear", "bicubic", "trilinear")


@register
class Upsample(LayerType):
    type_id = "layer.upsample"
    torch_modules = ("torch.nn.Upsample",)
    title = "Upsample"
    category = Category.LAYER
    name_prefix = "up"
    description = ("Resizes N×C×L, N×C×H×W or N×C×D×H×W by scale_factor (each size becomes "
                   "floor(size × scale)) with nearest or (bi/tri)linear interpolation; no weights.")
    params = (
        Param("scale_factor", "float", 2.0, min=0.01, max=1000.0, step=0.5),
        Param("mode", "choice", "nearest", choices=tuple(_UPSAMPLE_RANKS),
              help="linear: N×C×L; bilinear, bicubic: N×C×H×W; trilinear: N×C×D×H×W; nearest: any"),
        Param("align_corners", "bool", False, visible_if=("mode", _ALIGNABLE),
              help="align the corner pixels of input and output"),
    )
    summary_params = ("scale_factor", "mode")

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        mode, scale = ctx.params["mode"], ctx.params["scale_factor"]
        ranks = _UPSAMPLE_RANKS[mode]
        if len(x.shape) not in ranks:
            fits = [m for m, r in _UPSAMPLE_RANKS.items() if len(x.shape) in r]
            raise ctx.error(f"in mode {mode} expects {' or '.join(str(r) + '-d' for r in ranks)} input but "
                            f"receives {x.fmt()}",
                            hint=f"use mode {' or '.join(fits)}" if fits else "add a Reshape to N×C×H×W before it")
        sizes = [math.floor(float(v) * scale) for v in x.shape[2:]]
        if min(sizes) < 1:
            raise ctx.error(f"would shrink its {fmt_shape(x.shape[2:])} input to {fmt_shape(sizes)}",
                            hint=f"use scale_factor ≥ {1 / min(x.shape[2:]):.3g}")
        return x.with_shape(*x.shape[:2], *sizes)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        mode = params["mode"]
        return nn.Upsample(scale_factor=float(params["scale_factor"]), mode=mode,
                           align_corners=bool(params["align_corners"]) if mode in _ALIGNABLE else None)


@register
class PixelShuffle(LayerType):
    type_id = "layer.pixel_shuffle"
    torch_modules = ("torch.nn.PixelShuffle",)
    title = "PixelShuffle"
    category = Category.LAYER
    name_prefix = "shuffle"
    description = ("Rearranges N×(C·r²)×H×W into N×C×(H·r)×(W·r): sub-pixel upsampling after a convolution "
                   "(super-resolution).")
    params = (Param("upscale_factor", "int", 2, min=1, max=64),)
    summary_params = ("upscale_factor",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 2)
        r = ctx.params["upscale_factor"]
        c = x.shape[1]
        if c % (r * r):
            raise ctx.error(f"needs channels divisible by upscale_factor² = {r * r} but receives {c} ({x.fmt()})",
                            hint=f"give the layer before it {max(1, c // (r * r)) * r * r} output channels, "
                                 "or use a smaller upscale_factor")
        return x.with_shape(x.shape[0], c // (r * r), x.shape[2] * r, x.shape[3] * r)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.PixelShuffle(params["upscale_factor"])


@register
class ZeroPad2d(LayerType):
    type_id = "layer.zero_pad2d"
    torch_modules = ("torch.nn.ZeroPad2d",)
    title = "ZeroPad2d"
    category = Category.LAYER
    name_prefix = "pad"
    description = "Adds rows and columns of zeros around each H×W map (one number: the same on all sides)."
    params = (Param("padding", "ints", [1], help="all sides, or left, right, top, bottom"),)
    summary_params = ("padding",)

    def _sides(self, ctx: InferContext) -> list[int]:
        pad = list(ctx.params["padding"])
        if len(pad) == 1:
            pad *= 4
        if len(pad) != 4 or min(pad) < 0:
            raise ctx.error(f"padding {fmt_shape(pad) or 'empty'} is not one size or four (left, right, top, "
                            "bottom) of at least 0", hint="use e.g. 1 or 1, 1, 2, 2")
        return pad

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 2)
        left, right, top, bottom = self._sides(ctx)
        return x.with_shape(*x.shape[:2], x.shape[2] + top + bottom, x.shape[3] + left + right)

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        pad = [int(v) for v in params["padding"]]
        left, right, top, bottom = pad * 4 if len(pad) == 1 else pad  # four sides, checked by _sides
        return nn.ZeroPad2d((left, right, top, bottom))


@register
class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    type_id = "layer.adaptive_maxpool2d"
    torch_modules = ("torch.nn.AdaptiveMaxPool2d",)
    title = "AdaptiveMaxPool2d"
    name_prefix = "gmp"
    description = "Maximum over windows sized to give a fixed H×W whatever the input size (1×1 = global max)."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        size = list(params["output_size"])
        return nn.AdaptiveMaxPool2d(tuple(size * 2 if len(size) == 1 else size))


# ----------------------------------------------------------------------------
# Normalization, regularization, identity
# ----------------------------------------------------------------------------


@register
class GroupNorm(LayerType):
    type_id = "layer.groupnorm"
    torch_modules = ("torch.nn.GroupNorm",)
    title = "GroupNorm"
    category = Category.LAYER
    name_prefix = "gn"
    description = ("Normalizes each sample over groups of channels (independent of the batch size); "
                   "num_groups must divide the channels.")
    params = (
        Param("num_groups", "int", 4, min=1, max=100_000),
        _auto_param("num_channels", "channels (dimension 1); 'auto' infers it"),
        Param("eps", "float", 1e-5, min=1e-12, max=1.0, log_scale=True),
        Param("affine", "bool", True, help="learn a scale and shift per channel"),
    )
    summary_params = ("num_groups",)

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "num_channels", 1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        if len(x.shape) < 2:
            raise ctx.error(f"needs at least a batch and a channel dimension, got {x.fmt()}")
        p = ctx.params
        c, g = x.shape[1], p["num_groups"]
        if p["num_channels"] != c:
            raise ctx.error(f"expects {p['num_channels']} channels but receives {c} ({x.fmt()})",
                            hint=f"set num_channels to {c} or 'auto'")
        if c % g:
            raise ctx.error(f"num_groups {g} does not divide its {c} channels",
                            hint=f"set num_groups to a divisor of {c}: {_divisors(c)}")
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.GroupNorm(params["num_groups"], params["num_channels"], eps=params["eps"], affine=params["affine"])


@register
class InstanceNorm2d(LayerType):
    type_id = "layer.instancenorm2d"
    torch_modules = ("torch.nn.InstanceNorm2d",)
    title = "InstanceNorm2d"
    category = Category.LAYER
    name_prefix = "inorm"
    description = "Normalizes each channel of each image over its pixels (style transfer, GANs)."
    params = (
        _auto_param("num_features", "channels (dimension 1); 'auto' infers it"),
        _NORM_COMMON[0], _NORM_COMMON[1],
        Param("affine", "bool", False, help="learn a scale and shift per channel"),
        Param("track_running_stats", "bool", False, help="keep running statistics for evaluation"),
    )
    summary_params = ("num_features",)

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "num_features", 1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _require_spatial(ctx, x, 2)
        want, got = ctx.params["num_features"], x.shape[1]
        if want != got:
            raise ctx.error(f"expects {want} channels but receives {got} ({x.fmt()})",
                            hint=f"set num_features to {got} or 'auto'")
        if x.shape[2] * x.shape[3] == 1:
            raise ctx.error(f"needs more than one pixel per channel but receives {x.fmt()}",
                            hint="place it before the pooling that shrinks the maps to 1×1")
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.InstanceNorm2d(params["num_features"], eps=params["eps"], momentum=params["momentum"],
                                 affine=params["affine"], track_running_stats=params["track_running_stats"])


@register
class Dropout2d(LayerType):
    type_id = "layer.dropout2d"
    torch_modules = ("torch.nn.Dropout2d",)
    title = "Dropout2d"
    category = Category.LAYER
    name_prefix = "drop"
    description = "Zeroes whole channels of N×C×H×W maps with probability p while training; identity in eval."
    params = (Param("p", "float", 0.5, min=0.0, max=1.0, step=0.05, help="probability of zeroing a channel"),)
    summary_params = ("p",)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        if len(x.shape) != 4:
            raise ctx.error(f"expects N×C×H×W input but receives {x.fmt()}",
                            hint="use Dropout for other shapes")
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Dropout2d(params["p"])


@register
class Identity(LayerType):
    type_id = "layer.identity"
    torch_modules = ("torch.nn.Identity",)
    title = "Identity"
    category = Category.LAYER
    description = "Passes its input through unchanged (a placeholder, or a named tap on a tensor)."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Identity()


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------


def _check_tokens(ctx: InferContext, x: TensorInfo, dim_param: str, heads_param: str,
                  layout: str = "N×L×E") -> None:
    if len(x.shape) != 3:
        raise ctx.error(f"expects {layout} token input but receives {x.fmt()}",
                        hint="add a Reshape to L, E (sequence length, embedding size) before it")
    p = ctx.params
    e, h = x.shape[2], p[heads_param]
    if p[dim_param] != e:
        raise ctx.error(f"expects an embedding size of {p[dim_param]} but receives {e} ({x.fmt()})",
                        hint=f"set {dim_param} to {e} or 'auto'")
    if e % h:
        raise ctx.error(f"{heads_param} {h} does not divide the embedding size {e}",
                        hint=f"set {heads_param} to a divisor of {e}: {_divisors(e)}")


#: nn.MultiheadAttention.forward's arguments in their positional order
_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")


def _mha_call(args: Any, kwargs: Any) -> dict[str, Any]:
    """An attention module call's arguments by name (positional ones bound in torch's order)."""
    if len(args) > len(_MHA_ARGS):
        raise ValueError("more arguments than MultiheadAttention takes")
    bound = dict(zip(_MHA_ARGS, args))
    for k, v in kwargs.items():
        if k in bound or k not in _MHA_ARGS:
            raise ValueError(f"argument {k} is not one of MultiheadAttention's")
        bound[k] = v
    return bound


def _is_causal_mask(mask: Any) -> bool:
    """True for a constant L×L mask that hides exactly the later positions: bool ``True`` above the
    diagonal (torch's meaning: not attended), or float ``-inf`` there and 0 elsewhere."""
    import torch

    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.ones(mask.shape, dtype=torch.bool).triu(1)
    if mask.dtype == torch.bool:
        return bool(torch.equal(mask, above))
    if not mask.dtype.is_floating_point:
        return False
    return bool(torch.isneginf(mask[above]).all()) and bool((mask[~above] == 0).all())


@register
class MultiheadAttention(LayerType):
    type_id = "layer.multihead_attention"
    title = "MultiheadAttention"
    category = Category.LAYER
    name_prefix = "attn"
    description = ("Self-attention over N×L×E tokens (batch first; L×N×E when batch_first is off): query, key "
                   "and value are all the input; outputs the same shape. num_heads must divide the embedding "
                   "size; causal hides the later positions from each token.")
    params = (
        _auto_param("embed_dim", "embedding size (last dimension); 'auto' infers it"),
        Param("num_heads", "int", 4, min=1, max=4096),
        Param("dropout", "float", 0.0, min=0.0, max=0.99, help="on the attention weights while training"),
        Param("batch_first", "bool", True, saved_if_set=True,
              help="tokens as N×L×E (on) or sequence first, L×N×E (off, torch's default)"),
        Param("causal", "bool", False, saved_if_set=True,
              help="each position attends only to itself and earlier ones (a causal attention mask)"),
    )
    summary_params = ("num_heads",)
    #: torch returns (output, attention weights); weights are not computed (need_weights=False)
    output_index = 0
    torch_modules = ("torch.nn.MultiheadAttention",)

    @classmethod
    def from_module_call(cls, args: Any, kwargs: Any, is_tensor: Any) -> dict[str, Any]:
        # self-attention only: attn(x, x, x), optionally with a constant causal mask (module_call_params)
        call = _mha_call(args, kwargs)
        qkv = [call.get(k) for k in ("query", "key", "value")]
        if not is_tensor(qkv[0]) or any(v is not qkv[0] for v in qkv):
            raise ValueError("not self-attention (query, key and value differ)")
        if call.get("key_padding_mask") is not None:
            raise ValueError("argument key_padding_mask is not supported")
        mask = call.get("attn_mask")
        if mask is not None and not _is_causal_mask(mask):
            raise ValueError("attn_mask is not a constant causal mask")
        if call.get("is_causal") and mask is None:
            raise ValueError("is_causal without attn_mask")
        return {"input": qkv[0]}

    @classmethod
    def module_call_params(cls, args: Any, kwargs: Any) -> dict[str, Any]:
        return {"causal": _mha_call(args, kwargs).get("attn_mask") is not None}

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "embed_dim", -1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _check_tokens(ctx, x, "embed_dim", "num_heads", "N×L×E" if ctx.params["batch_first"] else "L×N×E")
        return x

    def call_args(self, params: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        import torch

        x = PortRef("input")
        kwargs: dict[str, Any] = {"need_weights": False}
        if params["causal"]:
            # built for the length the model runs with: L×L, True above the diagonal (not attended)
            n = size_of("input", 1 if params["batch_first"] else 0)
            ones = Call(torch.ones, ((n, n),), {"dtype": torch.bool, "device": Call(getattr, (x, "device"))})
            kwargs["attn_mask"] = Call("triu", (ones, 1))
        return (x, x, x), kwargs

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.MultiheadAttention(params["embed_dim"], params["num_heads"], dropout=params["dropout"],
                                     batch_first=params["batch_first"])


@register
class TransformerEncoderLayer(LayerType):
    type_id = "layer.transformer_encoder_layer"
    title = "TransformerEncoderLayer"
    category = Category.LAYER
    name_prefix = "encoder"
    description = ("One transformer encoder block over N×L×E tokens (batch first): self-attention and a "
                   "feed-forward network, each with a residual connection and LayerNorm.")
    params = (
        _auto_param("d_model", "embedding size (last dimension); 'auto' infers it"),
        Param("nhead", "int", 4, min=1, max=4096, help="attention heads; must divide d_model"),
        Param("dim_feedforward", "int", 256, min=1, max=1_000_000),
        Param("dropout", "float", 0.1, min=0.0, max=0.99),
        Param("activation", "choice", "relu", choices=("relu", "gelu")),
        Param("layer_norm_eps", "float", 1e-5, min=1e-12, max=1.0, log_scale=True),
        Param("norm_first", "bool", False, help="LayerNorm before attention/feed-forward (pre-norm)"),
    )
    summary_params = ("nhead", "dim_feedforward")

    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        return _auto_from(ctx, "d_model", -1)

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        _check_tokens(ctx, x, "d_model", "nhead")
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.TransformerEncoderLayer(
            params["d_model"], params["nhead"], dim_feedforward=params["dim_feedforward"], dropout=params["dropout"],
            activation=params["activation"], layer_norm_eps=params["layer_norm_eps"], batch_first=True,
            norm_first=params["norm_first"])


# ----------------------------------------------------------------------------
# Merges
# ----------------------------------------------------------------------------


@register
class Subtract(SameShapeMerge):
    type_id = "merge.subtract"
    torch_functions = ("operator.sub", "torch.sub", "Tensor.sub",)
    title = "Subtract"
    name_prefix = "sub"
    description = "Element-wise difference a − b of two tensors of equal shape."

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        return operator.sub, (PortRef("a"), PortRef("b")), {}


@register
class MatMul(FunctionType):
    type_id = "merge.matmul"
    torch_functions = ("operator.matmul", "torch.matmul", "Tensor.matmul",)
    title = "MatMul"
    category = Category.MERGE
    name_prefix = "matmul"
    description = ("Per-sample matrix product: a N×n×m times b N×m×p gives N×n×p (more leading dimensions "
                   "must match); e.g. attention scores from queries and transposed keys.")
    inputs = (Port("a", PortKind.TENSOR), Port("b", PortKind.TENSOR))
    outputs = (Port("output", PortKind.TENSOR),)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        a, b = ctx.input("a"), ctx.input("b")
        if len(a.shape) < 3 or len(a.shape) != len(b.shape) or a.shape[:-2] != b.shape[:-2]:
            raise ctx.error(f"cannot multiply {a.fmt()} by {b.fmt()} per sample",
                            hint="both inputs need a matrix per sample (N×n×m and N×m×p) with equal leading "
                                 "dimensions")
        if a.shape[-1] != b.shape[-2]:
            raise ctx.error(f"cannot multiply {a.fmt()} by {b.fmt()}: {a.shape[-1]} columns of a but "
                            f"{b.shape[-2]} rows of b", hint="add a Transpose of the last two dimensions of b")
        if a.dtype != b.dtype:
            raise ctx.error(f"needs inputs of one type but gets {a.dtype} and {b.dtype}")
        return {"output": a.with_shape(*a.shape[:-1], b.shape[-1])}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.matmul, (PortRef("a"), PortRef("b")), {}
