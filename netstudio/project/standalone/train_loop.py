"""The training loop of the exported program: one process or DDP under torchrun (copied into train.py).

Plain PyTorch. The names imported from ``.project_parts`` are written into train.py
for each project by the script export (settings, data, loss, optimizer, scheduler).
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoints import load_checkpoint, save_checkpoint
from .distributed import all_sum, setup
from .preprocess import FITTED, Postprocess, Preprocess, WithPreprocess
from .project_parts import (
    BATCH_SIZE,
    CLIP_NORM,
    CLIP_VALUE,
    EPOCHS,
    FROZEN,
    HAS_ACCURACY,
    INIT_WEIGHTS,
    SCHEDULER_STEP,
    SEED,
    SHUFFLE,
    WARMUP_EPOCHS,
    Model,
    count_correct,
    load_data,
    loss_terms,
    make_optimizer,
    make_scheduler,
)
from .threads import THREADS, set_threads

# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

DATA_HELP = "not used by this dataset"  # --data-path's help: what the project's data source reads from it


def keep_frozen(model, weights=False):
    """The modules of frozen nodes (FROZEN): their normalization layers back in eval mode, so their running
    statistics stay as they are; ``weights``: also switch their weights' gradients off."""
    for path in FROZEN:
        try:
            sub = model.get_submodule(path)
        except AttributeError:  # a frozen Parameter node: the path names the parameter itself
            if weights:
                model.get_parameter(path).requires_grad_(False)
            continue
        if weights:
            sub.requires_grad_(False)
        for m in sub.modules():
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)):
                m.eval()


@torch.no_grad()
def evaluate(model, x_all, y_all, rank, world, device, batch_size=1024):
    """(mean loss, accuracy or None) over x_all/y_all; each process evaluates its own share."""
    model.eval()
    mine = torch.tensor_split(torch.arange(len(x_all)), world)[rank]
    loss_sum, correct_sum = 0.0, 0.0
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        out = model(x)
        loss_sum += float(sum(v for v, _ in loss_terms(out, x, y))) * len(idx)
        if HAS_ACCURACY:
            correct_sum += float(count_correct(out, y))
    model.train()
    keep_frozen(model)
    loss_sum, correct_sum, n = all_sum([loss_sum, correct_sum, len(mine)], device, world)
    if n == 0:
        return None, None
    return loss_sum / n, (correct_sum / n if HAS_ACCURACY else None)


def train(args, rank, world, device):
    log = print if rank == 0 else (lambda *a, **k: None)  # only rank 0 reports
    torch.manual_seed(args.seed)
    train_x, train_y, val_x, val_y = load_data(args.data_path)
    n_train = len(train_x)
    steps_per_epoch = math.ceil(n_train / args.batch_size)

    model = Model().to(device)
    if args.init_weights:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), args.init_weights)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    keep_frozen(model, weights=True)  # frozen nodes: not trained (the optimizer skips weights without gradients)
    optimizer = make_optimizer(model)
    scheduler = make_scheduler(optimizer, args.epochs, steps_per_epoch)
    checkpoint = os.path.join(args.checkpoint_dir, "last.pt")
    done = load_checkpoint(checkpoint, model, optimizer, scheduler, rank, world) if args.resume else 0
    if done:
        log(f"resumed from {checkpoint} after epoch {done}", flush=True)
    # DDP copies rank 0's weights to every process and averages gradients during backward
    net = model if world == 1 else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)

    train_x, train_y = train_x.to(device), train_y.to(device)
    log(f"training {n_train} samples in {steps_per_epoch} batches of {args.batch_size} "
        f"on {world} process{'es' if world > 1 else ''} ({device.type})", flush=True)
    for epoch in range(done + 1, args.epochs + 1):
        t0 = time.time()
        net.train()
        keep_frozen(model)
        # the same permutation on every process (seeded per epoch, so a resumed run repeats it)
        gen = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        order = torch.randperm(n_train, generator=gen) if SHUFFLE else torch.arange(n_train)
        order = order.to(device)
        loss_sum, correct_sum, seen = 0.0, 0.0, 0
        for start in range(0, n_train, args.batch_size):
            batch = order[start:start + args.batch_size]
            if len(batch) < world:
                continue  # a last batch too small to give every process a sample
            mine = torch.tensor_split(batch, world)[rank]
            x, y = train_x[mine], train_y[mine]
            out = net(x)
            terms = loss_terms(out, x, y)
            # DDP averages gradients over processes; these scales make that average equal to the
            # gradient of one process seeing the whole global batch, even when shares differ in size.
            mean_scale, sum_scale = world * len(mine) / len(batch), world
            optimizer.zero_grad(set_to_none=True)
            sum(v * (mean_scale if r == "mean" else sum_scale) for v, r in terms).backward()
            if args.clip_value > 0:
                torch.nn.utils.clip_grad_value_(model.parameters(), args.clip_value)
            if args.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
            # warm-up: the scheduler's learning rate times (step + 1) / warm-up steps, for this step only
            step = (epoch - 1) * steps_per_epoch + start // args.batch_size
            warm = (step + 1) / (WARMUP_EPOCHS * steps_per_epoch) if step < WARMUP_EPOCHS * steps_per_epoch else 1.0
            lrs = [g["lr"] for g in optimizer.param_groups]
            for g, lr in zip(optimizer.param_groups, lrs):
                g["lr"] = lr * warm
            optimizer.step()
            for g, lr in zip(optimizer.param_groups, lrs):
                g["lr"] = lr
            if scheduler is not None and SCHEDULER_STEP == "batch":
                scheduler.step()
            with torch.no_grad():
                loss_sum += float(sum(v for v, _ in terms)) * len(mine)
                if HAS_ACCURACY:
                    correct_sum += float(count_correct(out, y))
                seen += len(mine)
        loss_sum, correct_sum, seen = all_sum([loss_sum, correct_sum, seen], device, world)
        train_loss = loss_sum / seen
        train_acc = correct_sum / seen if HAS_ACCURACY else None
        val_loss, val_acc = evaluate(model, val_x, val_y, rank, world, device) if len(val_x) else (None, None)
        if scheduler is not None and SCHEDULER_STEP == "epoch":
            scheduler.step()
        elif scheduler is not None and SCHEDULER_STEP == "metric":
            scheduler.step(val_loss if val_loss is not None else train_loss)
        parts = [f"epoch {epoch}/{args.epochs}", f"train_loss {train_loss:.4f}"]
        if train_acc is not None:
            parts.append(f"train_acc {train_acc:.4f}")
        if val_loss is not None:
            parts.append(f"val_loss {val_loss:.4f}")
        if val_acc is not None:
            parts.append(f"val_acc {val_acc:.4f}")
        parts.append(f"{time.time() - t0:.1f}s")
        log("  ".join(parts), flush=True)
        if rank == 0:
            save_checkpoint(checkpoint, model, optimizer, scheduler, epoch)

    if rank == 0:
        model.eval().cpu()
        # An fx GraphModule of built-in layers unpickles with plain torch, without model.py. It starts with
        # the data preprocessing (so it takes raw pixels / raw table columns) unless --no-preprocess.
        # A standardized regression target is mapped back to its own units by a last module, postprocess.
        post = Postprocess(FITTED) if "target_shift" in FITTED else None
        saved = model if args.no_preprocess else WithPreprocess(Preprocess(FITTED), model, post)
        torch.save(torch.fx.symbolic_trace(saved), args.out)
        torch.save(model.state_dict(), os.path.splitext(args.out)[0] + "_state_dict.pt")
        log(f"saved {args.out}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="global batch size (all processes together)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--device", default=None, help="cpu or cuda; default: cuda if available")
    p.add_argument("--data-path", default=None, help=DATA_HELP)
    p.add_argument("--checkpoint-dir", default="checkpoints", help="where rank 0 writes last.pt after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from CHECKPOINT_DIR/last.pt if it exists")
    p.add_argument("--out", default="model.pt", help="the trained model (loads with torch.load)")
    p.add_argument("--no-preprocess", action="store_true",
                   help="save the bare network (it then takes normalized features, not raw data)")
    p.add_argument("--init-weights", default=INIT_WEIGHTS, help="state_dict to start from")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a process waits for the others before the job fails")
    p.add_argument("--threads", type=int, default=THREADS, help="CPU threads per process; 0 = automatic")
    p.add_argument("--clip-norm", type=float, default=CLIP_NORM, help="clip the gradients' total L2 norm (0 = off)")
    p.add_argument("--clip-value", type=float, default=CLIP_VALUE, help="clip every gradient element (0 = off)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    rank, world, device = setup(args)
    try:
        train(args, rank, world, device)
    except Exception as e:
        if world > 1:
            # usually another process died or stalled; say so before torchrun prints its report
            print(f"[rank {rank}] error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
                  f"[rank {rank}] training stopped; run again with --resume to continue from the last checkpoint",
                  file=sys.stderr, flush=True)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
