"""Step controls (netstudio/training/controls.py): gradient clipping, lr warm-up, mixed precision."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import netstudio.data as data_mod
from netstudio.compiler.build import build_plan
from netstudio.errors import ProjectError
from netstudio.project.io import load_project
from netstudio.training.config import TrainConfig
from netstudio.training.engine import fit
from netstudio.training.events import EventKind, FitStatus

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sample_projects" / "mnist_mlp_sgd.nsproj"


def _grad_norm(params: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(p.grad.detach().pow(2).sum()) for p in params if p.grad is not None))


def _recording_plan(graph: Any, batch_size: int, seen: list[tuple[float, float]]) -> Any:
    """The plan, whose optimizer records (total gradient norm, largest |element|) at every step."""
    plan = build_plan(graph, batch_size)
    make = plan.make_optimizer

    def make_recording(model: torch.nn.Module) -> torch.optim.Optimizer:
        opt = make(model)

        def record(o: Any, args: Any, kwargs: Any) -> None:
            params = [p for g in o.param_groups for p in g["params"] if p.grad is not None]
            seen.append((_grad_norm(params), max(float(p.grad.abs().max()) for p in params)))

        opt.register_step_pre_hook(record)
        return opt

    plan.make_optimizer = make_recording  # type: ignore[method-assign]
    return plan


@pytest.fixture(scope="module")
def mlp() -> Any:
    project = load_project(MLP)
    torch.manual_seed(0)
    plan = build_plan(project.graph, 64)
    return project, data_mod.load(plan.dataset_params)


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(epochs=1, batch_size=64, seed=0, device="cpu", threads=1, keep_best=False)
    base.update(kw)
    return TrainConfig(**base)


def test_clip_norm_bounds_the_measured_gradient_norm(mlp: Any) -> None:
    project, data = mlp
    free: list[tuple[float, float]] = []
    torch.manual_seed(0)
    fit(_recording_plan(project.graph, 64, free), data, _cfg(epochs=1))
    assert max(n for n, _ in free) > 0.5  # without clipping the norm goes above the bound tested below

    clipped: list[tuple[float, float]] = []
    torch.manual_seed(0)
    res = fit(_recording_plan(project.graph, 64, clipped), data, _cfg(epochs=1, clip_norm=0.5))
    assert res.status == FitStatus.FINISHED, res.message
    assert len(clipped) == len(free) > 10
    assert max(n for n, _ in clipped) <= 0.5 * (1 + 1e-5)


def test_clip_value_bounds_every_gradient_element(mlp: Any) -> None:
    project, data = mlp
    free: list[tuple[float, float]] = []
    torch.manual_seed(0)
    fit(_recording_plan(project.graph, 64, free), data, _cfg(epochs=1))
    assert max(m for _, m in free) > 0.01
    clipped: list[tuple[float, float]] = []
    torch.manual_seed(0)
    fit(_recording_plan(project.graph, 64, clipped), data, _cfg(epochs=1, clip_value=0.01))
    assert max(m for _, m in clipped) <= 0.01 * (1 + 1e-6)


def test_warmup_raises_the_lr_linearly_and_composes_with_the_scheduler(mlp: Any) -> None:
    project, data = mlp
    lrs: list[float] = []
    plan = build_plan(project.graph, 500)
    make = plan.make_optimizer

    def make_recording(model: torch.nn.Module) -> torch.optim.Optimizer:
        opt = make(model)
        opt.register_step_pre_hook(lambda o, a, k: lrs.append(float(o.param_groups[0]["lr"])))
        return opt

    plan.make_optimizer = make_recording  # type: ignore[method-assign]
    # a StepLR that halves the lr after every epoch, under a 2-epoch warm-up
    plan.scheduler_type = "sched.step"
    plan.scheduler_params = {"step_size": 1, "gamma": 0.5}
    events: list[dict[str, Any]] = []
    res = fit(plan, data, _cfg(epochs=3, batch_size=500, warmup_epochs=2), report=events.append)
    assert res.status == FitStatus.FINISHED, res.message
    steps = math.ceil(4000 / 500)
    assert len(lrs) == 3 * steps
    base = 0.01
    # epoch 1: scheduler lr 0.01 × (k/16); epoch 2: 0.005 × ((8+k)/16); epoch 3: 0.0025, no warm-up left
    for k in range(steps):
        assert lrs[k] == pytest.approx(base * (k + 1) / (2 * steps))
        assert lrs[steps + k] == pytest.approx(base / 2 * (steps + k + 1) / (2 * steps))
        assert lrs[2 * steps + k] == pytest.approx(base / 4)
    # the epoch reports the scheduler's lr of that epoch (the warm-up factor is taken off after every step)
    assert [e["lr"] for e in res.history] == pytest.approx([base, base / 2, base / 4])
    start = next(e for e in events if e["kind"] == EventKind.START)
    assert start["warmup_epochs"] == 2 and start["precision"] == "off"


def test_config_validates_and_round_trips_the_controls() -> None:
    cfg = TrainConfig.from_dict({"clip_norm": 1, "clip_value": 0.5, "warmup_epochs": 3, "precision": "bf16"})
    assert (cfg.clip_norm, cfg.clip_value, cfg.warmup_epochs, cfg.precision) == (1.0, 0.5, 3, "bf16")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    old = TrainConfig.from_dict({"epochs": 2})  # a project written before these settings existed
    assert (old.clip_norm, old.clip_value, old.warmup_epochs, old.precision) == (0.0, 0.0, 0, "off")
    for bad in ({"clip_norm": -1.0}, {"precision": "fp8"}, {"warmup_epochs": -1}, {"clip_value": float("nan")},
                {"precision": 16}):
        with pytest.raises(ProjectError):
            TrainConfig.from_dict(bad)


def test_fp16_on_the_cpu_is_refused_with_a_hint(mlp: Any) -> None:
    project, data = mlp
    res = fit(build_plan(project.graph, 64), data, _cfg(precision="fp16"))
    assert res.status == FitStatus.ERROR
    assert "fp16" in res.message and "CUDA" in res.message


def test_cli_train_takes_the_control_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from netstudio.cli import main
    from netstudio.project.io import Project, save_project

    project = load_project(MLP)
    path = save_project(Project(project.graph, _cfg(epochs=1), "MLP"), tmp_path / "mlp.nsproj")
    capsys.readouterr()
    assert main(["train", str(path), "--json", "--quiet", "--clip-norm", "0.5", "--warmup-epochs", "1",
                 "--precision", "bf16"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["val_accuracy"] > 0.5
    # fp16 reaches the trainer, which refuses it on the CPU with the reason
    assert main(["train", str(path), "--json", "--quiet", "--precision", "fp16"]) != 0
    text = capsys.readouterr()
    assert "fp16" in text.out + text.err and "CUDA" in text.out + text.err
    with pytest.raises(SystemExit):
        main(["train", str(path), "--clip-norm", "-1"])


def test_project_file_stores_the_controls_and_old_files_stay_byte_identical(tmp_path: Path) -> None:
    import json

    from netstudio.project.io import Project, save_project

    project = load_project(MLP)
    plain = save_project(Project(project.graph, _cfg(), "MLP"), tmp_path / "plain.nsproj")
    assert not {"clip_norm", "precision"} & set(json.loads(plain.read_text())["training"])  # as older versions
    path = save_project(Project(project.graph, _cfg(clip_norm=1.5, precision="bf16", warmup_epochs=2), "MLP"),
                        tmp_path / "ctl.nsproj")
    stored = json.loads(path.read_text())["training"]
    assert (stored["clip_norm"], stored["precision"], stored["warmup_epochs"]) == (1.5, "bf16", 2)
    back = load_project(path).training
    assert (back.clip_norm, back.clip_value, back.warmup_epochs, back.precision) == (1.5, 0.0, 2, "bf16")


def _train_mlp(data: Any, graph: Any, **kw: Any) -> Any:
    torch.manual_seed(0)
    res = fit(build_plan(graph, 64), data, _cfg(**kw))
    assert res.status == FitStatus.FINISHED, res.message
    return res


@pytest.mark.skipif(not __import__("netstudio.training.controls", fromlist=["x"]).bf16_supported(
    torch.device("cpu")), reason="no bfloat16 autocast on this CPU")
def test_bf16_on_the_cpu_trains_the_mnist_mlp_as_well_as_float32(mlp: Any) -> None:
    project, data = mlp
    fp32 = _train_mlp(data, project.graph, epochs=3)
    events: list[dict[str, Any]] = []
    torch.manual_seed(0)
    bf16 = fit(build_plan(project.graph, 64), data, _cfg(epochs=3, precision="bf16"), report=events.append)
    assert bf16.status == FitStatus.FINISHED, bf16.message
    assert fp32.metrics["val_accuracy"] > 0.9
    assert abs(bf16.metrics["val_accuracy"] - fp32.metrics["val_accuracy"]) <= 0.01
    # it really ran in bfloat16: the weights (kept in float32) took a different path
    a, b = fp32.model.state_dict(), bf16.model.state_dict()
    assert all(v.dtype == torch.float32 for v in b.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)
    start = next(e for e in events if e["kind"] == EventKind.START)
    assert start["precision"] == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cuda_trains_and_reports_the_fast_path(mlp: Any, precision: str) -> None:
    project, data = mlp
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    fp32 = _train_mlp(data, project.graph, epochs=3, device="cuda")
    events: list[dict[str, Any]] = []
    torch.manual_seed(0)
    res = fit(build_plan(project.graph, 64), data, _cfg(epochs=3, device="cuda", precision=precision),
              report=events.append)
    assert res.status == FitStatus.FINISHED, res.message
    assert abs(res.metrics["val_accuracy"] - fp32.metrics["val_accuracy"]) <= 0.01
    start = next(e for e in events if e["kind"] == EventKind.START)
    if precision == "fp16":  # the gradient scaler synchronises: eager, with the reason
        assert not start["fast_path"] and "gradient scaler" in start["fast_path_reason"]
    else:  # captured, or eager with a reason
        assert start["fast_path"] or start["fast_path_reason"]


def test_the_distributed_step_clips_and_autocasts_too() -> None:
    """Each rank's step (DistStep) applies the same controls as the single-process step."""
    from netstudio.training import distributed as D
    from netstudio.training.controls import StepControls
    from tests.test_distributed import ctx, two_loss_graph

    plan = build_plan(two_loss_graph(), 8)
    opt = torch.optim.SGD(plan.model.parameters(), lr=0.1)
    norms: list[float] = []
    opt.register_step_pre_hook(lambda o, a, k: norms.append(_grad_norm(
        [p for g in o.param_groups for p in g["params"]])))
    x, y = torch.randn(16, 4) * 10, torch.randint(0, 3, (16,))
    step = D.DistStep(plan.model, plan, opt, ctx(0, 2))
    step.global_n = 32
    step(x, y)
    assert norms[-1] > 0.05
    step.controls = StepControls(clip_norm=0.05, autocast_dtype=torch.bfloat16, device_type="cpu")
    for p in plan.model.parameters():
        p.grad = None
    loss, _ = step(x, y)
    assert norms[-1] <= 0.05 * (1 + 1e-5) and loss.dtype == torch.float32
