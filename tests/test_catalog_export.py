"""Models built from the newer catalog types export to .py and .pt and reproduce their outputs."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
import torch

from netstudio.compiler.build import CompiledModel, compile_model
from netstudio.compiler.shapes import ShapeChecker
from netstudio.project import export as ex
from tests.test_catalog_shapes import make_graph


def _build(specs: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str, str, str]],
           shape: list[int], batch: int = 3) -> CompiledModel:
    """Nodes by name (plus 'data', the source), edges as (src, src_port, dst, dst_port)."""
    g = make_graph()
    ids = {"data": g.add_node("test.source", {"shape": shape}, name="data").id}
    for type_id, name, params in specs:
        ids[name] = g.add_node(type_id, params, name=name).id
    for src, sp, dst, dp in edges:
        g.connect(ids[src], sp, ids[dst], dp)
    an = ShapeChecker().analyze(g, batch)
    assert an.model_ok, an.problems
    compiled = compile_model(g, batch, an)
    torch.manual_seed(1)
    with torch.no_grad():  # move every weight off its initial value (PReLU slopes, norm scales, ...)
        for p in compiled.module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return compiled


def _line(*names: str) -> list[tuple[str, str, str, str]]:
    return [(a, "features" if a == "data" else "output", b, "input") for a, b in zip(names, names[1:])]


def image_model() -> CompiledModel:
    specs = [
        ("layer.zero_pad2d", "pad", {"padding": [1, 0, 2, 1]}),
        ("layer.conv2d", "conv", {"out_channels": 8, "kernel_size": 3}),
        ("layer.groupnorm", "gn", {"num_groups": 4}),
        ("activation.prelu", "prelu", {"num_parameters": 8}),
        ("layer.instancenorm2d", "inorm", {"affine": True}),
        ("layer.dropout2d", "drop2d", {"p": 0.3}),
        ("activation.relu6", "relu6", {}),
        ("activation.hardswish", "hswish", {}),
        ("merge.subtract", "diff", {}),
        ("layer.upsample", "up", {"scale_factor": 2.0, "mode": "bilinear", "align_corners": True}),
        ("layer.pixel_shuffle", "shuffle", {"upscale_factor": 2}),
        ("layer.adaptive_maxpool2d", "gmp", {"output_size": [2, 3]}),
        ("layer.flatten", "flat", {}),
        ("layer.linear", "fc", {"out_features": 6}),
        ("activation.elu", "elu", {"alpha": 0.5}),
        ("activation.selu", "selu", {}),
        ("activation.softplus", "softplus", {"beta": 2.0}),
        ("activation.mish", "mish", {}),
        ("layer.identity", "out", {}),
    ]
    edges = _line("data", "pad", "conv", "gn", "prelu", "inorm", "drop2d", "relu6")
    edges += _line("drop2d", "hswish")
    edges += [("relu6", "output", "diff", "a"), ("hswish", "output", "diff", "b")]
    edges += _line("diff", "up", "shuffle", "gmp", "flat", "fc", "elu", "selu", "softplus", "mish", "out")
    return _build(specs, edges, [3, 6, 7])


def sequence_model() -> CompiledModel:
    specs = [
        ("layer.transformer_encoder_layer", "encoder", {"nhead": 2, "dim_feedforward": 16, "activation": "gelu"}),
        ("layer.multihead_attention", "attn", {"num_heads": 4}),
        ("layer.transpose", "keys_t", {"dim0": 1, "dim1": 2}),
        ("merge.matmul", "scores", {}),                               # N×6×6
        ("layer.rnn", "rnn", {"hidden_size": 5, "bidirectional": True, "nonlinearity": "relu"}),
        ("layer.gru", "gru", {"hidden_size": 4, "num_layers": 2}),
        ("layer.permute", "channels", {"dims": [0, 2, 1]}),         # N×8×6
        ("layer.conv_transpose1d", "deconv", {"out_channels": 4, "kernel_size": 3, "stride": 2}),  # N×4×13
        ("layer.maxpool1d", "mp", {"kernel_size": 2}),
        ("layer.avgpool1d", "ap", {"kernel_size": 2, "ceil_mode": True}),
        ("layer.mean", "avg", {"dim": -1}),
        ("layer.sum", "total", {"dim": 1, "keepdim": True}),
        ("layer.select", "last", {"dim": 1, "index": -1}),
    ]
    edges = _line("data", "encoder", "attn", "keys_t")
    edges += [("attn", "output", "scores", "a"), ("keys_t", "output", "scores", "b")]
    edges += _line("scores", "rnn")
    edges += [("rnn", "h_n", "total", "input")]       # N×1... from N×10 → N×1
    edges += _line("attn", "gru", "last")             # gru.output → last step
    edges += _line("data", "channels", "deconv", "mp", "ap", "avg")
    return _build(specs, edges, [6, 8])


def volume_model() -> CompiledModel:
    specs = [("layer.conv3d", "conv3d", {"out_channels": 3, "kernel_size": 2, "padding": 1}),
             ("layer.upsample", "up", {"scale_factor": 1.5, "mode": "trilinear"})]
    return _build(specs, _line("data", "conv3d", "up"), [2, 4, 5, 6])


MODELS = {"image": image_model, "sequence": sequence_model, "volume": volume_model}


@pytest.mark.parametrize("name", list(MODELS))
def test_new_layers_export_to_py_and_pt(name: str, tmp_path: Path) -> None:
    compiled = MODELS[name]()
    model = compiled.module.eval()
    x = torch.randn(3, *compiled.input_info.sample_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    ref_t = ref if isinstance(ref, tuple) else (ref,)
    assert [tuple(r.shape) for r in ref_t] == [tuple((3, *i.shape[1:])) for i in compiled.output_infos]

    py = ex.export_py(compiled, tmp_path / "model.py", weights=tmp_path / "weights.pt", title=name)
    pt = ex.export_pt(compiled, tmp_path / "model.pt")
    loaded = runpy.run_path(str(py))["load_model"]()
    pickled = torch.load(pt, weights_only=False)
    with torch.no_grad():
        outs = [loaded(x), pickled(x)]
    for out in outs:
        out_t = out if isinstance(out, tuple) else (out,)
        assert len(out_t) == len(ref_t)
        for a, r in zip(out_t, ref_t):
            assert a.shape == r.shape and torch.allclose(a, r, atol=1e-5, rtol=1e-5)
