"""One process or a torchrun job: the exported program's process group (copied into train.py)."""

import datetime
import os

import torch
import torch.distributed as dist

# ----------------------------------------------------------------------------
# Distributed setup
# ----------------------------------------------------------------------------


def setup(args):
    """(rank, world_size, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them: one process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        if args.device:
            return 0, 1, torch.device(args.device)
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    if use_cuda:  # one GPU per process, NCCL between them
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    # The timeout bounds every collective: a process that died or hangs ends the job with an error
    # after --timeout seconds instead of blocking the others forever.
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout),
                            device_id=device if use_cuda else None)
    return rank, world, device


def all_sum(values, device, world):
    """Element-wise sum of a list of numbers over all processes."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()
