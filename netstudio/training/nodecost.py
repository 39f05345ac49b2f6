"""Cost of each node of a compiled model: multiply-adds per sample and its share of a training step's time.

* multiply-adds: PyTorch's FLOP counter (``torch.utils.flop_counter``) over one forward
  pass of the node's module, divided by two (a multiply-add is two FLOPs) and by the
  batch size. Matrix products and convolutions are counted (what dominates); element-wise
  layers (activations, pooling, normalisation) count as 0.
* time share: one profiling pass on demand — forward and backward of a random batch of
  the model's input shape (the sum of the outputs as the loss), timed per module with
  hooks over a few repeats after a warm-up; each node's seconds over the sum of all.

Pure torch (no Qt): the GUI runs :func:`node_costs` in a worker thread.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
from torch import fx

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.compiler.build import CompiledModel


@dataclass
class NodeCost:
    macs_per_sample: float        # forward multiply-adds per sample (matmul/conv; 0 for element-wise)
    time_share: float | None      # share of the measured forward+backward time (None: not measured)
    seconds: float | None = None  # its measured forward+backward seconds per step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: layers the FLOP counter never counts whose output has their input's shape: passed through when only counting
_UNCOUNTED = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.modules.dropout._DropoutNd)


def _skip_uncounted(model: nn.Module) -> None:
    """Replace the :data:`_UNCOUNTED` layers of ``model`` (a copy) by ``nn.Identity``: the counts stay the same,
    and on the meta device (the Model panel counts after every edit) their element-wise work in Python was
    most of the time. BatchNorm then also needs no batch statistics (a batch of one counts)."""
    for name, m in list(model.named_modules()):
        # torch's own classes only: a subclass (an imported model's module) may compute more
        if name and isinstance(m, _UNCOUNTED) and type(m).__module__.startswith("torch.nn."):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())


def count_key(compiled: "CompiledModel") -> tuple[Any, ...] | None:
    """What the multiply-add counts of :func:`node_costs` (``measure=False``) depend on: equal keys, equal
    counts — the forward's code, every submodule's description and every tensor's shape, the input and which
    node is which module. None (never reuse a count) when a module is not one of torch's or NetStudio's own,
    whose description may not show everything its forward depends on."""
    model = compiled.module
    for m in model.modules():
        if not type(m).__module__.startswith(("torch.", "netstudio.")) and not isinstance(m, fx.GraphModule):
            return None
    info = compiled.input_info
    tensors = tuple((n, tuple(t.shape), t.dtype)
                    for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()])
    subgraphs = tuple(m.code for m in model.modules() if isinstance(m, fx.GraphModule))
    shape = None if info is None else (tuple(info.sample_shape), str(getattr(info, "dtype", "float32")))
    return (str(model), subgraphs, tensors, shape,
            tuple(sorted(compiled.module_names.items())))


def node_costs(compiled: "CompiledModel", batch_size: int = 32, *, measure: bool = True, repeats: int = 3,
               device: str | torch.device = "cpu", stop: Callable[[], bool] | None = None,
               in_place: bool = False) -> dict[str, NodeCost]:
    """Per node id (the nodes with a module) its :class:`NodeCost`; ``compiled.module`` is not modified, except
    with ``in_place`` (the caller hands the module over, e.g. a meta-device model compiled only to be counted:
    no copy of it is made, which was a third of the Model panel's count for a ViT-B/16)."""
    info = compiled.input_info
    if info is None:
        return {}
    dev = torch.device(device)
    model = (compiled.module if in_place else copy.deepcopy(compiled.module)).to(dev).train()
    if not measure:
        _skip_uncounted(model)
    shape = (batch_size, *tuple(int(d) for d in info.sample_shape))
    dtype = getattr(torch, str(getattr(info, "dtype", "float32")), torch.float32)
    x = torch.randn(shape, device=dev) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype, device=dev)
    names = {attr: nid for nid, attr in compiled.module_names.items()}

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    macs = {nid: sum(flops.get(f"{root}.{attr}", {}).values()) / 2 / batch_size for attr, nid in names.items()}
    if not measure:
        return {nid: NodeCost(m, None) for nid, m in macs.items()}

    seconds: dict[str, float] = {nid: 0.0 for nid in names.values()}
    started: dict[str, float] = {}
    timing = [False]

    def begin(nid: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if timing[0]:
                _sync(dev)
                started[nid] = time.perf_counter()
        return hook

    def end(nid: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if timing[0] and nid in started:
                _sync(dev)
                seconds[nid] += time.perf_counter() - started.pop(nid)
        return hook

    handles = []
    for attr, nid in names.items():
        mod: nn.Module = model.get_submodule(attr)
        handles += [mod.register_forward_pre_hook(begin(nid)), mod.register_forward_hook(end(nid)),
                    mod.register_full_backward_pre_hook(begin(nid)), mod.register_full_backward_hook(end(nid))]
    x.requires_grad_(x.is_floating_point())  # so the first layer's backward hooks fire too
    try:
        for i in range(repeats + 1):  # the first pass warms up (allocations, kernels)
            if stop is not None and stop():
                break
            timing[0] = i > 0
            model.zero_grad(set_to_none=True)
            out = model(x)
            outs = out if isinstance(out, tuple) else (out,)
            loss = sum(o.float().sum() for o in outs if isinstance(o, torch.Tensor) and o.requires_grad)
            if isinstance(loss, torch.Tensor):
                loss.backward()
            _sync(dev)
    finally:
        for h in handles:
            h.remove()
    total = sum(seconds.values())
    n = max(repeats, 1)
    return {nid: NodeCost(macs[nid], seconds[nid] / total if total > 0 else None, seconds[nid] / n)
            for nid in names.values()}
