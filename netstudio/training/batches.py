"""Batches for training and evaluation: DataLoaders of non-resident data, slices of resident tensors,
and the evaluation loop every caller of the trainer shares (single process or one rank's share)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def loader(dataset: Any, batch_size: int, shuffle: bool, generator: torch.Generator | None,
            device: torch.device) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                       num_workers=0, pin_memory=device.type == "cuda", drop_last=False)


@torch.no_grad()
def eval_batches(model: nn.Module, plan: Any, batches: Any, device: torch.device
                  ) -> tuple[float | None, float | None, int]:
    """(mean loss, accuracy or None, n) over (x, y) batches; one synchronisation at the end."""
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    correct_sum = torch.zeros((), dtype=torch.int64, device=device)
    n, has_correct = 0, False
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            out = model(x)
            loss_sum.add_(plan.loss(out, x, y), alpha=x.shape[0])
            c = plan.correct(out, y)
            if c is not None:
                correct_sum.add_(c)
                has_correct = True
            n += x.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        return None, None, 0
    return float(loss_sum.item()) / n, (int(correct_sum.item()) / n if has_correct else None), n


def tensor_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Any:
    return ((x[a:a + batch_size], y[a:a + batch_size]) for a in range(0, x.shape[0], batch_size))


def val_batches(data: Any, batch_size: int, device: torch.device, on_device: tuple | None = None) -> Any:
    if on_device is not None:
        return tensor_batches(on_device[0], on_device[1], batch_size)
    if data.resident:
        if data.val_x is None or data.val_y is None:
            return iter(())
        return tensor_batches(data.val_x, data.val_y, batch_size)
    if data.val_set is None or len(data.val_set) == 0:
        return iter(())
    return iter(loader(data.val_set, batch_size, False, None, device))
