"""Importing PyTorch models: torchvision architectures and .pt2 programs become flat graphs that
check, compile and export to the model's own outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision.models as tvm  # type: ignore[import-untyped]

from netstudio.cli import main
from netstudio.errors import NetStudioError
from netstudio.compiler.build import compile_model
from netstudio.project.importer import ImportModelError, import_module, import_spec, load_weights_onto
from netstudio.project.io import Project, load_project

SMALL = "2,3,64,64"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _seeded(name: str, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    model = tvm.get_model(name, weights=None).eval()
    with torch.no_grad():  # random running statistics, so BatchNorm is not an identity
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                assert m.running_var is not None
                m.running_var.uniform_(0.5, 1.5)
    return model


def _compiled(project: Project, state: dict[str, torch.Tensor]) -> nn.Module:
    """The project as saved and loaded again, compiled, with the imported weights."""
    again = Project.loads(project.dumps())
    module = compile_model(again.graph, again.training.batch_size).module
    module.load_state_dict(state)
    return module.eval()


# ----------------------------------------------------------------------------
# in-process import
# ----------------------------------------------------------------------------


def test_resnet18_imports_flat_with_catalog_nodes_and_same_outputs() -> None:
    res = import_spec("torchvision:resnet18", input_shape=SMALL, seed=3)
    g = res.project.graph
    types = [n.type_id for n in g.nodes.values()]
    assert res.opaque == []  # every resnet layer and call is a catalog node
    assert types.count("layer.conv2d") == 20 and types.count("merge.add") == 8
    assert types.count("layer.batchnorm2d") == 20 and "layer.flatten" in types
    names = {n.name for n in g.nodes.values()}
    assert {"conv1", "layer1_0_conv1", "layer4_1_bn2", "fc"} <= names
    assert "layer1_0_conv1.weight" in res.state_dict and "fc.bias" in res.state_dict
    # laid out left to right: every edge goes right
    assert all(g.nodes[e.dst].pos[0] > g.nodes[e.src].pos[0] for e in g.edges)
    # another input than the traced one: the graph is the model, not a recording of one run
    torch.manual_seed(3)
    model = tvm.resnet18(weights=None).eval()
    x = torch.randn(3, 3, 80, 80)
    with torch.no_grad():
        assert torch.allclose(_compiled(res.project, res.state_dict)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_models_with_modules_the_catalog_lacks_keep_them_as_opaque_nodes(name: str) -> None:
    model = _seeded(name)
    x = torch.randn(2, 3, 64, 64)
    res = import_module(model, x, name=name)
    kept = {line.split(": ")[1] for line in res.opaque}
    assert kept == ({"torch.nn.Hardsigmoid"} if name == "mobilenet_v3_small" else {"torchvision.ops.StochasticDepth"})
    node = next(n for n in res.project.graph.nodes.values() if n.type_id == "layer.torch_module")
    assert node.params["output_shape"] and node.params["input_shape"]
    with torch.no_grad():
        assert torch.allclose(_compiled(res.project, res.state_dict)(x), model(x), atol=1e-5)


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            return x
        return -x


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc(x))


def swish_of_mine(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


torch.fx.wrap("swish_of_mine")


class UsesOwnFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swish_of_mine(self.fc(x))


def test_untraceable_and_not_allowed_code_give_messages_naming_it() -> None:
    with pytest.raises(ImportModelError, match=r"module 'gate' \(Gate\) cannot be traced") as e:
        import_module(Branchy(), torch.randn(2, 4))
    assert "data-dependent control flow" in (e.value.hint or "")
    with pytest.raises(ImportModelError, match=r"swish_of_mine.*allow-list"):
        import_module(UsesOwnFunction(), torch.randn(2, 4))
    with pytest.raises(ImportModelError, match=r"in module 'inner' \(UsesOwnFunction\) calls .*swish_of_mine"):
        import_module(_Outer(), torch.randn(2, 4))


class _Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = UsesOwnFunction()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.bn2(self.conv2(y)))
        return self.fc(torch.flatten(self.pool(y), 1)) * 2.0  # x * 2.0: an opaque function


def test_pt2_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 16, 16)
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (x,)), pt2)
    proj, w, out = tmp_path / "p.nsproj", tmp_path / "w.pt", tmp_path / "m.pt"
    rc, text, err = run_cli(capsys, "import", str(pt2), "--out", str(proj), "--weights-out", str(w))
    assert rc == 0, err
    assert "opaque node: mul: operator.mul" in text
    types = {n.name: n.type_id for n in load_project(proj).graph.nodes.values()}
    assert types["conv1"] == "layer.conv2d" and types["bn2"] == "layer.batchnorm2d"
    assert types["fc"] == "layer.linear" and "merge.add" in types.values()
    rc, _, err = run_cli(capsys, "check", str(proj))
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "export", str(proj), "--weights", str(w), "--format", "pt", "--no-preprocess",
                         "--out", str(out))
    assert rc == 0, err
    exported = torch.load(out, weights_only=False).eval()
    y = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(exported(y), model(y), atol=1e-5)


# ----------------------------------------------------------------------------
# the command line: import -> check -> export gives torchvision's outputs
# ----------------------------------------------------------------------------


def _cli_round_trip(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str = SMALL,
                    *extra: str) -> Project:
    """import -> check -> export with torchvision's outputs; returns the imported project."""
    model = _seeded(name, seed=7)
    sd, proj, w, out = tmp_path / "sd.pth", tmp_path / "p.nsproj", tmp_path / "w.pt", tmp_path / "m.pt"
    torch.save(model.state_dict(), sd)
    rc, text, err = run_cli(capsys, "import", f"torchvision:{name}", "--weights", str(sd), "--out", str(proj),
                            "--weights-out", str(w), "--input-shape", shape, *extra)
    assert rc == 0, err
    rc, text, err = run_cli(capsys, "check", str(proj))
    assert rc == 0, err + text
    assert "ok: the project is valid" in text
    rc, _, err = run_cli(capsys, "export", str(proj), "--weights", str(w), "--format", "pt", "--no-preprocess",
                         "--out", str(out))
    assert rc == 0, err
    exported = torch.load(out, weights_only=False).eval()
    x = torch.randn(*[int(v) for v in shape.split(",")])
    with torch.no_grad():
        got, want = exported(x), model(x)
    assert got.shape == want.shape == (x.shape[0], 1000)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    return load_project(proj)


def test_cli_import_resnet18_checks_and_exports_torchvisions_outputs(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    project = _cli_round_trip("resnet18", tmp_path, capsys)
    # each BasicBlock (layer1.0 ... layer4.1) is one block named after its module path, its layers inside
    g = project.graph
    blocks = {n.name: n for n in g.nodes.values() if n.type_id == "block.block"}
    assert set(blocks) == {f"layer{i}_{j}" for i in range(1, 5) for j in range(2)}
    assert {"conv1", "bn1", "maxpool", "fc"} <= {n.name for n in g.nodes.values()}
    inner = blocks["layer2_0"].inner
    assert inner is not None
    names = {n.name for n in inner.nodes.values()}
    assert {"conv1", "bn1", "conv2", "bn2", "downsample_0", "downsample_1"} <= names
    assert sum(n.type_id == "merge.add" for n in inner.nodes.values()) == 1  # the residual add is inside
    assert sum(n.type_id == "block.input" for n in inner.nodes.values()) == 1
    assert sum(n.type_id == "block.output" for n in inner.nodes.values()) == 1
    # the weights file written by the import uses the compiled model's (block) keys
    from netstudio.project.export import read_weights

    _, state = read_weights(tmp_path / "w.pt")
    assert "layer1_0.conv1.weight" in state and "layer2_0.downsample_0.weight" in state
    assert not any(k.startswith("layer1_0_conv1") for k in state)
    text = (tmp_path / "p.nsproj").read_text()
    assert Project.loads(text).dumps().strip() == text.strip()  # a project with blocks loads and saves unchanged


def test_cli_import_flat_keeps_every_layer_in_one_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = _cli_round_trip("resnet18", tmp_path, capsys, SMALL, "--flat")
    names = {n.name for n in project.graph.nodes.values()}
    assert not any(n.type_id == "block.block" for n in project.graph.nodes.values())
    assert {"layer1_0_conv1", "layer4_1_bn2", "fc"} <= names
    # without --weights, `export` takes the weights file the import wrote beside the project
    assert project.weights == "w.pt"
    rc, _, err = run_cli(capsys, "export", str(tmp_path / "p.nsproj"), "--format", "pt", "--no-preprocess",
                         "--out", str(tmp_path / "m2.pt"))
    assert rc == 0, err
    x = torch.randn(*[int(v) for v in SMALL.split(",")])
    with torch.no_grad():
        a = torch.load(tmp_path / "m.pt", weights_only=False).eval()(x)
        b = torch.load(tmp_path / "m2.pt", weights_only=False).eval()(x)
    assert torch.equal(a, b)
    # ...and never writes over it
    rc, _, err = run_cli(capsys, "export", str(tmp_path / "p.nsproj"), "--format", "pt", "--out", str(tmp_path / "w.pt"))
    assert rc == 1 and "refusing to overwrite the input file" in err


@pytest.mark.slow  # large models: each import, check and export takes tens of seconds on a small machine
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "vgg11_bn", "efficientnet_b0"])
def test_cli_import_torchvision_architectures(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = _cli_round_trip(name, tmp_path, capsys)
    if name != "vgg11_bn":  # vgg has Sequentials only: flat; the others' inverted residuals are blocks
        assert any(n.type_id == "block.block" for n in project.graph.nodes.values())


@pytest.mark.slow  # ViT-B/16 at 224×224: about 60 s per import, check and export on a 2-core machine
@pytest.mark.parametrize("flat", [False, True])
def test_cli_import_vit_b_16_for_any_batch_size(flat: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = _cli_round_trip("vit_b_16", tmp_path, capsys, "2,3,224,224", *(["--flat"] if flat else []))
    model = _seeded("vit_b_16", seed=7)
    exported = torch.load(tmp_path / "m.pt", weights_only=False).eval()
    for batch in (1, 3):  # traced with a batch of 2: the class token's expand reads the batch size
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            got, want = exported(x), model(x)
        assert got.shape == (batch, 1000) and torch.allclose(got, want, atol=1e-5)
    from netstudio.project.export import read_weights

    _, state = read_weights(tmp_path / "w.pt")
    nodes = {n.name: n for n in project.graph.nodes.values()}
    assert nodes["class_token"].type_id == "layer.parameter" and "class_token" in state
    if flat:
        assert nodes["encoder_pos_embedding"].params["shape"] == [1, 197, 768] and "encoder_pos_embedding" in state
    else:
        inner = nodes["encoder"].inner
        assert inner is not None and nodes["encoder"].type_id == "block.block"
        assert any(n.name == "pos_embedding" and n.type_id == "layer.parameter" for n in inner.nodes.values())
        assert "encoder.pos_embedding" in state and state["encoder.pos_embedding"].shape == (1, 197, 768)
        # each EncoderBlock is a block inside the encoder's block, its MLP a block inside that
        layers = [n for n in inner.nodes.values() if n.type_id == "block.block"]
        assert [n.name for n in layers] == [f"layers_encoder_layer_{i}" for i in range(12)]
        assert layers[0].inner is not None
        assert {"ln_1", "self_attention", "ln_2", "mlp"} <= {n.name for n in layers[0].inner.nodes.values()}
        assert "encoder.layers_encoder_layer_11.self_attention.in_proj_weight" in state
        assert "encoder.layers_encoder_layer_0.mlp.mlp_0.weight" in state  # MLPBlock's items: mlp_0, mlp_3


def test_cli_import_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys, "import", "torchvision:no_such_net", "--out", str(tmp_path / "p.nsproj"))
    assert rc == 1 and "no classification model named 'no_such_net'" in err
    rc, _, err = run_cli(capsys, "import", "model.onnx", "--out", str(tmp_path / "p.nsproj"))
    assert rc == 1 and "is not an import source" in err
    bad = tmp_path / "evil.pth"
    bad.write_bytes(b"\x80\x04cos\nsystem\n.")  # a pickle that would call os.system
    rc, _, err = run_cli(capsys, "import", "torchvision:resnet18", "--weights", str(bad), "--out",
                         str(tmp_path / "p.nsproj"), "--input-shape", SMALL)
    assert rc == 1 and "can read safely" in err and "os.system" in err
    assert not (tmp_path / "p.nsproj").exists()


# ----------------------------------------------------------------------------
# weights onto an existing graph (transfer learning)
# ----------------------------------------------------------------------------


def test_state_dict_loads_by_module_path_with_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = import_spec("torchvision:resnet18", input_shape=SMALL)
    g = res.project.graph
    fc = g.find("fc")
    g.set_param(fc.id, "out_features", 10)  # a new head
    module = compile_model(g).module
    before = module.state_dict()["fc.weight"].clone()
    state: dict[str, Any] = dict(res.state_dict)
    state["extra.weight"] = torch.zeros(3)
    del state["layer4_1_bn2.running_var"]
    report = load_weights_onto(module, state)
    assert torch.equal(module.state_dict()["conv1.weight"], res.state_dict["conv1.weight"])
    assert torch.equal(module.state_dict()["fc.weight"], before)  # mis-shaped: kept as initialised
    assert [k for k, *_ in report.mismatched] == ["fc.weight", "fc.bias"]
    assert report.mismatched[0][1:] == ((1000, 512), (10, 512))
    assert report.unexpected == ["extra.weight"] and report.missing == ["layer4_1_bn2.running_var"]
    assert "mis-shaped (kept as initialised): fc.weight: file (1000, 512), graph (10, 512)" in report.text()
    # the same through the command line: a .nsproj as SPEC
    from netstudio.project.io import save_project

    proj, sd, w = tmp_path / "p.nsproj", tmp_path / "sd.pth", tmp_path / "w.pt"
    save_project(res.project, proj)
    torch.save(state, sd)
    rc, text, err = run_cli(capsys, "import", str(proj), "--weights", str(sd), "--weights-out", str(w))
    assert rc == 0, err
    assert "unexpected (ignored): extra.weight" in text and "missing (kept as initialised): layer4_1_bn2" in text
    assert w.is_file()


def test_training_an_input_node_says_to_add_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    res = import_module(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), torch.randn(2, 3, 4))
    proj = tmp_path / "p.nsproj"
    from netstudio.project.io import save_project

    save_project(res.project, proj)
    rc, _, err = run_cli(capsys, "check", str(proj))
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "train", str(proj), "--epochs", "1", "--device", "cpu")
    assert rc == 1
    assert "The Input node 'input' has no data to train on" in err and "Dataset whose features are 3×4" in err


def test_netstudio_pt2_export_imports_back(tmp_path: Path) -> None:
    """NetStudio's own .pt2 (dynamic batch, F.max_pool2d) imports to the same graph types and outputs."""
    from netstudio.project.export import example_input_for, export_pt2
    from netstudio.project.samples import bundled_samples

    lenet = load_project(next(p for p in bundled_samples() if p.stem == "lenet"))
    torch.manual_seed(0)
    compiled = compile_model(lenet.graph, 4)
    path = tmp_path / "lenet.pt2"
    export_pt2(compiled, example_input_for(compiled, 2), path)
    res = import_spec(str(path))
    assert res.opaque == []
    original = sorted(n.type_id for n in lenet.graph.nodes.values() if n.type_id.startswith(("layer.", "activation.")))
    imported = sorted(n.type_id for n in res.project.graph.nodes.values()
                      if n.type_id.startswith(("layer.", "activation.")))
    assert imported == original
    x = example_input_for(compiled, 5)
    with torch.no_grad():
        assert torch.allclose(_compiled(res.project, res.state_dict)(x), compiled.module.eval()(x), atol=1e-5)


def test_opaque_torchvision_layer_exports_as_python_source(tmp_path: Path) -> None:
    import runpy

    from torchvision.ops import StochasticDepth  # type: ignore[import-untyped]

    from netstudio.project.export import export_py

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), StochasticDepth(0.2, "row"), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randn(2, 3, 8, 8)
    res = import_module(model, x)
    assert [line.split(": ")[1] for line in res.opaque] == ["torchvision.ops.StochasticDepth"]
    compiled = compile_model(res.project.graph)
    compiled.module.load_state_dict(res.state_dict)
    path = export_py(compiled, tmp_path / "m.py")
    text = path.read_text()
    assert "import torchvision" in text and "torchvision.ops.StochasticDepth(p=0.2, mode='row')" in text
    loaded = runpy.run_path(str(path))["load_model"]()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)


class Recurrent(nn.Module):
    def __init__(self, cls: type[nn.Module], **kwargs: Any) -> None:
        super().__init__()
        self.rnn = cls(4, 6, batch_first=True, **kwargs)
        self.fc = nn.Linear(12 if kwargs.get("bidirectional") else 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


#: torch.export's own remark on every recurrent module (its _flat_weights list), not NetStudio's
_RNN_EXPORT_WARNING = "ignore:The tensor attributes self.*_flat_weights:UserWarning"


@pytest.mark.filterwarnings(_RNN_EXPORT_WARNING)
@pytest.mark.parametrize("cls,kwargs", [(nn.LSTM, {"num_layers": 2, "bidirectional": True}), (nn.GRU, {}),
                                        (nn.RNN, {"nonlinearity": "relu"})])
def test_pt2_with_a_recurrent_layer_imports(cls: type[nn.Module], kwargs: dict[str, Any], tmp_path: Path) -> None:
    """torch.export keeps an LSTM/GRU/RNN as one operator (aten.lstm.input...) with zeros as its initial
    state: it becomes the catalog's node with the program's weights, for any batch size."""
    torch.manual_seed(0)
    model = Recurrent(cls, **kwargs).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (torch.randn(2, 5, 4),), dynamic_shapes=({0: batch},))
    path = tmp_path / "rnn.pt2"
    torch.export.save(ep, path)
    res = import_spec(str(path))
    assert res.opaque == []
    rnn = [n for n in res.project.graph.nodes.values() if n.type_id == f"layer.{cls.__name__.lower()}"]
    assert len(rnn) == 1 and rnn[0].params["num_layers"] == kwargs.get("num_layers", 1)
    x = torch.randn(7, 5, 4)
    with torch.no_grad():
        assert torch.allclose(_compiled(res.project, res.state_dict)(x), model(x), atol=1e-5)


class GivenState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.h0 = nn.Parameter(torch.ones(1, 2, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x, self.h0)[0]


@pytest.mark.filterwarnings(_RNN_EXPORT_WARNING)
def test_pt2_recurrent_layer_with_a_given_state_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "h0.pt2"
    torch.export.save(torch.export.export(GivenState().eval(), (torch.randn(2, 5, 4),)), path)
    with pytest.raises(NetStudioError, match="the GRU 'gru' starts from a state the program computes") as e:
        import_spec(str(path))
    assert "import its Python class" in (e.value.hint or "")


class SharedLayer(nn.Module):
    """One Linear applied twice (weight sharing) and a weightless ReLU applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(6, 6)
        self.act = nn.ReLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.enc(self.act(self.enc(x)))))


def test_a_module_called_twice_is_named_in_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each call becomes a node with a copy of the weights (outputs still match); the import says so, naming the
    module, for a Python class and for the same model's .pt2 alike; a weightless module called twice is no news."""
    torch.manual_seed(0)
    model = SharedLayer().eval()
    res = import_module(model, torch.randn(2, 6))
    shared = [note for note in res.notes if "weight sharing is not kept" in note]
    assert len(shared) == 1
    assert "module 'enc' (Linear) is called 2 times" in shared[0] and "updates separately" in shared[0]
    path = tmp_path / "shared.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 6),)), path)
    rc, out, err = run_cli(capsys, "import", str(path), "--out", str(tmp_path / "p.nsproj"))
    assert rc == 0, err
    assert "note: module 'enc' (Linear) is called 2 times" in out
    assert "'act'" not in out
