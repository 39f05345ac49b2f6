"""Distributed training helpers (netstudio/training/distributed.py) and the rank program (netstudio/cli/rank.py).

Single-process tests check the arithmetic that makes N ranks equal one process
(sharding, loss scaling under DDP's gradient average, checkpoints); the
multi-process tests launch real gloo jobs on the loopback interface.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from netstudio.compiler.build import build_plan
from netstudio.errors import TrainingError
from netstudio.graph.model import Graph
from netstudio.project.io import Project, load_project, save_project
from netstudio.training import distributed as D
from netstudio.training.config import TrainConfig


def ctx(rank: int, world: int) -> D.DistContext:
    return D.DistContext(rank, world, rank, torch.device("cpu"), "gloo")


def two_loss_graph() -> Graph:
    """iris → fc1 → relu → {fc2(3) → CrossEntropy (mean), recon(4) → 0.5 × MSE (sum) against the features}:
    a mean- and a sum-reduced term in one loss."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    f1 = g.add_node("layer.linear", {"out_features": 8}, name="fc1")
    r = g.add_node("activation.relu")
    f2 = g.add_node("layer.linear", {"out_features": 3}, name="fc2")
    f3 = g.add_node("layer.linear", {"out_features": 4}, name="recon")
    ce = g.add_node("loss.cross_entropy")
    mse = g.add_node("loss.mse", {"reduction": "sum", "weight": 0.5})
    op = g.add_node("optim.sgd", {"lr": 0.1})
    c = g.connect
    c(d.id, "features", f1.id, "input")
    c(f1.id, "output", r.id, "input")
    c(r.id, "output", f2.id, "input")
    c(r.id, "output", f3.id, "input")
    c(f2.id, "output", ce.id, "prediction")
    c(d.id, "target", ce.id, "target")
    c(f3.id, "output", mse.id, "prediction")
    c(d.id, "features", mse.id, "target")
    c(ce.id, "loss", op.id, "loss")
    c(mse.id, "loss", op.id, "loss")
    return g


def test_shards_cover_each_global_batch_once() -> None:
    batch = torch.arange(10, 17)  # 7 samples over 3 ranks: 3 + 2 + 2
    parts = [ctx(r, 3).shard(batch) for r in range(3)]
    assert [p.tolist() for p in parts] == [[10, 11, 12], [13, 14], [15, 16]]
    assert not ctx(0, 3).usable(2) and ctx(0, 3).usable(3)
    assert ctx(0, 3).loss_scales(3, 7) == pytest.approx((9 / 7, 3.0))
    assert ctx(0, 1).loss_scales(5, 5) == (1.0, 1.0)


def test_loss_terms_sum_to_the_plan_loss() -> None:
    plan = build_plan(two_loss_graph(), 8)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    out = plan.model(x)
    terms = D.loss_terms(plan, out, x, y)
    assert [r for _, r in terms] == ["mean", "sum"]
    assert torch.allclose(sum(v for v, _ in terms), plan.loss(out, x, y))


def test_scaled_shard_gradients_average_to_the_global_batch_gradient() -> None:
    """What DDP computes (mean over ranks of each rank's gradient) equals one process on the whole batch,
    for uneven shards and a mix of mean- and sum-reduced loss terms."""
    plan = build_plan(two_loss_graph(), 8)
    model = plan.model
    torch.manual_seed(0)
    x, y = torch.randn(7, 4), torch.randint(0, 3, (7,))

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    want = grads(plan.loss(model(x), x, y))
    world = 3
    per_rank = []
    for rank in range(world):
        c = ctx(rank, world)
        idx = c.shard(torch.arange(7))
        xs, ys = x[idx], y[idx]
        mean_s, sum_s = c.loss_scales(len(idx), 7)
        terms = D.loss_terms(plan, model(xs), xs, ys)
        per_rank.append(grads(sum(v * (mean_s if r == "mean" else sum_s) for v, r in terms)))
    averaged = [sum(g[i] for g in per_rank) / world for i in range(len(want))]
    for a, b in zip(averaged, want):
        assert torch.allclose(a, b, atol=1e-6)


def test_dist_step_returns_the_unscaled_local_loss() -> None:
    plan = build_plan(two_loss_graph(), 8)
    opt = torch.optim.SGD(plan.model.parameters(), lr=0.0)
    step = D.DistStep(plan.model, plan, opt, ctx(1, 2))
    step.global_n = 9
    x, y = torch.randn(4, 4), torch.randint(0, 3, (4,))
    loss, correct = step(x, y)
    with torch.no_grad():
        out = plan.model(x)
        assert torch.allclose(loss, plan.loss(out, x, y))
        assert int(correct) == int(plan.correct(out, y))


def test_sharded_batch_sampler_follows_the_single_process_order() -> None:
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    single = list(torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(11), generator=gen_a), 4,
                                                drop_last=False))
    shards = [D.ShardedBatchSampler(11, 4, ctx(r, 2), True, g)
              for r, g in ((0, gen_b), (1, torch.Generator().manual_seed(5)))]
    got = [list(s) for s in shards]
    assert len(shards[0]) == 3 and len(got[0]) == 3
    for b, (mine0, mine1) in enumerate(zip(*got)):
        assert mine0 + mine1 == single[b]


def test_sharded_loader_matches_the_single_process_loader_over_epochs() -> None:
    """Non-resident data: the ranks' DataLoaders together walk the batches of fit's own shuffling loader."""
    from torch.utils.data import TensorDataset

    from netstudio.training.engine import _loader

    ds = TensorDataset(torch.arange(23).float(), torch.arange(23))
    single_gen = torch.Generator().manual_seed(9)
    single = _loader(ds, 5, True, single_gen, torch.device("cpu"))
    gens = [torch.Generator().manual_seed(9) for _ in range(2)]
    ranks = [ctx(r, 2).loader(ds, 5, True, gens[r]) for r in range(2)]
    for _ in range(2):  # the generator state carries over between epochs in both
        want = [y.tolist() for _, y in single]
        got = [[y.tolist() for _, y in loader] for loader in ranks]
        assert [a + b for a, b in zip(*got)] == want
        assert [len(a) for a in got[0]] == [3, 3, 3, 3, 2] and [len(b) for b in got[1]] == [2, 2, 2, 2, 1]


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    sched.step()
    gen_state = torch.Generator().manual_seed(3).get_state()
    path = D.save_checkpoint(tmp_path / "ck" / D.CHECKPOINT_FILE, model=model, optimizer=opt, scheduler=sched,
                             epoch=4, extra={"generator": gen_state})
    assert [p.name for p in path.parent.iterdir()] == [D.CHECKPOINT_FILE]  # no temporary file left behind
    state = D.read_checkpoint(path)
    assert state is not None and state["epoch"] == 4 and torch.equal(state["generator"], gen_state)

    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    fopt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    fsched = torch.optim.lr_scheduler.StepLR(fopt, step_size=1, gamma=0.5)
    assert D.restore_checkpoint(state, fresh, fopt, fsched) == 4
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert fopt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert torch.equal(fopt.state[fopt.param_groups[0]["params"][0]]["exp_avg"],
                       opt.state[opt.param_groups[0]["params"][0]]["exp_avg"])

    other = nn.Sequential(nn.Linear(3, 5))
    with pytest.raises(TrainingError, match="The checkpoint does not fit this model"):
        D.restore_checkpoint(state, other, torch.optim.Adam(other.parameters()), None)
    assert D.read_checkpoint(tmp_path / "missing.pt") is None
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="Cannot read the checkpoint"):
        D.read_checkpoint(tmp_path / "junk.pt")


def test_launch_command_is_loopback_only_on_one_machine() -> None:
    cmd = D.launch_command("p.nsproj", ["--epochs", "2"], nproc=2, master_port=29999)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--master-addr=127.0.0.1" in cmd and "--master-port=29999" in cmd and "--local-addr=127.0.0.1" in cmd
    assert cmd[-5:] == ["-m", "netstudio.cli.rank", "p.nsproj", "--epochs", "2"]
    multi = D.torchrun_args(nproc=4, nnodes=2, rdzv_endpoint="node01:29500")
    assert "--rdzv-backend=c10d" in multi and "--rdzv-endpoint=node01:29500" in multi and "--nnodes=2" in multi
    with pytest.raises(TrainingError, match="needs --rdzv-endpoint HOST:PORT"):
        D.torchrun_args(nproc=2, nnodes=2)
    with pytest.raises(TrainingError, match="is not HOST:PORT"):
        D.torchrun_args(nproc=2, nnodes=2, rdzv_endpoint="node01")


def test_failure_message_names_the_rank_that_died() -> None:
    from types import SimpleNamespace

    def failure(pid: int, code: int, ts: int, message: object = "") -> SimpleNamespace:
        return SimpleNamespace(pid=pid, exitcode=code, timestamp=ts, message=message,
                               signal_name=lambda: signal.Signals(-code).name)

    # torchrun SIGTERMs the survivor; the SIGKILLed rank is the cause
    text = D.failure_message({0: failure(10, -int(signal.SIGTERM), 5), 1: failure(11, -int(signal.SIGKILL), 7)})
    assert text == "distributed training failed: rank 1 (pid 11) was killed by SIGKILL; rank 0 stopped too"
    recorded = {"message": "TrainingError: [rank 2] Out of memory", "extraInfo": {}}
    text = D.failure_message({2: failure(12, 1, 3, recorded), 0: failure(10, 1, 4)})
    assert text == ("distributed training failed: rank 2 (pid 12) failed: TrainingError: [rank 2] Out of memory; "
                    "rank 0 stopped too")
    assert D.failure_message({0: failure(10, 1, 1, "To enable traceback see: …")}) == \
        "distributed training failed: rank 0 (pid 10) exited with code 1"


def test_context_without_torchrun_is_one_cpu_process() -> None:
    c = D.init_distributed("cpu", environ={})
    assert (c.rank, c.world_size, c.is_main, c.active) == (0, 1, True, False)
    assert c.all_sum([1.5, 2.0]) == [1.5, 2.0]
    with pytest.raises(TrainingError, match="cannot be used for distributed training"):
        D.device_for(0, "mps")


# ----------------------------------------------------------------------------
# Real jobs: `netstudio train P --nproc 2` (torchrun, gloo, loopback only)
# ----------------------------------------------------------------------------


def mlp_project(path: Path, source: str, classes: int, *, epochs: int, batch_size: int, seed: int = 1) -> Path:
    g = Graph()
    d = g.add_node("data.dataset", {"source": source})
    fl = g.add_node("layer.flatten")
    f1 = g.add_node("layer.linear", {"out_features": 32}, name="fc1")
    r = g.add_node("activation.relu")
    f2 = g.add_node("layer.linear", {"out_features": classes}, name="fc2")
    ce = g.add_node("loss.cross_entropy")
    op = g.add_node("optim.sgd", {"lr": 0.05, "momentum": 0.9})
    sc = g.add_node("sched.step", {"step_size": 2, "gamma": 0.5})
    for a, ap, b, bp in ((d.id, "features", fl.id, "input"), (fl.id, "output", f1.id, "input"),
                         (f1.id, "output", r.id, "input"), (r.id, "output", f2.id, "input"),
                         (f2.id, "output", ce.id, "prediction"), (d.id, "target", ce.id, "target"),
                         (ce.id, "loss", op.id, "loss"), (op.id, "optimizer", sc.id, "optimizer")):
        g.connect(a, ap, b, bp)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device="cpu", keep_best=False)
    return save_project(Project(g, cfg, name=f"{source} mlp"), path)


def single_process_run(project_path: Path, epochs: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """What `netstudio train P` does in one process (same seed: same initial weights and batches)."""
    import netstudio.data as data_mod
    from netstudio.training.engine import fit

    project = load_project(project_path)
    cfg = replace(project.training, epochs=epochs)
    torch.manual_seed(cfg.seed)
    plan = build_plan(project.graph, cfg.batch_size)
    result = fit(plan, data_mod.load(plan.dataset_params), cfg)
    assert result.status == "finished", result.message
    assert result.model is not None
    return result.history, result.model.state_dict()


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                        "NETSTUDIO_DEBUG")}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo talks over the loopback interface only
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def netstudio_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "netstudio", *args]


def assert_same_curve(dist_hist: list[dict], single_hist: list[dict]) -> None:
    assert [e["epoch"] for e in dist_hist] == [e["epoch"] for e in single_hist]
    for d, s in zip(dist_hist, single_hist):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"):
            assert d[key] == pytest.approx(s[key], rel=1e-4, abs=1e-5), (d["epoch"], key)


@pytest.mark.slow  # subprocess, end to end
def test_two_cpu_ranks_train_like_one_process(tmp_path: Path) -> None:
    # 120 iris training samples in global batches of 15: every batch splits 8 + 7 over the two ranks
    proj = mlp_project(tmp_path / "iris.nsproj", "iris", 3, epochs=4, batch_size=15)
    proc = subprocess.run(netstudio_cmd("train", str(proj), "--nproc", "2", "--json", "--timeout", "60",
                                        "--out", str(tmp_path / "model.pt")),
                          cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["weights_max_difference"] == 0.0  # rank 1 ends with exactly rank 0's weights
    assert "distributed: 2 ranks (gloo, cpu)" in proc.stderr
    # the thread policy in a rank: one thread per rank process (OMP_NUM_THREADS=1 from the launcher), reported
    assert summary["threads"] == 1 and summary["threads_mode"] == "default"
    assert all(e["threads"] == 1 for e in summary["history"])
    assert "training 4 epochs on cpu, 1 thread (the caller's)" in proc.stderr
    assert proc.stderr.count("epoch 4/4") == 1  # only rank 0 reports
    history, state = single_process_run(proj, 4)
    assert_same_curve(summary["history"], history)
    assert summary["history"][-1]["val_accuracy"] > 0.85
    trained = torch.load(tmp_path / "model.pt", weights_only=False)  # rank 0 exported it
    for k, v in state.items():
        assert torch.allclose(trained.state_dict()[k], v, atol=1e-5), k
    ckpt = D.read_checkpoint(tmp_path / "iris.checkpoints" / D.CHECKPOINT_FILE)
    assert ckpt is not None and ckpt["epoch"] == 4 and ckpt["scheduler"]["last_epoch"] == 4


def _worker_pid(parent: int, rank: int) -> int | None:
    """The torchrun worker process of ``rank`` below ``parent`` (Linux /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    todo, found = [parent], None
    while todo:
        pid = todo.pop()
        for child in kids.get(pid, []):
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                env = []
            if f"RANK={rank}".encode() in env and any(e.startswith(b"TORCHELASTIC_RUN_ID=") for e in env):
                found = child
            todo.append(child)
    return found


@pytest.mark.slow  # subprocess, end to end
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker process through /proc")
def test_killed_rank_ends_the_job_and_a_restart_resumes(tmp_path: Path) -> None:
    proj = mlp_project(tmp_path / "digits.nsproj", "digits", 10, epochs=40, batch_size=32)
    ckdir = tmp_path / "ck"
    ckpt = ckdir / D.CHECKPOINT_FILE
    job = subprocess.Popen(netstudio_cmd("train", str(proj), "--nproc", "2", "--timeout", "20",
                                         "--checkpoint-dir", str(ckdir)),
                           cwd=tmp_path, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while not ckpt.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ckpt.exists(), "no checkpoint was written"
        victim = _worker_pid(job.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = job.communicate(timeout=60)
        ended_after = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 1
    assert ended_after < 20  # well within the collective timeout: no hang
    assert f"error: distributed training failed: rank 1 (pid {victim}) was killed by SIGKILL" in err
    assert f"run the same command with --resume to continue from the last checkpoint in {ckdir}" in err
    assert "Traceback" not in err
    done = int(torch.load(ckpt, weights_only=True)["epoch"])
    assert 1 <= done < 40  # it was stopped mid-run

    # restart: continues after the last saved epoch and follows the uninterrupted single-process curve
    epochs = done + 2
    proc = subprocess.run(netstudio_cmd("train", str(proj), "--nproc", "2", "--timeout", "20", "--checkpoint-dir",
                                        str(ckdir), "--resume", "--epochs", str(epochs), "--json"),
                          cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from {ckpt} after epoch {done}" in proc.stderr
    assert [int(m) for m in re.findall(r"^epoch (\d+)/", proc.stderr, re.M)] == [done + 1, done + 2]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["weights_max_difference"] == 0.0
    history, _ = single_process_run(proj, epochs)
    assert_same_curve(summary["history"], history)
    assert torch.load(ckpt, weights_only=True)["epoch"] == epochs


def test_single_process_checkpoints_resume_exactly(tmp_path: Path) -> None:
    """`fit(checkpoint_dir=..., resume=True)` without torchrun: 2 epochs + resume to 4 == 4 epochs."""
    import netstudio.data as data_mod
    from netstudio.training.engine import fit

    proj = mlp_project(tmp_path / "iris.nsproj", "iris", 3, epochs=4, batch_size=16)
    project = load_project(proj)
    full, state = single_process_run(proj, 4)
    cfg2 = replace(project.training, epochs=2)
    torch.manual_seed(cfg2.seed)
    plan = build_plan(project.graph, cfg2.batch_size)
    data = data_mod.load(plan.dataset_params)
    first = fit(plan, data, cfg2, checkpoint_dir=str(tmp_path / "ck"))
    assert first.status == "finished"
    events: list[dict] = []
    second = fit(plan, data, project.training, events.append, checkpoint_dir=str(tmp_path / "ck"), resume=True)
    assert second.status == "finished" and second.model is not None
    assert events[0] == {"kind": "resumed_from", "epoch": 2, "path": str(tmp_path / "ck" / D.CHECKPOINT_FILE)}
    assert [e["epoch"] for e in events if e["kind"] == "epoch"] == [3, 4]
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [[e[k] for k in keys] for e in second.history] == [[e[k] for k in keys] for e in full]
    for k, v in second.model.state_dict().items():
        assert torch.equal(v, state[k]), k
