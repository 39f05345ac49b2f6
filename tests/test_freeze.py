"""Transfer learning: the per-node / per-block ``trainable`` flag, its command, file format and training."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn

from netstudio.compiler.build import build_plan
from netstudio.errors import CompileError, GraphError
from netstudio.graph.commands import AddNode, Connect, MakeBlock, RemoveNodes, SetTrainable
from netstudio.graph.model import EventKind, Graph
from netstudio.project.importer import import_module, load_weights_onto
from netstudio.project.io import Project
from netstudio.training import TrainConfig, fit
from netstudio.training.job import prepare, run


def _cnn_graph() -> Graph:
    """digits (1×8×8) -> conv -> batchnorm -> relu -> flatten -> linear -> cross entropy, Adam."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "digits"}, name="data")
    c = g.add_node("layer.conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}, name="conv")
    b = g.add_node("layer.batchnorm2d", {}, name="bn")
    r = g.add_node("activation.relu", {}, name="relu")
    f = g.add_node("layer.flatten", {}, name="flat")
    lin = g.add_node("layer.linear", {"out_features": 10}, name="head")
    loss = g.add_node("loss.cross_entropy", {}, name="loss")
    opt = g.add_node("optim.adam", {"lr": 0.01}, name="opt")
    for a, ap, z, zp in [(d, "features", c, "input"), (c, "output", b, "input"), (b, "output", r, "input"),
                         (r, "output", f, "input"), (f, "output", lin, "input"), (lin, "output", loss, "prediction"),
                         (d, "target", loss, "target"), (loss, "loss", opt, "loss")]:
        g.connect(a.id, ap, z.id, zp)
    return g


def _state(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainable_defaults_true_and_is_written_only_when_false() -> None:
    g = _cnn_graph()
    before = Project(graph=g.clone()).dumps()
    assert all(n.trainable for n in g.nodes.values()) and '"trainable"' not in before
    conv = g.find("conv")
    SetTrainable([conv.id], False).redo(g)
    text = Project(graph=g).dumps()
    assert text.count('"trainable": false') == 1
    again = Project.loads(text).graph
    assert not again.find("conv").trainable and again.find("bn").trainable
    assert Project(graph=again).dumps() == text
    SetTrainable([conv.id], True).redo(again)
    assert Project(graph=again).dumps() == before  # unfrozen: byte-identical to a file that never had it


def test_a_trainable_value_that_is_not_a_bool_is_refused_with_the_node_named() -> None:
    rec = _cnn_graph().to_dict()
    rec["nodes"][1]["trainable"] = "no"
    with pytest.raises(GraphError, match=r"'conv'.*trainable.*true or false") as err:
        Graph.from_dict(rec)
    assert err.value.node_id == rec["nodes"][1]["id"]


def test_set_trainable_on_a_selection_is_one_step_that_undoes_to_the_old_flags() -> None:
    g = _cnn_graph()
    conv, bn, head = g.find("conv"), g.find("bn"), g.find("head")
    g.set_trainable(bn.id, False)
    events: list[Any] = []
    g.subscribe(events.append)
    cmd = SetTrainable([conv.id, bn.id, head.id], False)
    assert cmd.text == "Freeze"
    cmd.redo(g)
    assert [n.trainable for n in (conv, bn, head)] == [False, False, False]
    # bn was frozen already: no event for it
    assert [(e.kind, e.node_id) for e in events] == [(EventKind.TRAINABLE_CHANGED, conv.id),
                                                    (EventKind.TRAINABLE_CHANGED, head.id)]
    cmd.undo(g)
    assert [n.trainable for n in (conv, bn, head)] == [True, False, True]
    cmd.redo(g)
    assert not conv.trainable and not head.trainable
    assert SetTrainable([conv.id], True).text == "Unfreeze"


def test_a_copied_node_keeps_its_flag() -> None:
    g = _cnn_graph()
    g.set_trainable(g.find("conv").id, False)
    assert not g.clone().find("conv").trainable and not g.find("conv").copy().trainable


def test_frozen_nodes_are_left_out_of_the_optimizer_and_lose_requires_grad() -> None:
    g = _cnn_graph()
    g.set_trainable(g.find("conv").id, False)
    plan = build_plan(g)
    assert plan.compiled.frozen == ["conv"]
    model = plan.model
    opt = plan.make_optimizer(model)
    in_opt = {id(p) for grp in opt.param_groups for p in grp["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in in_opt}
    assert names == {"bn.weight", "bn.bias", "head.weight", "head.bias"}
    assert not model.conv.weight.requires_grad and model.head.weight.requires_grad


def test_freezing_everything_with_weights_is_a_clear_error() -> None:
    g = _cnn_graph()
    SetTrainable([g.find(n).id for n in ("conv", "bn", "head")], False).redo(g)
    plan = build_plan(g)
    with pytest.raises(CompileError, match="nothing to train") as err:
        plan.make_optimizer(plan.model)
    assert err.value.node_id == g.find("opt").id


def test_frozen_batchnorm_stays_in_eval_mode_while_the_rest_trains() -> None:
    g = _cnn_graph()
    g.set_trainable(g.find("bn").id, False)
    plan = build_plan(g)
    model = plan.train_mode(plan.model)
    assert model.training and model.head.training and not model.bn.training


def test_training_leaves_frozen_weights_and_running_stats_bit_identical(one_thread: Any) -> None:
    g = _cnn_graph()
    SetTrainable([g.find("conv").id, g.find("bn").id], False).redo(g)
    job = prepare(g, TrainConfig(epochs=3, batch_size=32, device="cpu", seed=1))
    before = _state(job.plan.model, "conv.") | _state(job.plan.model, "bn.")
    head = _state(job.plan.model, "head.")
    res = run(job)
    assert res.status == "finished", res.message
    assert res.model is not None
    after = _state(res.model, "conv.") | _state(res.model, "bn.")
    assert "bn.running_mean" in after and _same(before, after)
    assert not _same(head, _state(res.model, "head."))
    assert res.metrics["val_accuracy"] > 0.5


def test_a_frozen_block_freezes_every_layer_inside_it(one_thread: Any) -> None:
    g = _cnn_graph()
    MakeBlock([g.find("conv").id, g.find("bn").id], name="backbone").redo(g)
    block = g.find("backbone")
    SetTrainable([block.id], False).redo(g)
    plan = build_plan(g)
    assert plan.compiled.frozen == ["backbone"]
    before = _state(plan.model, "backbone.")
    assert {"backbone.conv.weight", "backbone.bn.running_var"} <= set(before)
    res = fit(plan, _digits(), TrainConfig(epochs=2, batch_size=32, device="cpu", seed=1))
    assert res.status == "finished", res.message
    assert res.model is not None and _same(before, _state(res.model, "backbone."))
    # a frozen node inside an unfrozen block is found by its dotted path
    g2 = _cnn_graph()
    MakeBlock([g2.find("conv").id, g2.find("bn").id], name="backbone").redo(g2)
    inner = g2.find("backbone").inner
    assert inner is not None
    inner.set_trainable(inner.find("bn").id, False)
    assert build_plan(g2).compiled.frozen == ["backbone.bn"]


def _digits() -> Any:
    import netstudio.data as data_mod

    return data_mod.load({"source": "digits"})


class _TinyCNN(nn.Module):
    """A small "pretrained" CNN with a 5-class head, as a user would import it."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(4), nn.Linear(256, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _cli_trains_from_the_weights_beside_the_project(graph: Any, state: dict[str, Any], tmp: Any) -> None:
    """`netstudio train` on the saved project starts from its weights file (and says so); --fresh-weights not."""
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    from netstudio.cli import main
    from netstudio.project.io import Project, save_project

    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / "tiny.pt")
        project = Project(graph, TrainConfig(epochs=1, batch_size=64, device="cpu", seed=0), name="tiny")
        project.weights = "tiny.pt"
        path = save_project(project, Path(d) / "tiny.nsproj")
        for extra, expect in (([], True), (["--fresh-weights"], False)):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(["train", str(path), "--quiet", *extra]) == 0
            assert ("Starting from tiny.pt" in out.getvalue()) is expect, out.getvalue()
            if expect:
                assert "unexpected (ignored): fc.weight, fc.bias" in out.getvalue()


def test_fine_tuning_an_imported_cnn_with_a_frozen_backbone_and_a_new_head(one_thread: Any) -> None:
    torch.manual_seed(5)
    net = _TinyCNN()
    with torch.no_grad():  # "pretrained" running statistics, not the identity ones
        for bn in (net.b1, net.b2):
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    imported = import_module(net.eval(), torch.randn(2, 1, 28, 28), name="tiny")
    g = imported.project.graph
    inp, loss, fc, flat = g.find("input"), g.find("loss"), g.find("fc"), g.find("flatten")
    first = next(e.dst for e in g.out_edges(inp.id) if e.src_port == "features")
    # the user's edits, each an undoable command: a Dataset for the Input node, a 10-class head for fc
    data = AddNode("data.dataset", inp.pos, {"source": "mnist_5k"}, name="mnist")
    data.redo(g)
    assert data.node_id is not None
    RemoveNodes([inp.id]).redo(g)
    Connect(data.node_id, "features", first, "input").redo(g)
    Connect(data.node_id, "target", loss.id, "target").redo(g)
    head = AddNode("layer.linear", fc.pos, {"out_features": 10}, name="head")
    head.redo(g)
    assert head.node_id is not None
    RemoveNodes([fc.id]).redo(g)
    Connect(flat.id, "output", head.node_id, "input").redo(g)
    Connect(head.node_id, "output", loss.id, "prediction").redo(g)
    SetTrainable([g.find(n).id for n in ("c1", "b1", "c2", "b2")], False).redo(g)
    g.set_param(g.find("optimizer").id, "lr", 0.01)

    # the one job starts from the imported weights where names and shapes match (the CLI, the ranks
    # and the app pass the weights file beside the project); the new head keeps its initial weights
    job = prepare(g, TrainConfig(epochs=2, batch_size=64, device="cpu", seed=0), start_weights=imported.state_dict)
    assert "unexpected (ignored): fc.weight, fc.bias" in job.start_note
    report = load_weights_onto(job.plan.model, imported.state_dict)  # what prepare loaded: nothing more to take
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert all(torch.equal(job.plan.model.state_dict()[k], imported.state_dict[k]) for k in report.loaded)
    _cli_trains_from_the_weights_beside_the_project(g, imported.state_dict, one_thread)
    frozen = {k: v.clone() for k, v in imported.state_dict.items() if not k.startswith("fc.")}
    assert {"b1.running_mean", "b2.running_var", "b2.num_batches_tracked"} <= set(frozen)
    res = run(job)
    assert res.status == "finished", res.message
    assert res.model is not None
    trained = res.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in frozen.items())
    assert res.metrics["val_accuracy"] > 0.5  # chance is 0.1


# ----------------------------------------------------------------------------
# imported weights saved beside the project
# ----------------------------------------------------------------------------


def test_an_imported_project_names_its_weights_and_save_as_carries_them(tmp_path: Any) -> None:
    from netstudio.project.importer import import_to_files, read_state_dict
    from netstudio.project.io import load_project, save_project

    res, out, w_out = import_to_files("torchvision:resnet18", tmp_path / "a" / "net.nsproj", input_shape="1,3,32,32")
    assert w_out == tmp_path / "a" / "net.pt"
    project = load_project(out)
    assert project.weights == "net.pt" and project.weights_path() == w_out
    state = read_state_dict(project.weights_path())  # type: ignore[arg-type]
    assert all(torch.equal(state[k], v) for k, v in res.state_dict.items())
    # Save As into another folder: the weights go beside the new file, byte for byte
    target = tmp_path / "b" / "copy.nsproj"
    save_project(project, target)
    assert (tmp_path / "b" / "net.pt").read_bytes() == w_out.read_bytes()
    assert load_project(target).weights_path() == tmp_path / "b" / "net.pt"
    # saving again in place copies nothing and keeps the file as it was
    text = target.read_text()
    save_project(project)
    assert target.read_text() == text
    # a weights file elsewhere is not named by the project (the CLI's --weights-out into another folder)
    _, out2, _ = import_to_files("torchvision:resnet18", tmp_path / "c" / "n.nsproj", input_shape="1,3,32,32",
                                 weights_out=tmp_path / "d" / "w.pt")
    assert '"weights"' not in out2.read_text() and load_project(out2).weights == ""


@pytest.mark.parametrize("bad", ["../net.pt", "/tmp/net.pt", 3, "sub/net.pt"])
def test_a_weights_entry_that_is_not_a_file_name_beside_the_project_is_refused(bad: Any) -> None:
    from netstudio.errors import ProjectError

    rec = Project(graph=_cnn_graph()).to_dict()
    rec["weights"] = bad
    with pytest.raises(ProjectError, match="'weights' must name a file beside the project"):
        Project.from_dict(rec)


@pytest.mark.slow  # subprocess, end to end
def test_two_ddp_ranks_keep_frozen_weights_and_running_stats(tmp_path: Any) -> None:
    import json
    import subprocess

    from netstudio.project.io import save_project
    from tests.test_distributed import job_env, netstudio_cmd

    g = _cnn_graph()
    SetTrainable([g.find("conv").id, g.find("bn").id], False).redo(g)
    cfg = TrainConfig(epochs=2, batch_size=32, seed=1, device="cpu", keep_best=False)
    proj = save_project(Project(g, cfg, name="frozen"), tmp_path / "frozen.nsproj")
    proc = subprocess.run(netstudio_cmd("train", str(proj), "--nproc", "2", "--json", "--timeout", "60",
                                        "--out", str(tmp_path / "model.pt")),
                          cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["world_size"] == 2
    torch.manual_seed(cfg.seed)  # the initial weights, drawn as every rank draws them
    initial = build_plan(g, cfg.batch_size).model.state_dict()
    trained = torch.load(tmp_path / "model.pt", weights_only=False).state_dict()
    for k in ("conv.weight", "conv.bias", "bn.weight", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert torch.equal(trained[k], initial[k]), k
    assert not torch.equal(trained["head.weight"], initial["head.weight"])


def test_the_exported_training_script_keeps_frozen_nodes_frozen(tmp_path: Any, capsys: Any,
                                                               monkeypatch: Any) -> None:
    import netstudio.project.script_export as se
    from tests.test_script_export import _run_in_process, import_script

    monkeypatch.delenv("RANK", raising=False)
    g = _cnn_graph()
    SetTrainable([g.find("conv").id, g.find("bn").id], False).redo(g)
    project = Project(g, TrainConfig(epochs=2, batch_size=32, seed=1))
    torch.manual_seed(2)
    weights = build_plan(g, 32).model.state_dict()
    weights["bn.running_mean"].uniform_(-0.3, 0.3)
    out = se.export_script(project, tmp_path / "job", weights=weights)
    mod = import_script(tmp_path / "job")
    assert mod.FROZEN == ["conv", "bn"]
    _run_in_process(mod, ["--device", "cpu", "--checkpoint-dir", str(tmp_path / "c"),
                          "--out", str(tmp_path / "m.pt")], capsys)
    assert out.weights is not None
    saved = torch.load(tmp_path / "m_state_dict.pt", weights_only=True)
    for k in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
              "bn.num_batches_tracked"):
        assert torch.equal(saved[k], weights[k]), k
    assert not torch.equal(saved["head.weight"], weights["head.weight"])
