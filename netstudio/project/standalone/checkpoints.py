"""Checkpoints with resume for the exported program (copied into train.py by the script export)."""

import os

import torch
import torch.distributed as dist

# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------


def save_checkpoint(path, model, optimizer, scheduler, epoch):
    """Model, optimizer, scheduler and epoch; written to a temporary file then renamed (never half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer, scheduler, rank, world):
    """Restore a checkpoint written by save_checkpoint; returns its epoch (0 when there is none).

    Rank 0 reads the file and sends it to the others, so the checkpoint folder
    only has to exist on the first node.
    """
    state = None
    if rank == 0 and os.path.exists(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if world > 1:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])
