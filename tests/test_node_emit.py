"""Node types write their own code for the standalone training program (issue 13).

The script export asks each optimizer, scheduler and loss node type for its code
(``emit_ctor`` / ``emit_target``) instead of knowing classes by name, so a new node
type is one class: these tests declare new ones here, outside NetStudio, and the
exported program trains with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytest
import torch

from netstudio.compiler.build import build_plan
from netstudio.errors import ExportError
from netstudio.nodes.base import (CATALOG, Catalog, Category, LossType, OptimizerType, Param, SchedulerType,
                                  TensorInfo)
from netstudio.project import script_export as se
from netstudio.project.io import Project
from netstudio.training.config import TrainConfig
from test_script_export import EPOCH_LINE, _hyper, import_script, mlp


class Adamax(OptimizerType):
    """An optimizer NetStudio does not ship: only ``make``; the inherited emit_ctor writes it."""

    type_id = "test.adamax"
    title = "Adamax"
    params = (Param("lr", "float", 0.02, min=1e-8, max=1.0), Param("beta2", "float", 0.99, min=0.0, max=0.99999))

    def infer(self, ctx: Any) -> dict[str, Any]:
        return {"optimizer": TensorInfo((), "optimizer")}

    def make(self, parameters: Any, params: Mapping[str, Any]) -> Any:
        return torch.optim.Adamax(parameters, lr=params["lr"], betas=(0.9, params["beta2"]))


class PolyLR(SchedulerType):
    """A scheduler NetStudio does not ship, stepped every batch: ``make`` and its own ``emit_ctor``."""

    type_id = "test.poly"
    title = "PolyLR"
    step_every = "batch"
    params = (Param("power", "float", 2.0, min=0.1, max=10.0),)

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs * steps_per_epoch,
                                                     power=params["power"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        return (f"torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs * steps_per_epoch, "
                f"power={params['power']!r})")


class Unwritable(SchedulerType):
    """A scheduler that cannot say how to write itself."""

    type_id = "test.unwritable"
    title = "Unwritable"

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        return torch.optim.lr_scheduler.ConstantLR(optimizer)


class HalfTargetMSE(LossType):
    """MSE against half the target: the loss adapts its target and writes that adaptation itself."""

    type_id = "test.half_mse"
    title = "HalfTargetMSE"
    params = (Param("weight", "float", 1.0, min=0.0, max=10.0),)

    def infer(self, ctx: Any) -> dict[str, Any]:
        return {"loss": TensorInfo((), "loss")}

    def make(self, params: Mapping[str, Any]) -> Any:
        return torch.nn.MSELoss()

    def adapt_target(self, pred: Any, target: Any) -> Any:
        return target.to(pred.dtype).reshape(pred.shape) * 0.5

    def emit_target(self, target: str, pred: str) -> str:
        return f"{target}.to({pred}.dtype).reshape({pred}.shape) * 0.5"


class SilentHalfTargetMSE(HalfTargetMSE):
    """The same adaptation without its code: the export must refuse it, not write a wrong loss."""

    type_id = "test.silent_half_mse"
    title = "SilentHalfTargetMSE"
    emit_target = LossType.emit_target  # type: ignore[assignment]


def _catalog() -> Catalog:
    """NetStudio's node types plus this file's, without touching the global catalog."""
    cat = Catalog()
    for t in CATALOG.types():
        cat.register(t)
    for t in (Adamax, PolyLR, Unwritable, HalfTargetMSE, SilentHalfTargetMSE):
        cat.register(t)
    return cat


def test_new_optimizer_and_scheduler_classes_export_into_a_program_that_trains(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    g = mlp({"source": "iris"}, out=3, optimizer="test.adamax", scheduler="test.poly", sched_params={"power": 1.5},
            catalog=_catalog())
    cfg = TrainConfig(epochs=6, batch_size=16, seed=2)
    out = se.export_script(Project(g, cfg, name="custom nodes"), tmp_path / "job")
    text = out.script.read_text()
    assert "torch.optim.Adamax(model.parameters(), lr=0.02, betas=(0.9, 0.99))" in text
    assert "PolynomialLR(optimizer, total_iters=epochs * steps_per_epoch, power=1.5)" in text
    mod = import_script(tmp_path / "job")
    assert mod.SCHEDULER_STEP == "batch"
    # the same optimizer and learning-rate sequence as NetStudio's own plan
    plan = build_plan(g, cfg.batch_size)
    model = mod.Model()
    ref_opt, opt = plan.make_optimizer(plan.model), mod.make_optimizer(model)
    assert type(opt) is torch.optim.Adamax and _hyper(opt) == _hyper(ref_opt)
    made = plan.make_scheduler(ref_opt, 3, 4)
    assert made is not None
    ref_sched, sched = made[0], mod.make_scheduler(opt, 3, 4)
    lrs, ref_lrs = [], []
    for _ in range(12):
        opt.step()
        ref_opt.step()
        sched.step()
        ref_sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
    assert lrs == pytest.approx(ref_lrs, rel=1e-12) and len(set(lrs)) > 5
    # and the program trains with them
    mod.main(["--device", "cpu", "--threads", "1", "--checkpoint-dir", str(tmp_path / "ck"),
              "--out", str(tmp_path / "m.pt")])
    rows = EPOCH_LINE.findall(capsys.readouterr().out)
    assert len(rows) == 6
    assert float(rows[-1][3]) > 0.8  # training accuracy: it learned iris
    assert (tmp_path / "m.pt").exists()


def test_a_loss_writes_its_own_target_adaptation(tmp_path: Path) -> None:
    g = mlp({"source": "regression", "n_features": 3}, out=1, loss="test.half_mse", catalog=_catalog())
    se.export_script(Project(g, TrainConfig(epochs=1, batch_size=8), name="half"), tmp_path / "job")
    mod = import_script(tmp_path / "job")
    plan = build_plan(g, 8)
    model = mod.Model()
    model.load_state_dict(plan.model.state_dict())
    x, y, _, _ = mod.load_data()
    with torch.no_grad():
        outs = model(x[:8])
        got = sum(v for v, _ in mod.loss_terms(outs, x[:8], y[:8]))
        assert torch.allclose(got, plan.loss(outs, x[:8], y[:8]), atol=1e-6)
        # half the target is not the target: the adaptation really is in the generated loss
        assert not torch.allclose(got, torch.nn.functional.mse_loss(outs, y[:8].reshape(outs.shape)))


def test_node_types_that_cannot_write_their_code_are_refused_by_node(tmp_path: Path) -> None:
    g = mlp({"source": "iris"}, out=3, scheduler="test.unwritable", catalog=_catalog())
    sched_id = next(n.id for n in g.nodes.values() if n.type_id == "test.unwritable")
    with pytest.raises(ExportError, match="Unwritable cannot be written into a standalone script") as e:
        se.export_script(Project(g, TrainConfig(), name="x"), tmp_path / "a")
    assert e.value.node_id == sched_id
    g = mlp({"source": "regression", "n_features": 3}, out=1, loss="test.silent_half_mse", catalog=_catalog())
    loss_id = next(n.id for n in g.nodes.values() if n.type_id == "test.silent_half_mse")
    with pytest.raises(ExportError, match="adapts its target in a way NetStudio cannot write") as e:
        se.export_script(Project(g, TrainConfig(), name="x"), tmp_path / "b")
    assert e.value.node_id == loss_id
    assert not (tmp_path / "b" / se.SCRIPT_FILE).exists()


@pytest.mark.parametrize("opt_id", ["optim.sgd", "optim.adagrad", "optim.adam"])
def test_every_scheduler_and_optimizer_emits_code_equal_to_make(opt_id: str) -> None:
    """Each shipped node's emitted code builds the object its ``make`` builds (settings and lr sequence)."""
    for sched_cls in CATALOG.by_category().get(SchedulerType.category, []):
        nt = CATALOG.get(sched_cls.type_id)
        params = sched_cls.default_params()
        opt_nt = CATALOG.get(opt_id)
        opt_params = opt_nt.default_params()
        model_a, model_b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        ref_opt = opt_nt.make(model_a.parameters(), opt_params)  # type: ignore[attr-defined]
        opt = eval(opt_nt.emit_ctor(opt_params), {"torch": torch, "model": model_b})  # type: ignore[attr-defined]
        assert type(opt) is type(ref_opt) and _hyper(opt) == _hyper(ref_opt)
        ref = nt.make(ref_opt, params, epochs=7, steps_per_epoch=3)  # type: ignore[attr-defined]
        code = nt.emit_ctor(params, ref_opt)  # type: ignore[attr-defined]
        sched = eval(code, {"torch": torch, "optimizer": opt, "epochs": 7, "steps_per_epoch": 3})
        assert type(sched) is type(ref), sched_cls.type_id
        for _ in range(15):
            for o in (opt, ref_opt):
                o.step()
            for s in (sched, ref):
                s.step(1.0) if nt.needs_metric else s.step()  # type: ignore[attr-defined]
            assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
            assert opt.param_groups[0].get("momentum") == ref_opt.param_groups[0].get("momentum")


def test_script_export_does_not_know_optimizers_schedulers_or_losses_by_name() -> None:
    """No class name of an optimizer, scheduler or loss (nor ``__qualname__``) is an identifier or a string
    compared with in script_export.py: it asks the node types."""
    import io
    import tokenize

    by_cat = CATALOG.by_category()
    names = {t.__name__ for cat in (Category.OPTIMIZER, Category.SCHEDULER, Category.LOSS) for t in by_cat[cat]}
    names |= {"LinearLR", "ReduceLROnPlateau", "_ElementwiseLoss", "__qualname__"}
    assert {"StepLR", "OneCycleLR", "SGD", "KLDiv", "MSE"} <= names
    source = Path(se.__file__).read_text(encoding="utf-8")
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in names:
            found.append(tok.string)
        elif tok.type == tokenize.STRING:
            text = tok.string.strip("rbfRBF").strip("\"'")
            if text in names or text.split(".")[0] in names and "." in text:
                found.append(text)
    assert found == []
