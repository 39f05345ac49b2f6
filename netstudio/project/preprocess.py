"""The input side of an export: the dataset's preprocessing as a module, and what the export expects.

NetStudio trains on features it has already scaled, standardised, resized or
encoded. An exported model that only works on such features is a trap, so every
export starts with a ``preprocess`` submodule that turns the input *as the data
source delivers it* into what the network was trained on:

* images (MNIST 5k, digits, torchvision sets, image folders): raw pixels
  ``N×C×H×W`` (uint8, or float 0–255; 0–16 for sklearn digits) → ``/ pixel_scale``
  → luma if the project converts colour to grayscale → bilinear resize when the
  project resizes a tensor set → ``(x - mean) / std`` per channel. An image folder
  is read by PIL (mode ``L`` or ``RGB``, resized to the training size): the export
  takes the decoded image at that size.
* tables (CSV, sklearn sets, synthetic): the raw feature columns in order, float.
  A missing value (NaN) gets the fitted fill value; a text column is given as its
  category *code* (the index in ``metadata["input"]["categories"][column]``; -1 or
  any other number = unknown) and one-hot encoded here; then ``(x - shift) / scale``.
* token ids (CSV with ``categorical = ids``): int64 ids as they are; text tokens
  map to ids through ``metadata["input"]["vocabulary"]`` (id = index + 1, 0 = unknown).

The module is a ``torch.fx.GraphModule`` of plain tensor operations and buffers,
so a pickled ``.pt`` still loads with PyTorch alone, and torch.export/ONNX trace it.
``metadata`` (JSON) travels with every format and states the input and the class names.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from netstudio.errors import ExportError
from netstudio.project.standalone.preprocess import Postprocess, Preprocess

PREPROCESS_NAME = "preprocess"
POSTPROCESS_NAME = "postprocess"
METADATA_ATTR = "netstudio_metadata"
METADATA_FILE = "netstudio_metadata.json"


@dataclass
class ExportInput:
    """What an export expects as input, and the preprocessing that gets it there (None: left out)."""

    spec: dict[str, Any] | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return list(self.metadata["input"]["shape"])

    @property
    def dtype(self) -> str:
        return str(self.metadata["input"]["dtype"])

    def text(self) -> str:
        """Lines for the user: what to feed the exported model."""
        return describe_metadata(self.metadata)

    def json(self) -> str:
        return json.dumps(self.metadata, ensure_ascii=False, sort_keys=False)

    def example(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A deterministic batch shaped and typed like the expected input (for tracing exporters)."""
        gen = torch.Generator().manual_seed(seed)
        shape = (batch, *self.shape)
        if self.dtype == "int64":
            return torch.randint(0, 2, shape, generator=gen)
        if self.spec is not None and self.spec["kind"] == "image":
            return torch.rand(shape, generator=gen) * _pixel_max(self.spec)
        return torch.randn(shape, generator=gen)


def _pixel_max(spec: Mapping[str, Any]) -> float:
    scale = float(spec.get("pixel_scale") or 1.0)
    return scale if scale != 1.0 else 255.0


def export_input(data: Any, *, preprocess: bool = True, plan: Any = None) -> ExportInput:
    """The ExportInput of a model trained on ``data`` (a :class:`netstudio.data.PreparedData`).

    ``preprocess=False`` leaves the preprocessing out: the export then takes the
    normalized features NetStudio trained on (the metadata says so). When the data
    source standardized a regression target, the export also ends with a
    ``postprocess`` module that maps the network's output back to the target's
    units; ``preprocess=False`` leaves that out too. ``plan`` (the TrainingPlan)
    tells which model output is the regression prediction (default: the first).
    """
    return input_for(data.info, getattr(data, "preprocess", None) if preprocess else None,
                     target_mean=data.target_mean, target_std=data.target_std,
                     target_output=regression_output(plan))


def regression_output(plan: Any) -> int:
    """Index of the model output that a loss compares with the dataset's target (0 without a plan)."""
    for t in getattr(plan, "losses", None) or ():
        if t.target[0] == "target" and not t.metric:
            return int(t.pred_index)
    return 0


def input_for(info: Any, spec: Mapping[str, Any] | None, *, target_mean: Any = None,
              target_std: Any = None, target_output: int = 0) -> ExportInput:
    """ExportInput from a DatasetInfo and a preprocessing spec (None: the export takes normalized features)."""
    meta: dict[str, Any] = {"format": "netstudio-export", "version": 1, "source": info.source,
                            "task": info.task, "class_names": list(info.class_names)}
    if info.task == "classification":
        meta["outputs"] = "one score per class (index i = class_names[i])"
    if target_mean is not None:
        meta["target_mean"], meta["target_std"] = list(target_mean), list(target_std or [])
        if spec is None:
            meta["outputs"] = ("standardized target (this export has no postprocess): multiply by target_std "
                               "and add target_mean for the target's units")
        else:
            meta["outputs"] = ("the target in its own units: the last module, 'postprocess', undoes the "
                               "training standardization (× target_std + target_mean)")
            meta["postprocess"] = {"output": int(target_output), "scale": list(target_std or []),
                                   "shift": list(target_mean)}
    if spec is None:
        meta["preprocess"] = False
        meta["input"] = {"shape": [int(v) for v in info.feature_shape], "dtype": info.feature_dtype,
                         "description": "features already preprocessed exactly as NetStudio trains on them "
                                        "(scaled/standardized/encoded); this export does not do it"}
        if info.feature_names:
            meta["input"]["columns"] = list(info.feature_names)
        return ExportInput(None, meta)
    meta["preprocess"] = True
    meta["input"] = _input_facts(spec, info)
    return ExportInput(dict(spec), meta)


def _input_facts(spec: Mapping[str, Any], info: Any) -> dict[str, Any]:
    kind = spec["kind"]
    if kind == "image":
        c, h, w = spec["input_shape"]
        scale = spec["pixel_scale"]
        rng = "0–255" if scale in (1.0, 255.0) else f"0–{scale:g}"
        what = "image" if info.source == "image_folder" else "raw pixels"
        desc = (f"{what}: {c}×{h}×{w} (channels × height × width) per sample, pixel values {rng} as uint8 or float "
                f"({'grayscale' if c == 1 else 'RGB' if c == 3 else f'{c} channels'})")
        if info.source == "image_folder":
            desc += f"; decode each file as PIL mode {'L' if c == 1 else 'RGB'} at {w}×{h} (width × height)"
        facts: dict[str, Any] = {"shape": [c, h, w], "dtype": "float32", "description": desc,
                                 "image_size": [h, w], "channels": c}
        return facts
    if kind == "ids":
        cols = list(spec["columns"])
        vocab = list(spec.get("vocabulary") or [])
        return {"shape": [len(cols)], "dtype": "int64", "columns": cols, "vocabulary": vocab,
                "description": f"{len(cols)} integer token ids per sample, columns in this order: "
                               f"{_names(cols)}; text tokens → id = vocabulary index + 1 (0 = unknown)"}
    cols = list(spec["columns"])
    cats = spec.get("categories") or [None] * len(cols)
    text = [c for c, k in zip(cols, cats) if k is not None]
    desc = f"{len(cols)} raw feature values per sample (float32), columns in this order: {_names(cols)}"
    if text:
        desc += (f"; text column{'s' if len(text) != 1 else ''} {_names(text)} as the category code "
                 "(index into categories[column])")
    if spec.get("fill") is not None:
        desc += "; NaN = missing (filled as in training)"
    out: dict[str, Any] = {"shape": [len(cols)], "dtype": "float32", "columns": cols, "description": desc}
    if text:
        out["categories"] = {c: list(k) for c, k in zip(cols, cats) if k is not None}
    return out


def _names(cols: list[str], limit: int = 30) -> str:
    shown = ", ".join(repr(c) for c in cols[:limit])
    return shown + (f", … ({len(cols)} in all)" if len(cols) > limit else "")


def describe_metadata(meta: Mapping[str, Any]) -> str:
    """Human lines from an export's metadata: input, class names."""
    inp = meta.get("input") or {}
    lines = [f"input: N×{'×'.join(str(d) for d in inp.get('shape', []))} {inp.get('dtype', '')} — "
             f"{inp.get('description', '')}"]
    names = meta.get("class_names") or []
    if names:
        shown = ", ".join(f"{i}={n!r}" for i, n in enumerate(names[:20])) + (" …" if len(names) > 20 else "")
        lines.append(f"classes (output index → label): {shown}")
    if meta.get("target_mean") is not None:
        lines.append("output: " + str(meta.get("outputs")))
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------


def build_module(spec: Mapping[str, Any]) -> fx.GraphModule:
    """The preprocessing of ``spec`` as a GraphModule (plain tensor ops and buffers)."""
    root = nn.Module()
    g = fx.Graph()
    x = g.placeholder("x")
    kind = spec.get("kind")

    def buffer(name: str, value: torch.Tensor) -> fx.Node:
        root.register_buffer(name, value)
        return g.get_attr(name)

    if kind == "ids":
        v = g.call_method("long", (x,))
    elif kind == "image":
        # the exported training program's own Preprocess module, traced: one piece of code for both
        standardize = spec.get("mean") is not None and spec.get("std") is not None
        fitted = {"pixel_scale": float(spec["pixel_scale"]), "gray": bool(spec.get("gray")),
                  "size": [int(s) for s in spec["size"]] if spec.get("size") else None,
                  "mean": list(spec["mean"]) if standardize else None,
                  "std": list(spec["std"]) if standardize else None}
        return fx.symbolic_trace(Preprocess(fitted))
    elif kind == "tabular":
        v = g.call_method("to", (x, torch.float32))
        if spec.get("fill") is not None:
            f = buffer("fill", torch.tensor(spec["fill"], dtype=torch.float32))
            v = g.call_function(torch.where, (g.call_function(torch.isnan, (v,)), f, v))
        cats = spec.get("categories")
        if spec.get("encoding") == "onehot" and cats and any(c is not None for c in cats):
            src: list[int] = []
            codes: list[float] = []
            for j, c in enumerate(cats):
                if c is None:
                    src.append(j)
                    codes.append(-1.0)
                else:
                    src.extend([j] * len(c))
                    codes.extend(float(k) for k in range(len(c)))
            si = buffer("columns", torch.tensor(src, dtype=torch.int64))
            cv = buffer("codes", torch.tensor(codes, dtype=torch.float32))
            mask = buffer("onehot", torch.tensor([c >= 0 for c in codes], dtype=torch.bool))
            v = g.call_method("index_select", (v, 1, si))
            hot = g.call_method("to", (g.call_function(operator.eq, (v, cv)), torch.float32))
            v = g.call_function(torch.where, (mask, hot, v))
        if spec.get("shift") is not None and spec.get("scale") is not None:
            sh = buffer("shift", torch.tensor(spec["shift"], dtype=torch.float32))
            sc = buffer("scale", torch.tensor(spec["scale"], dtype=torch.float32))
            v = g.call_function(operator.truediv, (g.call_function(operator.sub, (v, sh)), sc))
    else:
        raise ExportError(f"Unknown preprocessing kind {kind!r}")
    g.output(v)
    return fx.GraphModule(root, g, class_name="Preprocess")


def build_postprocess(post: Mapping[str, Any]) -> fx.GraphModule:
    """The inverse of the target standardization: ``y * scale + shift`` per target column."""
    # the exported training program's own Postprocess module, traced
    return fx.symbolic_trace(Postprocess({"target_scale": list(post["scale"]), "target_shift": list(post["shift"])}))


def with_preprocess(gm: fx.GraphModule, inp: ExportInput) -> fx.GraphModule:
    """A copy of ``gm`` whose forward first runs ``preprocess`` (when ``inp.spec``), carrying the metadata.

    With ``metadata["postprocess"]`` (a standardized regression target) the forward
    ends with the ``postprocess`` module on that output: the export answers in the target's units.
    """
    import copy

    if inp.spec is None:
        out = copy.deepcopy(gm)
        setattr(out, METADATA_ATTR, inp.json())
        return out
    pre = build_module(inp.spec)
    root = nn.Module()
    name = PREPROCESS_NAME
    taken = {n for n, _ in gm.named_children()} | {n.name for n in gm.graph.nodes}
    while name in taken:
        name += "_"
    root.add_module(name, pre)
    for child, sub in gm.named_children():
        root.add_module(child, copy.deepcopy(sub))
    post = inp.metadata.get("postprocess")
    post_name = POSTPROCESS_NAME
    while post_name in taken or post_name == name:
        post_name += "_"
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            placeholder = g.placeholder(node.name)
            env[node] = g.call_module(name, (placeholder,))
            continue
        if node.op == "output" and isinstance(post, Mapping):
            result = node.args[0]
            if isinstance(result, (tuple, list)):
                k = int(post.get("output", 0))
                if not 0 <= k < len(result):
                    raise ExportError(f"The regression output index {k} is not among the model's "
                                      f"{len(result)} outputs")
                mapped = [env[r] if isinstance(r, fx.Node) else r for r in result]
                root.add_module(post_name, build_postprocess(post))
                mapped[k] = g.call_module(post_name, (mapped[k],))
                g.output(type(result)(mapped))
            else:
                root.add_module(post_name, build_postprocess(post))
                g.output(g.call_module(post_name, (env[result],)))
            continue
        if node.op == "get_attr":
            target = node.target
            obj = gm
            for part in str(target).split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor) and not hasattr(root, str(target)):
                root.register_buffer(str(target), obj.detach().clone())
        env[node] = g.node_copy(node, lambda n: env[n])
    out = fx.GraphModule(root, g, class_name=type(gm).__name__)
    out.train(gm.training)
    setattr(out, METADATA_ATTR, inp.json())
    return out


def preprocess_source(pre: fx.GraphModule, class_name: str = "Preprocess") -> list[str]:
    """Plain-PyTorch source lines of a preprocess (or postprocess) GraphModule (for the ``.py`` export)."""
    code = pre.graph.python_code(root_module="self")
    forward = code.src.strip("\n").rstrip()
    doc = ("The inverse of the target standardization NetStudio trained with (see METADATA)"
           if class_name == "Postprocess" else "The dataset preprocessing NetStudio applied before training (see INPUT)")
    lines = [f"class {class_name}(nn.Module):",
             f'    """{doc}."""',
             "",
             "    def __init__(self) -> None:",
             "        super().__init__()"]
    for bname, buf in pre.named_buffers():
        dtype = str(buf.dtype)  # e.g. torch.float32
        lines.append(f"        self.register_buffer({bname!r}, torch.tensor({buf.reshape(-1).tolist()!r}, "
                     f"dtype={dtype}).reshape({tuple(buf.shape)!r}))")
    lines.append("")
    lines.extend("    " + ln if ln.strip() else "" for ln in forward.splitlines())
    return lines
