"""``netstudio lr-find P`` (learning-rate range test) and ``netstudio runs P`` (the run history)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from netstudio.cli.console import EXIT_OK, CliError, add_control_args, control_overrides, format_error, load, \
    positive_float


def _fmt_lr(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def cmd_lr_find(args: argparse.Namespace) -> int:
    from netstudio.errors import ProjectError
    from netstudio.training import job as training_job
    from netstudio.training.lrfind import lr_find

    project = load(args.project, getattr(args, "trust", False))
    overrides = {"batch_size": args.batch_size, "seed": args.seed, "device": args.device, **control_overrides(args)}
    try:
        config = training_job.configure(project.training, overrides)
    except ProjectError as e:
        raise CliError(format_error(e.message, hint=e.hint)) from None
    job = training_job.prepare(project.graph, config)
    lines = sys.stderr if args.json else sys.stdout
    if not args.json:
        print(f"range test: lr {args.start_lr:g} → {args.end_lr:g} over {args.steps} batches of "
              f"{config.batch_size} on {job.device}", file=lines, flush=True)
    result = lr_find(job.plan, job.data, job.config, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    optimizer = job.plan.optimizer_params.get("lr")
    if args.json:
        out = {**result.to_dict(), "optimizer_lr": optimizer, "optimizer_node": job.plan.optimizer_node}
        print(json.dumps(out), flush=True)
        return EXIT_OK
    every = max(1, len(result.lrs) // 20)
    for i in range(0, len(result.lrs), every):
        print(f"  lr {result.lrs[i]:<10.3g} loss {result.losses[i]:<10.4g} smoothed {result.smoothed[i]:.4g}",
              file=lines)
    print(f"{result.stopped} after {len(result.lrs)} batches", file=lines)
    print(f"suggested lr {_fmt_lr(result.suggestion)} (steepest descent); lowest loss at "
          f"{_fmt_lr(result.lr_min_loss)}; the optimizer's lr is {_fmt_lr(optimizer)}", file=lines)
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from netstudio.project.runs import list_runs

    runs = list_runs(args.project)
    if args.json:
        print(json.dumps([r.summary() for r in runs]), flush=True)
        return EXIT_OK
    if not runs:
        print(f"no runs recorded for {args.project}")
        return EXIT_OK
    head = f"{'run':<24} {'status':<13} {'epochs':>6} {'val_loss':>9} {'val_acc':>8} {'lr':>9} {'seconds':>8}  device"
    sweeps = any(r.summary()["sweep"] for r in runs)
    print(head + ("  sweep" if sweeps else ""))
    for r in runs:
        s = r.summary()

        def num(v: Any, fmt: str) -> str:
            return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"

        print(f"{s['id']:<24} {s['status']:<13} {num(s['epochs_run'], 'd'):>6} {num(s['val_loss'], '.4f'):>9} "
              f"{num(s['val_accuracy'], '.4f'):>8} {num(s['lr'], '.3g'):>9} {num(s['seconds'], '.1f'):>8}  "
              f"{s['device'] or '—'}" + (f"  {_sweep_text(s)}" if sweeps else ""))
    return EXIT_OK


def _sweep_text(s: dict[str, Any]) -> str:
    """``sweep-… #3 pruned`` for a trial of a sweep, "—" for a run of its own."""
    if not s.get("sweep"):
        return "—"
    return f"{s['sweep']} #{s.get('trial')} {s.get('trial_state') or ''}".rstrip()


def add_commands(sub: Any, positive: Any, non_negative: Any) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test on a copy of the model; suggests an lr")
    p.add_argument("project", help="a .nsproj file")
    p.add_argument("--steps", type=positive, default=100, help="batches of the ramp (default 100)")
    p.add_argument("--start-lr", type=positive_float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=positive_float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the project's)")
    p.add_argument("--batch-size", type=positive, default=None)
    p.add_argument("--seed", type=non_negative, default=None)
    add_control_args(p)
    p.add_argument("--json", action="store_true", help="print the curve and the suggestion as one JSON object")
    p.add_argument("--trust", action="store_true", help="run the Python code of the user's file(s) the project's "
                                                        "model uses; without it such a project is refused")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("runs", help="list the runs recorded beside a project (PROJECT.runs/)")
    p.add_argument("project", help="a .nsproj file")
    p.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    p.set_defaults(func=cmd_runs)
