"""A training plan whose model holds a given state_dict, built without initialising what the state replaces.

Opening a project with a weights file beside it holds those weights as the session's model. Building the
model as usual runs every layer's random initialisation (≈ 0.8 s of kaiming init for ViT-B/16's 86 M
parameters) only for :meth:`load_state_dict` to overwrite it. :func:`plan_with_state` compiles the model on
the meta device instead (no memory, no init) and assigns the state's tensors to it. Whenever the result could
differ from the usual path — a tensor the state does not provide (a non-persistent buffer, a tensor constant,
an attribute a layer computed in its constructor), a parameter shared by two layers, any error — it builds the
plan the usual way (:func:`build_plan` + ``load_state_dict(strict=True)``), so the model is always the same.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import torch
from torch import fx, nn

from netstudio.compiler.build import TrainingPlan, build_plan, compile_model
from netstudio.compiler.shapes import analyze
from netstudio.graph.model import Graph

log = logging.getLogger(__name__)


def plan_with_state(graph: Graph, state: dict[str, torch.Tensor], batch_size: int = 64) -> TrainingPlan:
    """``build_plan(graph, batch_size)`` whose model has loaded ``state`` (strict), as the usual path gives it.

    The state's tensors may become the model's own (no copy): the caller hands ``state`` over. Raises what
    :func:`build_plan` raises, and RuntimeError/KeyError from ``load_state_dict`` when the state does not fit.
    """
    plan = _fast_plan(graph, state, batch_size)
    if plan is not None:
        return plan
    plan = build_plan(graph, batch_size)
    plan.model.load_state_dict(state, strict=True)
    return plan


def _fast_plan(graph: Graph, state: dict[str, torch.Tensor], batch_size: int) -> TrainingPlan | None:
    """The plan with its model built on the meta device and ``state`` assigned; None where that path cannot
    give exactly the usual model (the caller then builds it the usual way)."""
    try:
        an = analyze(graph, batch_size)
        if not an.ok:
            return None  # the usual path raises its error
        device = torch.empty(0).device  # where the usual path puts the weights
        with torch.device("meta"):
            compiled = compile_model(graph, batch_size, an)
        model = compiled.module
        if _shares_tensors(model):
            return None  # tied weights: assigning would untie them
        prepared = _prepared(model, state, device)
        if prepared is None:
            return None
        model.load_state_dict(prepared, strict=True, assign=True)
        plan = build_plan(graph, batch_size, an, compiled=compiled)
        if any(t.is_meta for t in _reachable_tensors(plan)):
            return None  # something the state does not provide
        return plan
    except Exception as e:  # noqa: BLE001 - any surprise: the usual path decides (and raises its own errors)
        log.debug("held model built the usual way: %s: %s", type(e).__name__, e)
        return None


def _shares_tensors(model: nn.Module) -> bool:
    params = list(model.named_parameters(remove_duplicate=False))
    buffers = list(model.named_buffers(remove_duplicate=False))
    return len({id(p) for _, p in params}) != len(params) or len({id(b) for _, b in buffers}) != len(buffers)


def _prepared(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device
              ) -> dict[str, torch.Tensor] | None:
    """``state`` with each tensor as ``copy_`` into the model's own tensor would leave it: the model's dtype,
    strides and device, in a storage of its own (a tensor that is not is copied into a new one). None when a
    key or shape does not match (the usual path then raises the error ``load_state_dict`` gives)."""
    own = model.state_dict(keep_vars=True)
    if set(own) != set(state):
        return None
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, mine in own.items():
        v = state[key]
        if not isinstance(v, torch.Tensor) or v.shape != mine.shape:
            return None
        storage = v.untyped_storage()
        alone = (v.dtype == mine.dtype and v.device == device and v.stride() == mine.stride()
                 and v.storage_offset() == 0 and storage.nbytes() == v.numel() * v.element_size()
                 and storage.data_ptr() not in seen and not v.requires_grad and type(v) is torch.Tensor)
        if not alone:
            v = torch.empty_strided(mine.shape, mine.stride(), dtype=mine.dtype, device=device).copy_(v.detach())
        if v.numel():
            seen.add(v.untyped_storage().data_ptr())
        out[key] = v
    return out


def _reachable_tensors(plan: TrainingPlan) -> Iterator[torch.Tensor]:
    """Every tensor the plan's model and losses hold: parameters, buffers, plain tensor attributes (also in
    lists, tuples and dicts) of every submodule, and tensor constants in the fx graphs."""
    roots: list[nn.Module] = [plan.model, *(t.module for t in plan.losses)]
    for root in roots:
        for module in root.modules():
            yield from (p for p in module._parameters.values() if p is not None)
            yield from (b for b in module._buffers.values() if b is not None)
            for name, value in vars(module).items():
                if name not in ("_parameters", "_buffers", "_modules"):
                    yield from _tensors_in(value, 0)
            if isinstance(module, fx.GraphModule):
                for node in module.graph.nodes:
                    yield from _tensors_in((node.args, node.kwargs), 0)


def _tensors_in(value: Any, depth: int) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 4 and isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors_in(v, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v, depth + 1)
