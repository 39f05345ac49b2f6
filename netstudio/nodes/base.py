"""The declarative node-type framework.

A node type is one small class: a stable namespaced ``type_id``, a category,
typed ports, typed params and two behaviours — ``infer`` (shapes, pure
arithmetic, no torch) and a builder used by the compiler. The palette, the
inspector and project loading are generated from these declarations.

This module must stay importable without torch: the editor validates shapes on
every keystroke and should start fast, so builders import torch lazily.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Mapping, Sequence

from netstudio.enums import StrEnum
from netstudio.errors import ParamError, ShapeError, UnknownNodeTypeError

if TYPE_CHECKING:  # pragma: no cover
    import torch


AUTO = "auto"


class PortKind(str, Enum):
    TENSOR = "tensor"        # activations flowing through the model
    TARGET = "target"        # ground-truth labels from a dataset
    LOSS = "loss"            # scalar loss terms, collected by an optimizer
    OPTIMIZER = "optimizer"  # an optimizer, driven by a scheduler


def can_connect(out_kind: PortKind, in_kind: PortKind) -> bool:
    """Which output kinds may feed which input kinds.

    A TENSOR may feed a TARGET input so a loss can compare a reconstruction with
    the model input (autoencoders); a TARGET never feeds layers, because the
    exported model only takes features.
    """
    if out_kind == in_kind:
        return True
    return out_kind == PortKind.TENSOR and in_kind == PortKind.TARGET


class Category(str, Enum):
    DATA = "data"
    LAYER = "layer"
    ACTIVATION = "activation"
    MERGE = "merge"
    LOSS = "loss"
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"


CATEGORY_ORDER: tuple[Category, ...] = tuple(Category)


@dataclass(frozen=True)
class TensorInfo:
    """Static description of a tensor on an edge: full shape incl. batch, dtype."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    #: the shape a Flatten made this tensor from (kept only on that Flatten's output), so a
    #: mismatch downstream can say where a feature count comes from: "256 (16×4×4 flattened)"
    flattened_from: tuple[int, ...] | None = None

    def fmt(self) -> str:
        """Human-readable shape, e.g. ``64×1×28×28``."""
        return "×".join(str(d) for d in self.shape) if self.shape else "scalar"

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def numel_per_sample(self) -> int:
        return math.prod(self.shape[1:])

    def with_shape(self, *shape: int) -> "TensorInfo":
        return TensorInfo(tuple(int(s) for s in shape), self.dtype)

    def flattened(self, *shape: int) -> "TensorInfo":
        """This tensor reshaped to ``shape`` by a flatten, remembering where it came from."""
        return TensorInfo(tuple(int(s) for s in shape), self.dtype, self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")


@dataclass(frozen=True)
class Port:
    name: str
    kind: PortKind = PortKind.TENSOR
    label: str | None = None
    multi: bool = False      # accepts several edges (merge inputs, optimizer losses)
    optional: bool = False
    help: str = ""           # what the port carries, for tooltips (e.g. an LSTM's final hidden state)

    @property
    def display(self) -> str:
        return self.label or self.name


class ParamKind(StrEnum):
    """The type of a :class:`Param`, which picks its inspector widget and its coercion."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"
    STR = "str"
    INTS = "ints"
    PATH = "path"


#: the spelling node declarations use (``Param("units", "int", 64)``): checked by mypy, made a ParamKind
ParamKindName = Literal["int", "float", "bool", "choice", "str", "ints", "path"]


@dataclass(frozen=True)
class Param:
    """A typed parameter with its default and limits; drives the inspector widget."""

    name: str
    kind: ParamKind | ParamKindName  # a ParamKind once constructed
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    allow_auto: bool = False  # value may be the string "auto" (inferred from shapes)
    label: str | None = None
    help: str = ""
    step: float | None = None
    log_scale: bool = False  # learning rates: spin box steps multiplicatively
    visible_if: tuple[str, tuple[Any, ...]] | None = None  # (param, values) controlling visibility
    #: left out of saved files while at its default, so files written before the param existed
    #: load and save byte-identical (e.g. the Dataset node's training-only augmentation settings)
    saved_if_set: bool = False

    def __post_init__(self) -> None:
        try:
            kind = ParamKind(self.kind)
        except ValueError:
            raise ValueError(f"unknown param kind {self.kind!r}") from None
        object.__setattr__(self, "kind", kind)

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ")

    def coerce(self, value: Any, *, node_id: str | None = None) -> Any:
        """Return ``value`` converted to this param's type, or raise ParamError.

        Accepts strings typed by a user ("0.01", "true") as well as JSON values.
        """

        def fail(why: str, hint: str | None = None) -> ParamError:
            return ParamError(f"{self.display}: {why}", node_id=node_id, hint=hint, param=self.name)

        if self.allow_auto and (value is None or (isinstance(value, str) and value.strip().lower() == AUTO)):
            return AUTO
        k = self.kind
        try:
            if k == "int":
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError
                out: Any = int(str(value).strip()) if isinstance(value, str) else int(value)
            elif k == "float":
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise fail("must be a finite number")
            elif k == "bool":
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low in ("true", "1", "yes", "on"):
                        out = True
                    elif low in ("false", "0", "no", "off"):
                        out = False
                    else:
                        raise ValueError
                elif isinstance(value, (bool, int)):
                    out = bool(value)
                else:
                    raise ValueError
            elif k == "choice":
                out = str(value)
                if out not in self.choices:
                    raise fail(f"{value!r} is not one of {', '.join(self.choices)}")
            elif k in ("str", "path"):
                if not isinstance(value, str):
                    raise ValueError
                out = value
            elif k == "ints":
                if isinstance(value, str):
                    parts = [p for p in value.replace("×", ",").replace("x", ",").split(",") if p.strip()]
                    out = [int(p) for p in parts]
                elif isinstance(value, (list, tuple)):
                    if any(isinstance(v, bool) for v in value):
                        raise ValueError
                    out = [int(v) for v in value]
                else:
                    raise ValueError
            else:  # pragma: no cover - guarded by __post_init__
                raise ValueError
        except ParamError:
            raise
        except (TypeError, ValueError, OverflowError):
            expected = {"int": "a whole number", "float": "a number", "bool": "true or false",
                        "str": "text", "path": "a file path", "ints": "a list of whole numbers like 4, 4"}
            msg = f"{value!r} is not {expected.get(k, k)}"
            if self.allow_auto:
                msg += " or 'auto'"
            raise fail(msg) from None
        if k in ("int", "float"):
            if self.min is not None and out < self.min:
                raise fail(f"{out} is below the minimum {self.min:g}", f"use a value ≥ {self.min:g}")
            if self.max is not None and out > self.max:
                raise fail(f"{out} is above the maximum {self.max:g}", f"use a value ≤ {self.max:g}")
        return out


@dataclass
class InferContext:
    """What a node's ``infer`` sees: its identity, resolved params, input infos."""

    node_id: str
    name: str
    title: str
    params: dict[str, Any]
    inputs: dict[str, Any]  # port -> TensorInfo, or list[TensorInfo] for multi ports
    batch_size: int = 64
    extra: dict[str, Any] = field(default_factory=dict)

    def error(self, message: str, hint: str | None = None) -> ShapeError:
        """A ShapeError naming this node, e.g. "Linear 'fc1' expects ..."."""
        return ShapeError(f"{self.title} '{self.name}' {message}", node_id=self.node_id, hint=hint)

    def input(self, port: str = "input") -> TensorInfo:
        return self.inputs[port]


class NodeType:
    """Base class of every node type. Subclasses are declarations, not instances of nodes."""

    type_id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    category: ClassVar[Category] = Category.LAYER
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()
    params: ClassVar[tuple[Param, ...]] = ()
    legacy_ids: ClassVar[tuple[str, ...]] = ()  # older type ids that still load
    name_prefix: ClassVar[str] = ""            # default node names: prefix + counter
    summary_params: ClassVar[tuple[str, ...]] = ()  # shown on the node card
    #: a block: each node holds an inner graph (``Node.inner``) and its ports depend on it
    holds_graph: ClassVar[bool] = False
    #: not offered in the palette (blocks and their port nodes are made by commands)
    hidden: ClassVar[bool] = False

    # --- declarations -------------------------------------------------
    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def input_port(cls, name: str) -> Port | None:
        return next((p for p in cls.inputs if p.name == name), None)

    @classmethod
    def output_port(cls, name: str) -> Port | None:
        return next((p for p in cls.outputs if p.name == name), None)

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {p.name: (list(p.default) if isinstance(p.default, (list, tuple)) else p.default)
                for p in cls.params}

    @classmethod
    def validate_params(cls, values: Mapping[str, Any], node_id: str | None = None) -> dict[str, Any]:
        """Defaults filled in, each value coerced; unknown keys dropped (old files)."""
        out = cls.default_params()
        for p in cls.params:
            if p.name in values:
                out[p.name] = p.coerce(values[p.name], node_id=node_id)
        return out

    @classmethod
    def default_name_prefix(cls) -> str:
        return cls.name_prefix or cls.type_id.split(".")[-1]

    @classmethod
    def summary(cls, params: Mapping[str, Any]) -> str:
        """Key params for the node card, e.g. ``out 128``."""
        parts = []
        for name in cls.summary_params:
            v = params.get(name)
            if isinstance(v, float):
                v = f"{v:g}"
            elif isinstance(v, list):
                v = "×".join(str(x) for x in v)
            parts.append(f"{cls.param(name).display} {v}")
        return ", ".join(parts)

    def for_node(self, node: Any) -> "NodeType":
        """The type as it applies to one node: itself, except for types whose ports are per node
        (a block's ports come from its inner graph); ``Graph.node_type`` calls this."""
        return self

    # --- behaviour ----------------------------------------------------
    def resolve(self, ctx: InferContext) -> dict[str, Any]:
        """Return params with ``auto`` values replaced from input shapes."""
        return dict(ctx.params)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        """Output port -> TensorInfo (or other info); raise ``ctx.error(...)``."""
        return {}

    # --- import from PyTorch (netstudio.project.importer) ----------------
    #: qualified names of the ``torch.nn`` module classes this type stands for (``"torch.nn.Conv2d"``)
    torch_modules: ClassVar[tuple[str, ...]] = ()
    #: the functions (``"torch.flatten"``, ``"operator.add"``) and Tensor methods (``"Tensor.flatten"``)
    #: this type stands for; :meth:`from_call` turns a call's arguments into params and inputs
    torch_functions: ClassVar[tuple[str, ...]] = ()
    #: params taken from a call's arguments after its tensor input(s), positional order first
    #: (``torch.flatten(x, 1)`` -> ``start_dim``); a keyword argument of that name works too
    call_params: ClassVar[tuple[str, ...]] = ()
    #: keyword arguments a call may carry that do not change the result (``inplace`` of F.relu)
    call_ignored: ClassVar[tuple[str, ...]] = ("inplace",)

    @classmethod
    def params_from_module(cls, module: Any) -> dict[str, Any]:
        """The params that rebuild ``module`` (one of :attr:`torch_modules`): each param read from the
        module's same-named attribute; a tuple of equal ints (``kernel_size=(3, 3)``) becomes the int.
        Raises ValueError (saying why) when this type cannot represent the module; the importer then
        keeps it as an opaque module, and compares the rebuilt module with the original in any case."""
        out: dict[str, Any] = {}
        for p in cls.params:
            if not hasattr(module, p.name):
                continue
            v = getattr(module, p.name)
            if p.kind == ParamKind.INT and isinstance(v, (tuple, list)):
                if not v or any(x != v[0] for x in v):
                    raise ValueError(f"{p.name} {tuple(v)} differs per dimension")
                v = v[0]
            elif p.kind == ParamKind.BOOL and not isinstance(v, bool):
                v = v is not None  # Linear's/Conv's bias: a tensor or None
            elif p.kind == ParamKind.INTS and isinstance(v, (tuple, list, int)):
                v = list(v) if isinstance(v, (tuple, list)) else [v]
            out[p.name] = v
        return cls.validate_params(out)

    @classmethod
    def from_call(cls, args: Sequence[Any], kwargs: Mapping[str, Any], is_tensor: Callable[[Any], bool],
                  out_shape: Sequence[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(params, input port -> argument) for a call of one of :attr:`torch_functions`.

        The default: the leading tensor arguments feed the input ports in order (a multi port takes
        a list of tensors), the rest are :attr:`call_params`. ``out_shape`` is the call's traced output
        shape (with batch). Raises ValueError when this type cannot represent the call."""
        ports: dict[str, Any] = {}
        rest = list(args)
        for port in cls.inputs:
            if port.multi and rest and isinstance(rest[0], (list, tuple)) and all(is_tensor(a) for a in rest[0]):
                ports[port.name] = list(rest.pop(0))
            elif rest and is_tensor(rest[0]):
                ports[port.name] = rest.pop(0)
            elif not port.optional:
                raise ValueError(f"input {port.name} is not a tensor")
        if len(rest) > len(cls.call_params):
            raise ValueError("more arguments than the node type has params")
        values = dict(zip(cls.call_params, rest))
        for k, v in kwargs.items():
            if k in cls.call_params and k not in values:
                values[k] = v
            elif k not in cls.call_ignored:
                raise ValueError(f"argument {k} is not a param of {cls.title}")
        if any(is_tensor(v) for v in values.values()):
            raise ValueError("a param is a tensor")
        kinds = {p.name: p.kind for p in cls.params}
        out: dict[str, Any] = {}
        for k, v in values.items():
            if kinds.get(k) == ParamKind.INT and isinstance(v, (list, tuple)):
                if not v:
                    continue  # torch's "default" (max_pool2d's stride [] = the kernel size)
                if any(x != v[0] for x in v):
                    raise ValueError(f"{k} {tuple(v)} differs per dimension")
                v = v[0]
            elif kinds.get(k) == ParamKind.INTS and isinstance(v, int):
                v = [v]
            out[k] = list(v) if isinstance(v, tuple) else v
        return cls.validate_params(out), ports


#: one step of taking an output port's value from a module's result: (callable, args, kwargs),
#: where ``RESULT`` in args/kwargs stands for the value so far (the module's result at first)
OutputStep = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class LayerType(NodeType):
    """A node compiled to one ``torch.nn`` module call (usually one input, one output)."""

    inputs: ClassVar[tuple[Port, ...]] = (Port("input", PortKind.TENSOR),)
    outputs: ClassVar[tuple[Port, ...]] = (Port("output", PortKind.TENSOR),)
    #: for modules that return a tuple (torch's RNNs return (output, state)): the index of the
    #: ``output`` port's value in it; types with more output ports override ``output_steps``
    output_index: ClassVar[int | None] = None

    def call_args(self, params: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) of the module call; ``PortRef(name)`` marks an input port's value."""
        return (PortRef("input"),), {}

    @classmethod
    def from_module_call(cls, args: Sequence[Any], kwargs: Mapping[str, Any],
                         is_tensor: Callable[[Any], bool]) -> dict[str, Any]:
        """Input port -> argument of an imported model's call of its module (one of :attr:`torch_modules`):
        by default one tensor (keywords in :attr:`call_ignored` aside). Raises ValueError for another call;
        the importer then keeps the module as an opaque node if it can."""
        if len(args) != 1 or not is_tensor(args[0]) or any(k not in cls.call_ignored for k in kwargs):
            raise ValueError("the module is called with other arguments than one tensor")
        return {"input": args[0]}

    @classmethod
    def module_call_params(cls, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Params that a call accepted by :meth:`from_module_call` sets besides the module's own
        (:meth:`params_from_module`): MultiheadAttention's ``causal`` from a constant causal ``attn_mask``.
        A registered buffer among the arguments arrives as its tensor value."""
        return {}

    def output_steps(self, params: Mapping[str, Any]) -> dict[str, list[OutputStep]]:
        """Output port -> the calls that take its value from the module's result (empty: the result
        itself). Only torch/operator callables, so exported models need nothing else."""
        if self.output_index is None:
            return {"output": []}
        return {"output": [(operator.getitem, (RESULT, self.output_index), {})]}

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        return {"output": self.out_info(ctx, ctx.input("input"))}

    def out_info(self, ctx: InferContext, x: TensorInfo) -> TensorInfo:
        return x

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> "torch.nn.Module":
        """Build the module from resolved params (no ``auto`` left)."""
        raise NotImplementedError


class FunctionType(NodeType):
    """A node compiled to a ``call_function`` of a torch function (Add, Concat, Reshape)."""

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]
                 ) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """Return (callable, args, kwargs); args may contain the input port names as
        ``PortRef`` markers that the compiler replaces by fx nodes."""
        raise NotImplementedError


@dataclass(frozen=True)
class PortRef:
    """Placeholder for an input value inside ``FunctionType.function`` args."""

    port: str
    index: int | None = None  # for multi ports: which edge; None = the whole list


#: in :meth:`LayerType.output_steps`: the module's result, or the previous step's value
RESULT = PortRef("__result__")


@dataclass
class Call:
    """Inside ``FunctionType.function`` args: the value of another call, recorded as a step of its own
    before the node's call. ``fn`` is a torch/operator callable or the name of a Tensor method, e.g.
    ``Call(operator.getitem, (Call(getattr, (PortRef("like"), "shape")), 0))`` is ``like.shape[0]``:
    a size read from a tensor when the model runs, so the exported model works for any batch size."""

    fn: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def size_of(port: str, dim: int, index: int | None = None) -> Call:
    """``input.shape[dim]`` of an input port (the ``index``-th edge of a multi port) as a :class:`Call`."""
    return Call(operator.getitem, (Call(getattr, (PortRef(port, index), "shape")), dim))


@dataclass(frozen=True)
class DimOf:
    """In the arguments ``from_call`` receives from the importer: a size the model reads from a tensor
    when it runs (``x.shape[0]``, ``x.size(0)``), not a number fixed when it was traced. ``value`` is the
    tensor argument (what ``is_tensor`` accepts), ``dim`` a non-negative dimension."""

    value: Any
    dim: int


class ParameterType(NodeType):
    """A node compiled to a learnable tensor of the model (an ``nn.Parameter`` attribute, read in the
    forward): it has no inputs and its output is the tensor itself, with its own full shape (no batch
    dimension of its own; a ``1`` there broadcasts or is expanded to the batch). Its state_dict key is
    the node's name (``class_token``; ``encoder.pos_embedding`` inside the block ``encoder``)."""

    outputs: ClassVar[tuple[Port, ...]] = (Port("output", PortKind.TENSOR),)

    def make(self, params: Mapping[str, Any]) -> "torch.nn.Parameter":
        """The initialised parameter."""
        raise NotImplementedError


def apply_output_steps(steps: Sequence[OutputStep], result: Any,
                       call: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any] | None = None
                       ) -> Any:
    """Run ``steps`` on ``result``; ``call(fn, args, kwargs)`` defaults to calling ``fn`` (eager
    tensors), the compiler passes one that records fx nodes instead."""
    call = call or (lambda fn, args, kwargs: fn(*args, **kwargs))

    def put(v: Any, value: Any) -> Any:
        if isinstance(v, PortRef) and v == RESULT:
            return value
        if isinstance(v, tuple):
            return tuple(put(x, value) for x in v)
        if isinstance(v, list):
            return [put(x, value) for x in v]
        if isinstance(v, dict):
            return {k: put(x, value) for k, x in v.items()}
        return v

    value = result
    for fn, args, kwargs in steps:
        value = call(fn, put(args, value), put(kwargs, value))
    return value


class LossType(NodeType):
    """A loss term: compares prediction and target; becomes part of the training plan."""

    category = Category.LOSS
    inputs = (Port("prediction", PortKind.TENSOR), Port("target", PortKind.TARGET))
    outputs = (Port("loss", PortKind.LOSS),)
    #: how accuracy is measured for this loss: "argmax", "sigmoid", "logits" or None (regression)
    metric: ClassVar[str | None] = None

    def make(self, params: Mapping[str, Any]) -> "torch.nn.Module":
        raise NotImplementedError

    def adapt_target(self, pred: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        """Bring the dataset target to the dtype/shape this loss expects."""
        return target

    # -- code for exports (the standalone training script); see also emit_ctor below --

    def emit_target(self, target: str, pred: str) -> str:
        """``adapt_target`` as Python source over the expressions ``target`` and ``pred``.

        A loss that overrides ``adapt_target`` overrides this too; the script export
        refuses a loss that adapts its target without saying how to write it.
        """
        return target


class OptimizerType(NodeType):
    category = Category.OPTIMIZER
    inputs = (Port("loss", PortKind.LOSS, multi=True),)
    outputs = (Port("optimizer", PortKind.OPTIMIZER, optional=True),)

    def make(self, parameters: Iterable["torch.nn.Parameter"], params: Mapping[str, Any]) -> "torch.optim.Optimizer":
        raise NotImplementedError

    def emit_ctor(self, params: Mapping[str, Any]) -> str:
        """Python source that builds this optimizer over ``model.parameters()`` (the script export).

        The default writes the ``torch.optim`` class that ``make`` returns with the
        settings that differ from torch's defaults, all as literals (repr); an
        optimizer that is not a ``torch.optim`` class overrides this.
        """
        import inspect

        import torch

        opt = self.make([torch.nn.Parameter(torch.zeros(1))], params)
        cls = type(opt)
        if getattr(torch.optim, cls.__name__, None) is not cls:
            raise NotImplementedError(f"The optimizer {cls.__name__} is not a built-in torch.optim class")
        args = []
        for name, prm in inspect.signature(cls.__init__).parameters.items():
            if name in ("self", "params") or name not in opt.defaults:
                continue
            v = opt.defaults[name]
            if name != "lr" and prm.default is not inspect.Parameter.empty and v == prm.default \
                    and isinstance(v, bool) == isinstance(prm.default, bool):
                continue  # torch's default: leave it out so the call stays short
            if isinstance(v, torch.Tensor):
                v = v.item()
            args.append(f"{name}={v!r}")
        return f"torch.optim.{cls.__name__}(model.parameters(), {', '.join(args)})"


class SchedulerType(NodeType):
    category = Category.SCHEDULER
    inputs = (Port("optimizer", PortKind.OPTIMIZER),)
    outputs = ()
    #: "epoch" or "batch": when the trainer calls ``scheduler.step()``
    step_every: ClassVar[str] = "epoch"
    #: True for ReduceLROnPlateau: ``step(val_loss)``
    needs_metric: ClassVar[bool] = False

    def make(self, optimizer: "torch.optim.Optimizer", params: Mapping[str, Any], *,
             epochs: int, steps_per_epoch: int) -> Any:
        raise NotImplementedError

    def emit_ctor(self, params: Mapping[str, Any], optimizer: "torch.optim.Optimizer") -> str:
        """Python source equal to ``make`` (the script export), values as literals (repr).

        The expression may use the names ``optimizer``, ``epochs`` and ``steps_per_epoch``;
        ``optimizer`` here is one made by the project's optimizer node, for settings
        that depend on it. Raises NotImplementedError where the scheduler cannot be written.
        """
        raise NotImplementedError(f"The learning-rate scheduler {self.title} cannot be written into a "
                                  "standalone script yet")


# ----------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------


class Catalog:
    """All known node types by id (and by legacy id, so renamed types still load)."""

    def __init__(self) -> None:
        self._types: dict[str, type[NodeType]] = {}
        self._legacy: dict[str, str] = {}
        self._instances: dict[str, NodeType] = {}

    def register(self, cls: type[NodeType]) -> type[NodeType]:
        if not cls.type_id or "." not in cls.type_id:
            raise ValueError(f"{cls.__name__} needs a namespaced type_id like 'layer.linear'")
        if cls.type_id in self._types and self._types[cls.type_id] is not cls:
            raise ValueError(f"duplicate node type id {cls.type_id!r}")
        self._types[cls.type_id] = cls
        for old in cls.legacy_ids:
            self._legacy[old] = cls.type_id
        return cls

    def canonical_id(self, type_id: str) -> str:
        return self._legacy.get(type_id, type_id)

    def __contains__(self, type_id: str) -> bool:
        return self.canonical_id(type_id) in self._types

    def get(self, type_id: str) -> NodeType:
        """The (stateless) singleton instance of a node type."""
        tid = self.canonical_id(type_id)
        inst = self._instances.get(tid)
        if inst is None:
            cls = self._types.get(tid)
            if cls is None:
                raise UnknownNodeTypeError(f"Unknown node type {type_id!r}: this version of NetStudio does not "
                                           "know this type", hint="check the type id for a typo")
            inst = self._instances[tid] = cls()
        return inst

    def types(self, hidden: bool = False) -> list[type[NodeType]]:
        """The node types a user can add (with ``hidden``: also blocks and their port nodes)."""
        return [t for t in self._types.values() if hidden or not t.hidden]

    def by_category(self) -> dict[Category, list[type[NodeType]]]:
        out: dict[Category, list[type[NodeType]]] = {c: [] for c in CATEGORY_ORDER}
        for cls in self.types():
            out[cls.category].append(cls)
        return out


CATALOG = Catalog()


def register(cls: type[NodeType]) -> type[NodeType]:
    """Class decorator: add a node type to the global catalog."""
    return CATALOG.register(cls)


def as_pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[1] if len(v) > 1 else v[0]))
    return (int(v), int(v))


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution/pooling window (PyTorch's formula, floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def fmt_shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)
