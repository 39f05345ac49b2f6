"""``netstudio sweep P --trials N --param NODE.PARAM=DIST ...``: a hyperparameter search (Optuna).

The search itself is :func:`netstudio.project.sweep.run_sweep`; this module parses the flags, prints
one line per finished trial, the results table and the best trial, and ``--apply`` writes the best
trial's values into the project file.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from netstudio.cli.console import EXIT_ERROR, EXIT_OK, CliError, add_control_args, control_overrides, err, \
    format_error, load, positive_float, TRUST_HELP

EXAMPLE = ('netstudio sweep P --trials 20 --param "optimizer.lr=log(1e-4,1e-1)" '
           '--param "fc1.out_features=int(32,256)" --epochs 5')


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def trial_line(t: dict[str, Any]) -> str:
    return (f"trial {t['number']:>3}  {t['state']:<8}  loss {_num(t.get('value'), '.4f'):>7}  "
            f"val_acc {_num(t.get('val_accuracy'), '.4f'):>6}  {t.get('epochs_run', 0)} epoch"
            f"{'s' if t.get('epochs_run') != 1 else ''}  {_num(t.get('seconds'), '.1f')}s  "
            f"{params_text(t.get('params') or {})}")


def results_table(result: dict[str, Any]) -> list[str]:
    """The trials, best first (complete ones by objective, then pruned, failed, stopped)."""
    keys = list(result.get("keys") or [])
    order = {"complete": 0, "pruned": 1, "failed": 2, "stopped": 3}
    trials = sorted(result.get("trials") or [], key=lambda t: (order.get(t["state"], 9), t.get("value") is None,
                                                                t.get("value") or 0.0, t["number"]))
    cols = ["trial", "state", "loss", "val_acc", "epochs"] + keys
    rows = [[str(t["number"]), t["state"], _num(t.get("value"), ".4f"), _num(t.get("val_accuracy"), ".4f"),
             str(t.get("epochs_run", 0))] + [fmt_value((t.get("params") or {}).get(k, "—")) for k in keys]
            for t in trials]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    from netstudio.errors import ProjectError
    from netstudio.project.sweep import SweepSpec, require_optuna, run_sweep
    from netstudio.training import job as training_job

    require_optuna()  # before anything is loaded: the one line that says how to install it
    project = load(args.project, args.trust)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "device": args.device,
                 "threads": args.threads, "stats_every": args.stats_every, **control_overrides(args)}
    try:
        config = training_job.configure(project.training, overrides)
    except ProjectError as e:
        raise CliError(format_error(e.message, hint=e.hint)) from None
    weights = None if args.fresh_weights else project.weights_path()  # an imported model's, as train does
    spec = SweepSpec(str(args.project), project.graph.to_dict(), config, list(args.param), trials=args.trials,
                     timeout_s=args.timeout, jobs=args.jobs, sampler_seed=args.sampler_seed,
                     prune_after=args.prune_after, record=not args.no_record, keep_weights=args.keep_weights,
                     start_weights=str(weights) if weights is not None and weights.is_file() else None)
    spec.validate()  # a bad --param fails here, naming its token
    lines = sys.stderr if args.json else sys.stdout

    def report(ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        if kind == "sweep_start":
            where = f", {args.jobs} processes" if args.jobs > 1 else ""
            print(f"{ev['sweep']}: {ev['trials']} trials of {config.epochs} epoch{'s' if config.epochs != 1 else ''} "
                  f"over {', '.join(ev['keys'])}{where}", file=lines, flush=True)
        elif kind == "trial_end":
            print(trial_line(ev), file=lines, flush=True)

    stop = threading.Event()
    interrupted = {"count": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt
        stop.set()
        err("\nstopping the sweep after the current batch… (Ctrl-C again to abort)")

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        result = run_sweep(spec, report, stop)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    out = result.to_dict()
    best = result.best
    if not args.json:
        print("", file=lines)
        for line in results_table(out):
            print(line, file=lines)
        ended = {"timeout": " (the timeout ended it)", "stopped": " (stopped)"}.get(result.ended_early, "")
        print(f"{len(result.trials)} trials in {result.seconds:.1f}s{ended}: {out['complete']} complete, "
              f"{out['pruned']} pruned, {out['failed']} failed", file=lines)
        if best is None:
            print("no trial completed: nothing to apply", file=lines)
        else:
            print(f"best trial {best.number}: loss {best.value:.4f}"
                  + (f", val_acc {best.val_accuracy:.4f}" if best.val_accuracy is not None else "")
                  + f"  {params_text(best.params)}", file=lines)
            if not args.apply:
                print("write it into the project with --apply", file=lines)
    if best is not None and args.apply:
        out["applied"] = _apply(args.project, list(args.param), best.params, lines)
    if args.json:
        print(json.dumps(out), flush=True)
    if best is None:
        return EXIT_ERROR
    return 130 if interrupted["count"] else EXIT_OK


def _apply(path: str, params: list[str], values: dict[str, Any], lines: Any) -> list[dict[str, Any]]:
    """The best trial's values into the project file (loaded again: the file as it is now)."""
    from netstudio.project.io import save_project
    from netstudio.project.sweep import apply_values_in_place

    project = load(path)
    changes = apply_values_in_place(project.graph, params, values)
    save_project(project, path)
    for nid, param, old, new in changes:
        name = project.graph.nodes[nid].name
        print(f"applied {name}.{param}: {fmt_value(old)} → {fmt_value(new)}", file=lines)
    print(f"wrote {path}", file=lines)
    return [{"node": nid, "param": param, "old": old, "new": new} for nid, param, old, new in changes]


def add_command(sub: Any, positive: Any, non_negative: Any) -> None:
    p = sub.add_parser("sweep", help="hyperparameter search (Optuna: TPE sampler, median pruning); every trial "
                                     "is kept as a run",
                       description="Search node parameters with Optuna. Each trial trains a copy of the project "
                                   "with its values; every trial is recorded in PROJECT.runs/. Example: " + EXAMPLE)
    p.add_argument("project", help="a .nsproj file")
    p.add_argument("--param", action="append", required=True, metavar="NODE.PARAM=DIST",
                   help="a parameter to search: NODE is a node name or id, or optimizer/scheduler; DIST is "
                        "log(a,b), float(a,b), int(a,b) or choice(v1,v2,...). Repeat for more")
    p.add_argument("--trials", type=positive, default=20, help="trials to run (default 20)")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help="start no trial after S seconds (the running ones finish)")
    p.add_argument("--jobs", type=positive, default=1, metavar="J",
                   help="trials in J processes at once (CPU threads shared out; cuda: spread over the GPUs)")
    p.add_argument("--sampler-seed", type=non_negative, default=0, help="seed of the TPE sampler (default 0)")
    p.add_argument("--prune-after", type=non_negative, default=5, metavar="N",
                   help="complete trials before the median pruner prunes (default 5)")
    p.add_argument("--apply", action="store_true", help="write the best trial's values into the project file")
    p.add_argument("--keep-weights", action="store_true", help="keep each trial's trained weights in its run")
    p.add_argument("--no-record", action="store_true", help="do not keep the trials in PROJECT.runs/")
    p.add_argument("--fresh-weights", action="store_true",
                   help="every trial starts from fresh weights, not from the weights file beside the project "
                        "(an imported model's)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    p.add_argument("--trust", action="store_true", help=TRUST_HELP)
    g = p.add_argument_group("training settings of every trial (default: the project's)")
    g.add_argument("--epochs", type=positive, default=None)
    g.add_argument("--batch-size", type=positive, default=None)
    g.add_argument("--seed", type=non_negative, default=None)
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--threads", type=non_negative, default=None, metavar="N", help="CPU threads per trial")
    g.add_argument("--stats-every", type=non_negative, default=None, metavar="N",
                   help="per-node statistics every N steps (0 = off)")
    add_control_args(p)
    p.set_defaults(func=cmd_sweep)
