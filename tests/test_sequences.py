"""Sequence models: RNN/LSTM/GRU's h_n port, Select/Mean/Sum/Permute/Transpose in compiled graphs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from netstudio.compiler.build import compile_model
from netstudio.compiler.shapes import ShapeChecker
from netstudio.errors import ShapeError
from netstudio.nodes import CATALOG, InferContext, TensorInfo
from tests.test_catalog_shapes import make_graph


def _recurrent_graph(type_id: str, params: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """data (6 steps × 10) → rnn; rnn.output → Select last step; rnn.h_n → Dropout (identity in eval)."""
    g = make_graph()
    src = g.add_node("test.source", {"shape": [6, 10]}, name="data")
    rnn = g.add_node(type_id, params, name="rnn")
    last = g.add_node("layer.select", {"dim": 1, "index": -1}, name="last")
    hn = g.add_node("layer.dropout", {"p": 0.0}, name="hn")
    g.connect(src.id, "features", rnn.id, "input")
    g.connect(rnn.id, "output", last.id, "input")
    g.connect(rnn.id, "h_n", hn.id, "input")
    return g, {"rnn": rnn.id, "last": last.id, "hn": hn.id}


CASES = [
    ("layer.lstm", {"hidden_size": 7}),
    ("layer.lstm", {"hidden_size": 7, "num_layers": 2, "bidirectional": True}),
    ("layer.gru", {"hidden_size": 5, "num_layers": 3}),
    ("layer.gru", {"hidden_size": 5, "bidirectional": True}),
    ("layer.rnn", {"hidden_size": 4, "nonlinearity": "relu", "num_layers": 2}),
    ("layer.rnn", {"hidden_size": 4, "bidirectional": True}),
]


@pytest.mark.parametrize("type_id,params", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_h_n_and_last_step_equal_torch(type_id: str, params: dict[str, Any]) -> None:
    torch.manual_seed(0)
    g, ids = _recurrent_graph(type_id, params)
    an = ShapeChecker().analyze(g, 3)
    assert an.model_ok, an.problems
    compiled = compile_model(g, 3, an)
    hidden = params["hidden_size"] * (2 if params.get("bidirectional") else 1)
    assert [i.shape for i in compiled.output_infos] == [(3, hidden), (3, hidden)]
    model = compiled.module.eval()
    x = torch.randn(3, 6, 10)
    with torch.no_grad():
        last, h_n = model(x)
        # the same module (same weights) called directly through torch
        rnn = getattr(model, compiled.module_names[ids["rnn"]])
        out, state = rnn(x)
    h = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
    assert torch.equal(last, out[:, -1])
    H = params["hidden_size"]
    if params.get("bidirectional"):
        # h_n = [forward state after the last step, backward state after the first step]
        assert torch.equal(h_n, torch.cat([h[-2], h[-1]], dim=1))
        assert torch.allclose(h_n[:, :H], out[:, -1, :H]) and torch.allclose(h_n[:, H:], out[:, 0, H:])
    else:
        assert torch.equal(h_n, h[-1])
        assert torch.allclose(h_n, last)  # a one-direction RNN's last step is its final state


def test_unused_h_n_adds_no_output() -> None:
    """A graph without a loss returns the main output of its last node, as before h_n existed."""
    g = make_graph()
    src = g.add_node("test.source", {"shape": [6, 10]}, name="data")
    rnn = g.add_node("layer.lstm", {"hidden_size": 3}, name="rnn")
    g.connect(src.id, "features", rnn.id, "input")
    compiled = compile_model(g, 2)
    assert compiled.outputs == [(rnn.id, "output")]
    assert tuple(compiled.module(torch.randn(2, 6, 10)).shape) == (2, 6, 3)


def test_sequence_ops_compile_to_torch_functions() -> None:
    g = make_graph()
    src = g.add_node("test.source", {"shape": [6, 10]}, name="data")
    tr = g.add_node("layer.transpose", {"dim0": 1, "dim1": 2}, name="tr")       # N×10×6
    perm = g.add_node("layer.permute", {"dims": [0, 2, 1]}, name="perm")        # N×6×10
    mean = g.add_node("layer.mean", {"dim": 1, "keepdim": True}, name="mean")   # N×1×10
    total = g.add_node("layer.sum", {"dim": -1}, name="total")                  # N×1
    for a, b in ((src.id, tr.id), (tr.id, perm.id), (perm.id, mean.id), (mean.id, total.id)):
        g.connect(a, "features" if a == src.id else "output", b, "input")
    compiled = compile_model(g, 4)
    x = torch.randn(4, 6, 10)
    out = compiled.module(x)
    assert compiled.output_infos[0].shape == (4, 1)
    assert torch.allclose(out, x.mean(dim=1, keepdim=True).sum(dim=-1))
    code = compiled.code
    assert "torch.transpose" in code and "torch.permute" in code and "torch.mean" in code


def _error(type_id: str, params: dict[str, Any], shape: tuple[int, ...], dtype: str = "float32") -> ShapeError:
    nt = CATALOG.get(type_id)
    ctx = InferContext("n3", "op", nt.title, nt.validate_params(params), {"input": TensorInfo(shape, dtype)}, 4)
    ctx.params = nt.resolve(ctx)
    with pytest.raises(ShapeError) as exc:
        nt.infer(ctx)
    assert exc.value.node_id == "n3"
    return exc.value


def test_sequence_op_errors_name_the_node_and_a_fix() -> None:
    e = _error("layer.select", {"dim": 1, "index": 6}, (4, 6, 10))
    assert e.message == "Select 'op' index 6 is outside dimension 1 of 4×6×10 (size 6)"
    assert e.hint == "use an index between -6 and 5"
    e = _error("layer.select", {"dim": 0}, (4, 6, 10))
    assert e.message == "Select 'op' dim 0 is the batch dimension of 4×6×10"
    e = _error("layer.mean", {"dim": 3}, (4, 6, 10))
    assert e.message == "Mean 'op' dim 3 does not exist in a 4×6×10 tensor"
    assert e.hint == "use a dimension between 1 and 2 (or -1 for the last)"
    e = _error("layer.mean", {}, (4, 6), "int64")
    assert "needs floating-point input" in e.message
    e = _error("layer.permute", {"dims": [2, 1, 0]}, (4, 6, 10))
    assert e.message == "Permute 'op' dims 2, 1, 0 moves the batch dimension of 4×6×10" and e.hint.startswith("keep 0 first (or turn on moves_batch")
    e = _error("layer.permute", {"dims": [0, 1]}, (4, 6, 10))
    assert e.message == "Permute 'op' dims 0, 1 is not an order of the 3 dimensions of 4×6×10"
    assert e.hint == "list each of 0..2 once, e.g. 0, 2, 1"
    e = _error("layer.transpose", {"dim0": -3, "dim1": 1}, (4, 6, 10))
    assert e.message == "Transpose 'op' dim0 -3 is the batch dimension of 4×6×10"
    e = _error("layer.maxpool1d", {"kernel_size": 5}, (4, 3, 4))
    assert e.message == "MaxPool1d 'op' would shrink its length 4 input to 0"
    e = _error("layer.avgpool1d", {}, (4, 3, 4, 4))
    assert e.hint == "use the 2-d variant for N×C×H×W input, or add a Reshape to C×L before it"
