"""Error texts of the newer catalog types: they name the node and say how to fix the input or params."""

from __future__ import annotations

from typing import Any

import pytest

from netstudio.compiler.shapes import ShapeChecker
from netstudio.errors import ShapeError
from netstudio.nodes import CATALOG, InferContext, TensorInfo
from tests.test_catalog_shapes import make_graph


def T(*shape: int) -> TensorInfo:
    return TensorInfo(tuple(shape))


def error(type_id: str, params: dict[str, Any], **inputs: TensorInfo) -> ShapeError:
    nt = CATALOG.get(type_id)
    ctx = InferContext("n9", "x", nt.title, nt.validate_params(params), dict(inputs or {}), 4)
    ctx.params = nt.resolve(ctx)
    with pytest.raises(ShapeError) as exc:
        nt.infer(ctx)
    assert exc.value.node_id == "n9"
    return exc.value


def test_groupnorm_groups_must_divide_channels_in_the_graph_check() -> None:
    g = make_graph()
    src = g.add_node("test.source", {"shape": [6, 5, 5]}, name="data")
    gn = g.add_node("layer.groupnorm", {"num_groups": 4}, name="gn1")
    g.connect(src.id, "features", gn.id, "input")
    [p] = ShapeChecker().analyze(g, 8).problems_for(gn.id)
    assert p.severity == "error"
    assert p.message == "GroupNorm 'gn1' num_groups 4 does not divide its 6 channels"
    assert p.hint == "set num_groups to a divisor of 6: 1, 2, 3, 6"
    g.set_param(gn.id, "num_groups", 3)  # applying the hint fixes it
    assert not ShapeChecker().analyze(g, 8).problems_for(gn.id)


def test_new_layer_errors() -> None:
    e = error("layer.multihead_attention", {"num_heads": 5}, input=T(4, 6, 16))
    assert e.message == "MultiheadAttention 'x' num_heads 5 does not divide the embedding size 16"
    assert e.hint == "set num_heads to a divisor of 16: 1, 2, 4, 8, 16"
    e = error("layer.transformer_encoder_layer", {}, input=T(4, 16))
    assert e.message == "TransformerEncoderLayer 'x' expects N×L×E token input but receives 4×16"
    e = error("layer.pixel_shuffle", {"upscale_factor": 2}, input=T(4, 6, 5, 5))
    assert e.message == "PixelShuffle 'x' needs channels divisible by upscale_factor² = 4 but receives 6 (4×6×5×5)"
    e = error("layer.upsample", {"mode": "bilinear"}, input=T(4, 3, 9))
    assert e.message == "Upsample 'x' in mode bilinear expects 4-d input but receives 4×3×9"
    assert e.hint == "use mode nearest or linear"
    e = error("layer.zero_pad2d", {"padding": [1, 2]}, input=T(4, 3, 5, 5))
    assert e.hint == "use e.g. 1 or 1, 1, 2, 2"
    e = error("layer.instancenorm2d", {}, input=T(4, 3, 1, 1))
    assert "needs more than one pixel per channel" in e.message
    e = error("activation.prelu", {"num_parameters": 4}, input=T(4, 3, 5))
    assert e.hint == "set num_parameters to 3 or 1"
    e = error("merge.matmul", {}, a=T(4, 6, 5), b=T(4, 6, 3))
    assert e.message == "MatMul 'x' cannot multiply 4×6×5 by 4×6×3: 5 columns of a but 6 rows of b"
    assert e.hint == "add a Transpose of the last two dimensions of b"
    e = error("merge.matmul", {}, a=T(4, 6), b=T(4, 6))
    assert "per sample" in e.message
    e = error("merge.subtract", {}, a=T(4, 6), b=T(4, 5))
    assert e.message == "Subtract 'x' needs equal shapes but gets 4×6 and 4×5"
    e = error("layer.conv3d", {}, input=T(4, 3, 8, 8))
    assert e.message == "Conv3d 'x' expects N×C×D×H×W input but receives 4×3×8×8"
