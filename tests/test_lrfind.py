"""The learning-rate finder (netstudio/training/lrfind.py) and `netstudio lr-find`."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import netstudio.data as data_mod
from netstudio.compiler.build import build_plan
from netstudio.errors import TrainingError
from netstudio.project.io import load_project
from netstudio.training.config import TrainConfig
from netstudio.training.engine import fit
from netstudio.training.events import FitStatus
from netstudio.training.lrfind import lr_at, lr_find, suggest_lr

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_projects"
CFG = TrainConfig(epochs=2, batch_size=64, seed=0, device="cpu", threads=1, keep_best=False)


@pytest.fixture(scope="module")
def mnist() -> Any:
    torch.manual_seed(0)
    plan = build_plan(load_project(SAMPLES / "mnist_mlp_sgd.nsproj").graph, 64)
    return data_mod.load(plan.dataset_params)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_model_and_the_random_state_are_untouched(mnist: Any) -> None:
    project = load_project(SAMPLES / "mnist_mlp_adam.nsproj")
    torch.manual_seed(0)
    plan = build_plan(project.graph, 64)
    before = _state(plan.model)
    # a trained model (the GUI passes the weights it holds) with its optimizer state
    trained = fit(plan, mnist, TrainConfig(epochs=1, batch_size=64, device="cpu", threads=1)).model
    assert trained is not None
    trained_before = _state(trained)
    rng = torch.get_rng_state()
    res = lr_find(plan, mnist, CFG, steps=40)
    res2 = lr_find(plan, mnist, CFG, steps=40, model=trained)
    assert len(res.lrs) > 10 and len(res2.lrs) > 10
    assert res.losses != res2.losses  # the second one really started from the trained weights
    for k, v in plan.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # bit-identical
    for k, v in trained.state_dict().items():
        assert torch.equal(v, trained_before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_ramp_smoothing_early_stop_and_stop_event(mnist: Any) -> None:
    assert lr_at(0, 100, 1e-7, 10) == pytest.approx(1e-7)
    assert lr_at(99, 100, 1e-7, 10) == pytest.approx(10)
    assert lr_at(50, 101, 1e-4, 1) == pytest.approx(1e-2)
    plan = build_plan(load_project(SAMPLES / "mnist_mlp_sgd.nsproj").graph, 64)
    seen: list[dict[str, Any]] = []
    res = lr_find(plan, mnist, CFG, start_lr=1e-3, end_lr=1e3, steps=100, report=seen.append)
    # SGD with momentum explodes well before lr 1000: the test stops once the loss has run away
    assert res.stopped == "diverged" and len(res.lrs) < 100
    assert [e["lr"] for e in seen] == res.lrs[:len(seen)]
    assert res.smoothed[-1] > 4 * min(res.smoothed) or not math.isfinite(res.losses[-1])
    assert all(b > a for a, b in zip(res.lrs, res.lrs[1:]))
    stop = threading.Event()
    stop.set()
    assert lr_find(plan, mnist, CFG, stop_event=stop).stopped == "stopped"
    with pytest.raises(TrainingError):
        lr_find(plan, mnist, CFG, start_lr=1.0, end_lr=0.1)


def test_suggestion_is_the_steepest_descent() -> None:
    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]
    # flat, then falling fastest around lr 1e-3 (i = 30), then rising
    loss = [2.0 - 1.5 / (1 + math.exp(-(i - 30) / 2)) + (0.0 if i < 45 else (i - 45) * 0.3) for i in range(60)]
    assert suggest_lr(lrs, loss) == pytest.approx(lrs[30])
    assert suggest_lr(lrs, [1.0 + i * 0.01 for i in range(60)]) is None  # never falls: no suggestion


@pytest.mark.slow  # five short trainings
@pytest.mark.parametrize("sample", ["mnist_mlp_sgd", "mnist_mlp_adam"])
def test_suggestion_lies_within_10x_of_the_best_lr_of_a_grid(mnist: Any, sample: str) -> None:
    project = load_project(SAMPLES / f"{sample}.nsproj")
    torch.manual_seed(0)
    suggestion = lr_find(build_plan(project.graph, 64), mnist, CFG).suggestion
    assert suggestion is not None
    opt = next(n for n in project.graph.nodes.values() if n.type_id.startswith("optim."))
    scores = {}
    for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        opt.params["lr"] = lr
        torch.manual_seed(0)
        res = fit(build_plan(project.graph, 64), mnist, CFG)
        assert res.status == FitStatus.FINISHED
        scores[lr] = res.metrics["val_loss"] if math.isfinite(res.metrics["val_loss"]) else math.inf
    best = min(scores, key=lambda k: scores[k])
    assert best / 10 <= suggestion <= best * 10, (suggestion, scores)


def test_cli_lr_find(capsys: pytest.CaptureFixture[str]) -> None:
    from netstudio.cli import main

    capsys.readouterr()
    assert main(["lr-find", str(SAMPLES / "mnist_mlp_adam.nsproj"), "--device", "cpu", "--steps", "30",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 10 < len(out["lrs"]) == len(out["losses"]) <= 30 and out["optimizer_lr"] == 1e-3
    assert out["suggestion"] is None or out["lrs"][0] <= out["suggestion"] <= out["lrs"][-1]
    assert main(["lr-find", str(SAMPLES / "mnist_mlp_adam.nsproj"), "--device", "cpu", "--steps", "30"]) == 0
    assert "suggested lr" in capsys.readouterr().out
