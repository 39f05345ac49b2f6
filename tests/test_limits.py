"""Limits found before anything runs: memory estimated from shapes (and refused when the
device cannot hold it), BatchNorm settings that only torch would reject during training."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from netstudio.cli import main
from netstudio.compiler import memory
from netstudio.compiler.build import build_plan, compile_model
from netstudio.compiler.shapes import analyze
from netstudio.errors import CompileError, MemoryLimitError, ParamError
from netstudio.graph.model import Graph
from netstudio.project.io import Project, load_project, save_project
from netstudio.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_projects"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def wide_project(path: Path, hidden: int, width: int, *, optimizer: str = "optim.adam", batch_size: int = 16
                 ) -> Path:
    """iris → Linear(hidden) 'wide' → Linear(width) 'huge' → Linear(3) 'head' → CrossEntropy → optimizer."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    f0 = g.add_node("layer.linear", {"out_features": hidden}, name="wide")
    f1 = g.add_node("layer.linear", {"out_features": width}, name="huge")
    f2 = g.add_node("layer.linear", {"out_features": 3}, name="head")
    ce = g.add_node("loss.cross_entropy")
    op = g.add_node(optimizer)
    for a, ap, b, bp in ((d.id, "features", f0.id, "input"), (f0.id, "output", f1.id, "input"),
                         (f1.id, "output", f2.id, "input"), (f2.id, "output", ce.id, "prediction"),
                         (d.id, "target", ce.id, "target"), (ce.id, "loss", op.id, "loss")):
        g.connect(a, ap, b, bp)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, device="cpu")
    return save_project(Project(g, cfg, name="wide"), path)


# ----------------------------------------------------------------------------
# Memory estimate
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["lenet", "resnet_block", "autoencoder", "mnist_mlp_sgd"])
def test_estimate_equals_the_real_weights_and_optimizer_state(sample: str) -> None:
    project = load_project(SAMPLES / f"{sample}.nsproj")
    an = analyze(project.graph, project.training.batch_size)
    est = memory.estimate(project.graph, an)
    assert not est.unknown
    torch.manual_seed(0)
    plan = build_plan(project.graph, project.training.batch_size, an)
    model = plan.model
    params = list(model.parameters())
    assert est.params == sum(p.numel() for p in params)
    assert est.weights_bytes == sum(p.numel() * p.element_size() for p in params) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    assert est.grad_bytes == sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    # the optimizer's state after one real step: Adam's two moments, SGD's momentum buffer
    opt = plan.make_optimizer(model)
    x = torch.randn(2, *an.results[plan.compiled.dataset_node].outputs["features"].shape[1:])
    outs = model(x)
    sum(o.float().pow(2).mean() for o in (outs if isinstance(outs, tuple) else (outs,))).backward()
    opt.step()
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0)
    assert est.optimizer_bytes == state
    # activations: every model node's output for one batch, plus the input batch
    per_node = {nid: n.activation_bytes for nid, n in est.nodes.items()}
    conv = next(nid for nid, n in project.graph.nodes.items() if n.type_id.startswith("layer.conv")
                or n.type_id == "layer.linear")
    shape = an.results[conv].outputs["output"].shape
    assert per_node[conv] == 4 * int(torch.Size(shape).numel())
    assert est.training_bytes == est.weights_bytes + est.grad_bytes + est.optimizer_bytes + est.activation_bytes


def test_huge_layer_is_refused_with_its_node_before_allocating(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Linear(10⁶ → 10⁶): 4 TB of weights. Refused from the shapes, in check, train, export/compile."""
    proj = wide_project(tmp_path / "huge.nsproj", 1_000_000, 1_000_000)
    graph = load_project(proj).graph
    huge = next(nid for nid, n in graph.nodes.items() if n.name == "huge")
    t0 = time.perf_counter()
    rc, out, err = run_cli(capsys, "check", str(proj))
    assert rc == 1
    assert f"error: [{huge}] Training (batch 16) needs about 14.6 TB, more than the" in err
    assert "Linear 'huge' alone needs 14.6 TB (1,000,001,000,000 parameters) → make 'huge' smaller" in err
    assert "enforce fail" not in err and "DefaultCPUAllocator" not in err
    assert "1,000,001,000,000" in out and "training needs about 14.6 TB" in out
    rc, _, err = run_cli(capsys, "train", str(proj))
    assert rc == 1 and err.startswith(f"error: [{huge}] Training (batch 16) needs about 14.6 TB"), err
    rc, _, err = run_cli(capsys, "train", str(proj), "--nproc", "2")  # refused before any rank starts
    assert rc == 1 and err.startswith(f"error: [{huge}] Training (batch 16, 2 processes) needs about 29.1 TB"), err
    rc, _, err = run_cli(capsys, "export", str(proj), "--format", "script", "--out", str(tmp_path / "script"))
    assert rc == 1 and err.startswith(f"error: [{huge}] Building the model needs about 3.6 TB"), err
    assert not (tmp_path / "script" / "train.py").exists()
    with pytest.raises(MemoryLimitError) as info:  # what export, the app's Model panel and build_plan compile with
        compile_model(graph, 16)
    assert info.value.node_id == huge and "Building the model needs about 3.6 TB" in info.value.message
    assert isinstance(info.value, CompileError)
    assert time.perf_counter() - t0 < 30  # nothing big was touched (an attempt takes minutes or fails raw)


def test_training_that_does_not_fit_is_refused_by_the_shared_preflight(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and the app's training worker call the same check; here RAM is 'small' (2 MB)."""
    from netstudio.training import preflight

    proj = wide_project(tmp_path / "w.nsproj", 64, 512, batch_size=32)  # ~0.2 MB weights, ~0.9 MB with Adam
    graph = load_project(proj).graph
    est = preflight.check_memory(graph, 32, "cpu")
    assert est is not None and 0.5e6 < est.training_bytes < 2e6
    # four CPU ranks hold four copies of the weights, gradients and optimizer state
    assert est.training_bytes_for(4) == 4 * (est.weights_bytes + est.grad_bytes + est.optimizer_bytes) + \
        est.activation_bytes
    monkeypatch.setattr(memory, "available_ram", lambda: est.training_bytes + 1)
    preflight.check_memory(graph, 32, "cpu")
    with pytest.raises(MemoryLimitError, match=r"^Training \(batch 32, 4 processes\) needs about"):
        preflight.check_memory(graph, 32, "cpu", processes=4)
    monkeypatch.setattr(memory, "available_ram", lambda: 200_000)
    with pytest.raises(MemoryLimitError) as info:
        preflight.check_memory(graph, 32, "cpu")
    assert info.value.node_id == next(nid for nid, n in graph.nodes.items() if n.name == "huge")
    # both prepare their run with the one job (netstudio/training/job.py), which runs this check
    job_src = (ROOT / "netstudio" / "training" / "job.py").read_text(encoding="utf-8")
    assert "check_memory(graph, config.batch_size, config.device, processes=processes)" in job_src
    worker_src = (ROOT / "netstudio" / "ui" / "training" / "worker.py").read_text(encoding="utf-8")
    cli_src = (ROOT / "netstudio" / "cli" / "__init__.py").read_text(encoding="utf-8")
    assert "training_job.prepare(graph, job.config" in worker_src and "training_job.prepare(project.graph" in cli_src


def _check_peak_rss_mb(proj: Path) -> tuple[int, str]:
    """(peak RSS in MB, stdout) of `netstudio check proj` in a fresh process."""
    code = ("import resource, sys\nfrom netstudio.cli import main\nrc = main(['check', sys.argv[1]])\n"
            "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(proj)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    _, rss_kb, rc = proc.stdout.strip().splitlines()[-1].split()
    assert rc == "0", proc.stderr
    return int(rss_kb) // 1024, proc.stdout


@pytest.mark.slow  # subprocess, end to end
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS in kilobytes (Linux)")
def test_check_of_a_1gb_model_allocates_no_weights(tmp_path: Path) -> None:
    """Linear(16384 → 16384): 1 GB of float32 weights; `check` builds on the meta device, so it peaks
    no higher than the check of a tiny model (importing torch alone takes several hundred MB)."""
    small_rss, _ = _check_peak_rss_mb(wide_project(tmp_path / "small.nsproj", 16, 16))
    big_rss, out = _check_peak_rss_mb(wide_project(tmp_path / "big.nsproj", 16384, 16384))
    assert "268,451,840" in out  # 16384·16384 + 16384 parameters in 'huge'
    assert "weights 1.0 GB" in out
    assert big_rss - small_rss < 300, f"peak RSS {big_rss} MB against {small_rss} MB: the weights were allocated"


# ----------------------------------------------------------------------------
# BatchNorm: what torch only rejects while training
# ----------------------------------------------------------------------------


def bn_project(path: Path, *, eps: float = 1e-5, batch_size: int = 16) -> Path:
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})  # 120 training samples
    f = g.add_node("layer.linear", {"out_features": 8}, name="fc")
    bn = g.add_node("layer.batchnorm1d", {"eps": eps}, name="bn")
    r = g.add_node("activation.relu")
    h = g.add_node("layer.linear", {"out_features": 3}, name="head")
    ce = g.add_node("loss.cross_entropy")
    op = g.add_node("optim.adam")
    for a, ap, b, bp in ((d.id, "features", f.id, "input"), (f.id, "output", bn.id, "input"),
                         (bn.id, "output", r.id, "input"), (r.id, "output", h.id, "input"),
                         (h.id, "output", ce.id, "prediction"), (d.id, "target", ce.id, "target"),
                         (ce.id, "loss", op.id, "loss")):
        g.connect(a, ap, b, bp)
    return save_project(Project(g, TrainConfig(epochs=1, batch_size=batch_size, device="cpu"), name="bn"), path)


def test_batchnorm_eps_zero_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj = bn_project(tmp_path / "eps.nsproj", eps=0.0)
    graph = load_project(proj).graph
    bn = next(nid for nid, n in graph.nodes.items() if n.name == "bn")
    an = analyze(graph, 16)
    [problem] = [p for p in an.problems if p.node_id == bn]
    assert problem.message == ("BatchNorm1d 'bn' needs an eps greater than 0 (got 0): it keeps the division by the "
                               "batch's standard deviation finite")
    assert problem.hint == "set eps to 1e-5 (the default)"
    rc, _, err = run_cli(capsys, "check", str(proj))
    assert rc == 1 and f"error: [{bn}] BatchNorm1d 'bn' needs an eps greater than 0" in err
    with pytest.raises(ParamError):
        graph.catalog.get("layer.batchnorm1d").resolve(_ctx(graph, an, bn))


def _ctx(graph: Graph, an: object, nid: str) -> object:
    from netstudio.nodes.base import InferContext

    node = graph.nodes[nid]
    src = next(iter(graph.in_edges(nid)))
    info = an.results[src.src].outputs[src.src_port]  # type: ignore[attr-defined]
    return InferContext(nid, node.name, "BatchNorm1d", dict(node.params), {"input": info}, 16, {})


def test_a_last_batch_of_one_sample_before_batchnorm_is_a_problem(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """120 training samples in batches of 17 leave 1: torch would fail at the end of epoch 1."""
    proj = bn_project(tmp_path / "last.nsproj", batch_size=17)
    project = load_project(proj)
    bn = next(nid for nid, n in project.graph.nodes.items() if n.name == "bn")
    rc, _, err = run_cli(capsys, "check", str(proj))
    assert rc == 1
    assert (f"error: [{bn}] BatchNorm1d 'bn' would receive a last training batch of 1 sample (120 training samples "
            "in batches of 17) and needs more than one value per channel → use a batch size of 16 or 18") in err
    with pytest.raises(CompileError) as info:  # training (CLI and app) is refused the same way
        build_plan(project.graph, 17)
    assert info.value.node_id == bn
    assert analyze(project.graph, 16).ok  # 120 = 7·16 + 8: fine
    # and the suggested batch size trains
    import netstudio.data as data_mod
    from netstudio.training.engine import fit

    plan = build_plan(project.graph, 18)
    result = fit(plan, data_mod.load(plan.dataset_params), TrainConfig(epochs=1, batch_size=18, device="cpu"))
    assert result.status == "finished", result.message
