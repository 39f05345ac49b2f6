"""Export: every format reproduces the in-app model's outputs, and works without NetStudio installed."""

from __future__ import annotations

import ast
import builtins
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

from conftest import SAMPLES
from netstudio.compiler.build import CompiledModel, compile_model
from netstudio.errors import ExportError
from netstudio.graph.model import Graph
from netstudio.project import export as ex
from netstudio.project.io import Project, load_project

# ----------------------------------------------------------------------------
# models under test
# ----------------------------------------------------------------------------


def _sample(name: str) -> Callable[[], Graph]:
    return lambda: load_project(SAMPLES / f"{name}.nsproj").graph


def _residual_concat() -> Graph:
    # node names that shadow Module/GraphModule attributes ("code", "training") must still export
    g = Graph()
    d = g.add_node("data.dataset", {"source": "wine"}, name="data")
    fc1 = g.add_node("layer.linear", {"out_features": 16}, name="code")
    bn = g.add_node("layer.batchnorm1d", {}, name="training")
    act = g.add_node("activation.relu", {}, name="act")
    drop = g.add_node("layer.dropout", {"p": 0.5}, name="drop")
    fc2 = g.add_node("layer.linear", {"out_features": 16}, name="fc2")
    add = g.add_node("merge.add", {}, name="res")
    cat = g.add_node("merge.concat", {"dim": 1}, name="cat")
    head = g.add_node("layer.linear", {"out_features": 3}, name="head")
    for a, ap, b, bp in [(d, "features", fc1, "input"), (fc1, "output", bn, "input"), (bn, "output", act, "input"),
                         (act, "output", drop, "input"), (drop, "output", fc2, "input"), (fc2, "output", add, "a"),
                         (fc1, "output", add, "b"), (add, "output", cat, "inputs"), (d, "features", cat, "inputs"),
                         (cat, "output", head, "input")]:
        g.connect(a.id, ap, b.id, bp)
    return g


def _lstm() -> Graph:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "digits"}, name="data")
    rs = g.add_node("layer.reshape", {"shape": [8, 8]}, name="rows")  # 8 time steps of 8 pixels
    lstm = g.add_node("layer.lstm", {"hidden_size": 12, "num_layers": 2}, name="lstm")
    flat = g.add_node("layer.flatten", {}, name="flat")
    head = g.add_node("layer.linear", {"out_features": 10}, name="head")
    for a, ap, b in [(d, "features", rs), (rs, "output", lstm), (lstm, "output", flat), (flat, "output", head)]:
        g.connect(a.id, ap, b.id, "input")
    return g


MODELS: dict[str, Callable[[], Graph]] = {
    "mlp": _sample("mnist_mlp_sgd"),
    "lenet": _sample("lenet"),
    "residual_concat": _residual_concat,
    "lstm": _lstm,
    "autoencoder": _sample("autoencoder"),  # two outputs: reconstruction and class scores
}


def build(name: str) -> CompiledModel:
    torch.manual_seed(0)
    compiled = compile_model(MODELS[name]())
    m = compiled.module
    if any(isinstance(s, nn.modules.batchnorm._BatchNorm) for s in m.modules()):
        m.train()
        with torch.no_grad():  # move the running statistics away from their defaults
            m(ex.example_input_for(compiled, batch=16, seed=1) * 3 + 1)
    m.eval()
    return compiled


def reference(compiled: CompiledModel, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = compiled.module(x)
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def compiled_models() -> dict[str, CompiledModel]:
    return {name: build(name) for name in MODELS}


def _inputs(compiled: CompiledModel) -> torch.Tensor:
    return ex.example_input_for(compiled, batch=5, seed=42)


# a subprocess that cannot import netstudio: isolated mode (no cwd, no user site), cwd outside the
# repository, and a sys.modules guard so even the editable install's path hook cannot provide it
_NO_NETSTUDIO = """
import sys
sys.modules["netstudio"] = None
try:
    import netstudio
except ImportError:
    pass
else:
    raise SystemExit("netstudio is importable")
"""


def run_without_netstudio(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "runner.py"
    script.write_text(_NO_NETSTUDIO + textwrap.dedent(code) + textwrap.dedent("""
        leaked = [m for m, v in sys.modules.items() if m.startswith("netstudio") and v is not None]
        assert not leaked, leaked
        print("RUNNER-OK")
    """), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run([sys.executable, "-I", str(script)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0 and "RUNNER-OK" in proc.stdout, proc.stdout + proc.stderr
    return proc


# ----------------------------------------------------------------------------
# .pt (whole GraphModule) and .py (plain source) without NetStudio — one subprocess for both
# ----------------------------------------------------------------------------


@pytest.mark.slow  # subprocess, end to end
def test_pt_and_py_exports_run_without_netstudio(compiled_models: dict[str, CompiledModel],
                                                  tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    expected: dict[str, tuple[torch.Tensor, ...]] = {}
    for name, compiled in compiled_models.items():
        x = _inputs(compiled)
        torch.save(x, work / f"{name}_x.pt")
        expected[name] = reference(compiled, x)
        ex.export_pt(compiled, work / f"{name}.pt")
        ex.export_py(compiled, work / f"{name}_model.py", weights=work / f"{name}_weights.pt", title=name)
        src = (work / f"{name}_model.py").read_text(encoding="utf-8")
        assert "class Model(nn.Module)" in src and "def forward(self, x)" in src
        assert "netstudio" not in src.replace("NetStudio", "")  # no import of the package
        ast.parse(src)
    # the exporter switched nothing in the live model
    assert all(not c.module.training for c in compiled_models.values())

    run_without_netstudio(f"""
        import runpy
        import torch
        names = {list(compiled_models)!r}
        for name in names:
            x = torch.load(f"{{name}}_x.pt", weights_only=True)
            pickled = torch.load(f"{{name}}.pt", weights_only=False)
            with torch.no_grad():
                out = pickled(x)
            torch.save(out if isinstance(out, tuple) else (out,), f"{{name}}_pt_out.pt")
            ns = runpy.run_path(f"{{name}}_model.py")
            model = ns["load_model"]()  # WEIGHTS_FILE, next to the .py
            assert not model.training
            explicit = ns["Model"]()
            explicit.load_state_dict(torch.load(f"{{name}}_weights.pt", weights_only=True))
            explicit.eval()
            with torch.no_grad():
                out = model(x)
                again = explicit(x)
            out = out if isinstance(out, tuple) else (out,)
            again = again if isinstance(again, tuple) else (again,)
            assert all(torch.equal(a, b) for a, b in zip(out, again))
            torch.save(out, f"{{name}}_py_out.pt")
    """, work)

    for name, ref in expected.items():
        pt_out = torch.load(work / f"{name}_pt_out.pt", weights_only=True)
        py_out = torch.load(work / f"{name}_py_out.pt", weights_only=True)
        assert len(pt_out) == len(py_out) == len(ref), name
        for r, a, b in zip(ref, pt_out, py_out):
            assert torch.equal(a, r), f"{name}: .pt output differs"
            assert a.shape == b.shape and torch.allclose(b, r, atol=1e-6, rtol=0), f"{name}: .py output differs"


def test_py_export_writes_constructor_arguments(compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    src = ex.model_source(compiled_models["lstm"])
    assert ("self.lstm = nn.LSTM(input_size=8, hidden_size=12, num_layers=2, bias=True, batch_first=True, "
            "dropout=0.0, bidirectional=False)") in src
    assert "self.head = nn.Linear(in_features=96, out_features=10, bias=True)" in src
    assert "torch.reshape(x, (-1, 8, 8))" in src
    lenet = ex.model_source(compiled_models["lenet"])
    assert "nn.Conv2d(in_channels=1, out_channels=6, kernel_size=(5, 5)" in lenet
    assert "Input: a float32 tensor of shape N×1×28×28." in lenet
    residual = ex.model_source(compiled_models["residual_concat"])
    assert "self.code_ = nn.Linear(" in residual and "self.training_ = nn.BatchNorm1d(" in residual
    assert "torch.cat([" in residual


def test_module_constructor_round_trips_common_layers() -> None:
    layers = [nn.Linear(3, 4, bias=False), nn.Conv1d(2, 3, 3, stride=2, padding=1, groups=1),
              nn.Conv2d(4, 8, (3, 5), dilation=2, padding_mode="reflect", padding=2),
              nn.ConvTranspose2d(3, 2, 4, stride=2, output_padding=1), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
              nn.AvgPool2d(2, count_include_pad=False), nn.AdaptiveAvgPool2d((3, 2)), nn.BatchNorm2d(5, affine=False),
              nn.LayerNorm([4, 5], eps=1e-3), nn.Dropout(0.3), nn.Flatten(2, -1), nn.Embedding(11, 4),
              nn.GRU(3, 5, bidirectional=True, batch_first=True), nn.LeakyReLU(0.2), nn.GELU("tanh"),
              nn.Softmax(dim=-1), nn.LogSoftmax(dim=1), nn.SiLU(), nn.Tanh(), nn.Identity()]
    for layer in layers:
        text = ex.module_constructor(layer)
        rebuilt = eval(text, {"nn": nn})
        assert repr(rebuilt) == repr(layer), text
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
               {k: v.shape for k, v in layer.state_dict().items()}


def test_py_export_refuses_custom_modules(tmp_path: Path) -> None:
    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.custom = Custom()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.custom(self.lin(x))

    class KeepCustom(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, Custom) or super().is_leaf_module(m, qualname)

    net = Net()
    gm = torch.fx.GraphModule(net, KeepCustom().trace(net))
    assert "self.custom(" in gm.code
    with pytest.raises(ExportError, match="Custom is not a built-in torch.nn module"):
        ex.export_py(gm, tmp_path / "m.py")
    assert not (tmp_path / "m.py").exists()

    # without the custom layer it exports; fx turns the string annotations of this file into globals
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.lin(x))

    plain = torch.fx.symbolic_trace(Plain())
    ex.export_py(plain, tmp_path / "plain.py", weights=tmp_path / "plain_w.pt")
    import runpy

    model = runpy.run_path(str(tmp_path / "plain.py"))["load_model"]()
    x = torch.randn(3, 2)
    assert torch.equal(model(x), plain(x))


# ----------------------------------------------------------------------------
# weights (+ project)
# ----------------------------------------------------------------------------


def test_weights_round_trip_with_project(compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    project = load_project(SAMPLES / "lenet.nsproj")
    compiled = compiled_models["lenet"]
    path = ex.export_weights(compiled, project, tmp_path / "lenet_weights.pt")
    raw = torch.load(path, weights_only=True)  # safe loader accepts it
    assert raw["format"] == ex.WEIGHTS_FORMAT and isinstance(raw["project"], str)
    back, state = ex.load_weights(path)
    assert back.dumps() == project.dumps()
    own = compiled.module.state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    # reopening: rebuild the model from the embedded project and load the weights
    fresh = compile_model(back.graph)
    ex.apply_state_dict(fresh.module, state)
    fresh.module.eval()
    x = _inputs(compiled)
    assert torch.equal(fresh.module(x), compiled.module(x))


def test_bare_state_dict_and_mismatches(compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    mlp = compiled_models["mlp"].module
    bare = tmp_path / "bare.pt"
    torch.save(mlp.state_dict(), bare)
    text, state = ex.read_weights(bare)
    assert text is None and state.keys() == mlp.state_dict().keys()
    with pytest.raises(ExportError, match="holds only weights, no NetStudio project"):
        ex.load_weights(bare)
    with pytest.raises(ExportError) as info:
        ex.apply_state_dict(compiled_models["lenet"].module, state)
    assert "do not match this model" in info.value.message
    assert "missing conv1.weight, conv1.bias" in info.value.message
    assert "wrong shape fc1.weight (128, 784) vs (120, 256)" in info.value.message
    with pytest.raises(ExportError, match="unexpected conv1.weight, conv1.bias"):
        ex.apply_state_dict(mlp, compiled_models["lenet"].module.state_dict())
    assert info.value.hint and "layer names and sizes" in info.value.hint
    wrong = dict(state)
    wrong["fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ExportError, match=r"wrong shape fc1.weight \(3, 3\) vs \(128, 784\)"):
        ex.apply_state_dict(mlp, wrong)


def test_weights_loading_never_unpickles_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": ex.WEIGHTS_FORMAT, "version": 1, "state_dict": Evil()}, evil)
    with pytest.raises(ExportError, match="not a weights file NetStudio can read safely"):
        ex.load_weights(evil)
    (tmp_path / "evil2.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ExportError, match="not a weights file NetStudio can read safely"):
        ex.read_weights(tmp_path / "evil2.pt")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ExportError):
        ex.read_weights(tmp_path / "junk.pt")
    with pytest.raises(ExportError, match="No such weights file"):
        ex.read_weights(tmp_path / "missing.pt")
    torch.save({"a": 1}, tmp_path / "notsd.pt")
    with pytest.raises(ExportError, match="does not contain a state_dict"):
        ex.read_weights(tmp_path / "notsd.pt")
    torch.save({"format": ex.WEIGHTS_FORMAT, "version": 99, "state_dict": {}}, tmp_path / "future.pt")
    with pytest.raises(ExportError, match="weights format version 99"):
        ex.read_weights(tmp_path / "future.pt")
    torch.save({"format": ex.WEIGHTS_FORMAT, "version": 1, "state_dict": {}, "project": "{broken"},
               tmp_path / "badproj.pt")
    with pytest.raises(ExportError, match="embedded in badproj.pt is invalid: The project file is not valid JSON"):
        ex.load_weights(tmp_path / "badproj.pt")


# ----------------------------------------------------------------------------
# torch.export (.pt2)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "lenet", "residual_concat", "lstm"])
def test_pt2_matches(name: str, compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    compiled = compiled_models[name]
    path = ex.export_pt2(compiled, ex.example_input_for(compiled), tmp_path / f"{name}.pt2")
    program = torch.export.load(path).module()
    for batch in (5, 7):  # the batch dimension is dynamic
        x = ex.example_input_for(compiled, batch=batch, seed=batch)
        got = program(x)
        got = got if isinstance(got, tuple) else (got,)
        for r, g in zip(reference(compiled, x), got):
            assert g.shape == r.shape
            assert torch.allclose(g, r, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "lenet", "residual_concat"])
def test_onnx_matches(name: str, compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    compiled = compiled_models[name]
    path = ex.export_onnx(compiled, ex.example_input_for(compiled), tmp_path / f"{name}.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    session = ReferenceEvaluator(model)
    x = ex.example_input_for(compiled, batch=4, seed=3)
    (got,) = session.run(None, {model.graph.input[0].name: x.numpy()})
    (ref,) = reference(compiled, x)
    assert got.shape == tuple(ref.shape)
    assert np.allclose(got, ref.numpy(), atol=1e-5, rtol=1e-5)


def test_onnx_without_the_packages(compiled_models: dict[str, CompiledModel], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_onnxscript(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnxscript" or name.startswith("onnxscript."):
            raise ImportError("No module named 'onnxscript'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxscript)
    compiled = compiled_models["mlp"]
    with pytest.raises(ExportError) as info:
        ex.export_onnx(compiled, ex.example_input_for(compiled), tmp_path / "m.onnx")
    assert str(info.value) == "ONNX export needs the packages onnx and onnxscript: pip install onnx onnxscript"
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------
# snippets, dispatch, failures
# ----------------------------------------------------------------------------


def test_load_snippets_run(compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    compiled = compiled_models["mlp"]
    x = _inputs(compiled)
    (ref,) = reference(compiled, x)
    project = Project(MODELS["mlp"](), name="MLP")
    paths = {
        "pt": ex.export("pt", compiled, tmp_path / "m.pt"),
        "weights": ex.export("weights", compiled, tmp_path / "w.pt", project=project),
        "pt2": ex.export("pt2", compiled, tmp_path / "m.pt2"),
        "py": ex.export("py", compiled, tmp_path / "m dir" / "model.py"),  # weights beside it by default
        "onnx": ex.export("onnx", compiled, tmp_path / "m.onnx"),
    }
    for fmt, path in paths.items():
        snippet = ex.load_snippet(fmt, path)
        assert len(snippet.splitlines()) == 2, snippet
        ast.parse(snippet)
        assert json.dumps(str(path)) in snippet
        if fmt == "onnx":
            continue  # needs onnxruntime, which is not a NetStudio dependency
        ns: dict[str, Any] = {}
        exec(snippet, ns)
        if fmt == "weights":
            assert ns["state_dict"].keys() == compiled.module.state_dict().keys()
            continue
        with torch.no_grad():
            out = ns["model"](x)
        assert torch.allclose(out, ref, atol=1e-6, rtol=0), fmt
    assert (tmp_path / "m dir" / "model_weights.pt").is_file()
    # without weights the file still rebuilds the architecture; load_model then needs a path
    import runpy

    bare = ex.export_py(compiled, tmp_path / "bare.py", weights=None)
    assert not (tmp_path / "bare_weights.pt").exists()
    ns = runpy.run_path(str(bare))
    with pytest.raises(ValueError, match="pass the path of a weights file"):
        ns["load_model"]()
    assert torch.allclose(ns["load_model"](str(tmp_path / "m dir" / "model_weights.pt"))(x), ref, atol=1e-6)
    with pytest.raises(ExportError, match="Unknown export format 'tflite'"):
        ex.load_snippet("tflite", "m")
    with pytest.raises(ExportError, match="Unknown export format 'tflite'"):
        ex.export("tflite", compiled, tmp_path / "m.tflite")


def test_export_failures_are_export_errors(compiled_models: dict[str, CompiledModel], tmp_path: Path) -> None:
    compiled = compiled_models["mlp"]
    with pytest.raises(ExportError, match="is a folder"):
        ex.export_pt(compiled, tmp_path)
    with pytest.raises(ExportError, match="Expected a compiled NetStudio model, got str"):
        ex.export_pt("model", tmp_path / "x.pt")
    with pytest.raises(ExportError, match="An example input tensor is needed"):
        ex.export_pt2(compiled, None, tmp_path / "x.pt2")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="torch.export could not trace the model"):
        ex.export_pt2(compiled, torch.zeros(2, 3), tmp_path / "x.pt2")  # wrong input size
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written or temp files left
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="Cannot create the folder"):
        ex.export_pt(compiled, blocker / "sub" / "m.pt")
