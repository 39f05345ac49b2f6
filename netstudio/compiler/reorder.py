"""Training-time reordering of a compiled graph: the same results, bit for bit, in less time.

``ReLU → MaxPool`` is the pattern of every tutorial CNN (LeNet, VGG). Max pooling commutes with
ReLU — ``relu(max(S)) == max(relu(S))`` for every window ``S`` — and so do the gradients: where a
window's maximum is positive both orders send the gradient to the same (first) maximal element,
and where it is not, ReLU's gradient is zero in both. Pooling first lets ReLU and its backward run
on a quarter of the values (2×2 windows). On the CPU that is 10–25 % of a LeNet training step at
one thread (bench/README.md, B6), where element-wise passes over the large first feature maps
cost as much as the pooling itself.

:func:`reordered_forward` installs the reordered graph as the model's ``forward`` for a run (the
same mechanism as the statistics' instrumented forward, :mod:`netstudio.training.nodestats`): a
``GraphModule`` sharing the model's submodules, so parameters, buffers, hooks, the optimizer and
``state_dict`` see nothing different; the model's own graph and generated code are untouched, and
the returned callable takes the forward away again before the model is handed back.

Only exact rewrites are made: ``nn.ReLU``/``F.relu``/``torch.relu`` whose one user is a max pool
(``nn.MaxPool1d/2d/3d`` without indices, ``nn.AdaptiveMaxPool1d/2d/3d`` without indices). An
in-place ReLU is reordered only when nothing else reads its input (it would no longer be
overwritten). Nothing here imports Qt.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_RELU_FUNCTIONS = (F.relu, torch.relu)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    try:
        return gm.get_submodule(str(node.target))
    except AttributeError:
        return None


def _relu_inplace(gm: fx.GraphModule, node: fx.Node) -> bool | None:
    """None: ``node`` is not a plain ReLU of one tensor; else whether it works in place."""
    if len(node.args) < 1 or not isinstance(node.args[0], fx.Node):
        return None
    if node.op == "call_module":
        mod = _module(gm, node)
        if type(mod) is not nn.ReLU or len(node.args) != 1 or node.kwargs:
            return None
        return bool(mod.inplace)
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        extra = dict(node.kwargs)
        inplace = extra.pop("inplace", node.args[1] if len(node.args) > 1 else False)
        if extra or len(node.args) > 2 or not isinstance(inplace, bool):
            return None
        return inplace
    return None


def _is_pool_of(gm: fx.GraphModule, node: fx.Node, value: fx.Node) -> bool:
    mod = _module(gm, node)
    return isinstance(mod, _POOLS) and not mod.return_indices and node.args == (value,) and not node.kwargs


def swappable(gm: fx.GraphModule, graph: fx.Graph | None = None) -> list[tuple[fx.Node, fx.Node]]:
    """The (relu, pool) node pairs of ``graph`` (default: ``gm``'s own) that may be reordered."""
    pairs = []
    for node in (graph if graph is not None else gm.graph).nodes:
        inplace = _relu_inplace(gm, node)
        if inplace is None or len(node.users) != 1:
            continue
        pool = next(iter(node.users))
        if not _is_pool_of(gm, pool, node):
            continue
        source = node.args[0]
        assert isinstance(source, fx.Node)
        if inplace and len(source.users) != 1:
            continue  # others read the input the in-place ReLU overwrote
        pairs.append((node, pool))
    return pairs


def pool_before_relu(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A GraphModule computing ``gm`` with every swappable ReLU → max pool reordered; None: nothing to do.

    The new module shares ``gm``'s submodules and attributes (not copies).
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(gm.graph, env))
    pairs = swappable(gm, graph)
    if not pairs:
        return None
    for relu, pool in pairs:
        source = relu.args[0]
        assert isinstance(source, fx.Node)
        users = list(pool.users)
        pool.replace_input_with(relu, source)   # the pool reads the ReLU's input
        pool.append(relu)                       # the ReLU now runs after the pool ...
        relu.replace_input_with(source, pool)   # ... on its output
        for user in users:
            user.replace_input_with(pool, relu)
    graph.lint()
    return sharing_module(gm, graph, type(gm).__name__)


def sharing_module(gm: fx.GraphModule, graph: fx.Graph, class_name: str,
                   extra: dict[str, Any] | None = None) -> fx.GraphModule:
    """A GraphModule running ``graph`` (a variant of ``gm``'s) on ``gm``'s own submodules and attributes — the
    same objects, not copies — plus the ``extra`` targets."""
    root: dict[str, Any] = dict(extra or {})
    for node in graph.nodes:
        target = str(node.target)
        if node.op == "call_module" and target not in root:
            root[target] = gm.get_submodule(target)
        elif node.op == "get_attr" and target not in root:
            obj: Any = gm
            for part in target.split("."):
                obj = getattr(obj, part)
            root[target] = obj
    return fx.GraphModule(root, graph, class_name=class_name)


def reordered_forward(model: nn.Module) -> Callable[[], None]:
    """Install the reordered forward on ``model`` and every GraphModule inside it; returns the undo.

    Blocks (nested GraphModules) get their own reordered forward, which the outer one calls.
    """
    installed: list[fx.GraphModule] = []
    for sub in model.modules():
        if isinstance(sub, fx.GraphModule) and "forward" not in sub.__dict__:
            fast = pool_before_relu(sub)
            if fast is not None:
                sub.forward = fast.forward
                installed.append(sub)

    def undo() -> None:
        for sub in installed:
            sub.__dict__.pop("forward", None)
        installed.clear()

    return undo
