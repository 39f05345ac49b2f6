"""B6 — training on a busy machine: NetStudio against the tutorial loop, with one core kept busy.

A desktop always has another program running. This bench starts a process that
spins on one core (``while True: pass``), trains the MNIST MLP and LeNet models of
bench_trainer.py (mnist_5k, batch 64, Adam 1e-3, all 5,000 digits) while it runs,
and stops it again. Each side runs in its own fresh process, as a user runs it,
with torch's default threads:

* NetStudio: ``fit`` with ``TrainConfig.threads = 0`` (automatic: the thread count
  adapts, netstudio/training/threads.py), idle and under load;
* the PyTorch-tutorial loop (bench_trainer.tutorial_loop), idle and under load.

Runs alternate (NetStudio idle, tutorial idle, NetStudio loaded, tutorial loaded)
and medians of samples/s are compared (wall clock of the whole training call,
setup and probing included; imports and ``torch._dynamo`` are loaded before the
clock starts on both sides). Goals: NetStudio under load ≥ 0.7× NetStudio idle,
and ≥ 3× the tutorial loop under the same load.

    .venv/bin/python bench/bench_busy.py [--repeats 3] [--models MLP LeNet] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EPOCHS = {"MLP": 3, "LeNet": 2}
BATCH = 64


def child(side: str, model: str, epochs: int) -> dict[str, Any]:
    """One timed training run in this (fresh) process; printed as JSON by ``--child``."""
    sys.path[:0] = [str(ROOT), str(HERE)]
    import torch
    import torch._dynamo  # noqa: F401 - the first optimizer imports it; not part of either loop

    from bench_trainer import MODELS, build, hand_copy, tutorial_loop

    import netstudio.data as data_mod
    from netstudio.training import TrainConfig, fit

    data = data_mod.load({"source": "mnist_5k", "val_fraction": 0.0})
    specs, factory = MODELS[model]
    plan = build(specs, BATCH)
    n = int(data.train_x.shape[0]) * epochs
    out: dict[str, Any] = {"side": side, "model": model, "default_threads": torch.get_num_threads()}
    if side == "netstudio":
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH, device="cpu", seed=0, keep_best=False, threads=0)
        t0 = time.perf_counter()
        res = fit(plan, data, cfg, report=lambda e: None)
        seconds = time.perf_counter() - t0
        if res.status != "finished":
            raise RuntimeError(res.message)
        out.update(threads=res.metrics.get("threads"), calibrations=res.metrics.get("thread_calibrations"))
    else:
        seconds = tutorial_loop(hand_copy(plan, factory), data.train_x, data.train_y, BATCH, epochs,
                                torch.device("cpu"))
        out["threads"] = torch.get_num_threads()
    out["samples_per_s"] = n / seconds
    return out


class Spinner:
    """A process keeping one core busy while the ``with`` block runs."""

    def __enter__(self) -> "Spinner":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.3)  # let it get going
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.kill()
        self.proc.wait()


def run_child(side: str, model: str, epochs: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OMP_NUM_THREADS", None)  # torch's default threads, as a user has them
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--child", side, model, str(epochs)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} {model} failed: {proc.stderr.strip()[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=["MLP", "LeNet"])
    ap.add_argument("--json", default=None, help="also write all numbers to this file")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "MODEL", "EPOCHS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))), flush=True)
        return 0

    print(f"machine: {os.cpu_count()} logical cores, load average at start "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    rows: list[dict[str, Any]] = []
    for model in args.models:
        epochs = EPOCHS.get(model, 1)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("ns_idle", "tut_idle", "ns_load", "tut_load")}
        for _ in range(args.repeats):
            runs["ns_idle"].append(run_child("netstudio", model, epochs))
            runs["tut_idle"].append(run_child("tutorial", model, epochs))
            with Spinner():
                runs["ns_load"].append(run_child("netstudio", model, epochs))
                runs["tut_load"].append(run_child("tutorial", model, epochs))
        med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in runs.items()}
        row = {"model": model, "epochs": epochs, **med,
               "ns_threads_idle": [r["threads"] for r in runs["ns_idle"]],
               "ns_threads_load": [r["threads"] for r in runs["ns_load"]],
               "load_vs_idle": med["ns_load"] / med["ns_idle"], "ns_vs_tutorial_load": med["ns_load"] / med["tut_load"],
               "load_avg_1m": os.getloadavg()[0], "runs": runs}
        rows.append(row)
        print(f"{model}: NetStudio idle {med['ns_idle']:,.0f} | loaded {med['ns_load']:,.0f} "
              f"(threads {row['ns_threads_load']}) | tutorial idle {med['tut_idle']:,.0f} | "
              f"tutorial loaded {med['tut_load']:,.0f} samples/s", flush=True)

    print("\n| model | NetStudio idle | NetStudio, one core busy | tutorial idle | tutorial, one core busy "
          "| loaded / idle (≥ 0.7) | NetStudio / tutorial, loaded (≥ 3) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ok = True
    for r in rows:
        ok &= r["load_vs_idle"] >= 0.7 and r["ns_vs_tutorial_load"] >= 3
        print(f"| {r['model']} | {r['ns_idle']:,.0f} | {r['ns_load']:,.0f} | {r['tut_idle']:,.0f} | "
              f"{r['tut_load']:,.0f} | {r['load_vs_idle']:.2f}× | {r['ns_vs_tutorial_load']:.2f}× |")
    print(f"\nload average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}; goals "
          f"{'met' if ok else 'NOT met'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
