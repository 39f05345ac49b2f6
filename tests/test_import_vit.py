"""Importing transformers (ViT): parameters used directly in the forward become Parameter nodes, sizes read
from the batch stay symbolic (the model works for any batch size), attention's tuple result and ``x[:, 0]``
map to catalog nodes; every export keeps the parameters under readable state_dict keys."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from netstudio.compiler.build import compile_model, trainable_parameters
from netstudio.compiler.shapes import analyze
from netstudio.errors import ShapeError
from netstudio.graph.model import Graph
from netstudio.nodes import CATALOG
from netstudio.nodes.base import InferContext, TensorInfo
from netstudio.project import export as ex
from netstudio.project.importer import ImportModelError, import_module
from netstudio.project.io import Project


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16, eps=1e-6)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        return x + y


class Encoder(nn.Module):
    """A container with a parameter of its own and a container inside (the block 'encoder' holding the
    block 'layer')."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, 16))
        self.layer = Layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x + self.pos_embedding)


class TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 4, stride=4)
        self.class_token = nn.Parameter(torch.randn(1, 1, 16))
        self.encoder = Encoder()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.proj(x).reshape(n, 16, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.encoder(x)
        return self.head(x[:, 0])


def _tiny() -> TinyViT:
    torch.manual_seed(5)
    return TinyViT().eval()


def _compiled(project: Project, state: dict[str, torch.Tensor]) -> nn.Module:
    again = Project.loads(project.dumps())
    module = compile_model(again.graph, again.training.batch_size).module
    module.load_state_dict(state)
    return module.eval()


@pytest.mark.parametrize("blocks", [False, True])
def test_parameters_expand_attention_and_select_import_to_catalog_nodes(blocks: bool) -> None:
    model = _tiny()
    res = import_module(model, torch.randn(2, 3, 8, 8), blocks=blocks)
    assert res.opaque == []
    g = res.project.graph
    top = {n.name: n for n in g.nodes.values()}
    assert top["class_token"].type_id == "layer.parameter" and top["class_token"].params["shape"] == [1, 1, 16]
    if blocks:
        inner = top["encoder"].inner
        assert inner is not None
        pos = next(n for n in inner.nodes.values() if n.name == "pos_embedding")
        layer = next(n for n in inner.nodes.values() if n.name == "layer")  # a container in a container
        assert layer.inner is not None and {"ln", "attn"} <= {n.name for n in layer.inner.nodes.values()}
        assert {"class_token", "encoder.pos_embedding", "encoder.layer.attn.in_proj_weight"} <= set(res.state_dict)
    else:
        pos = top["encoder_pos_embedding"]
        assert {"class_token", "encoder_pos_embedding", "encoder_layer_attn.in_proj_weight"} <= set(res.state_dict)
    assert pos.type_id == "layer.parameter" and pos.params["shape"] == [1, 5, 16]
    types = [n.type_id for n in g.nodes.values()]
    assert "layer.expand" in types and "layer.select" in types
    # the parameters hold the model's values
    assert torch.equal(res.state_dict["class_token"], model.class_token.detach())
    # shapes on the edges: the parameter keeps its own shape, Expand gives it the batch (64 in the check)
    an = analyze(g, 64)
    assert an.ok, [p.message for p in an.problems]
    assert an.output_info(top["class_token"].id).shape == (1, 1, 16)
    assert an.output_info(top["expand"].id).shape == (64, 1, 16)
    assert an.output_info(top["cat"].id).shape == (64, 5, 16)
    # batch sizes other than the traced one: nothing was fixed to the batch of 2
    module = _compiled(res.project, res.state_dict)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            assert torch.allclose(module(x), model(x), atol=1e-6)


def test_parameter_nodes_in_every_export(tmp_path: Path) -> None:
    """.pt, .pt2, .py (the parameter written in __init__, loaded from the weights file) and ONNX give the
    model's outputs, for another batch size than the example's."""
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = _tiny()
    res = import_module(model, torch.randn(2, 3, 8, 8), blocks=True)
    compiled = compile_model(res.project.graph)
    compiled.module.load_state_dict(res.state_dict)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
    pt = torch.load(ex.export_pt(compiled, tmp_path / "m.pt"), weights_only=False).eval()
    pt2 = torch.export.load(ex.export_pt2(compiled, torch.randn(2, 3, 8, 8), tmp_path / "m.pt2")).module()
    py = ex.export_py(compiled, tmp_path / "m.py")
    text = py.read_text()
    assert "self.class_token = nn.Parameter(torch.zeros(1, 1, 16))" in text
    assert "self.pos_embedding = nn.Parameter(torch.zeros(1, 5, 16))" in text  # in the block's class
    loaded = runpy.run_path(str(py))["load_model"]()
    assert "encoder.pos_embedding" in loaded.state_dict()
    with torch.no_grad():
        for m in (pt, pt2, loaded):
            assert torch.allclose(m(x), want, atol=1e-5)
    path = ex.export_onnx(compiled, torch.randn(2, 3, 8, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    (got,) = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})
    assert np.allclose(got, want.numpy(), atol=1e-5)


def test_frozen_parameter_node_is_not_trained() -> None:
    res = import_module(_tiny(), torch.randn(2, 3, 8, 8))
    g = res.project.graph
    token = g.find("class_token")
    g.set_trainable(token.id, False)
    compiled = compile_model(g)
    assert "class_token" in compiled.frozen and compiled.parameter_names[token.id] == "class_token"
    params = trainable_parameters(compiled.module, compiled.frozen)
    assert compiled.module.class_token.requires_grad is False
    assert all(p is not compiled.module.class_token for p in params)
    assert any(p is compiled.module.get_parameter("encoder_pos_embedding") for p in params)


def test_parameter_and_expand_shape_errors() -> None:
    def ctx(type_id: str, params: dict, inputs: dict) -> InferContext:
        nt = CATALOG.get(type_id)
        return InferContext("n1", "x", nt.title, nt.validate_params(params), inputs)

    p = CATALOG.get("layer.parameter")
    assert p.infer(ctx("layer.parameter", {"shape": [1, 4, 8]}, {}))["output"] == TensorInfo((1, 4, 8))
    with pytest.raises(ShapeError, match="must list positive sizes"):
        p.infer(ctx("layer.parameter", {"shape": [1, 0]}, {}))
    e = CATALOG.get("layer.expand")
    tok, like = TensorInfo((1, 1, 8)), TensorInfo((32, 9, 8))
    assert e.infer(ctx("layer.expand", {"sizes": [-1, -1]}, {"input": tok, "like": like}))["output"].shape == (32, 1, 8)
    assert e.infer(ctx("layer.expand", {"sizes": [5, -1]}, {"input": tok, "like": like}))["output"].shape == (32, 5, 8)
    with pytest.raises(ShapeError, match=r"cannot expand dimension 2 of 1×1×8 \(size 8\) to 4"):
        e.infer(ctx("layer.expand", {"sizes": [-1, 4]}, {"input": tok, "like": like}))
    with pytest.raises(ShapeError, match="has 1 sizes for the 2 dimensions"):
        e.infer(ctx("layer.expand", {"sizes": [-1]}, {"input": tok}))
    with pytest.raises(ShapeError, match="cannot expand 4×1×8 to a batch of 32"):
        e.infer(ctx("layer.expand", {"sizes": [-1, -1]}, {"input": TensorInfo((4, 1, 8)), "like": like}))
    # Add broadcasts a size of 1 (a position embedding), not a different rank
    add = CATALOG.get("merge.add")
    out = add.infer(ctx("merge.add", {}, {"a": TensorInfo((32, 9, 8)), "b": TensorInfo((1, 9, 8))}))
    assert out["output"].shape == (32, 9, 8)
    with pytest.raises(ShapeError, match="needs equal shapes"):
        add.infer(ctx("merge.add", {}, {"a": TensorInfo((32, 9, 8)), "b": TensorInfo((9, 8))}))


def test_drawn_parameter_trains_and_saves() -> None:
    """A Parameter added by hand: compiled with its init, counted, saved and loaded with the project."""
    g = Graph(CATALOG)
    inp = g.add_node("data.input", {"shape": [4, 8]}).id
    tok = g.add_node("layer.parameter", {"shape": [1, 1, 8], "init": "normal", "std": 0.5}, name="query").id
    ex_ = g.add_node("layer.expand", {"sizes": [-1, -1]}).id
    cat = g.add_node("merge.concat", {"dim": 1}).id
    g.connect(tok, "output", ex_, "input")
    g.connect(inp, "features", ex_, "like")
    g.connect(ex_, "output", cat, "inputs")
    g.connect(inp, "features", cat, "inputs")
    torch.manual_seed(0)
    compiled = compile_model(g)
    q = compiled.module.get_parameter("query")
    assert q.shape == (1, 1, 8) and 0.2 < float(q.detach().std()) < 1.0 and q.requires_grad
    out = compiled.module(torch.randn(3, 4, 8))
    assert out.shape == (3, 5, 8) and torch.equal(out[:, 0], q.detach()[0].expand(3, 8))
    again = Project.loads(Project(graph=g).dumps())
    assert again.graph.find("query").params == g.find("query").params


class NewZeros(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = x.new_zeros(x.shape[0], 2)  # an opaque function whose size is read from its input
        return torch.cat([x, pad], dim=1)


def test_opaque_function_reads_sizes_from_its_inputs() -> None:
    model = NewZeros()
    res = import_module(model, torch.randn(2, 4), training_head=False)
    node = next(n for n in res.project.graph.nodes.values() if n.type_id == "layer.torch_function")
    assert '{"size": [0, 0]}' in node.params["arguments"]
    module = _compiled(res.project, res.state_dict)
    x = torch.randn(5, 4)
    assert torch.equal(module(x), model(x))


class UsesBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_buffer_used_in_forward_says_so() -> None:
    with pytest.raises(ImportModelError, match="buffer or constant 'scale'"):
        import_module(UsesBuffer(), torch.randn(2, 4))


class TwoHeads(nn.Module):
    """Several outputs: the logits, and features that the logits are computed from (not a leaf)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.body(x))
        return self.head(f), f


def test_model_with_several_outputs_imports_in_its_order(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = TwoHeads().eval()
    res = import_module(model, torch.randn(2, 6))
    names = {n.name for n in res.project.graph.nodes.values()}
    assert {"output_0", "output_1"} <= names and "loss" not in names  # no training head for two outputs
    module = _compiled(res.project, res.state_dict)
    x = torch.randn(5, 6)
    with torch.no_grad():
        got, want = module(x), model(x)
    assert isinstance(got, tuple) and len(got) == 2
    assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))
    assert res.notes == []


def test_pt2_with_several_outputs_round_trips(tmp_path: Path) -> None:
    from netstudio.project.importer import import_spec

    torch.manual_seed(3)
    model = TwoHeads().eval()
    path = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 6),)), path)
    res = import_spec(str(path))
    module = _compiled(res.project, res.state_dict)
    x = torch.randn(2, 6)
    with torch.no_grad():
        got, want = module(x), model(x)
    assert len(got) == 2 and all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))


def _biased_graph() -> Graph:
    """digits -> flatten -> linear -> + bias (a Parameter 1×10) + scale (a Parameter 1×10) -> cross entropy."""
    g = Graph(CATALOG)
    d = g.add_node("data.dataset", {"source": "digits"}, name="data")
    f = g.add_node("layer.flatten", {}, name="flat")
    lin = g.add_node("layer.linear", {"out_features": 10}, name="head")
    bias = g.add_node("layer.parameter", {"shape": [1, 10], "init": "normal", "std": 0.5}, name="bias")
    shift = g.add_node("layer.parameter", {"shape": [1, 10]}, name="shift")
    a1 = g.add_node("merge.add", {}, name="add1")
    a2 = g.add_node("merge.add", {}, name="add2")
    loss = g.add_node("loss.cross_entropy", {}, name="loss")
    opt = g.add_node("optim.adam", {"lr": 0.01}, name="opt")
    for a, ap, z, zp in [(d, "features", f, "input"), (f, "output", lin, "input"), (lin, "output", a1, "a"),
                         (bias, "output", a1, "b"), (a1, "output", a2, "a"), (shift, "output", a2, "b"),
                         (a2, "output", loss, "prediction"), (d, "target", loss, "target"), (loss, "loss", opt, "loss")]:
        g.connect(a.id, ap, z.id, zp)
    g.set_trainable(bias.id, False)
    return g


def test_frozen_parameter_stays_bit_identical_in_training_and_the_exported_script(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    import netstudio.project.script_export as se
    from netstudio.compiler.build import build_plan
    from netstudio.training import TrainConfig
    from netstudio.training.job import prepare, run
    from tests.test_script_export import _run_in_process, import_script

    g = _biased_graph()
    job = prepare(g, TrainConfig(epochs=2, batch_size=32, device="cpu", seed=1))
    bias, shift = (job.plan.model.get_parameter(k).detach().clone() for k in ("bias", "shift"))
    res = run(job)
    assert res.status == "finished", res.message
    assert res.model is not None
    assert torch.equal(res.model.get_parameter("bias").detach(), bias)  # frozen
    assert not torch.equal(res.model.get_parameter("shift").detach(), shift)  # trained
    # the standalone training script: FROZEN names the parameter, keep_frozen switches its gradient off
    monkeypatch.delenv("RANK", raising=False)
    torch.manual_seed(2)
    weights = build_plan(g, 32).model.state_dict()
    project = Project(g, TrainConfig(epochs=1, batch_size=32, seed=1))
    se.export_script(project, tmp_path / "job", weights=weights)
    mod = import_script(tmp_path / "job")
    assert mod.FROZEN == ["bias"]
    _run_in_process(mod, ["--device", "cpu", "--checkpoint-dir", str(tmp_path / "c"),
                          "--out", str(tmp_path / "m.pt")], capsys)
    saved = torch.load(tmp_path / "m_state_dict.pt", weights_only=True)
    assert torch.equal(saved["bias"], weights["bias"]) and not torch.equal(saved["shift"], weights["shift"])


class Recurrent(nn.Module):
    """An LSTM's tuple result unpacked: out[:, -1] and h_n[-1] (the last layer's final state)."""

    def __init__(self, state_index: int = -1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True, num_layers=2)
        self.fc = nn.Linear(16, 3)
        self.state_index = state_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, _) = self.lstm(x)
        return self.fc(torch.cat([out[:, -1], h[self.state_index]], dim=1))


def test_tuple_results_map_to_the_node_output_ports() -> None:
    torch.manual_seed(4)
    model = Recurrent().eval()
    res = import_module(model, torch.randn(2, 5, 6))
    assert res.opaque == []
    g = res.project.graph
    lstm = g.find("lstm")
    assert {(e.src_port, g.nodes[e.dst].type_id) for e in g.out_edges(lstm.id)} == {
        ("output", "layer.select"), ("h_n", "merge.concat")}
    x = torch.randn(3, 7, 6)
    with torch.no_grad():
        assert torch.allclose(_compiled(res.project, res.state_dict)(x), model(x), atol=1e-6)
    # the first layer's state is no port of the LSTM node: said clearly, naming the call
    with pytest.raises(ImportModelError, match=r"uses item 0 of the result of 'lstm', which its node does not give"):
        import_module(Recurrent(state_index=0).eval(), torch.randn(2, 5, 6))


class SeqFirstAttention(nn.Module):
    """Attention as older transformer code writes it: nn.MultiheadAttention(E, heads) (batch_first=False,
    weights computed by default) over L×N×E tokens, with permutes to and from the batch-first layout."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x).permute(1, 0, 2)
        a, _ = self.attn(h, h, h)
        return self.head(a.transpose(0, 1)).mean(1)


class CausalAttention(nn.Module):
    """Self-attention with a constant causal mask kept as a buffer (float -inf above the diagonal)."""

    def __init__(self, length: int = 5) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("mask", torch.triu(torch.full((length, length), float("-inf")), 1))
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, attn_mask=self.mask, need_weights=True)
        return self.out(x + y)


@pytest.mark.parametrize("cls", [SeqFirstAttention, CausalAttention])
def test_attention_layouts_and_causal_mask_import_and_export(cls: type[nn.Module], tmp_path: Path) -> None:
    """Both map to the catalog's MultiheadAttention node (no opaque node) and reproduce the model within 1e-5,
    in NetStudio and as an exported .pt."""
    torch.manual_seed(0)
    model = cls().eval()
    res = import_module(model, torch.randn(2, 5, 8))
    assert res.opaque == []
    attn = [n for n in res.project.graph.nodes.values() if n.type_id == "layer.multihead_attention"]
    assert len(attn) == 1
    assert attn[0].params["batch_first"] is (cls is CausalAttention)
    assert attn[0].params["causal"] is (cls is CausalAttention)
    compiled = compile_model(res.project.graph)
    compiled.module.load_state_dict(res.state_dict)
    x = torch.randn(3, 5, 8)
    pt = torch.load(ex.export_pt(compiled, tmp_path / "m.pt"), weights_only=False).eval()
    with torch.no_grad():
        want = model(x)
        assert (compiled.module.eval()(x) - want).abs().max() <= 1e-5
        assert (pt(x) - want).abs().max() <= 1e-5


def test_causal_attention_node_masks_later_positions() -> None:
    """The node's causal mask follows the length it runs with: changing a later token leaves the earlier
    outputs unchanged."""
    g = Graph(CATALOG)
    inp = g.add_node("data.input", {"shape": [6, 8], "dtype": "float32"}).id
    attn = g.add_node("layer.multihead_attention", {"num_heads": 2, "causal": True}).id
    g.connect(inp, "features", attn, "input")
    module = compile_model(g).module.eval()
    x = torch.randn(2, 6, 8)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    with torch.no_grad():
        a, b = module(x), module(x2)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-3)


def test_attention_with_a_mask_that_is_not_causal_says_so() -> None:
    class Banded(CausalAttention):
        def __init__(self) -> None:
            super().__init__()
            self.mask = torch.zeros(5, 5)
            self.mask[0, 4] = float("-inf")

    with pytest.raises(ImportModelError, match="MultiheadAttention node: attn_mask is not a constant causal mask"):
        import_module(Banded(), torch.randn(2, 5, 8))
