"""Distributed data-parallel training with ``torch.distributed`` (launched by torchrun).

``netstudio train P --nproc N`` runs ``python -m torch.distributed.run ... -m
netstudio.cli.rank P ...``; every process (rank) then runs the rank program
(:mod:`netstudio.cli.rank`): it joins the process group (gloo on CPU, NCCL with
one GPU per process, a timeout on every collective) with :func:`init_distributed`,
prepares the run like every other caller (:mod:`netstudio.training.job`) and
trains with the data-parallel strategy (:mod:`netstudio.training.strategy`),
which uses the :class:`DistContext` like this:

* the model is wrapped in ``DistributedDataParallel`` (weights start equal: DDP
  copies rank 0's, and averages gradients during backward);
* every rank draws the *same* seeded permutation of the training indices, cuts it
  into global batches of ``batch_size`` and trains on its own share of each
  (:meth:`DistContext.shard`); losses are scaled so that DDP's gradient average
  equals the gradient of one process seeing the whole global batch
  (:func:`loss_terms` / :meth:`DistContext.loss_scales`), so a run on N
  processes follows the single-process loss curve;
* epoch loss/accuracy sums are all-reduced; only rank 0 reports, writes
  checkpoints (model, optimizer, scheduler, epoch, shuffling state) and exports.

Nothing here imports Qt. Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from netstudio.errors import TrainingError
# checkpoints have their own module; these names stay importable from here
from netstudio.training.checkpoints import (CHECKPOINT_FILE, CHECKPOINT_FORMAT, default_checkpoint_dir,  # noqa: F401
                                            read_checkpoint, restore_checkpoint, save_checkpoint, state_checksum)
from netstudio.training.checkpoints import first_line as _first_line

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.compiler.build import TrainingPlan

#: seconds a rank waits in a collective (or for the others to join) before the job fails
DEFAULT_TIMEOUT_S = 300.0
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# ----------------------------------------------------------------------------
# Process group
# ----------------------------------------------------------------------------


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """True when RANK/WORLD_SIZE/LOCAL_RANK are set (torchrun, or SLURM via torchrun)."""
    env = os.environ if environ is None else environ
    return all(k in env for k in _ENV)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job and the collectives ``fit`` needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """Rank 0 reports progress, writes checkpoints and exports."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    # --- data sharding ----------------------------------------------------
    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (sizes differ by at most one)."""
        return torch.tensor_split(batch, self.world_size)[self.rank]

    def loss_scales(self, local_n: int, global_n: int) -> tuple[float, float]:
        """(scale of mean-reduced terms, scale of sum-reduced terms) for one step.

        DDP divides the summed gradients by the world size. A mean over ``local_n``
        samples times ``world * local_n / global_n`` turns that average into the mean
        over the global batch; a sum only needs the world size back.
        """
        if global_n <= 0:
            return 0.0, 0.0
        return self.world_size * local_n / global_n, float(self.world_size)

    def usable(self, global_n: int) -> bool:
        """A global batch smaller than the world size cannot give every rank a sample; it is skipped."""
        return global_n >= self.world_size

    # --- collectives ------------------------------------------------------
    def all_sum(self, values: Sequence[float] | torch.Tensor) -> list[float]:
        """Element-wise sum over all ranks (float64, on this rank's device)."""
        t = torch.as_tensor(values, dtype=torch.float64).to(self.device).reshape(-1).clone()
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. a checkpoint only rank 0 can read)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    # --- what fit calls -------------------------------------------------------
    def rank_batches(self, items: Any, step: "DistStep", *, resident: bool, loader: Any = None) -> Iterator[Any]:
        """This rank's batches of an epoch, telling ``step`` each global batch size.

        Resident data: ``items`` are global index batches (the same on every rank) and
        are cut into shares here. DataLoader data: ``loader`` already yields this
        rank's shares (:meth:`loader`); its sampler knows the global sizes.
        """
        if resident:
            for batch in items:
                if self.usable(len(batch)):
                    step.global_n = len(batch)
                    yield self.shard(batch)
            return
        sampler = loader.batch_sampler
        for batch in items:
            step.global_n = sampler.global_sizes[-1]  # the loader pulls one index batch at a time
            yield batch

    def loader(self, dataset: Any, batch_size: int, shuffle: bool, generator: torch.Generator | None,
               pin_memory: bool = False) -> torch.utils.data.DataLoader:
        """A DataLoader yielding this rank's share of each global batch, in single-process order."""
        sampler = ShardedBatchSampler(len(dataset), batch_size, self, shuffle, generator)
        # generator= makes the loader draw its base seed from it first, exactly like a shuffling loader
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, generator=generator, num_workers=0,
                                           pin_memory=pin_memory)

    def epoch_totals(self, loss_sum: float, correct: int, n: int) -> tuple[float, int, int]:
        """The epoch's (loss sum, correct, samples) over all ranks."""
        a, b, c = self.all_sum([loss_sum, correct, n])
        return a, int(round(b)), int(round(c))

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) everywhere, so every rank evaluates the same model."""
        if self.active:
            for b in model.buffers():
                dist.broadcast(b.data, src=0)

    def validate(self, model: nn.Module, plan: Any, data: Any, val_dev: tuple[torch.Tensor, torch.Tensor] | None,
                 batch_size: int, eval_batches: Any, val_batches: Any) -> tuple[float | None, float | None]:
        """(val loss, val accuracy) with each rank evaluating its share; equal on every rank.

        ``eval_batches``/``val_batches`` are the engine's own evaluation helpers.
        """
        import dataclasses

        self.sync_buffers(model)
        if val_dev is not None:
            mine = self.shard(torch.arange(val_dev[0].shape[0], device=val_dev[0].device))
            batches = val_batches(data, batch_size, self.device, (val_dev[0][mine], val_dev[1][mine]))
        elif data.resident:
            mine = self.shard(torch.arange(data.val_x.shape[0]))
            batches = val_batches(dataclasses.replace(data, val_x=data.val_x[mine], val_y=data.val_y[mine]),
                                  batch_size, self.device)
        else:
            mine = self.shard(torch.arange(len(data.val_set)))
            sub = torch.utils.data.Subset(data.val_set, mine.tolist())
            batches = val_batches(dataclasses.replace(data, val_set=sub), batch_size, self.device)
        loss, acc, n = eval_batches(model, plan, batches, self.device)
        has_acc = plan.metric_term is not None and plan.metric_term.target[0] == "target"
        loss_sum, correct, total = self.all_sum([(loss or 0.0) * n, (acc or 0.0) * n, n])
        if total == 0:
            return None, None
        return loss_sum / total, (correct / total if has_acc else None)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel`` around ``model`` (already on this rank's device)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def device_for(local_rank: int, requested: str = "auto") -> tuple[torch.device, str]:
    """(device, backend): ``cuda:LOCAL_RANK`` with NCCL when CUDA is usable, else CPU with gloo."""
    want = (requested or "auto").strip().lower()
    if want not in ("auto", "cpu", "cuda") and not want.startswith("cuda:"):
        raise TrainingError(f"Device '{requested}' cannot be used for distributed training",
                            hint="use auto, cpu or cuda (each process then uses cuda:LOCAL_RANK)")
    if want in ("auto", "cuda") or want.startswith("cuda:"):
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise TrainingError(f"Process with local rank {local_rank} has no GPU: this machine has {count}",
                                    hint=f"use --nproc {count} or fewer per machine")
            return torch.device("cuda", local_rank), "nccl"
        if want != "auto":
            raise TrainingError(f"Device '{requested}' was requested but no CUDA GPU is available",
                                hint="use --device cpu (gloo) or auto")
    return torch.device("cpu"), "gloo"


def init_distributed(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S,
                     environ: Mapping[str, str] | None = None) -> DistContext:
    """Join the job described by torchrun's environment; a one-process context without it."""
    env = os.environ if environ is None else environ
    if not launched_by_torchrun(env):  # run directly: one process, nothing to join
        dev, backend = device_for(0, device)
        return DistContext(0, 1, 0, dev, backend, timeout_s)
    rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    dev, backend = device_for(local, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev  # eager NCCL init: a missing peer fails at start, not mid-epoch
        try:
            dist.init_process_group(backend, **kwargs)
        except Exception as e:  # noqa: BLE001 - rendezvous failures come in many types
            raise TrainingError(f"Rank {rank} could not join the distributed job: {_first_line(e)}",
                                hint="check --rdzv-endpoint / MASTER_ADDR and that every node started") from e
    return DistContext(rank, world, local, dev, backend, timeout_s)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------
# Loss terms with DDP scaling
# ----------------------------------------------------------------------------


def loss_terms(plan: "TrainingPlan", outputs: torch.Tensor | tuple[torch.Tensor, ...], x: torch.Tensor,
               y: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """``plan.loss`` split into its weighted terms with their reduction ("mean" or "sum").

    Their sum is exactly ``plan.loss(outputs, x, y)``; kept apart because mean and
    sum terms need different scales under DDP.
    """
    return [(term, "sum" if getattr(t.module, "reduction", "mean") == "sum" else "mean")
            for t, term in plan.loss_terms(outputs, x, y)]


class DistStep:
    """The training step under DDP, in the shape ``fastpath.Stepper`` calls (``step(x, y)``).

    Set :attr:`global_n` to the size of the current global batch before each
    call. Backward runs on the scaled loss; the *unscaled* local loss is returned
    for the epoch sums, like the single-process step.
    """

    def __init__(self, model: nn.Module, plan: "TrainingPlan", optimizer: torch.optim.Optimizer,
                 ctx: DistContext, controls: Any = None) -> None:
        self.model, self.plan, self.optimizer, self.ctx = model, plan, optimizer, ctx
        self.global_n = 0
        # clipping / mixed precision (netstudio.training.controls); the gradients are all-reduced by then
        self.controls = controls

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctl = self.controls
        with (ctl.autocast() if ctl is not None else contextlib.nullcontext()):
            out = self.model(x)
            terms = loss_terms(self.plan, out, x, y)
        mean_scale, sum_scale = self.ctx.loss_scales(int(x.shape[0]), self.global_n or int(x.shape[0]))
        scaled = sum(v * (mean_scale if r == "mean" else sum_scale) for v, r in terms)
        assert isinstance(scaled, torch.Tensor)
        if ctl is not None:
            ctl.backward_and_step(scaled, self.optimizer)
        else:
            scaled.backward()
            self.optimizer.step()
        with torch.no_grad():
            loss = sum(v.detach().float() for v, _ in terms)
            correct = self.plan.correct(out, y)
        assert isinstance(loss, torch.Tensor)
        return loss, correct


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """For DataLoader-backed (non-resident) data: this rank's share of each global batch.

    The permutation comes from the shared generator exactly as a shuffling
    ``DataLoader`` draws it, so every rank — and a single-process run with the
    same seed — walks the same global batches.
    """

    def __init__(self, n: int, batch_size: int, ctx: DistContext, shuffle: bool,
                 generator: torch.Generator | None) -> None:
        self.n, self.batch_size, self.ctx, self.shuffle, self.generator = n, batch_size, ctx, shuffle, generator
        self.global_sizes: list[int] = []

    def __iter__(self) -> Iterator[list[int]]:
        # RandomSampler itself, so the generator is consumed exactly as a shuffling DataLoader does
        # (it draws a second, empty permutation at the end of every epoch)
        inner = (torch.utils.data.RandomSampler(range(self.n), generator=self.generator) if self.shuffle
                 else torch.utils.data.SequentialSampler(range(self.n)))
        order = torch.tensor(list(inner), dtype=torch.int64)
        self.global_sizes = []
        for a in range(0, self.n, self.batch_size):
            batch = order[a:a + self.batch_size]
            if not self.ctx.usable(len(batch)):
                continue
            self.global_sizes.append(len(batch))
            yield self.ctx.shard(batch).tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and self.ctx.usable(rest) else 0)


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# Launching (used by the CLI)
# ----------------------------------------------------------------------------

#: the module torchrun runs in every rank (named, not imported: it belongs to the command line)
RANK_PROGRAM = "netstudio.cli.rank"
#: set by the launcher for its ranks: the process they must not outlive (see netstudio.cli.rank)
LAUNCHER_PID_ENV = "NETSTUDIO_LAUNCHER_PID"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def torchrun_args(*, nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None, node_rank: int | None = None,
                  master_port: int | None = None, run_id: str = "netstudio") -> list[str]:
    """torchrun's own options (without the program).

    One machine without an endpoint: a static rendezvous on 127.0.0.1 and a free
    port, so nothing leaves the machine. Several machines: a c10d rendezvous at
    ``rdzv_endpoint`` (HOST:PORT), started the same way on every node.
    """
    if nproc < 1 or nnodes < 1:
        raise TrainingError("--nproc and --nnodes must be at least 1")
    args = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", "--max-restarts=0"]
    if rdzv_endpoint:
        host, sep, port = rdzv_endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise TrainingError(f"--rdzv-endpoint {rdzv_endpoint!r} is not HOST:PORT",
                                hint="e.g. --rdzv-endpoint node01:29500")
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={run_id}"]
        if node_rank is not None:
            args.append(f"--node-rank={node_rank}")
    else:
        if nnodes > 1:
            raise TrainingError("Training on several machines needs --rdzv-endpoint HOST:PORT",
                                hint="the address of the first node, e.g. --rdzv-endpoint node01:29500")
        master = master_port or free_port()
        args += ["--master-addr=127.0.0.1", f"--master-port={master}", "--local-addr=127.0.0.1"]
    return args


def launch_command(project: str | os.PathLike[str], rank_args: Sequence[str], **torchrun_kw: Any) -> list[str]:
    """The full command: ``python -m torch.distributed.run ... -m RANK_PROGRAM P ...``."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(**torchrun_kw), "-m",
            RANK_PROGRAM, str(project), *rank_args]


def failure_message(failures: Mapping[int, Any]) -> str:
    """One line naming the rank that brought the job down (from torchrun's ProcessFailure records)."""
    if not failures:
        return "distributed training failed"

    def cause_order(r: int) -> tuple[int, int, int]:
        # killed by a signal (not torchrun's SIGTERM to the survivors) > failed with an error > SIGTERM
        code = int(getattr(failures[r], "exitcode", 0) or 0)
        kind = 2 if code == -int(signal.SIGTERM) else 0 if code < 0 else 1
        return kind, int(getattr(failures[r], "timestamp", 0) or 0), r

    rank = min(failures, key=cause_order)
    f = failures[rank]
    pid = getattr(f, "pid", None)
    who = f"rank {rank}" + (f" (pid {pid})" if pid else "")
    if getattr(f, "exitcode", 0) < 0:
        what = f"was killed by {f.signal_name()}"
    else:
        msg = getattr(f, "message", "")
        if isinstance(msg, dict):
            msg = msg.get("message", "")
        msg = str(msg or "")
        if not msg or msg.startswith("To enable traceback"):
            what = f"exited with code {f.exitcode}"
        else:
            what = f"failed: {msg.strip().splitlines()[0]}"
    others = sorted(r for r in failures if r != rank)
    tail = f"; rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped too" if others else ""
    return f"distributed training failed: {who} {what}{tail}"


def launch(project: str | os.PathLike[str], rank_args: Sequence[str], *, nproc: int, nnodes: int = 1,
           rdzv_endpoint: str | None = None, node_rank: int | None = None,
           checkpoint_dir: str | None = None) -> int:
    """Run torchrun (``torch.distributed.run``) in this process; returns the exit code.

    Running it in-process (rather than as ``python -m torch.distributed.run``)
    gives the structured failure records, so a dead rank becomes one readable
    line instead of torchrun's report. Raises TrainingError for a failed job.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from torch.distributed.elastic.multiprocessing import SignalException

    # torchrun's own log lines (thread settings, SIGTERM to the survivors...) would bury ours; its
    # modules give their loggers their own level, so each one is silenced, not just the parent
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.run").setLevel(logging.CRITICAL)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # the ranks die with this process (see netstudio.cli.rank.guard_rank)
    if nproc > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun does, minus its banner
    cmd = launch_command(project, rank_args, nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint,
                         node_rank=node_rank)
    args = get_args_parser().parse_args(cmd[3:])  # everything after "python -m torch.distributed.run"
    hint = "run the same command with --resume to continue from the last checkpoint"
    if checkpoint_dir:
        hint += f" in {checkpoint_dir}"
    try:
        run(args)
    except ChildFailedError as e:
        raise TrainingError(failure_message(e.failures), hint=hint) from None
    except SignalException as e:  # torchrun has already passed the signal on to the ranks and waited for them
        raise JobInterrupted(signal.Signals(e.sigval), hint=hint) from None
    return 0


class JobInterrupted(TrainingError):
    """The launcher received a signal (Ctrl-C, SIGTERM, SIGHUP...); every rank was stopped.

    ``exit_code`` is the shell's convention for it, 128 + the signal number.
    """

    def __init__(self, sig: signal.Signals, hint: str | None = None) -> None:
        super().__init__(f"interrupted by {sig.name}; every rank stopped", hint=hint)
        self.signal = sig
        self.exit_code = 128 + int(sig)


def weights_max_difference(model: nn.Module, ctx: DistContext) -> float:
    """Largest |w_rank - w_rank0| over every parameter and rank: 0.0 when DDP kept them in sync."""
    if not ctx.active:
        return 0.0
    worst = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for p in model.parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max().to(torch.float64))
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst.item())
