"""Distributed training helpers (netstudio/training/distributed.py).

Single-process tests check the arithmetic that makes N ranks equal one process
(sharding, loss scaling under DDP's gradient average, checkpoints); the
multi-process tests launch real gloo jobs on the loopback interface.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from netstudio.compiler.build import build_plan
from netstudio.errors import TrainingError
from netstudio.graph.model import Graph
from netstudio.training import distributed as D


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
    assert cmd[-5:] == ["-m", "netstudio.training.distributed", "p.nsproj", "--epochs", "2"]
    multi = D.torchrun_args(nproc=4, nnodes=2, rdzv_endpoint="node01:29500")
    assert "--rdzv-backend=c10d" in multi and "--rdzv-endpoint=node01:29500" in multi and "--nnodes=2" in multi
    with pytest.raises(TrainingError, match="needs --rdzv-endpoint HOST:PORT"):
        D.torchrun_args(nproc=2, nnodes=2)
    with pytest.raises(TrainingError, match="is not HOST:PORT"):
        D.torchrun_args(nproc=2, nnodes=2, rdzv_endpoint="node01")


def test_context_without_torchrun_is_one_cpu_process() -> None:
    c = D.init_distributed("cpu", environ={})
    assert (c.rank, c.world_size, c.is_main, c.active) == (0, 1, True, False)
    assert c.all_sum([1.5, 2.0]) == [1.5, 2.0]
    with pytest.raises(TrainingError, match="cannot be used for distributed training"):
        D.device_for(0, "mps")
