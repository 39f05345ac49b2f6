"""Dynamic int8 quantization export: smaller, as accurate, loads with plain PyTorch, refused where unsupported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import netstudio.data as D
from conftest import SAMPLES
from netstudio.cli import main
from netstudio.compiler.build import build_plan
from netstudio.data.core import normalize_params, split_indices
from netstudio.errors import ExportError
from netstudio.project import export as ex
from netstudio.project.io import load_project
from netstudio.project.preprocess import export_input
from netstudio.training.config import TrainConfig
from netstudio.training.engine import fit
from test_export import run_without_netstudio


@pytest.fixture(scope="module")
def mnist_mlp():
    """The mnist_mlp_sgd sample trained 2 epochs: (project, plan, data, trained model)."""
    project = load_project(SAMPLES / "mnist_mlp_sgd.nsproj")
    torch.manual_seed(0)
    plan = build_plan(project.graph, project.training.batch_size)
    data = D.load(plan.dataset_params)
    cfg = TrainConfig(epochs=2, batch_size=project.training.batch_size, device="cpu")
    result = fit(plan, data, cfg)
    assert result.status == "finished", result.message
    return project, plan, data, result.model.eval()


def _raw_val_pixels(plan) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images as mnist_5k delivers them (0–255, N×1×28×28) and their labels."""
    from netstudio.data.builtin import _raw_mnist_5k

    p = normalize_params(plan.dataset_params)
    images, labels = _raw_mnist_5k()
    _, va = split_indices(len(images), p["val_fraction"], p["seed"])
    return torch.from_numpy(images[va]).unsqueeze(1).float(), torch.as_tensor(labels[va]).long()


@pytest.mark.slow  # subprocess, end to end
def test_quantized_mnist_mlp_is_small_accurate_and_loads_without_netstudio(mnist_mlp, tmp_path: Path) -> None:
    project, plan, data, model = mnist_mlp
    inp = export_input(data)
    f32 = ex.export("pt", model, tmp_path / "float.pt", project=project, inp=inp)
    q8 = ex.export("pt", model, tmp_path / "q.pt", project=project, inp=inp, quantize="dynamic-int8")
    assert q8.stat().st_size <= 0.4 * f32.stat().st_size, (q8.stat().st_size, f32.stat().st_size)

    cmp = ex.compare_quantized(model, plan, data, inp=inp)
    # the reported sizes are the written files' (same serialisation, same modules)
    assert abs(cmp["quantized_bytes"] - q8.stat().st_size) < 512
    assert abs(cmp["float_bytes"] - f32.stat().st_size) < 512
    assert cmp["float_accuracy"] > 0.8  # trained, not noise
    assert abs(cmp["quantized_accuracy"] - cmp["float_accuracy"]) <= 0.02
    text = ex.quantize_summary(cmp)
    assert f"quantized {cmp['quantized_accuracy']:.4f} vs float {cmp['float_accuracy']:.4f}" in text

    raw, labels = _raw_val_pixels(plan)
    torch.save(raw, tmp_path / "raw.pt")
    torch.save(labels, tmp_path / "labels.pt")
    proc = run_without_netstudio(f"""
        import json, torch
        folder = {str(tmp_path)!r}
        raw, labels = torch.load(folder + "/raw.pt"), torch.load(folder + "/labels.pt")
        acc = {{}}
        kinds = {{}}
        for name in ("float", "q"):
            m = torch.load(folder + "/" + name + ".pt", weights_only=False).eval()
            assert next(iter(m.named_children()))[0] == "preprocess"
            meta = json.loads(m.netstudio_metadata)
            assert meta["preprocess"] is True and meta["input"]["shape"] == [1, 28, 28]
            kinds[name] = sorted({{type(s).__module__ + "." + type(s).__name__ for s in m.modules()}})
            with torch.no_grad():
                acc[name] = float((m(raw).argmax(1) == labels).float().mean())
                acc[name + "_uint8"] = float((m(raw.to(torch.uint8)).argmax(1) == labels).float().mean())
        print("RESULT", json.dumps({{"acc": acc, "kinds": kinds}}))
    """, tmp_path)
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    acc, kinds = res["acc"], res["kinds"]
    assert any("quantized.dynamic" in k and k.endswith(".Linear") for k in kinds["q"]), kinds["q"]
    assert not any(k.endswith("torch.nn.modules.linear.Linear") for k in kinds["q"])
    # raw pixels in, the app's accuracy out: float equals the app's figure, quantized within 0.02
    assert acc["float"] == pytest.approx(cmp["float_accuracy"], abs=1e-6)
    assert acc["q"] == pytest.approx(cmp["quantized_accuracy"], abs=1e-6)
    assert abs(acc["q"] - acc["float"]) <= 0.02 and acc["q_uint8"] == acc["q"]


def test_quantize_refuses_other_formats_and_models_without_linear_layers(mnist_mlp, tmp_path: Path) -> None:
    project, plan, data, model = mnist_mlp
    for fmt in ("pt2", "onnx", "py", "weights"):
        with pytest.raises(ExportError, match=f"Cannot quantize the {fmt} export: .*only as a full model"):
            ex.export(fmt, model, tmp_path / f"m.{fmt}", project=project, quantize="dynamic-int8")
        assert not (tmp_path / f"m.{fmt}").exists()
    with pytest.raises(ExportError, match="Unknown quantization"):
        ex.export("pt", model, tmp_path / "m.pt", quantize="static-int4")
    conv_only = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))
    with pytest.raises(ExportError, match="no Linear, LSTM or GRU layer"):
        ex.export_pt(conv_only, tmp_path / "c.pt", quantize="dynamic-int8")


def test_quantized_lstm_keeps_outputs_close() -> None:
    gm = torch.fx.symbolic_trace(_LastStep())
    q = ex.quantize_dynamic(gm)
    assert type(q.rnn).__module__.startswith("torch.ao.nn.quantized.dynamic")
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(q(x), gm(x), atol=0.05)
        assert not torch.equal(q(x), gm(x))  # really int8 weights


class _LastStep(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = torch.nn.LSTM(6, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


def test_cli_quantize_prints_sizes_and_accuracies(mnist_mlp, tmp_path: Path, capsys) -> None:
    project, plan, data, model = mnist_mlp
    weights = ex.export_weights(model, project, tmp_path / "w.pt", export_input(data))
    src = str(SAMPLES / "mnist_mlp_sgd.nsproj")
    capsys.readouterr()
    rc = main(["export", src, "--weights", str(weights), "--format", "pt", "--quantize", "dynamic-int8",
               "--out", str(tmp_path / "q.pt")])
    out = capsys.readouterr().out
    assert rc == 0, out
    size = re.search(r"quantized \(dynamic-int8\): ([\d.]+) KiB vs float ([\d.]+) KiB \((0\.\d\d)×\)", out)
    assert size and float(size.group(3)) <= 0.4, out
    assert abs(float(size.group(1)) * 1024 - (tmp_path / "q.pt").stat().st_size) < 512
    accs = re.search(r"validation accuracy: quantized (0\.\d{4}) vs float (0\.\d{4})", out)
    assert accs, out
    assert abs(float(accs.group(1)) - float(accs.group(2))) <= 0.02 and float(accs.group(2)) > 0.8

    rc = main(["export", src, "--weights", str(weights), "--format", "pt2", "--quantize", "dynamic-int8",
               "--out", str(tmp_path / "q.pt2")])
    err = capsys.readouterr().err
    assert rc != 0 and "Cannot quantize the pt2 export" in err and "--format pt" in err
    assert not (tmp_path / "q.pt2").exists()
