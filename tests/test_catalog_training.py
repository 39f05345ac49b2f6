"""KLDiv, NAdam, RAdam, MultiStepLR and LinearWarmup: equal to torch, and written by the script export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from netstudio.cli import main
from netstudio.compiler.build import build_plan
from netstudio.compiler.shapes import ShapeChecker
from netstudio.nodes import CATALOG
from netstudio.project import script_export as se
from netstudio.project.io import Project, save_project
from netstudio.training.config import TrainConfig
from tests.test_script_export import import_script, mlp
from tests.test_script_export import test_generated_training_parts_equal_the_plan as check_script_parts


def _loss(type_id: str, params: dict[str, Any], pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    nt = CATALOG.get(type_id)
    return nt.make(nt.validate_params(params))(pred, nt.adapt_target(pred, target))


def test_kl_div_equals_torch_and_is_nll_for_class_targets() -> None:
    g = torch.Generator().manual_seed(3)
    log_p = F.log_softmax(torch.randn(16, 5, generator=g), dim=1)
    labels = torch.randint(0, 5, (16,), generator=g)
    teacher = F.softmax(torch.randn(16, 5, generator=g), dim=1)
    got = _loss("loss.kl_div", {}, log_p, teacher)
    assert torch.allclose(got, F.kl_div(log_p, teacher, reduction="batchmean"))
    assert torch.allclose(_loss("loss.kl_div", {"reduction": "sum"}, log_p, teacher),
                          F.kl_div(log_p, teacher, reduction="sum"))
    # class indices become one-hot distributions: KL(one-hot ‖ p) = −log p[label]
    assert torch.allclose(_loss("loss.kl_div", {}, log_p, labels), F.nll_loss(log_p, labels))
    assert CATALOG.get("loss.kl_div").metric == "argmax"
    assert "log-probabilities" in CATALOG.get("loss.kl_div").description


@pytest.mark.parametrize("type_id,cls,params,expected", [
    ("optim.nadam", torch.optim.NAdam, {"lr": 0.003, "beta1": 0.8, "momentum_decay": 0.01},
     {"lr": 0.003, "betas": (0.8, 0.999), "momentum_decay": 0.01}),
    ("optim.radam", torch.optim.RAdam, {"weight_decay": 0.1}, {"lr": 1e-3, "weight_decay": 0.1}),
])
def test_nadam_and_radam(type_id: str, cls: type, params: dict[str, Any], expected: dict[str, Any]) -> None:
    nt = CATALOG.get(type_id)
    model = torch.nn.Linear(3, 2)
    opt = nt.make(model.parameters(), nt.validate_params(params))
    assert type(opt) is cls
    for k, v in expected.items():
        assert opt.param_groups[0][k] == pytest.approx(v)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    # the memory estimate's count: state tensors the size of each parameter
    for p in model.parameters():
        sized = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor) and v.shape == p.shape]
        assert len(sized) == nt.state_tensors(nt.validate_params(params))


def _lrs(type_id: str, params: dict[str, Any], epochs: int = 7) -> list[float]:
    nt = CATALOG.get(type_id)
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    sched = nt.make(opt, nt.validate_params(params), epochs=epochs, steps_per_epoch=3)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_and_linear_warmup_schedules() -> None:
    assert _lrs("sched.multistep", {"milestones": [2, 5], "gamma": 0.5}) == \
        pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert _lrs("sched.linear_warmup", {"start_factor": 0.25, "warmup_epochs": 3}) == \
        pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])
    assert CATALOG.get("sched.linear_warmup").step_every == "epoch"


def test_multistep_milestones_must_increase() -> None:
    g = mlp({"source": "iris"}, out=3, scheduler="sched.multistep", sched_params={"milestones": [5, 3]})
    [p] = [p for p in ShapeChecker().analyze(g, 8).problems if p.severity == "error"]
    assert "milestones 5, 3 must be increasing epoch numbers of at least 1" in p.message
    assert p.hint == "use e.g. 30, 80" and p.scope == "training"


CASES = [
    ("kldiv-nadam-multistep", mlp({"source": "iris"}, out=3, loss="loss.kl_div", optimizer="optim.nadam",
                                  scheduler="sched.multistep", sched_params={"milestones": [1, 2], "gamma": 0.5})),
    ("ce-radam-warmup", mlp({"source": "wine"}, out=3, optimizer="optim.radam", opt_params={"lr": 0.01},
                            scheduler="sched.linear_warmup", sched_params={"start_factor": 0.2, "warmup_epochs": 3})),
]


@pytest.mark.parametrize("name,graph", CASES, ids=[c[0] for c in CASES])
def test_script_export_writes_the_new_loss_optimizers_and_schedulers(tmp_path: Path, name: str, graph: Any) -> None:
    check_script_parts(tmp_path, name, graph)


def test_cli_script_export_with_linear_warmup(tmp_path: Path) -> None:
    path = save_project(Project(CASES[1][1], TrainConfig(epochs=2, batch_size=16), name="warm"),
                        tmp_path / "warm.nsproj")
    assert main(["export", str(path), "--format", "script", "--out", str(tmp_path / "job")]) == 0
    text = (tmp_path / "job" / se.SCRIPT_FILE).read_text(encoding="utf-8")
    assert "torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.2, end_factor=1.0, total_iters=3)" in text
    assert "torch.optim.RAdam(" in text
    mod = import_script(tmp_path / "job")
    opt = mod.make_optimizer(mod.Model())
    ref = build_plan(CASES[1][1], 16)
    assert type(opt) is type(ref.make_optimizer(ref.model))


def test_new_layers_loss_optimizer_and_warmup_train_through_the_cli(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """digits → conv → GroupNorm → Mish → Dropout2d → AdaptiveMaxPool → tokens → transformer encoder →
    self-attention → Mean over tokens → Linear → LogSoftmax, KLDiv on class targets, RAdam with warm-up."""
    import json

    from netstudio.graph.model import Graph

    g = Graph()
    specs = [("data.dataset", {"source": "digits"}), ("layer.conv2d", {"out_channels": 8, "padding": 1}),
             ("layer.groupnorm", {"num_groups": 2}), ("activation.mish", {}), ("layer.dropout2d", {"p": 0.1}),
             ("layer.adaptive_maxpool2d", {"output_size": [8, 8]}), ("layer.reshape", {"shape": [8, 64]}),
             ("layer.transformer_encoder_layer", {"nhead": 4, "dim_feedforward": 64, "dropout": 0.0}),
             ("layer.multihead_attention", {"num_heads": 4}), ("layer.mean", {"dim": 1}),
             ("layer.linear", {"out_features": 10}), ("activation.log_softmax", {})]
    nodes = [g.add_node(t, p) for t, p in specs]
    for a, b in zip(nodes, nodes[1:]):
        g.connect(a.id, "features" if a is nodes[0] else "output", b.id, "input")
    kl, opt = g.add_node("loss.kl_div"), g.add_node("optim.radam", {"lr": 0.003})
    warm = g.add_node("sched.linear_warmup", {"start_factor": 0.1, "warmup_epochs": 2})
    g.connect(nodes[-1].id, "output", kl.id, "prediction")
    g.connect(nodes[0].id, "target", kl.id, "target")
    g.connect(kl.id, "loss", opt.id, "loss")
    g.connect(opt.id, "optimizer", warm.id, "optimizer")
    path = save_project(Project(g, TrainConfig(epochs=3, batch_size=32), name="new layers"), tmp_path / "n.nsproj")
    capsys.readouterr()
    assert main(["train", str(path), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lrs = [h["lr"] for h in result["history"] if h["kind"] == "epoch"]
    assert lrs == pytest.approx([0.0003, 0.00165, 0.003])  # linear warm-up, then the optimizer's lr
    assert result["val_accuracy"] >= 0.6, result  # chance is 0.1
