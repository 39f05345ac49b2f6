"""Multi-phase training (a GAN): several optimizers, each owning the weights that feed its losses.

The sample ``gan_mnist`` (an MLP generator and discriminator on the bundled MNIST 5k) trains through
the one training job (``netstudio train``, a rank of a distributed job, the app's worker); these tests
check what the phases do to the weights, what validation says about a bad wiring, that the generator
learns (its samples' pixel statistics move toward the data's) and what the exports write.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import ROOT, SAMPLES
from netstudio.cli import main
from netstudio.compiler.build import build_plan, generator_noise, generator_of
from netstudio.compiler.phases import explain, phase_order
from netstudio.compiler.shapes import analyze
from netstudio.errors import CompileError, ExportError
from netstudio.graph.model import Graph
from netstudio.project.io import load_project
from netstudio.training import job
from netstudio.training.config import TrainConfig
from netstudio.training.fastpath import fast_path_blocker, make_step

GAN = SAMPLES / "gan_mnist.nsproj"
D_MODULES = ("d_hidden", "d_logit")
G_MODULES = ("g_hidden", "g_pixels")


@pytest.fixture(scope="module")
def project() -> Any:
    return load_project(GAN)


def _params(model: torch.nn.Module, modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m in modules for k, v in model.get_submodule(m).named_parameters()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


# ----------------------------------------------------------------------------
# phases: who owns which weights, what each phase changes
# ----------------------------------------------------------------------------


def test_the_two_optimizers_own_disjoint_parameter_sets(project: Any) -> None:
    plan = build_plan(project.graph, 64)
    assert [ph.name for ph in plan.phases] == ["opt_d", "opt_g"]  # declared order: discriminator first
    assert [ph.module_paths for ph in plan.phases] == [
        ["d_flatten", "d_hidden", "d_leaky_relu", "d_dropout", "d_logit"],
        ["g_hidden", "g_leaky_relu", "g_pixels", "g_sigmoid"]]
    model = copy.deepcopy(plan.model)
    opt = plan.make_optimizer(model)
    d_set = {id(p) for g in opt.optimizers[0].param_groups for p in g["params"]}
    g_set = {id(p) for g in opt.optimizers[1].param_groups for p in g["params"]}
    assert d_set and g_set and not d_set & g_set
    assert d_set == {id(p) for m in D_MODULES for p in model.get_submodule(m).parameters()}
    assert g_set == {id(p) for m in G_MODULES for p in model.get_submodule(m).parameters()}
    assert d_set | g_set == {id(p) for p in model.parameters()}  # every weight is trained by one of them


def test_each_parameter_set_changes_only_in_its_own_phase(project: Any) -> None:
    import netstudio.data as data_mod

    torch.manual_seed(0)
    plan = build_plan(project.graph, 64)
    data = data_mod.load(plan.dataset_params)
    model = copy.deepcopy(plan.model)
    opt = plan.make_optimizer(model)
    step = make_step(model, plan, opt)  # the step every path's strategy builds for a multi-phase plan
    seen: list[dict[str, Any]] = []

    def snap(tag: str) -> None:
        seen.append({"tag": tag, "d": _params(model, D_MODULES), "g": _params(model, G_MODULES),
                     "d_grads": [None if p.grad is None else p.grad.clone()
                                 for m in D_MODULES for p in model.get_submodule(m).parameters()],
                     "g_grads": [None if p.grad is None else p.grad.clone()
                                 for m in G_MODULES for p in model.get_submodule(m).parameters()]})

    d_opt, g_opt = opt.optimizers
    d_opt.register_step_pre_hook(lambda *_: snap("d before step"))
    d_opt.register_step_post_hook(lambda *_: snap("d phase done"))
    g_opt.register_step_pre_hook(lambda *_: snap("g before step"))
    g_opt.register_step_post_hook(lambda *_: snap("g phase done"))
    for i in range(3):
        x, y = data.train_x[i * 64:(i + 1) * 64], data.train_y[i * 64:(i + 1) * 64]
        seen.clear()
        opt.zero_grad(set_to_none=True)  # as the training loop's Stepper does before every step
        snap("start")
        loss, correct = step(x, y)
        assert correct is None and torch.isfinite(loss)
        start, d_pre, d_done, g_pre, g_done = seen
        assert [s["tag"] for s in seen] == ["start", "d before step", "d phase done", "g before step", "g phase done"]
        # phase 1 (opt_d): the discriminator moves, the generator does not
        assert _changed(start["d"], d_done["d"]) == set(start["d"])
        assert not _changed(start["g"], d_done["g"])
        # phase 2 (opt_g): the generator moves, the discriminator does not
        assert _changed(d_done["g"], g_done["g"]) == set(start["g"])
        assert not _changed(d_done["d"], g_done["d"])
        # the fakes reach the discriminator's phase detached: no gradient reaches the generator there,
        # and the generator's phase back-propagates through the discriminator without adding to its gradients
        assert all(g is None for g in d_pre["g_grads"]) and all(g is not None for g in d_pre["d_grads"])
        assert all(g is not None and g.abs().sum() > 0 for g in g_pre["g_grads"])
        assert all(torch.equal(a, b) for a, b in zip(d_pre["d_grads"], g_pre["d_grads"]))
    assert all(p.requires_grad for p in model.parameters())  # held still only during the other phases


def test_noise_is_drawn_every_step_with_the_batch_size_and_follows_the_seed(project: Any) -> None:
    plan = build_plan(project.graph, 64)
    model = copy.deepcopy(plan.model).eval()  # (the discriminator's Dropout off: only the noise is random)
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(3)
    a = model(x)
    b = model(x)
    torch.manual_seed(3)
    c = model(x)
    assert a.shape == (10, 1)  # real half + fake half of a batch of 5
    assert torch.equal(a[:5], b[:5]) and not torch.equal(a[5:], b[5:])  # new noise each step
    assert torch.equal(a, c)  # seeded


def test_overlapping_parameter_sets_are_a_validation_problem_naming_the_layer() -> None:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"}, name="data")
    trunk = g.add_node("layer.linear", {"out_features": 8}, name="trunk")
    ha = g.add_node("layer.linear", {"out_features": 3}, name="head_a")
    hb = g.add_node("layer.linear", {"out_features": 3}, name="head_b")
    la = g.add_node("loss.cross_entropy", name="loss_a")
    lb = g.add_node("loss.cross_entropy", name="loss_b")
    oa = g.add_node("optim.adam", name="opt_a")
    ob = g.add_node("optim.adam", name="opt_b")
    for e in [(d.id, "features", trunk.id, "input"), (trunk.id, "output", ha.id, "input"),
              (trunk.id, "output", hb.id, "input"), (ha.id, "output", la.id, "prediction"),
              (hb.id, "output", lb.id, "prediction"), (d.id, "target", la.id, "target"),
              (d.id, "target", lb.id, "target"), (la.id, "loss", oa.id, "loss"), (lb.id, "loss", ob.id, "loss")]:
        g.connect(*e)
    an = analyze(g, 16)
    errors = an.errors()
    assert [p.node_id for p in errors] == [ob.id]
    assert errors[0].message == ("Linear 'trunk' would be trained by two optimizers, 'opt_a' and 'opt_b': each "
                                 "optimizer must own its own layers")
    assert "opt_b" in (errors[0].hint or "") and "one optimizer" in (errors[0].hint or "")
    with pytest.raises(CompileError) as exc:
        build_plan(g, 16)
    assert exc.value.node_id == ob.id and "'trunk'" in str(exc.value)
    # disjoint heads (each optimizer wired to its own branch from the data) are fine: two phases
    g.disconnect(next(e for e in g.edges if e.src == trunk.id and e.dst == hb.id))
    g.connect(d.id, "features", hb.id, "input")
    assert analyze(g, 16).ok
    assert [(ph.name, ph.nodes) for ph in build_plan(g, 16).phases] == [("opt_a", [trunk.id, ha.id]),
                                                                       ("opt_b", [hb.id])]


def test_a_generator_loss_without_real_fake_trains_nothing(project: Any) -> None:
    g = Graph.from_dict(project.graph.to_dict())
    pair = next(n for n in g.nodes.values() if n.type_id == "merge.real_fake")
    fake = next(e for e in g.in_edges(pair.id) if e.dst_port == "fake")
    g.disconnect(fake)  # the generator no longer feeds the discriminator
    g.connect(next(n.id for n in g.nodes.values() if n.name == "data"), "features", pair.id, "fake")
    msgs = {p.node_id: p.message for p in analyze(g, 64).errors()}
    opt_g = next(n.id for n in g.nodes.values() if n.name == "opt_g")
    assert msgs == {opt_g: "Optimizer 'opt_g' trains no layer: nothing with weights feeds its losses"}


def test_the_inspector_text_explains_the_phase_order(project: Any) -> None:
    g = project.graph
    order = g.topological_order()
    ids = {n.name: n.id for n in g.nodes.values()}
    assert phase_order(g, order) == [ids["opt_d"], ids["opt_g"]]
    text = explain(g, ids["opt_g"], order)
    assert text.startswith("Multi-phase training: every batch runs 1. opt_d → 2. opt_g. This is phase 2: it "
                           "computes g_loss, back-propagates and steps only its own weights (g_hidden, "
                           "g_leaky_relu, g_pixels, g_sigmoid)")
    assert "opt_d" in explain(g, ids["opt_d"], order) and "phase 1" in explain(g, ids["opt_d"], order)
    # swapping the declared phases swaps the order
    g2 = Graph.from_dict(g.to_dict())
    g2.nodes[ids["opt_d"]].params["phase"] = 3
    assert phase_order(g2, order) == [ids["opt_g"], ids["opt_d"]]


def test_the_fast_path_and_node_statistics_fall_back_with_the_reason(project: Any) -> None:
    plan = build_plan(project.graph, 64)
    opt = plan.make_optimizer(copy.deepcopy(plan.model))
    reason = fast_path_blocker(setting="auto", device=torch.device("cuda"), resident=True, optimizer=opt,
                               has_scheduler=False, n_train=4000, batch_size=64)
    assert reason == "multi-phase training (2 optimizers: opt_d, opt_g) runs eagerly"
    events: list[dict[str, Any]] = []
    j = job.prepare(project.graph, project.training, {"epochs": 1, "device": "cpu", "stats_every": 5})
    assert job.run(j, events.append).status == "finished"
    start = events[0]
    assert start["kind"] == "start" and start["phases"] == ["opt_d", "opt_g"]
    assert "2" in start["stats_reason"] and not any(e["kind"] == "stats" for e in events)


# ----------------------------------------------------------------------------
# training through the job: CLI, GUI worker, ranks
# ----------------------------------------------------------------------------


def test_gan_mnist_trains_with_netstudio_train(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", str(GAN), "--epochs", "2", "--no-record"]) == 0
    out = capsys.readouterr().out
    assert "phases per batch: opt_d → opt_g" in out and "finished (Trained 2 epochs)" in out
    lines = [line for line in out.splitlines() if line.strip().startswith("phase losses:")]
    assert len(lines) == 2 and "opt_d" in lines[0] and "opt_g" in lines[0]
    assert "loss terms (validation split): d_loss" in out
    capsys.readouterr()
    assert main(["train", str(GAN), "--epochs", "1", "--json", "--no-record"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and set(summary["loss_terms"]) == {"d_loss", "g_loss"}


def test_phase_events_add_up_to_the_epoch_loss(project: Any) -> None:
    events: list[dict[str, Any]] = []
    j = job.prepare(project.graph, project.training, {"epochs": 2, "device": "cpu"})
    result = job.run(j, events.append)
    assert result.status == "finished"
    epochs = [e for e in events if e["kind"] == "epoch"]
    per_epoch = [e for e in events if e["kind"] == "phases" and e["scope"] == "epoch"]
    assert [e["epoch"] for e in per_epoch] == [1, 2]
    for ep, ph in zip(epochs, per_epoch):
        assert list(ph["losses"]) == ["opt_d", "opt_g"]
        assert sum(ph["losses"].values()) == pytest.approx(ep["train_loss"], rel=1e-5)
    batches = [e for e in events if e["kind"] == "phases" and e["scope"] == "batch"]
    assert batches and all(set(e["losses"]) == {"opt_d", "opt_g"} for e in batches)
    samples = [e for e in events if e["kind"] == "samples"]
    assert [e["epoch"] for e in samples] == [1, 2]
    assert samples[0]["shape"] == [1, 28, 28] and len(samples[0]["images"]) == 16
    assert isinstance(samples[0]["images"][0][0][0][0], float)  # plain numbers, no tensors
    assert samples[0]["images"] != samples[1]["images"]  # the generator moved between epochs


def _pixel_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """A FID-like distance on raw pixels: squared distance of the means + Frobenius distance of the covariances."""
    real, fake = real.reshape(len(real), -1).double(), fake.reshape(len(fake), -1).double()
    mean = float(((real.mean(0) - fake.mean(0)) ** 2).sum())
    return mean + float(torch.linalg.matrix_norm(torch.cov(real.T) - torch.cov(fake.T)))


def test_the_generators_samples_move_toward_the_data(project: Any) -> None:
    """The pixel statistics of 1000 generated digits approach the validation digits' as training goes on
    (measured on 2 loaded cores: untrained 139.8, 1 epoch 69.6, 10 epochs 18.9)."""
    j0 = job.prepare(project.graph, project.training, {"epochs": 1, "device": "cpu"})
    real = j0.data.val_x

    def distance(model: torch.nn.Module) -> float:
        gen = generator_of(model)
        assert gen is not None
        gen.eval()
        with torch.no_grad():
            return _pixel_distance(real, gen(*generator_noise(model, 1000, seed=123)))

    untrained = distance(copy.deepcopy(j0.plan.model))
    one = distance(job.run(j0).model)
    ten = distance(job.run(job.prepare(project.graph, project.training, {"epochs": 10, "device": "cpu"})).model)
    print(f"pixel mean/cov distance to the data: untrained {untrained:.1f}, 1 epoch {one:.1f}, 10 epochs {ten:.1f}")
    assert ten < one < untrained
    assert ten < 0.6 * one


@pytest.mark.slow
def test_gan_mnist_trains_with_the_cli_in_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "netstudio", "train", str(GAN), "--epochs", "1", "--no-record"],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stdout and "phase losses: opt_d" in proc.stdout


@pytest.mark.slow
def test_gan_mnist_trains_on_two_ranks(tmp_path: Path) -> None:
    from tests.test_distributed import job_env, netstudio_cmd

    proc = subprocess.run(netstudio_cmd("train", str(GAN), "--epochs", "1", "--nproc", "2", "--json",
                                        "--timeout", "120", "--save-weights", str(tmp_path / "w.pt"),
                                        "--no-record"),
                          cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    assert summary["weights_max_difference"] == 0.0  # each phase all-reduced its gradients: the ranks agree
    assert "phase losses: opt_d" in proc.stdout + proc.stderr
    from netstudio.project.export import read_weights

    _, state = read_weights(tmp_path / "w.pt")
    plan = build_plan(load_project(GAN).graph, 64)
    changed = {k.split(".")[0] for k, v in plan.model.state_dict().items() if not torch.equal(v, state[k])}
    assert changed == set(D_MODULES) | set(G_MODULES)  # both phases stepped across the ranks


# ----------------------------------------------------------------------------
# exports
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory: pytest.TempPathFactory, project: Any) -> tuple[Path, torch.nn.Module]:
    from netstudio.project.export import export_weights

    j = job.prepare(project.graph, project.training, {"epochs": 1, "device": "cpu"})
    model = job.run(j).model
    path = tmp_path_factory.mktemp("gan") / "gan_weights.pt"
    export_weights(model, project, path)
    return path, model


def test_pt_export_of_a_gan_is_its_generator(trained_weights: Any, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    weights, model = trained_weights
    out = tmp_path / "generator.pt"
    capsys.readouterr()
    assert main(["export", str(GAN), "--weights", str(weights), "--format", "pt", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the export is the GAN's generator: it takes noise (batch × 64, normal)" in text
    gen = torch.load(out, weights_only=False)
    assert isinstance(gen, torch.fx.GraphModule) and not gen.training
    assert gen.code.strip().startswith("def forward(self, noise):")
    z = torch.randn(7, 64)
    reference = generator_of(model)
    assert reference is not None
    reference.eval()
    with torch.no_grad():
        assert torch.equal(gen(z), reference(z))
    assert gen(z).shape == (7, 1, 28, 28)
    meta = json.loads(gen.netstudio_metadata)
    assert meta["model"] == "generator" and meta["inputs"] == [{"name": "noise", "shape": [64], "dtype": "float32",
                                                                "distribution": "normal"}]


@pytest.mark.parametrize("fmt,what", [("pt2", "torch.export (.pt2)"), ("py", "Python source (.py)")])
def test_other_formats_refuse_a_gan_with_a_typed_message(trained_weights: Any, tmp_path: Path, fmt: str,
                                                         what: str) -> None:
    from netstudio.project import export as ex

    _, model = trained_weights
    with pytest.raises(ExportError) as exc:
        ex.export(fmt, model, tmp_path / f"m.{fmt}")
    assert str(exc.value).startswith(f"A GAN project cannot be exported as {what}: NetStudio exports its generator")
    assert "--format pt" in (exc.value.hint or "")
    assert not list(tmp_path.iterdir())


def test_script_export_refuses_several_optimizers(project: Any, tmp_path: Path) -> None:
    from netstudio.project.script_export import export_script

    with pytest.raises(ExportError) as exc:
        export_script(project, tmp_path / "out")
    assert "trains in 2 phases (opt_d, opt_g)" in str(exc.value)


def test_a_noise_node_is_no_second_dataset_whatever_the_order(project: Any) -> None:
    from netstudio.compiler.memory import estimate

    assert estimate(project.graph, analyze(project.graph, 64)).input_bytes == 64 * 784 * 4  # Noise after data
    d = project.graph.to_dict()
    d["nodes"] = sorted(d["nodes"], key=lambda n: n["type"] != "data.noise")  # the Noise node first
    g = Graph.from_dict(d)
    assert next(iter(g.nodes.values())).type_id == "data.noise"
    an = analyze(g, 64)
    assert an.ok, an.errors()
    assert estimate(g, an).input_bytes == 64 * 784 * 4  # one batch of the dataset's features, not the noise
    plan = build_plan(g, 64)
    assert plan.compiled.dataset_node == next(n.id for n in g.nodes.values() if n.type_id == "data.dataset")


def test_checkpoints_hold_every_phase_and_resume(project: Any, tmp_path: Path) -> None:
    j = job.prepare(project.graph, project.training, {"epochs": 1, "device": "cpu"})
    assert job.run(j, checkpoint_dir=str(tmp_path)).status == "finished"
    from netstudio.training.checkpoints import checkpoint_path

    state = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert state["optimizer"]["names"] == ["opt_d", "opt_g"] and len(state["optimizer"]["phases"]) == 2
    events: list[dict[str, Any]] = []
    j = job.prepare(project.graph, project.training, {"epochs": 2, "device": "cpu"})
    result = job.run(j, events.append, checkpoint_dir=str(tmp_path), resume=True)
    assert result.status == "finished" and [e["epoch"] for e in result.history] == [1, 2]
    assert [e["epoch"] for e in events if e["kind"] == "resumed_from"] == [1]


def test_the_lr_finder_refuses_several_optimizers(project: Any) -> None:
    import netstudio.data as data_mod
    from netstudio.errors import TrainingError
    from netstudio.training.lrfind import lr_find

    plan = build_plan(project.graph, 64)
    with pytest.raises(TrainingError) as exc:
        lr_find(plan, data_mod.load(plan.dataset_params), project.training)
    assert "trains in 2 phases (opt_d, opt_g)" in str(exc.value)


def test_single_optimizer_projects_have_no_phases_and_keep_their_step() -> None:
    from tests.test_job import iris_graph

    plan = build_plan(iris_graph(), 16)
    assert plan.phases == [] and not plan.multi_phase
    opt = plan.make_optimizer(copy.deepcopy(plan.model))
    assert isinstance(opt, torch.optim.SGD)
    assert generator_of(plan.model) is None
    cfg = TrainConfig()
    assert "phase" not in json.dumps(cfg.to_dict())


# ----------------------------------------------------------------------------
# a scheduler per optimizer
# ----------------------------------------------------------------------------


def _with_scheduler(project: Any, optimizer: str, **params: Any) -> tuple[Graph, str]:
    """The sample with a StepLR wired to the optimizer named ``optimizer``."""
    g = Graph.from_dict(project.graph.to_dict())
    opt = next(n.id for n in g.nodes.values() if n.name == optimizer)
    sched = g.add_node("sched.step", params, name=f"sched_{optimizer}")
    g.connect(opt, "optimizer", sched.id, "optimizer")
    return g, sched.id


def test_a_scheduler_drives_only_its_own_optimizers_lr_and_resumes(project: Any, tmp_path: Path) -> None:
    g, _ = _with_scheduler(project, "opt_g", step_size=1, gamma=0.5)
    assert analyze(g, 64).ok
    plan = build_plan(g, 64)
    assert [ph.scheduler_type for ph in plan.phases] == [None, "sched.step"]
    lr_d, lr_g = (float(ph.optimizer_params["lr"]) for ph in plan.phases)
    events: list[dict[str, Any]] = []
    j = job.prepare(g, project.training, {"epochs": 2, "device": "cpu"})
    result = job.run(j, events.append, checkpoint_dir=str(tmp_path))
    assert result.status == "finished"
    lrs = [e["lrs"] for e in events if e["kind"] == "phases" and e["scope"] == "epoch"]
    # the lr each epoch trained with: StepLR(step_size=1, gamma=0.5) halves the generator's after every epoch
    assert lrs == [{"opt_d": lr_d, "opt_g": lr_g}, {"opt_d": lr_d, "opt_g": pytest.approx(lr_g * 0.5)}]
    assert [e["lr"] for e in events if e["kind"] == "epoch"] == [lr_d, lr_d]  # the first phase's, as before
    from netstudio.training.checkpoints import checkpoint_path

    state = torch.load(checkpoint_path(tmp_path), weights_only=True)
    saved = state["scheduler"]["schedulers"]
    assert list(saved) == ["opt_g"] and saved["opt_g"]["last_epoch"] == 2
    assert state["optimizer"]["phases"][1]["param_groups"][0]["lr"] == pytest.approx(lr_g * 0.25)
    assert state["optimizer"]["phases"][0]["param_groups"][0]["lr"] == lr_d
    # resuming continues the schedule: epochs 3 and 4 train with a quarter and an eighth of the lr
    events.clear()
    j = job.prepare(g, project.training, {"epochs": 4, "device": "cpu"})
    result = job.run(j, events.append, checkpoint_dir=str(tmp_path), resume=True)
    assert result.status == "finished" and [e["epoch"] for e in events if e["kind"] == "resumed_from"] == [2]
    lrs = [e["lrs"] for e in events if e["kind"] == "phases" and e["scope"] == "epoch"]
    assert lrs == [{"opt_d": lr_d, "opt_g": pytest.approx(lr_g * 0.25)},
                   {"opt_d": lr_d, "opt_g": pytest.approx(lr_g * 0.125)}]


def test_a_scheduler_with_warmup_on_a_multi_phase_run(project: Any) -> None:
    """The warm-up scales every phase's lr during the first batches; the scheduler never sees it."""
    from netstudio.training.controls import Warmup

    g, _ = _with_scheduler(project, "opt_d", step_size=1, gamma=0.1)
    plan = build_plan(g, 64)
    lr_d, lr_g = (float(ph.optimizer_params["lr"]) for ph in plan.phases)
    opt = plan.make_optimizer(copy.deepcopy(plan.model))
    made = plan.make_scheduler(opt, 3, 4)
    assert made is not None
    sched, every, needs_metric = made
    assert every == "phased" and not needs_metric and sched.batch is None
    d_opt, g_opt = opt.optimizers
    warm = Warmup(opt, 4)
    with warm.applied(0):
        assert (d_opt.param_groups[0]["lr"], g_opt.param_groups[0]["lr"]) == (lr_d / 4, lr_g / 4)
        opt.step()
    assert (d_opt.param_groups[0]["lr"], g_opt.param_groups[0]["lr"]) == (lr_d, lr_g)
    sched.step()  # after the epoch: only the discriminator's lr follows its StepLR
    assert d_opt.param_groups[0]["lr"] == pytest.approx(lr_d * 0.1) and g_opt.param_groups[0]["lr"] == lr_g
    with warm.applied(1):
        assert d_opt.param_groups[0]["lr"] == pytest.approx(lr_d * 0.1 / 2)
    # trained through the job with a warm-up epoch: each epoch's lrs as the schedule says
    events: list[dict[str, Any]] = []
    j = job.prepare(g, project.training, {"epochs": 2, "device": "cpu", "warmup_epochs": 1})
    assert job.run(j, events.append).status == "finished"
    lrs = [e["lrs"] for e in events if e["kind"] == "phases" and e["scope"] == "epoch"]
    assert lrs == [{"opt_d": lr_d, "opt_g": lr_g}, {"opt_d": pytest.approx(lr_d * 0.1), "opt_g": lr_g}]


def test_a_per_batch_scheduler_steps_its_phase_every_batch(project: Any, tmp_path: Path) -> None:
    g = Graph.from_dict(project.graph.to_dict())
    opt_d = next(n.id for n in g.nodes.values() if n.name == "opt_d")
    sched = g.add_node("sched.onecycle", {"max_lr": 0.001}, name="cycle")
    g.connect(opt_d, "optimizer", sched.id, "optimizer")
    lr_g = float(build_plan(g, 64).phases[1].optimizer_params["lr"])
    events: list[dict[str, Any]] = []
    j = job.prepare(g, project.training, {"epochs": 2, "device": "cpu"})
    assert job.run(j, events.append, checkpoint_dir=str(tmp_path)).status == "finished"
    from netstudio.training.checkpoints import checkpoint_path

    state = torch.load(checkpoint_path(tmp_path), weights_only=True)
    steps = -(-len(j.data.train_x) // 64)
    assert state["scheduler"]["schedulers"]["opt_d"]["last_epoch"] == 2 * steps
    # the discriminator's lr after each epoch is torch's OneCycleLR after that many batches
    probe = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.5, 0.999))
    ref = torch.optim.lr_scheduler.OneCycleLR(probe, max_lr=0.001, epochs=2, steps_per_epoch=steps)
    expected = []
    for _ in range(2):
        for _ in range(steps):
            probe.step()
            ref.step()
        expected.append(probe.param_groups[0]["lr"])
    per_epoch = [e["lrs"] for e in events if e["kind"] == "phases" and e["scope"] == "epoch"]
    assert [lr["opt_d"] for lr in per_epoch] == pytest.approx(expected, rel=1e-9)
    assert expected[1] < 0.001 / 25 < expected[0]  # annealed below its start (max_lr / div_factor) by the end
    assert {lr["opt_g"] for e in events if e["kind"] == "phases" for lr in [e["lrs"]]} == {lr_g}  # never moves


def test_two_schedulers_on_one_optimizer_are_a_validation_problem(project: Any) -> None:
    g, first = _with_scheduler(project, "opt_g", step_size=2, gamma=0.5)
    opt_g = next(n.id for n in g.nodes.values() if n.name == "opt_g")
    second = g.add_node("sched.exponential", {"gamma": 0.9}, name="decay")
    g.connect(opt_g, "optimizer", second.id, "optimizer")
    errors = analyze(g, 64).errors()
    assert [p.node_id for p in errors] == [second.id]
    assert errors[0].message == ("Optimizer 'opt_g' has two schedulers, 'sched_opt_g' and 'decay': an optimizer's "
                                 "learning rate follows one schedule")
    assert "delete 'decay'" in (errors[0].hint or "")
    with pytest.raises(CompileError) as exc:
        build_plan(g, 64)
    assert exc.value.node_id == second.id
    # one scheduler per optimizer is fine
    opt_d = next(n.id for n in g.nodes.values() if n.name == "opt_d")
    g.disconnect(next(e for e in g.edges if e.dst == second.id))
    g.connect(opt_d, "optimizer", second.id, "optimizer")
    assert analyze(g, 64).ok
    plan = build_plan(g, 64)
    assert [(ph.name, ph.scheduler_node) for ph in plan.phases] == [("opt_d", second.id), ("opt_g", first)]
    # a scheduler tied to no optimizer: the missing input, on the scheduler
    g.disconnect(next(e for e in g.edges if e.dst == second.id))
    errors = analyze(g, 64).errors()
    assert [p.node_id for p in errors] == [second.id]
    assert errors[0].message == "ExponentialLR 'decay' has no input connected to 'optimizer'"


# ----------------------------------------------------------------------------
# two ranks: BatchNorm buffers follow rank 0, as under DDP
# ----------------------------------------------------------------------------


def tiny_gan_with_batchnorm() -> Graph:
    """Iris as the real samples (no validation split), a linear generator, a discriminator with a BatchNorm1d."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris", "val_fraction": 0.0}, name="data")
    z = g.add_node("data.noise", {"size": 3}, name="noise")
    gen = g.add_node("layer.linear", {"out_features": 4}, name="g_out")
    rf = g.add_node("merge.real_fake", name="real_fake")
    hid = g.add_node("layer.linear", {"out_features": 8}, name="d_hidden")
    bn = g.add_node("layer.batchnorm1d", name="d_norm")
    act = g.add_node("activation.leaky_relu", name="d_act")
    logit = g.add_node("layer.linear", {"out_features": 1}, name="d_logit")
    dl = g.add_node("loss.gan", {"role": "discriminator"}, name="d_loss")
    gl = g.add_node("loss.gan", {"role": "generator"}, name="g_loss")
    od = g.add_node("optim.adam", {"lr": 0.01}, name="opt_d")
    og = g.add_node("optim.adam", {"lr": 0.01}, name="opt_g")
    for e in [(z.id, "noise", gen.id, "input"), (d.id, "features", rf.id, "real"), (gen.id, "output", rf.id, "fake"),
              (rf.id, "output", hid.id, "input"), (hid.id, "output", bn.id, "input"), (bn.id, "output", act.id, "input"),
              (act.id, "output", logit.id, "input"), (logit.id, "output", dl.id, "prediction"),
              (logit.id, "output", gl.id, "prediction"), (dl.id, "loss", od.id, "loss"), (gl.id, "loss", og.id, "loss")]:
        g.connect(*e)
    return g


_RANK_SCRIPT = """
import sys, torch
from netstudio.training import job
from netstudio.training.config import TrainConfig
from netstudio.training.distributed import init_distributed, shutdown
from tests.test_gan import tiny_gan_with_batchnorm

ctx = init_distributed("cpu", 60)
j = job.prepare(tiny_gan_with_batchnorm(), TrainConfig(epochs=2, batch_size=16, seed=3), {}, dist=ctx,
                memory_check=False)
result = job.run(j)
assert result.status == "finished", result.message
torch.save(result.model.state_dict(), sys.argv[1] + f"/rank{ctx.rank}.pt")
shutdown()
"""


def test_a_tiny_gan_with_batchnorm_trains_on_one_process() -> None:
    g = tiny_gan_with_batchnorm()
    assert analyze(g, 16).ok, analyze(g, 16).errors()
    plan = build_plan(g, 16)
    assert [ph.name for ph in plan.phases] == ["opt_d", "opt_g"]
    result = job.run(job.prepare(g, TrainConfig(epochs=1, batch_size=16, seed=3), {}))
    assert result.status == "finished"
    assert int(result.model.state_dict()["d_norm.num_batches_tracked"]) > 0


@pytest.mark.slow
def test_two_ranks_hold_identical_buffers_after_a_multi_phase_run(tmp_path: Path) -> None:
    """No DDP wrapper in a multi-phase run: the phases broadcast rank 0's buffers as DDP would, so both ranks
    end with the same BatchNorm running statistics (and weights)."""
    import os

    from netstudio.training.distributed import free_port
    from tests.test_distributed import job_env

    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    env = job_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert list(a) == list(b) and {"d_norm.running_mean", "d_norm.running_var", "d_norm.num_batches_tracked"} <= set(a)
    assert int(a["d_norm.num_batches_tracked"]) > 0 and a["d_norm.running_var"].ne(1.0).any()  # it was trained
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def test_two_schedulers_on_the_only_optimizer_are_a_validation_problem_too() -> None:
    # before, a one-optimizer graph silently trained with the last scheduler and ignored the other
    from netstudio.project.io import load_project
    from netstudio.project.samples import find_sample

    path = find_sample("mnist_mlp_sgd")
    assert path is not None
    g = load_project(path).graph
    opt = g.find("sgd").id
    a = g.add_node("sched.step", {"step_size": 2, "gamma": 0.5}, name="halve")
    g.connect(opt, "optimizer", a.id, "optimizer")
    assert analyze(g, 64).errors() == []
    b = g.add_node("sched.exponential", {"gamma": 0.9}, name="decay")
    g.connect(opt, "optimizer", b.id, "optimizer")
    errors = analyze(g, 64).errors()
    assert [p.node_id for p in errors] == [b.id]
    assert "has two schedulers, 'halve' and 'decay'" in errors[0].message
