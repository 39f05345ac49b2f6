"""Export a compiled model: pickled GraphModule, weights, torch.export, Python source, ONNX.

Every exporter raises :class:`ExportError` with a message the user can act on;
torch's own exceptions never escape. Untrusted files are only ever read with
``torch.load(weights_only=True)``: a weights file can embed the project JSON as
a plain string, so reopening it in NetStudio needs no pickle execution.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from netstudio.errors import ExportError, NetStudioError
from netstudio.fileio import atomic_write, describe_os_error, remove_created, torch_load_reason, torch_writer

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.project.io import Project
    from netstudio.project.preprocess import ExportInput

FORMATS = ("pt", "weights", "pt2", "py", "onnx")
WEIGHTS_FORMAT = "netstudio-weights"
WEIGHTS_VERSION = 1

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _graph_module(model: Any) -> fx.GraphModule:
    """Accept a GraphModule, a CompiledModel or a TrainingPlan."""
    for attr in ("compiled", "module"):  # TrainingPlan.compiled -> CompiledModel.module
        if not isinstance(model, nn.Module) and hasattr(model, attr):
            model = getattr(model, attr)
    if not isinstance(model, fx.GraphModule):
        raise ExportError(f"Expected a compiled NetStudio model, got {type(model).__name__}")
    return model


def _generator(model: Any) -> fx.GraphModule | None:
    """A GAN's generator (noise in, samples out) when ``model`` has one (netstudio.compiler.build.generator_of)."""
    from netstudio.compiler.build import generator_of

    try:
        return generator_of(_graph_module(model))
    except ExportError:
        return None


def _refuse_gan(model: Any, what: str) -> None:
    """A GAN's model judges Real | Fake batches and draws its noise inside: only its generator is exported (.pt)."""
    if _generator(model) is not None:
        raise ExportError(f"A GAN project cannot be exported as {what}: NetStudio exports its generator as a full "
                          "model (.pt), taking the noise and returning generated samples",
                          hint="export with --format pt (the generator) or --format weights (every weight, to "
                               "continue training)")


def generator_note(model: Any) -> str | None:
    """For a GAN's model: the sentence saying that the .pt export is its generator and what it takes (else None)."""
    from netstudio.compiler.build import GENERATOR_ATTR

    if _generator(model) is None:
        return None
    info = _graph_module(model).meta[GENERATOR_ATTR]
    args = ", ".join(f"{label} (batch × {size}, {dist})" for _, label, size, dist in info["inputs"])
    return f"the export is the GAN's generator: it takes {args} and returns generated samples"


def _generator_export(gen: fx.GraphModule, model: Any) -> fx.GraphModule:
    """The generator on the CPU in eval mode, with metadata that says what it takes and returns."""
    from netstudio.compiler.build import GENERATOR_ATTR
    from netstudio.project.preprocess import METADATA_ATTR

    out = _cpu_eval_copy(gen)
    info = _graph_module(model).meta[GENERATOR_ATTR]
    meta = {"format": "netstudio-export", "version": 1, "model": "generator",
            "inputs": [{"name": str(label), "shape": [int(size)], "dtype": "float32", "distribution": str(dist)}
                       for _, label, size, dist in info["inputs"]],
            "outputs": "generated samples in the scale of the training data's features (after its normalization)"}
    setattr(out, METADATA_ATTR, json.dumps(meta, ensure_ascii=False))
    return out


def _input_info(model: Any) -> Any:
    if hasattr(model, "compiled"):
        model = model.compiled
    return getattr(model, "input_info", None)


def _prepare_target(path: PathLike) -> Path:
    """Check the export target; folders are created only by the write itself (and removed if it fails)."""
    p = Path(path)
    longest = max((len(part) for part in p.parts), default=0)
    if longest > 255:
        raise ExportError(f"Cannot export to {p}: the file name is too long ({longest} characters in one name; "
                          "at most 255)", hint="choose a shorter name")
    if os.path.isdir(p):
        raise ExportError(f"{p} is a folder; choose a file name to export to")
    return p


def _atomic_write(path: PathLike, write: Callable[[str], None], what: str) -> Path:
    """Run ``write(tmp_path)`` then rename over ``path``: a failed export never leaves half a file,
    nor a folder it created. The file follows the umask (an existing one keeps its mode)."""
    p = _prepare_target(path)
    try:
        # keep the real suffix: torch.export.save insists on ".pt2"
        atomic_write(p, write, keep_suffix=True, make_parents=True)
    except ExportError:
        raise
    except OSError as e:
        if not p.parent.is_dir():
            raise ExportError(f"Cannot create the folder {p.parent}: {describe_os_error(e, p)}",
                              hint="choose a folder you can write to") from e
        raise ExportError(f"Cannot write {what} to {p}: {describe_os_error(e, p)}",
                          hint="choose a folder you can write to and a shorter name") from e
    except Exception as e:
        raise ExportError(f"{what} export failed: {_short(e)}") from e
    return p


def _missing_folders(folder: Path) -> list[Path]:
    out: list[Path] = []
    while not folder.exists() and folder.parent != folder:
        out.append(folder)
        folder = folder.parent
    return out


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _short(e: BaseException, limit: int = 400) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first if len(first) <= limit else first[:limit] + "…"


def _cpu_eval_copy(model: fx.GraphModule) -> fx.GraphModule:
    """Exports are device-independent and in inference mode (Dropout off, BatchNorm running stats)."""
    import copy

    m = copy.deepcopy(model).cpu()
    m.eval()
    return m


def _example(example_input: Any, model: Any) -> torch.Tensor:
    if isinstance(example_input, torch.Tensor):
        return example_input.detach().cpu()
    raise ExportError("An example input tensor is needed for this export format",
                      hint="pass a batch of features shaped like the dataset's")


def example_input_for(compiled: Any, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A deterministic random batch shaped like the dataset features (for tracing exporters).

    ``batch`` defaults to 2 because torch.export specialises a batch dimension of 1.
    """
    info = _input_info(compiled)
    if info is None:
        raise ExportError("The model has no dataset input, so its input shape is unknown",
                          hint="connect a Dataset node's features to the first layer")
    gen = torch.Generator().manual_seed(seed)
    if str(getattr(info, "dtype", "float32")).startswith(("int", "uint")):  # token ids for an Embedding
        return torch.randint(0, 2, (batch, *info.sample_shape), generator=gen)
    return torch.randn((batch, *info.sample_shape), generator=gen, dtype=torch.float32)


# ----------------------------------------------------------------------------
# whole model: pickled GraphModule
# ----------------------------------------------------------------------------


def _exported(model: Any, inp: "ExportInput | None") -> fx.GraphModule:
    """The module an export writes: CPU, eval mode, with the input preprocessing and metadata when ``inp``."""
    gm = _cpu_eval_copy(_graph_module(model))
    if inp is None:
        return gm
    from netstudio.project.preprocess import with_preprocess

    out = with_preprocess(gm, inp)
    out.eval()
    return out


def _example_for(model: Any, example_input: Any, inp: "ExportInput | None") -> torch.Tensor:
    """The tracing example: the raw input's shape when the export preprocesses (NetStudio's batch is normalized)."""
    if inp is not None and (inp.spec is not None or example_input is None):
        return inp.example()  # shaped and typed like what the export takes
    return _example(example_input, model)


def export_pt(model: Any, path: PathLike, inp: "ExportInput | None" = None, quantize: str | None = None) -> Path:
    """``torch.save`` the whole GraphModule.

    fx pickles a GraphModule as its generated Python source plus its built-in
    ``torch.nn`` submodules, so ``torch.load(path, weights_only=False)`` works in
    an environment without NetStudio. With ``inp`` the module starts with the
    dataset's preprocessing (a ``preprocess`` GraphModule) and carries the
    metadata JSON as the attribute ``netstudio_metadata``.

    ``quantize="dynamic-int8"`` writes the :func:`quantize_dynamic` model instead
    (its layers are ``torch.ao.nn.quantized.dynamic`` modules, part of PyTorch).
    """
    gen = _generator(model)
    # a GAN: the generator alone (its input is noise, so the dataset's preprocessing does not apply)
    gm: nn.Module = _generator_export(gen, model) if gen is not None else _exported(model, inp)
    if quantize is not None:
        gm = quantize_dynamic(gm, quantize)
    from netstudio.nodes.usercode import bind_for_pickle

    bind_for_pickle(gm)  # classes from a user's file are pickled by reference: model.Swish (userfile.py)
    return _atomic_write(path, torch_writer(gm), "Model")


# ----------------------------------------------------------------------------
# dynamic quantization (.pt only)
# ----------------------------------------------------------------------------

#: ``--quantize`` values; dynamic int8: Linear/LSTM/GRU weights stored as int8, activations quantized per batch
QUANTIZE_MODES = ("dynamic-int8",)
QUANTIZABLE = (nn.Linear, nn.LSTM, nn.GRU)
QUANTIZE_FORMATS = ("pt",)
QUANTIZE_UNSUPPORTED = ("dynamic quantization is exported only as a full model (.pt): torch.export (.pt2), ONNX "
                        "and the .py source do not support dynamically quantized layers")


def check_quantize(fmt: str, quantize: str | None) -> None:
    """Refuse a quantization mode or format combination that cannot be exported."""
    if quantize is None:
        return
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"Unknown quantization {quantize!r}", hint=f"use one of {', '.join(QUANTIZE_MODES)}")
    if fmt not in QUANTIZE_FORMATS:
        raise ExportError(f"Cannot quantize the {fmt} export: {QUANTIZE_UNSUPPORTED}",
                          hint="export with --format pt, or leave out --quantize")


def quantize_dynamic(model: Any, mode: str = "dynamic-int8") -> nn.Module:
    """A CPU eval copy of ``model`` (a module, CompiledModel or TrainingPlan) with Linear/LSTM/GRU in int8.

    Uses ``torch.ao.quantization.quantize_dynamic``. torch marks ``torch.ao.quantization``
    as deprecated in favour of the separate ``torchao`` package, but it is what an
    installed PyTorch provides; its DeprecationWarning is left to Python's default
    filters (not suppressed here). Other layers (the ``preprocess`` module,
    convolutions, activations) stay float, and attributes such as the metadata are kept.
    """
    check_quantize("pt", mode)
    model = model if isinstance(model, nn.Module) else _graph_module(model)
    m = _cpu_eval_copy(model)
    if not any(isinstance(sub, QUANTIZABLE) for sub in m.modules()):
        raise ExportError("The model has no Linear, LSTM or GRU layer, so dynamic quantization changes nothing",
                          hint="export without quantization")
    try:
        from torch.ao.quantization import quantize_dynamic as _qd

        q = _qd(m, set(QUANTIZABLE), dtype=torch.qint8)
    except Exception as e:  # noqa: BLE001 - e.g. no quantized engine on this platform
        raise ExportError(f"Dynamic quantization failed: {_short(e)}") from e
    q.eval()
    from netstudio.project.preprocess import METADATA_ATTR

    if isinstance(getattr(model, METADATA_ATTR, None), str):  # a GraphModule's deepcopy drops extra attributes
        setattr(q, METADATA_ATTR, getattr(model, METADATA_ATTR))
    return q


def _file_bytes(module: nn.Module) -> int:
    import io

    buf = io.BytesIO()
    torch.save(module, buf)
    return len(buf.getvalue())


def compare_quantized(model: Any, plan: Any, data: Any, *, inp: "ExportInput | None" = None,
                      mode: str = "dynamic-int8") -> dict[str, Any]:
    """File sizes and validation figures of the float and the quantized export of ``model``.

    Sizes are those of the ``.pt`` files (with ``inp``'s preprocessing, as written).
    Accuracy (classification) and loss are measured on ``data``'s validation split
    with ``plan``'s loss and accuracy rule; None where there is no plan, data or split.
    """
    float_gm = _exported(model, inp)
    out: dict[str, Any] = {"mode": mode, "float_bytes": _file_bytes(float_gm),
                           "quantized_bytes": _file_bytes(quantize_dynamic(float_gm, mode)),
                           "float_accuracy": None, "quantized_accuracy": None,
                           "float_loss": None, "quantized_loss": None}
    if plan is not None and data is not None:
        from netstudio.training.engine import evaluate

        bare = _cpu_eval_copy(_graph_module(model))  # data's val split is already preprocessed
        for key, m in (("float", bare), ("quantized", quantize_dynamic(bare, mode))):
            r = evaluate(m, plan, data, "cpu")
            out[f"{key}_accuracy"], out[f"{key}_loss"] = r["val_accuracy"], r["val_loss"]
    return out


def _size_text(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def quantize_summary(cmp: Mapping[str, Any]) -> str:
    """Two lines for the user: size and validation figures, quantized beside float."""
    fb, qb = cmp["float_bytes"], cmp["quantized_bytes"]
    lines = [f"quantized ({cmp['mode']}): {_size_text(qb)} vs float {_size_text(fb)} ({qb / fb:.2f}×)"]
    if cmp.get("float_accuracy") is not None and cmp.get("quantized_accuracy") is not None:
        lines.append(f"validation accuracy: quantized {cmp['quantized_accuracy']:.4f} vs float "
                     f"{cmp['float_accuracy']:.4f}")
    elif cmp.get("float_loss") is not None and cmp.get("quantized_loss") is not None:
        lines.append(f"validation loss: quantized {cmp['quantized_loss']:.6g} vs float {cmp['float_loss']:.6g}")
    else:
        lines.append("validation figures: unavailable (no validation data)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# weights (+ the project, so NetStudio can reopen them)
# ----------------------------------------------------------------------------


def export_weights(model: Any, project: "Project | None", path: PathLike, inp: "ExportInput | None" = None) -> Path:
    """A ``weights_only``-safe file: ``{"format", "version", "state_dict", "project", "input"}``.

    The project travels as a JSON *string* (not nested containers) so it
    round-trips byte-for-byte through torch's restricted unpickler; so does
    ``input`` (the preprocessing and metadata of :class:`ExportInput`), which
    lets ``netstudio export`` add the preprocessing without loading the data again.
    """
    gm = _graph_module(model)
    state = {k: v.detach().cpu().clone() for k, v in gm.state_dict().items()}
    record: dict[str, Any] = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "state_dict": state,
                              "project": project.dumps() if project is not None else None}
    if inp is not None:
        record["input"] = json.dumps({"spec": inp.spec, "metadata": inp.metadata})
    return _atomic_write(path, torch_writer(record), "Weights")


def project_start_weights(project: "Project") -> dict[str, torch.Tensor] | None:
    """The state_dict of the weights file beside ``project`` (an imported model's), None without one."""
    path = project.weights_path()
    return read_weights(path)[1] if path is not None and path.is_file() else None


def read_weights(path: PathLike) -> tuple[str | None, dict[str, torch.Tensor]]:
    """(project JSON text or None, state_dict) from an :func:`export_weights` file or a bare state_dict.

    Always ``weights_only=True``: a hostile file can fail to load, never run code.
    """
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"No such weights file: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols; we report our own error
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ExportError(f"{p.name} is not a weights file NetStudio can read safely: {torch_load_reason(e)}",
                          hint="export the weights from NetStudio, or save model.state_dict() with torch.save") from e
    project_text: str | None = None
    if isinstance(obj, Mapping) and obj.get("format") == WEIGHTS_FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > WEIGHTS_VERSION:
            raise ExportError(f"{p.name} uses weights format version {version!r}; this NetStudio reads up to "
                              f"{WEIGHTS_VERSION}", hint="update NetStudio")
        state = obj.get("state_dict")
        project_text = obj.get("project")
        if project_text is not None and not isinstance(project_text, str):
            raise ExportError(f"{p.name} has a malformed embedded project")
    else:
        state = obj
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise ExportError(f"{p.name} does not contain a state_dict (a mapping of names to tensors)")
    return project_text, dict(state)


def read_export_input(path: PathLike) -> "ExportInput | None":
    """The ExportInput stored in a NetStudio weights file (None for older or bare files)."""
    from netstudio.project.preprocess import ExportInput

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - read_weights reports unreadable files
        return None
    text = obj.get("input") if isinstance(obj, Mapping) and obj.get("format") == WEIGHTS_FORMAT else None
    if not isinstance(text, str):
        return None
    try:
        rec = json.loads(text)
        return ExportInput(rec.get("spec"), dict(rec["metadata"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def load_weights(path: PathLike) -> "tuple[Project, dict[str, torch.Tensor]]":
    """Reopen an :func:`export_weights` file: the project it was trained from and its weights."""
    from netstudio.project.io import Project

    text, state = read_weights(path)
    if text is None:
        raise ExportError(f"{Path(path).name} holds only weights, no NetStudio project",
                          hint="open the .nsproj file and load these weights into it")
    try:
        project = Project.loads(text)
    except NetStudioError as e:
        raise ExportError(f"The project embedded in {Path(path).name} is invalid: {e.message}",
                          node_id=e.node_id, hint=e.hint) from e
    return project, state


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict`` with a readable error when the weights belong to another architecture."""
    from netstudio.training.checkpoints import state_dict_mismatch

    mismatch = state_dict_mismatch(model, state)
    if mismatch is not None:
        raise ExportError("The weights do not match this model: " + mismatch,
                          hint="use weights trained with this project (layer names and sizes must match)")
    model.load_state_dict(state)


# ----------------------------------------------------------------------------
# torch.export (.pt2)
# ----------------------------------------------------------------------------


def export_pt2(model: Any, example_input: torch.Tensor | None, path: PathLike,
               inp: "ExportInput | None" = None) -> Path:
    """``torch.export.export`` + ``torch.export.save``; the batch dimension is dynamic when possible.

    With ``inp``: the preprocessing is part of the program and the metadata is the
    extra file ``netstudio_metadata.json`` (``torch.export.load(path, extra_files=...)``).
    """
    _refuse_gan(model, "torch.export (.pt2)")
    gm = _exported(model, inp)
    x = _example_for(model, example_input, inp)
    program = _torch_export(gm, x)
    extra = {_metadata_file(): inp.json()} if inp is not None else None
    return _atomic_write(path, lambda tmp: torch.export.save(program, tmp, extra_files=extra), "torch.export")


def _metadata_file() -> str:
    from netstudio.project.preprocess import METADATA_FILE

    return METADATA_FILE


def _torch_export(gm: nn.Module, x: torch.Tensor) -> Any:
    # A dynamic batch lets the exported program serve any batch size; some layers
    # (e.g. ops that specialise on the batch) refuse it, so fall back to the example's shape.
    errors: list[BaseException] = []
    for dynamic in (True, False):
        if dynamic and x.dim() == 0:
            continue
        try:
            shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. RNN flat-weight notices the user cannot act on
                return torch.export.export(gm, (x,), dynamic_shapes=shapes, strict=False)
        except Exception as e:
            errors.append(e)
    raise ExportError(f"torch.export could not trace the model: {_short(errors[-1])}")


# ----------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------

ONNX_MISSING = "ONNX export needs the packages onnx and onnxscript: pip install onnx onnxscript"


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(ONNX_MISSING) from e


def export_onnx(model: Any, example_input: torch.Tensor | None, path: PathLike,
                inp: "ExportInput | None" = None) -> Path:
    """``torch.onnx.export`` (the dynamo exporter) with a dynamic batch dimension.

    With ``inp``: the preprocessing is part of the graph and the metadata JSON is the
    model's metadata property ``netstudio_metadata``.
    """
    _require_onnx()
    _refuse_gan(model, "ONNX")
    gm = _exported(model, inp)
    x = _example_for(model, example_input, inp)

    def write(tmp: str) -> None:
        errors: list[BaseException] = []
        for dynamic in (True, False):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    kwargs: dict[str, Any] = {"input_names": ["x"], "dynamo": True, "verbose": False}
                    if dynamic:
                        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
                    program = torch.onnx.export(gm, (x,), **kwargs)
                if program is None:
                    raise ExportError("torch.onnx.export returned nothing")
                program.save(tmp)
                if inp is not None:
                    _onnx_metadata(tmp, inp.json())
                return
            except Exception as e:
                errors.append(e)
        raise ExportError(f"ONNX export failed: {_short(errors[-1])}")

    return _atomic_write(path, write, "ONNX")


def _onnx_metadata(path: str, text: str) -> None:
    import onnx

    from netstudio.project.preprocess import METADATA_ATTR

    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_ATTR, text
    onnx.save(proto, path)


# ----------------------------------------------------------------------------
# plain PyTorch source (.py)
# ----------------------------------------------------------------------------

_SKIP_ARGS = {"self", "device", "dtype"}
_RNN_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")


def _literal(v: Any) -> str | None:
    """Python source for a constructor argument value, or None if it is not a plain literal."""
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "float('nan')"
        if math.isinf(v):
            return "float('inf')" if v > 0 else "float('-inf')"
        return repr(v)
    if isinstance(v, (tuple, list)):
        items = [_literal(x) for x in v]
        if any(i is None for i in items):
            return None
        if isinstance(v, list):
            return "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"  # type: ignore[arg-type]
    return None


def _rnn_args(m: nn.RNNBase) -> dict[str, Any]:
    args = {k: getattr(m, k) for k in _RNN_ARGS}
    if isinstance(m, nn.LSTM) and m.proj_size:
        args["proj_size"] = m.proj_size
    if type(m) is nn.RNN:
        args["nonlinearity"] = m.nonlinearity
    return args


def _signature_args(m: nn.Module) -> dict[str, Any]:
    """Constructor kwargs read back from same-named attributes (how torch.nn built-ins store them)."""
    out: dict[str, Any] = {}
    for name, prm in inspect.signature(type(m).__init__).parameters.items():
        if name in _SKIP_ARGS or name.startswith("_") or prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        if not hasattr(m, name):
            continue
        v = getattr(m, name)
        if name == "bias" and (v is None or isinstance(v, torch.Tensor)):
            v = v is not None  # the flag is stored as the bias Parameter itself
        if isinstance(v, torch.Tensor):
            continue
        out[name] = v
    return out


def _encoder_layer_args(m: nn.TransformerEncoderLayer) -> dict[str, Any]:
    """Its arguments live in its submodules (the activation as a function: relu or gelu only)."""
    activation = {1: "relu", 2: "gelu"}.get(getattr(m, "activation_relu_or_gelu", 0))
    if activation is None:
        raise ExportError("Only a relu or gelu TransformerEncoderLayer can be written as Python source")
    return dict(d_model=m.linear1.in_features, nhead=m.self_attn.num_heads, dim_feedforward=m.linear1.out_features,
                dropout=m.dropout.p, activation=activation, layer_norm_eps=m.norm1.eps,
                batch_first=m.self_attn.batch_first, norm_first=m.norm_first, bias=m.linear1.bias is not None)


#: module type -> constructor-kwargs extractor; everything else uses the signature reader
ARG_EXTRACTORS: dict[type[nn.Module], Callable[[Any], dict[str, Any]]] = {
    nn.LSTM: _rnn_args,
    nn.GRU: _rnn_args,
    nn.RNN: _rnn_args,
    nn.Identity: lambda m: {},
    nn.TransformerEncoderLayer: _encoder_layer_args,
}


def _user_constructor(m: nn.Module) -> str | None:
    """``_user_model.Swish(beta=1.5)`` for an instance of a class from the user's file (None for others)."""
    from netstudio.nodes.usercode import origin_of

    if origin_of(type(m)) is None:
        return None
    return f"_user_{type(m).__module__}.{type(m).__qualname__}({_arguments(_signature_args(m), type(m).__qualname__)})"


def _arguments(args: dict[str, Any], owner: str) -> str:
    """``k1=lit, k2=lit`` for a constructor call; an argument with no Python literal is an ExportError."""
    parts = []
    for k, v in args.items():
        lit = _literal(v)
        if lit is None:
            raise ExportError(f"Cannot write the {k!r} argument of {owner} ({v!r}) as Python source")
        parts.append(f"{k}={lit}")
    return ", ".join(parts)


def module_constructor(m: nn.Module) -> str:
    """``nn.Linear(in_features=4, out_features=2, bias=True)`` for a built-in module instance."""
    user = _user_constructor(m)  # a class from the user's own file: built from the module the .py loads
    if user is not None:
        return user
    cls = type(m)
    prefix = "nn"
    if cls.__module__.startswith("torchvision.ops"):  # an imported model's opaque torchvision layer
        import torchvision.ops  # type: ignore[import-untyped]

        if getattr(torchvision.ops, cls.__name__, None) is cls:
            prefix = "torchvision.ops"
    if prefix == "nn" and (not cls.__module__.startswith("torch.nn") or getattr(nn, cls.__name__, None) is not cls):
        raise ExportError(f"{cls.__name__} is not a built-in torch.nn module and cannot be written as source")
    extractor = next((f for t, f in ARG_EXTRACTORS.items() if cls is t), _signature_args)
    return f"{prefix}.{cls.__name__}({_arguments(extractor(m), cls.__name__)})"


def parameter_lines(gm: nn.Module) -> list[str]:
    """``self.class_token = nn.Parameter(torch.zeros(1, 1, 768))`` for each parameter the module holds
    itself (a Parameter node's), for the generated ``__init__``; the weights file gives the values."""
    lines = []
    for name, p in gm.named_parameters(recurse=False):
        _check_attr(name)
        dtype = "" if p.dtype == torch.float32 else f", dtype={p.dtype}"
        grad = "" if p.requires_grad else ", requires_grad=False"
        lines.append(f"        self.{name} = nn.Parameter(torch.zeros({', '.join(map(str, p.shape))}{dtype}){grad})")
    return lines


def _import_lines(src: str, globals_: Mapping[str, Any]) -> list[str]:
    """Import statements for the names the generated forward uses (torch, operator, ...)."""
    import builtins
    import types

    used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", src))
    lines: list[str] = []
    for name, obj in sorted(globals_.items()):
        if name not in used or name in ("torch", "nn"):
            continue
        if getattr(builtins, name, None) is obj:
            continue
        if isinstance(obj, types.ModuleType):
            lines.append(f"import {obj.__name__}" if obj.__name__ == name else f"import {obj.__name__} as {name}")
        elif name in ("inf", "nan"):
            lines.append(f"from math import {name}")
        elif obj is type(None):
            lines.append(f"{name} = type(None)")
        elif isinstance(obj, str):  # a string annotation fx hoisted into a global
            lines.append(f"{name} = {obj!r}")
        elif hasattr(obj, "__module__") and hasattr(obj, "__qualname__") and "." not in obj.__qualname__:
            alias = "" if obj.__qualname__ == name else f" as {name}"
            lines.append(f"from {obj.__module__} import {obj.__qualname__}{alias}")
        else:
            raise ExportError(f"The model's forward uses {name!r}, which cannot be imported in a plain file")
    return lines


def model_source(model: Any, *, weights_file: str | None = None, title: str = "NetStudio model",
                 inp: "ExportInput | None" = None, here: Path | None = None) -> str:
    """The text of a standalone ``.py`` that rebuilds ``model`` with plain PyTorch.

    With ``inp`` the model starts with ``self.preprocess = Preprocess()`` (the
    dataset's preprocessing, written as a class in the file) and the file holds the
    metadata as the literal ``METADATA``. Every string from the project (title,
    names, columns) is written as a Python literal, never into a comment. A model with classes from the
    user's own file loads that file by its path relative to ``here`` (the .py's folder; see userfile.py).
    """
    _refuse_gan(model, "Python source (.py)")
    gm = _exported(model, inp) if inp is not None else _graph_module(model)
    code = gm.graph.python_code(root_module="self")
    forward = code.src.strip("\n").rstrip()
    if not forward.startswith("def forward("):
        raise ExportError("Unexpected generated forward code; cannot write it as a plain file")
    # Submodules are created in the order forward uses them; a block (a nested GraphModule) is
    # written as its own class, before the class that uses it.
    from netstudio.project.preprocess import POSTPROCESS_NAME, preprocess_source

    pre_lines: list[str] = []
    imports = _import_lines(forward, code.globals)
    classes = {"Model", "Preprocess", "Postprocess"}
    ctor_lines: list[str] = parameter_lines(gm)
    processing = _processing_names(gm, model, inp)
    for name, sub in gm.named_children():
        _check_attr(name)
        if name in processing and isinstance(sub, fx.GraphModule):
            cls_name = "Postprocess" if name.startswith(POSTPROCESS_NAME) else "Preprocess"
            pre_lines += ([""] * 2 if pre_lines else []) + preprocess_source(sub, cls_name)
            pre_code = sub.graph.python_code(root_module="self")
            imports = sorted(set(imports) | set(_import_lines(pre_code.src, pre_code.globals)))
            ctor_lines.append(f"        self.{name} = {cls_name}()")
        elif isinstance(sub, fx.GraphModule):  # a block
            cls_name, block_imports = _block_source(name, sub, classes, pre_lines)
            imports = sorted(set(imports) | set(block_imports))
            ctor_lines.append(f"        self.{name} = {cls_name}()")
        else:
            ctor_lines.append(f"        self.{name} = {module_constructor(sub)}")
            imports = _with_torchvision(imports, ctor_lines[-1])
    info = _input_info(model)
    shape = list(inp.shape) if inp is not None else (list(info.sample_shape) if info else None)
    dtype = inp.dtype if inp is not None else "float32"
    shape_doc = (f"Input: a {dtype} tensor of shape N×{'×'.join(map(str, shape))}." if shape else "")
    if shape_doc and inp is not None:
        shape_doc += " INPUT and METADATA below say what it holds."
    body = "\n".join("    " + line if line.strip() else "" for line in forward.splitlines())
    weights_default = repr(weights_file) if weights_file else "None"
    example = ""
    if shape:
        dims = ", ".join(str(d) for d in (2, *shape))
        make = (f"torch.zeros({dims}, dtype=torch.long)" if dtype == "int64" else
                f"torch.rand({dims}) * 255" if inp is not None and (inp.spec or {}).get("kind") == "image" else
                f"torch.randn({dims})")
        example = (f"\n\nif __name__ == \"__main__\":\n"
                   f"    model = load_model() if WEIGHTS_FILE else Model().eval()\n"
                   f"    with torch.no_grad():\n"
                   f"        out = model({make})\n"
                   f"    print(out.shape if isinstance(out, torch.Tensor) else [o.shape for o in out])\n")
    meta_lines: list[str] = []
    if inp is not None:
        import pprint

        meta_lines = ["METADATA = " + pprint.pformat(inp.metadata, sort_dicts=False, width=110),
                      "INPUT = " + repr(inp.text())]
    lines = [
        '"""A NetStudio model exported as plain PyTorch (no NetStudio needed); PROJECT names the project.',
        "",
        *([shape_doc] if shape_doc else []),
        "Load trained weights with load_model(path_to_weights).",
        '"""',
        "",
        "import os",
        "",
        "import torch",
        "import torch.nn as nn",
        *imports,
        "",
        "PROJECT = " + repr(title),
        f"WEIGHTS_FILE = {weights_default}  # relative to this file",
        *meta_lines,
        *_user_source(gm, here),
        "",
        "",
        *([*pre_lines, "", ""] if pre_lines else []),
        "class Model(nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *(ctor_lines or ["        pass"]),
        "",
        body,
        "",
        "",
        "def load_model(weights_path=None, map_location=\"cpu\"):",
        "    \"\"\"A Model with trained weights, in eval mode.\"\"\"",
        "    if weights_path is None:",
        "        if WEIGHTS_FILE is None:",
        "            raise ValueError(\"pass the path of a weights file\")",
        "        weights_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS_FILE)",
        "    state = torch.load(weights_path, map_location=map_location, weights_only=True)",
        "    if isinstance(state, dict) and \"state_dict\" in state:  # NetStudio weights files also hold the project",
        "        state = state[\"state_dict\"]",
        "    model = Model()",
        "    model.load_state_dict(state)",
        "    return model.eval()",
    ]
    text = "\n".join(lines).replace("\n\n\n\n", "\n\n\n") + example
    return text.rstrip("\n") + "\n"


def _user_source(gm: fx.GraphModule, here: Path | None) -> list[str]:
    from netstudio.project.userfile import source_lines

    return source_lines(gm, here)


def _processing_names(gm: fx.GraphModule, model: Any, inp: "ExportInput | None") -> set[str]:
    """The names of ``gm``'s pre-/postprocessing submodules: the GraphModules the export added (with
    ``inp``), not the model's blocks; without ``inp``, GraphModules named like them."""
    from netstudio.project.preprocess import POSTPROCESS_NAME, PREPROCESS_NAME

    subs = {n for n, s in gm.named_children() if isinstance(s, fx.GraphModule)}
    if inp is None:
        return {n for n in subs if n.startswith((PREPROCESS_NAME, POSTPROCESS_NAME))}
    blocks = {n for n, s in _graph_module(model).named_children() if isinstance(s, fx.GraphModule)}
    return subs - blocks


def _check_attr(name: str) -> None:
    import keyword

    if not name.isidentifier() or keyword.iskeyword(name):
        raise ExportError(f"Submodule name {name!r} is not a Python identifier")


def _with_torchvision(imports: list[str], ctor_line: str) -> list[str]:
    """``imports`` plus ``import torchvision`` when the constructor line builds a torchvision layer."""
    if ctor_line.split(" = ", 1)[1].startswith("torchvision.") and "import torchvision" not in imports:
        return sorted([*imports, "import torchvision"])
    return imports


def _block_source(attr: str, gm: fx.GraphModule, classes: set[str], out: list[str]) -> tuple[str, list[str]]:
    """Append to ``out`` the class of the block module ``attr`` (and first those of the blocks inside it);
    return its class name (after the block, made unique among ``classes``) and the imports its code needs."""
    from netstudio.compiler.build import block_class_name

    base = cls_name = block_class_name(attr)
    i = 2
    while cls_name in classes:
        cls_name = f"{base}_{i}"
        i += 1
    classes.add(cls_name)
    code = gm.graph.python_code(root_module="self")
    forward = code.src.strip("\n").rstrip()
    imports = _import_lines(forward, code.globals)
    ctor: list[str] = parameter_lines(gm)
    for name, sub in gm.named_children():
        _check_attr(name)
        if isinstance(sub, fx.GraphModule):
            inner_cls, inner_imports = _block_source(name, sub, classes, out)
            imports = sorted(set(imports) | set(inner_imports))
            ctor.append(f"        self.{name} = {inner_cls}()")
        else:
            ctor.append(f"        self.{name} = {module_constructor(sub)}")
            imports = _with_torchvision(imports, ctor[-1])
    lines = [f"class {cls_name}(nn.Module):",
             "    def __init__(self) -> None:",
             "        super().__init__()",
             *(ctor or ["        pass"]),
             "",
             *("    " + ln if ln.strip() else "" for ln in forward.splitlines())]
    out.extend(([""] * 2 if out else []) + lines)
    return cls_name, imports


def _check_source(text: str, gm: fx.GraphModule, x: torch.Tensor | None, processing: Collection[str] = (),
                  file: Path | None = None) -> None:
    """Rebuild the model from the generated text and compare with the original; refuse a wrong file."""
    try:
        ast.parse(text)
        ns: dict[str, Any] = {"__name__": "netstudio_export_check", "__file__": str(file or "<export>")}
        exec(compile(text, "<exported model>", "exec"), ns)
        rebuilt = ns["Model"]()
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"The generated Python file does not run: {_short(e)}") from e
    for name, sub in _leaf_modules(gm, processing):
        try:
            other = rebuilt.get_submodule(name)
        except AttributeError:
            other = None
        if repr(other) != repr(sub):
            raise ExportError(f"Cannot reproduce layer {name!r} ({type(sub).__name__}) as plain PyTorch: "
                              f"got {other!r}, expected {sub!r}")
    try:
        apply_state_dict(rebuilt, gm.state_dict())
    except ExportError as e:
        raise ExportError(f"The generated Python file builds a different model: {e.message}") from e
    if x is None:
        return
    original = _cpu_eval_copy(gm)
    rebuilt.eval()
    with torch.no_grad():
        a, b = original(x), rebuilt(x)
    a_t = a if isinstance(a, (tuple, list)) else (a,)
    b_t = b if isinstance(b, (tuple, list)) else (b,)
    if len(a_t) != len(b_t) or not all(torch.allclose(p, q, atol=1e-6, rtol=1e-5) for p, q in zip(a_t, b_t)):
        raise ExportError("The generated Python file computes different outputs than the model")


def _leaf_modules(gm: nn.Module, processing: Collection[str] = (), prefix: str = ""
                  ) -> list[tuple[str, nn.Module]]:
    """The layers of a model by their dotted path, through blocks; the pre-/postprocessing
    (``processing``, top-level names) is left out: it is compared by its outputs."""
    out: list[tuple[str, nn.Module]] = []
    for name, sub in gm.named_children():
        if not prefix and name in processing:
            continue
        if isinstance(sub, fx.GraphModule):
            out.extend(_leaf_modules(sub, processing, f"{prefix}{name}."))
        else:
            out.append((prefix + name, sub))
    return out


def weights_path_for(py_path: PathLike) -> Path:
    """Where :func:`export_py` puts the weights by default: ``model.py`` → ``model_weights.pt``."""
    p = Path(py_path)
    return p.with_name(p.stem + "_weights.pt")


def export_py(model: Any, path: PathLike, *, weights: PathLike | bool | None = True,
              example_input: torch.Tensor | None = None, title: str = "NetStudio model",
              inp: "ExportInput | None" = None) -> Path:
    """Write a plain-PyTorch ``.py`` that rebuilds the model (``class Model`` + ``load_model``).

    The model's state_dict is saved to ``weights`` (default: ``<name>_weights.pt``
    beside the ``.py``; ``None``/``False`` write none) and ``load_model()`` loads it from
    there, relative to the ``.py``. Pass the *trained* module: a TrainingPlan or
    CompiledModel carries the weights it was compiled with. The file is verified
    before it is written: rebuilt from the text, loaded with the weights and
    compared on ``example_input`` (or a random batch of the dataset's shape).
    """
    gm = _exported(model, inp) if inp is not None else _graph_module(model)
    p = _prepare_target(path)
    if weights is not None and weights is not False and weights is not True:
        _prepare_target(weights)
    if weights is True:
        weights = weights_path_for(p)
    elif weights is False:
        weights = None
    weights_rel: str | None = None
    if weights is not None:
        wp = Path(weights)
        if wp.resolve() == p.resolve():
            raise ExportError("The weights file must differ from the .py file")
        weights_rel = os.path.relpath(wp.resolve(), p.resolve().parent).replace(os.sep, "/")
    text = model_source(model, weights_file=weights_rel, title=title, inp=inp, here=p.resolve().parent)
    if inp is not None and (inp.spec is not None or example_input is None):
        x: torch.Tensor | None = inp.example(batch=3)
    elif example_input is not None:
        x = _example(example_input, model)
    else:
        x = example_input_for(model, batch=3) if _input_info(model) is not None else None
    _check_source(text, gm, x, _processing_names(gm, model, inp), file=p.resolve())
    # weights and .py land together or not at all: a failed .py removes the weights file it wrote
    weights_new = weights is not None and not Path(weights).exists()
    folders = _missing_folders(p.parent) + (_missing_folders(Path(weights).parent) if weights is not None else [])
    try:
        if weights is not None:
            state = {k: v.detach().cpu().clone() for k, v in gm.state_dict().items()}
            _atomic_write(weights, torch_writer(state), "Weights")

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)

        return _atomic_write(p, write, "Python")
    except BaseException:
        if weights_new and weights is not None:
            _unlink(str(weights))
        remove_created(sorted(set(folders), key=lambda d: len(d.parts)))  # only what this export created
        raise


# ----------------------------------------------------------------------------
# dispatch + snippets
# ----------------------------------------------------------------------------


def export(fmt: str, model: Any, path: PathLike, *, project: "Project | None" = None,
           example_input: torch.Tensor | None = None, weights: PathLike | bool | None = True,
           inp: "ExportInput | None" = None, quantize: str | None = None) -> Path:
    """Export in ``fmt`` (one of :data:`FORMATS`); ``weights`` only concerns ``py`` (see export_py).

    ``quantize`` (one of :data:`QUANTIZE_MODES`) is accepted for ``pt`` only; see :func:`check_quantize`.

    ``inp`` (:func:`netstudio.project.preprocess.export_input`): the preprocessing
    and metadata every format carries; None exports the bare network.
    """
    check_quantize(fmt, quantize)
    if fmt in ("pt2", "onnx", "py"):
        _refuse_gan(model, {"pt2": "torch.export (.pt2)", "onnx": "ONNX", "py": "Python source (.py)"}[fmt])
    if fmt == "pt":
        return export_pt(model, path, inp, quantize)
    if fmt == "weights":
        return export_weights(model, project, path, inp)
    if fmt in ("pt2", "onnx"):
        x = example_input if example_input is not None or inp is not None else example_input_for(model)
        return export_pt2(model, x, path, inp) if fmt == "pt2" else export_onnx(model, x, path, inp)
    if fmt == "py":
        title = project.name if project is not None else "NetStudio model"
        return export_py(model, path, weights=weights, example_input=example_input, title=title, inp=inp)
    raise ExportError(f"Unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")


def load_snippet(fmt: str, path: PathLike) -> str:
    """The two lines of Python that load an exported file (shown after exporting)."""
    p = str(path)
    q = json.dumps(p)  # a double-quoted literal with escapes, valid Python
    if fmt == "pt":
        return f"import torch\nmodel = torch.load({q}, weights_only=False).eval()  # only for files you trust"
    if fmt == "weights":
        return f"import torch\nstate_dict = torch.load({q}, weights_only=True)[\"state_dict\"]"
    if fmt == "pt2":
        return f"import torch\nmodel = torch.export.load({q}).module()"
    if fmt == "py":
        return f"import runpy\nmodel = runpy.run_path({q})[\"load_model\"]()"
    if fmt == "onnx":
        return f"import onnxruntime\nsession = onnxruntime.InferenceSession({q})"
    raise ExportError(f"Unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")


def suffix_for(fmt: str) -> str:
    return {"pt": ".pt", "weights": ".pt", "pt2": ".pt2", "py": ".py", "onnx": ".onnx"}.get(fmt, "")
