"""Image augmentation (issue #15 item 4): training batches only, per-sample, seeded, saved only when set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import netstudio.data as data_mod
from netstudio.compiler.build import build_plan
from netstudio.errors import TrainingError
from netstudio.project.io import load_project, save_project
from netstudio.training import fit
from netstudio.training.augment import Augmenter, AugmentSettings, augmenter_for
from netstudio.training.config import TrainConfig

LENET = Path(__file__).resolve().parents[1] / "sample_projects" / "lenet.nsproj"
AUG = {"augment_crop": 2, "augment_flip": False, "augment_rotate": 10.0, "augment_erase": 0.25}


def _lenet(tmp_path: Path, **aug: Any) -> Any:
    """The LeNet sample on MNIST (mnist_5k, 28×28) with the given augment params."""
    project = load_project(LENET)
    graph = project.graph
    ds = next(n for n in graph.nodes.values() if n.type_id == "data.dataset")
    for k, v in {"source": "mnist_5k", "resize": 0, **aug}.items():
        graph.set_param(ds.id, k, v)
    return project, ds.id


def _subset(data: Any, n_train: int, n_val: int) -> Any:
    return dataclasses.replace(data, train_x=data.train_x[:n_train], train_y=data.train_y[:n_train],
                               val_x=data.val_x[:n_val], val_y=data.val_y[:n_val])


def _recorded_fit(project: Any, data: Any, config: TrainConfig) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
    """fit, with every model input recorded: (result, training-mode inputs, evaluation-mode inputs)."""
    torch.manual_seed(config.seed)  # the initial weights, as the training job draws them
    plan = build_plan(project.graph, config.batch_size)
    train_in: list[torch.Tensor] = []
    eval_in: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        (train_in if module.training else eval_in).append(args[0].detach().cpu().clone())

    # the first convolution sees the model's input (the Dataset feeds it directly); fit trains a deep
    # copy of the model, which keeps the hook
    first = next(m for m in plan.model.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_pre_hook(hook)
    result = fit(plan, data, config)
    assert result.status == "finished", result.message
    return result, train_in, eval_in


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(x.shape[0], -1).contiguous()}


def _config(**kw: Any) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 32, "seed": 3, "device": "cpu", "threads": 1, "keep_best": False}
    base.update(kw)
    return TrainConfig(**base)


def test_augmentation_changes_training_batches_and_never_validation(tmp_path: Path) -> None:
    cfg = _config()
    project, _ = _lenet(tmp_path, **AUG)
    data = _subset(data_mod.load(build_plan(project.graph, 32).dataset_params), 128, 96)
    _, train_in, eval_in = _recorded_fit(project, data, cfg)
    # validation: bit-identical to the un-augmented validation tensors, in order
    assert torch.equal(torch.cat(eval_in), data.val_x)
    # training: the batches cover the training split, but (almost) no row is an original one
    seen = torch.cat(train_in)
    assert seen.shape == data.train_x.shape
    originals = _rows(data.train_x)
    kept = sum(r in originals for r in _rows(seen))
    assert kept <= 0.1 * seen.shape[0], kept
    # the instrument itself: without augmentation the training inputs are exactly the training rows
    plain, _ = _lenet(tmp_path)
    _, plain_in, plain_eval = _recorded_fit(plain, data, cfg)
    assert _rows(torch.cat(plain_in)) == originals
    assert torch.equal(torch.cat(plain_eval), data.val_x)


def test_same_seed_same_augmented_batches(tmp_path: Path) -> None:
    project, _ = _lenet(tmp_path, **AUG, augment_scale=0.1)
    data = _subset(data_mod.load(build_plan(project.graph, 32).dataset_params), 96, 32)
    r1, a, _ = _recorded_fit(project, data, _config(seed=5))
    r2, b, _ = _recorded_fit(project, data, _config(seed=5))
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
    assert r1.history[-1]["train_loss"] == r2.history[-1]["train_loss"]
    _, c, _ = _recorded_fit(project, data, _config(seed=6))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_per_sample_draws_and_exact_shifts() -> None:
    x = torch.randn(64, 1, 12, 12)
    out = Augmenter(AugmentSettings(crop=3), seed=0, device="cpu", mean=[0.5], std=[0.25], channels=1)(x)
    black = -0.5 / 0.25
    shifts = set()
    for i in range(x.shape[0]):
        # a whole-pixel shift: every value is one of the image's own values or black padding
        assert set(out[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {black}
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.equal(out[i, 0, 3:9, 3:9], x[i, 0, 3 + dy:9 + dy, 3 + dx:9 + dx])]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) > 10  # each sample draws its own shift
    flips = Augmenter(AugmentSettings(flip=True), seed=1, device="cpu", channels=1)(x)
    flipped = [torch.equal(flips[i], x[i].flip(-1)) for i in range(64)]
    assert all(f or torch.equal(flips[i], x[i]) for i, f in enumerate(flipped))
    assert 16 < sum(flipped) < 48


def test_colour_jitter_and_erasing_on_rgb() -> None:
    torch.manual_seed(0)
    u = torch.rand(32, 3, 16, 16)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = (u - m) / s
    out = Augmenter(AugmentSettings(jitter=0.5), seed=0, device="cpu", mean=mean, std=std, channels=3)(x)
    back = out * s + m
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5  # jitter stays within [0, 1] pixel values
    assert not torch.allclose(out, x)
    erased = Augmenter(AugmentSettings(erase=1.0), seed=0, device="cpu", mean=mean, std=std, channels=3)(x)
    zero_frac = (erased == 0).all(dim=1).float().mean(dim=(1, 2))
    assert ((zero_frac >= 0.015) & (zero_frac <= 0.4)).all(), zero_frac


def test_augmentation_on_tabular_data_names_the_dataset_node() -> None:
    data = data_mod.load({"source": "iris"})
    with pytest.raises(TrainingError) as exc:
        augmenter_for({"augment_flip": True}, data, 0, "cpu", node_id="n1")
    assert exc.value.node_id == "n1" and "image" in str(exc.value)
    assert augmenter_for({}, data, 0, "cpu") is None  # off: nothing to check


def test_augment_params_saved_only_when_set(tmp_path: Path) -> None:
    project, ds = _lenet(tmp_path)
    out = save_project(project, tmp_path / "off.nsproj")
    assert "augment_" not in out.read_text(encoding="utf-8")  # off: the file is as before the params existed
    project.graph.set_param(ds, "augment_flip", True)
    project.graph.set_param(ds, "augment_rotate", 12.5)
    out = save_project(project, tmp_path / "on.nsproj")
    rec = next(n for n in json.loads(out.read_text(encoding="utf-8"))["graph"]["nodes"] if n["id"] == ds)
    assert rec["params"]["augment_flip"] is True and rec["params"]["augment_rotate"] == 12.5
    assert "augment_crop" not in rec["params"]
    again = load_project(out).graph.nodes[ds].params
    assert again["augment_flip"] is True and again["augment_rotate"] == 12.5 and again["augment_crop"] == 0


@pytest.mark.slow
def test_augmentation_raises_lenet_accuracy_on_500_mnist_images(tmp_path: Path) -> None:
    """LeNet, 500 MNIST training images, equal epochs: validation accuracy with vs without augmentation.

    One CPU thread, so every figure is reproducible (the thread count changes the rounding)."""
    accs: dict[str, list[float]] = {"plain": [], "augmented": []}
    for seed in (0, 1):
        for name, aug in (("plain", {}), ("augmented", {"augment_crop": 2, "augment_rotate": 10.0})):
            project, _ = _lenet(tmp_path, **aug)
            torch.manual_seed(seed)
            plan = build_plan(project.graph, 32)
            data = _subset(data_mod.load(plan.dataset_params), 500, 1000)
            result = fit(plan, data, _config(epochs=15, seed=seed, threads=1))
            assert result.status == "finished", result.message
            accs[name].append(result.history[-1]["val_accuracy"])
    print("val accuracy", accs)
    assert sum(accs["augmented"]) > sum(accs["plain"]), accs


def test_resumed_run_augments_its_remaining_epochs_as_the_whole_run(tmp_path: Path) -> None:
    project, _ = _lenet(tmp_path, **AUG)
    data = _subset(data_mod.load(build_plan(project.graph, 32).dataset_params), 64, 32)
    whole: list[torch.Tensor] = []
    first: list[torch.Tensor] = []
    rest: list[torch.Tensor] = []

    def run(record: list[torch.Tensor], epochs: int, folder: Path, resume: bool) -> None:
        torch.manual_seed(1)
        plan = build_plan(project.graph, 32)
        conv = next(m for m in plan.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(lambda m, a: record.append(a[0].detach().clone()) if m.training else None)
        result = fit(plan, data, _config(epochs=epochs, seed=1), checkpoint_dir=str(folder), resume=resume)
        assert result.status == "finished", result.message

    run(whole, 2, tmp_path / "a", False)
    run(first, 1, tmp_path / "b", False)
    run(rest, 2, tmp_path / "b", True)
    assert len(first) == len(rest) == 2 and len(whole) == 4
    assert all(torch.equal(u, v) for u, v in zip(whole, first + rest))


def test_fast_path_falls_back_with_the_augmentation_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netstudio.training.strategy import SingleProcess

    # every other condition of the CUDA-graph fast path met (this test has no GPU): augmentation is the reason
    monkeypatch.setattr(SingleProcess, "fast_path_blocker", lambda self, **kw: None)
    project, _ = _lenet(tmp_path, augment_flip=True)
    torch.manual_seed(0)
    plan = build_plan(project.graph, 32)
    data = _subset(data_mod.load(plan.dataset_params), 64, 32)
    events: list[dict[str, Any]] = []
    result = fit(plan, data, _config(), report=events.append)
    assert result.status == "finished", result.message
    start = next(e for e in events if e["kind"] == "start")
    assert start["fast_path"] is False and "augmentation" in start["fast_path_reason"]
    assert start["augmentation"] == "flip"


def test_cli_train_names_the_augmentation_and_exports_leave_it_out(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from netstudio.cli import main
    from netstudio.project.export import export_py
    from netstudio.project.script_export import export_script

    project, ds = _lenet(tmp_path, augment_crop=2, augment_rotate=5.0)
    project.graph.set_param(ds, "val_fraction", 0.9)  # 500 training images: one short epoch
    project.training.epochs = 1
    path = save_project(project, tmp_path / "aug.nsproj")
    capsys.readouterr()
    rc = main(["train", str(path), "--device", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "augmentation: crop ±2 px, rotate ±5°" in out + err
    plain, _ = _lenet(tmp_path)
    a = export_py(build_plan(project.graph, 2).compiled, tmp_path / "a.py", weights=False).read_text(encoding="utf-8")
    b = export_py(build_plan(plain.graph, 2).compiled, tmp_path / "b.py", weights=False).read_text(encoding="utf-8")
    assert a == b  # the model export is the same with or without augmentation
    readme = export_script(load_project(path), tmp_path / "script").readme.read_text(encoding="utf-8")
    assert "trains without augmentation" in readme and "crop ±2 px" in readme


def test_preview_shows_originals_and_their_augmentations(tmp_path: Path) -> None:
    from netstudio.training.augment import preview

    project, ds = _lenet(tmp_path, augment_crop=3, augment_erase=1.0)
    params = project.graph.nodes[ds].params
    orig, aug = preview(params, n=6)
    data = data_mod.load(params)
    assert orig.shape == aug.shape == (6, 1, 28, 28)
    # the originals are the first training images, back in pixel units
    assert torch.allclose(orig, data.train_x[:6] * data.std[0] + data.mean[0], atol=1e-5)
    assert 0.0 <= float(aug.min()) and float(aug.max()) <= 1.0 and not torch.equal(orig, aug)
    same, _ = preview(params, n=6)
    assert torch.equal(same, orig) and torch.equal(preview(params, n=6)[1], aug)  # reproducible
