"""A ``torch.export`` program (.pt2) as a module the importer can trace.

An exported program is a graph of ATen operators with the weights as inputs. This rewrites the
operators that carry weights (convolution, linear, batch norm) into the ``torch.nn`` modules they came
from, named after their weights' module path (``layer1.0.conv1.weight`` -> ``layer1_0_conv1``), a
recurrent layer (one ``aten.lstm.input``/``gru``/``rnn_*`` operator starting from zeros) into its
``nn.LSTM``/``nn.GRU``/``nn.RNN``, and the
weightless operators into the torch functions the node catalog maps (``aten.relu`` -> ``torch.relu``).
An operator without a rewrite gives a clear error naming it.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from netstudio.errors import NetStudioError

aten = torch.ops.aten

#: torch.export keeps a recurrent layer as one operator: aten.lstm.input(input, hx, params, has_biases,
#: num_layers, dropout, train, bidirectional, batch_first), likewise gru/rnn_tanh/rnn_relu
_RECURRENT: dict[Any, tuple[type[nn.Module], dict[str, Any]]] = {
    aten.lstm.input: (nn.LSTM, {}), aten.gru.input: (nn.GRU, {}),
    aten.rnn_tanh.input: (nn.RNN, {"nonlinearity": "tanh"}), aten.rnn_relu.input: (nn.RNN, {"nonlinearity": "relu"}),
}
#: operators that make an initial recurrent state of zeros (what the torch module starts from anyway)
_ZEROS = {aten.zeros.default, aten.zeros_like.default}


class Pt2ImportError(NetStudioError):
    """A .pt2 program with an operator NetStudio cannot rewrite."""


def _functions() -> dict[Any, Callable[..., Any]]:
    """Weightless ATen operators -> the torch callables with the same arguments."""
    table: dict[Any, Callable[..., Any]] = {
        aten.relu.default: torch.relu, aten.relu_.default: torch.relu,
        aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add,
        aten.mul.Tensor: operator.mul, aten.sub.Tensor: operator.sub,
        aten.flatten.using_ints: torch.flatten, aten.view.default: torch.reshape,
        aten.reshape.default: torch.reshape, aten._unsafe_view.default: torch.reshape,
        aten.max_pool2d.default: torch.max_pool2d, aten.avg_pool2d.default: F.avg_pool2d,
        aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d, aten.mean.dim: torch.mean, aten.sum.dim_IntList: torch.sum,
        aten.cat.default: torch.cat, aten.sigmoid.default: torch.sigmoid, aten.tanh.default: torch.tanh,
        aten.silu.default: F.silu, aten.silu_.default: F.silu, aten.hardswish.default: F.hardswish,
        aten.hardswish_.default: F.hardswish, aten.hardsigmoid.default: F.hardsigmoid,
        aten.gelu.default: F.gelu, aten.permute.default: torch.permute, aten.transpose.int: torch.transpose,
        aten.softmax.int: torch.softmax, aten._softmax.default: torch.softmax,
        aten.dropout.default: F.dropout, aten.clone.default: torch.clone, aten.contiguous.default: torch.clone,
        aten.hardtanh.default: F.hardtanh, aten.hardtanh_.default: F.hardtanh,
        aten.select.int: torch.select, aten.zeros.default: torch.zeros, aten.zeros_like.default: torch.zeros_like,
    }
    return table


_NO_OPS = {aten.dropout.default, aten.clone.default, aten.contiguous.default}


def _is_tensor(n: Any) -> bool:
    return isinstance(n, fx.Node) and isinstance(n.meta.get("val"), torch.Tensor)


def module_from_program(ep: Any) -> fx.GraphModule:
    """The exported program ``ep`` as a GraphModule of ``torch.nn`` modules and torch functions."""
    src = ep.module()
    table = _functions()
    root = nn.Module()
    g = fx.Graph()
    env: dict[fx.Node, Any] = {}
    consts: dict[fx.Node, torch.Tensor] = {}

    def tensor(n: Any, what: str) -> torch.Tensor | None:
        if n is None:
            return None
        if n not in consts:
            raise Pt2ImportError(f"{what} takes its weights from '{n}', which is not a stored parameter")
        return consts[n]

    def name_for(w: fx.Node, fallback: str) -> str:
        base = str(w.target).rsplit(".", 1)[0] if "." in str(w.target) else fallback
        name = base.replace(".", "_")
        while hasattr(root, name):
            name += "_"
        return name

    shared: dict[fx.Node, str] = {}  # weight -> the module made for it: a second use calls it again

    def add(w: fx.Node, m: nn.Module, x: Any, fallback: str) -> fx.Node:
        name = shared.get(w)
        if name is None or repr(getattr(root, name)) != repr(m):
            name = name_for(w, fallback)
            root.add_module(name, m)
            shared[w] = name
        return g.call_module(name, (env[x],))

    def arg(v: Any) -> Any:
        return fx.node.map_arg(v, lambda a: env[a])

    def recurrent(n: fx.Node) -> None:
        """aten.lstm.input & co. -> the torch module (its result items: ``env[n] = ("rnn", call, pair)``)."""
        cls, extra = _RECURRENT[n.target]
        args: list[Any] = list(n.args)
        x, hx, params, bias, layers, dropout, train, bidir, batch_first = args[:9]
        what = f"the {cls.__name__} '{n.name}'"
        states = hx if isinstance(hx, (list, tuple)) else [hx]
        if any(not (isinstance(h, fx.Node) and h.target in _ZEROS) for h in states):
            raise Pt2ImportError(f"{what} starts from a state the program computes (not zeros)",
                                 hint="NetStudio's recurrent nodes start from zeros; export the model without "
                                      "passing an initial state, or import its Python class")
        weights = [tensor(w, what) for w in params]
        per = 4 if bias else 2
        dirs = 2 if bidir else 1
        if len(weights) != per * dirs * int(layers):
            raise Pt2ImportError(f"{what} has {len(weights)} weight tensors, not the {per * dirs * int(layers)} "
                                 "of a plain layer (a projection, proj_size?)",
                                 hint="import the model's Python class instead")
        w0 = weights[0]
        assert w0 is not None
        gates = {nn.LSTM: 4, nn.GRU: 3}.get(cls, 1)
        m: Any = cls(w0.shape[1], w0.shape[0] // gates, num_layers=int(layers), bias=bool(bias),
                batch_first=bool(batch_first), dropout=float(dropout) if int(layers) > 1 else 0.0,
                bidirectional=bool(bidir), **extra)
        with torch.no_grad():
            for p, w in zip(m._flat_weights, weights):
                assert isinstance(p, torch.Tensor) and w is not None
                if p.shape != w.shape:
                    raise Pt2ImportError(f"{what} has a weight of shape {tuple(w.shape)} where torch's "
                                         f"{cls.__name__} has {tuple(p.shape)}")
                p.copy_(w)
        env[n] = ("rnn", add(params[0], m, x, cls.__name__.lower()), cls is nn.LSTM)

    for n in src.graph.nodes:
        if n.op == "placeholder":
            env[n] = g.placeholder(n.name)
        elif n.op == "get_attr":
            value = src
            for part in str(n.target).split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                consts[n] = value.detach()
            else:
                env[n] = g.get_attr(str(n.target))  # a submodule (not expected in plain programs)
        elif n.op == "call_function":
            t = n.target
            a = list(n.args) + [None] * 8
            if t == aten.conv2d.default:
                w, b = tensor(a[1], "a convolution"), tensor(a[2], "a convolution")
                assert w is not None
                stride, padding, dilation = (a[3] or [1, 1]), (a[4] or [0, 0]), (a[5] or [1, 1])
                groups = a[6] or 1
                m: Any = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride),  # type: ignore[arg-type]
                              padding=tuple(padding) if not isinstance(padding, str) else padding,
                              dilation=tuple(dilation), groups=groups, bias=b is not None)
                m.weight.data.copy_(w)
                if b is not None:
                    m.bias.data.copy_(b)
                env[n] = add(a[1], m, a[0], "conv")
            elif t == aten.linear.default:
                w, b = tensor(a[1], "a linear layer"), tensor(a[2], "a linear layer")
                assert w is not None
                m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
                m.weight.data.copy_(w)
                if b is not None:
                    m.bias.data.copy_(b)
                env[n] = add(a[1], m, a[0], "fc")
            elif t in (aten._native_batch_norm_legit_no_training.default, aten.batch_norm.default):
                if t == aten.batch_norm.default:
                    x, w, b, rm, rv, training, momentum, eps = a[:8]
                    if training:
                        raise Pt2ImportError("the program was exported in training mode (batch norm uses batch "
                                             "statistics)", hint="export the model after model.eval()")
                else:
                    x, w, b, rm, rv, momentum, eps = a[:7]
                wt, bt = tensor(w, "a batch norm"), tensor(b, "a batch norm")
                mean, var = tensor(rm, "a batch norm"), tensor(rv, "a batch norm")
                assert mean is not None and var is not None
                dims = len(n.meta["val"][0].shape if isinstance(n.meta["val"], (tuple, list))
                           else n.meta["val"].shape)
                cls = {3: nn.BatchNorm1d, 2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[dims]
                bn = cls(mean.shape[0], eps=float(eps), momentum=float(momentum), affine=wt is not None)
                if wt is not None and bt is not None:
                    bn.weight.data.copy_(wt)
                    bn.bias.data.copy_(bt)
                assert bn.running_mean is not None and bn.running_var is not None
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                env[n] = add(rm, bn, x, "bn")
                if t != aten.batch_norm.default:
                    env[n] = ("tuple", env[n])  # only item 0 (the normalized tensor) is used
            elif t in _RECURRENT:
                recurrent(n)
            elif t is operator.getitem and isinstance(env.get(n.args[0]), tuple) \
                    and env[n.args[0]][0] == "rnn":
                # aten gives (output, h_n, c_n); torch's LSTM (output, (h_n, c_n)), GRU/RNN (output, h_n)
                _, call, pair = env[n.args[0]]
                i = int(n.args[1])
                item = g.call_function(operator.getitem, (call, min(i, 1)))
                env[n] = g.call_function(operator.getitem, (item, i - 1)) if pair and i else item
            elif t is operator.getitem and isinstance(env.get(n.args[0]), tuple) \
                    and env[n.args[0]][0] == "tuple":
                if n.args[1] != 0 and n.users:
                    raise Pt2ImportError("a batch norm's saved statistics are used by the program")
                env[n] = env[n.args[0]][1]
            elif t in _NO_OPS and _is_tensor(n.args[0]):
                env[n] = env[n.args[0]]
            elif t in table:
                env[n] = g.call_function(table[t], arg(tuple(n.args)), arg(dict(n.kwargs)))
            elif not _is_tensor(n):
                # sizes and assertions keep their operator; the importer uses traced shapes instead
                env[n] = g.call_function(t, arg(tuple(n.args)), arg(dict(n.kwargs)))
            else:
                raise Pt2ImportError(f"the program uses the operator {t}, which NetStudio cannot import yet",
                                     hint="export a model built from common layers, or import it from torchvision")
        elif n.op == "output":
            out = n.args[0]
            while isinstance(out, (tuple, list)) and len(out) == 1:
                out = out[0]
            g.output(arg(out))
        elif n.op == "call_module" and not n.users:
            continue  # torch.export's input guards: the importer checks the shapes itself
        else:
            raise Pt2ImportError(f"the program has a '{n.op}' step NetStudio cannot import")
    gm = fx.GraphModule(root, g, "ImportedProgram")
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
