"""The rank program of a distributed job: ``python -m netstudio.cli.rank PROJECT ...``.

``netstudio train P --nproc N`` starts it once per process through torchrun
(:func:`netstudio.training.distributed.launch`). Each rank joins the process
group, prepares the run like every other caller (:mod:`netstudio.training.job`:
settings, seed, plan, data) and trains with the data-parallel strategy; rank 0
prints the progress, the summary (``--json``) and writes the exports.

A rank dies with its launcher (even one killed with SIGKILL) and stops quietly
on a signal: the launcher prints the one line that says what happened.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from netstudio.training.distributed import (DEFAULT_TIMEOUT_S, LAUNCHER_PID_ENV, DistContext, init_distributed,
                                            launched_by_torchrun, shutdown, weights_max_difference)

# ----------------------------------------------------------------------------
# A rank dies with its launcher, and stops quietly on a signal
# ----------------------------------------------------------------------------

#: the signals that stop a rank (torchrun passes the one it got on to the ranks)
RANK_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
_PR_SET_PDEATHSIG = 1


class RankSignalled(KeyboardInterrupt):
    """Raised in a rank by a stop signal; a KeyboardInterrupt so that ``fit`` lets it through."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)


_signalled: list[int] = []  # the stop signal this rank received (at most one is acted on)


def _on_stop_signal(signum: int, frame: Any) -> None:
    if _signalled:  # already stopping: a second signal must not interrupt the clean-up
        return
    _signalled.append(signum)
    raise RankSignalled(signum)


def _raise_if_signalled(wait_s: float = 0.0) -> None:
    """Inside an error branch: a rank being stopped by a signal prints nothing.

    A peer stopped by the same signal can make this rank's collective fail a moment
    before its own signal is handled, so an active job waits ``wait_s`` for it.
    """
    if wait_s > 0 and not _signalled:
        import time

        time.sleep(wait_s)  # interruptible: a pending signal's handler runs here
    if _signalled:
        raise RankSignalled(_signalled[0])


def _set_parent_death_signal(sig: int) -> bool:
    """Linux: the kernel sends ``sig`` to this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, poll_s: float = 0.5, grace_s: float = 5.0) -> None:
    """Fallback for systems without PR_SET_PDEATHSIG: once this process is orphaned, stop it
    (SIGTERM, so it cleans up), and end it for good ``grace_s`` later (a rank stuck in a collective)."""
    import time

    while os.getppid() == parent:
        time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(128 + int(signal.SIGTERM))


def guard_rank(environ: Mapping[str, str] | None = None) -> None:
    """Arm a rank (call first, in the main thread): a stop signal raises :class:`RankSignalled`,
    and the rank dies with its launcher, even one killed with SIGKILL."""
    import threading

    for sig in RANK_STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)
    env = os.environ if environ is None else environ
    if not launched_by_torchrun(env):
        return
    try:
        parent = int(env.get(LAUNCHER_PID_ENV, "") or os.getppid())
    except ValueError:
        parent = os.getppid()
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before the line above took effect
        _on_stop_signal(int(signal.SIGTERM), None)
    threading.Thread(target=_watch_parent, args=(parent,), name="netstudio-parent-watch", daemon=True).start()


def rank_main(argv: Sequence[str] | None = None) -> int:
    """``python -m netstudio.cli.rank``: :func:`run_rank`, armed by :func:`guard_rank`.

    A rank stopped by a signal prints nothing (the launcher prints the one line) and
    ends by that signal, so that whoever waits for it sees how it ended.
    """
    try:
        guard_rank()
        return run_rank(argv)
    except RankSignalled as e:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(e.signum, signal.SIG_DFL)
        os.kill(os.getpid(), e.signum)
        return 128 + e.signum


# ----------------------------------------------------------------------------
# The per-rank program: python -m netstudio.cli.rank PROJECT ...
# ----------------------------------------------------------------------------


def rank_parser() -> "Any":
    import argparse

    p = argparse.ArgumentParser(prog="python -m netstudio.cli.rank",
                                description="One rank of a distributed NetStudio training job (started by "
                                            "torchrun; use `netstudio train P --nproc N`).")
    p.add_argument("project")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all ranks together)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per rank (default: 1 per rank)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--save-weights", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-preprocess", action="store_true")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--fresh-weights", action="store_true")
    p.add_argument("--trust", action="store_true", help="run the user code the project's model uses")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    from netstudio.cli.console import add_control_args

    add_control_args(p)
    p.add_argument("--stats", default=None, help="per-node statistics file (rank 0 writes it)")
    p.add_argument("--stats-every", type=int, default=None)
    p.add_argument("--tensorboard", default=None, help="TensorBoard log directory (rank 0 writes it)")
    return p


def _record_failure(exc: BaseException) -> None:
    """Leave the reason where torchrun looks for it, so the launcher can name it."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        try:
            from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

            ErrorHandler().record_exception(exc)
        except Exception:  # noqa: BLE001 - reporting must never hide the real error
            pass


def run_rank(argv: Sequence[str] | None = None) -> int:
    """Train as one rank; rank 0 prints progress, checkpoints and exports. Returns the exit code."""
    import json
    import time

    from netstudio.cli import console
    from netstudio.errors import NetStudioError, TrainingError
    from netstudio.training import job as training_job
    from netstudio.training.checkpoints import first_line
    from netstudio.training.events import FitStatus

    args = rank_parser().parse_args(argv)
    ctx: DistContext | None = None
    try:
        ctx = init_distributed(args.device, args.timeout)
        project = console.load(args.project, args.trust)
        overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads,
                     "stats_every": args.stats_every, **console.control_overrides(args)}
        # the launcher checked the memory for all ranks together; seed, plan and data as in every other run
        from netstudio.project.export import project_start_weights

        start = None if args.fresh_weights else project_start_weights(project)
        job = training_job.prepare(project.graph, project.training, overrides, dist=ctx, memory_check=False,
                                   start_weights=start)
        lines = sys.stderr if args.json else sys.stdout
        progress = console.Progress(lines, None, job.config.epochs) if ctx.is_main else None
        if progress is not None:
            print(f"distributed: {ctx.world_size} rank{'s' if ctx.world_size != 1 else ''} "
                  f"({ctx.backend}, {ctx.device.type})", file=lines, flush=True)
        t0 = time.perf_counter()
        report, stats_file = console.with_stats(progress, args.stats if ctx.is_main else None)
        from netstudio.training.tensorboard import with_tensorboard

        report, tb = with_tensorboard(report, args.tensorboard if ctx.is_main else None, Path(args.project).stem)
        try:
            result = training_job.run(job, report, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
        finally:
            if stats_file is not None:
                stats_file.close()
            if tb is not None:
                tb.close()
        seconds = time.perf_counter() - t0
        if result.status == FitStatus.ERROR:
            _raise_if_signalled(0.5 if ctx.active else 0.0)
            hint = "if another rank failed first, its error is the cause" if ctx.active else None
            raise TrainingError(result.message.strip().splitlines()[0], hint=hint)
        diff = weights_max_difference(result.model.to(ctx.device), ctx) if result.model is not None else 0.0
        if result.model is not None:
            result.model.to("cpu")
        if not ctx.is_main:
            return 0
        summary = console.summary(result, None, seconds)
        summary.update(world_size=ctx.world_size, backend=ctx.backend, weights_max_difference=diff)
        exported = console.export_results(result.model, project, job, out=args.out, save_weights=args.save_weights,
                                          no_preprocess=args.no_preprocess)
        summary["exported"] = exported
        if not args.no_record:
            summary["run_folder"] = console.record_run(args.project, project, job.config, result, seconds,
                                                       summary.get("device"))
        tail = f" ({result.message})" if result.message else ""
        print(f"{result.status}{tail} in {seconds:.1f}s on {ctx.world_size} ranks; weights identical on every rank"
              if diff == 0.0 else f"{result.status}{tail}; WARNING: ranks differ by up to {diff:g}", file=lines)
        for path in exported:
            print(f"wrote {path}", file=lines)
        if args.json:
            print(json.dumps(summary), flush=True)
        return 0
    except NetStudioError as e:
        _raise_if_signalled()
        where = f"[rank {ctx.rank}] " if ctx is not None and ctx.world_size > 1 else ""
        print(console.format_error(where + e.message, e.node_id, e.hint), file=sys.stderr, flush=True)
        _record_failure(e)
        return 1
    except Exception as e:  # noqa: BLE001 - typically a peer that died: one line, not a traceback
        _raise_if_signalled(0.5)
        rank = ctx.rank if ctx is not None else int(os.environ.get("RANK", "0"))
        print(console.format_error(f"[rank {rank}] {first_line(e)}", hint="another rank probably failed or stalled"),
              file=sys.stderr, flush=True)
        _record_failure(e)
        return 1
    finally:
        shutdown()


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in the tests
    _code = rank_main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The process group is already destroyed and everything is written; skipping the interpreter's
    # teardown (seconds with torch loaded) lets torchrun see every rank finish sooner.
    os._exit(_code)
