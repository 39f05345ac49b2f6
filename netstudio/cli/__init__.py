"""The ``netstudio`` command: the GUI launcher and headless check / train / export.

Every failure ends as one ``error: ...`` line on stderr and exit code 1, never a
traceback (set ``NETSTUDIO_DEBUG=1`` to see one). Node-scoped errors print the
node id and the fix hint: ``error: [n3] Linear 'fc1' expects ... → set in_features to 256``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from netstudio import __version__
from netstudio.cli.console import TRUST_HELP, add_control_args, control_argv
from netstudio.cli.console import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, CliError, Progress, epoch_line, err,
                                   error_json, export_results, fmt_metric, format_error, format_problem, jsonable,
                                   load, outcome_lines, resolve_device_label, safe_streams, summary, with_stats)
from netstudio.errors import MAX_HINT, MAX_MESSAGE, NetStudioError, Problem, clip_text
from netstudio.training.events import FitStatus

COMMANDS = ("check", "train", "export", "samples", "import", "lr-find", "runs", "sweep")

# The names these helpers had before they moved to netstudio.cli.console (tests and scripts use them).
_load, _Progress, _summary, _jsonable, _err, _safe_streams = load, Progress, summary, jsonable, err, safe_streams
_fmt_metric, _epoch_line, _outcome_lines, _error_json = fmt_metric, epoch_line, outcome_lines, error_json
_resolve_device = resolve_device_label

__all__ = ["main", "build_parser", "CliError", "format_error", "format_problem", "EXIT_OK", "EXIT_ERROR",
           "EXIT_INTERRUPTED", "COMMANDS"]


# ----------------------------------------------------------------------------
# shared steps
# ----------------------------------------------------------------------------


def _count_params(module: Any) -> int:
    return sum(int(p.numel()) for p in module.parameters())


def _outputs_text(outputs: dict[str, Any]) -> str:
    from netstudio.nodes.base import TensorInfo

    shown = {k: v for k, v in outputs.items() if isinstance(v, TensorInfo) and v.dtype != "optimizer"}
    if not shown:
        return "—"
    if len(shown) == 1:
        return next(iter(shown.values())).fmt()
    return ", ".join(f"{k} {v.fmt()}" for k, v in shown.items())


# ----------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from netstudio.compiler.shapes import analyze

    project = load(args.project, args.trust)
    graph = project.graph
    batch = args.batch_size or project.training.batch_size
    an = analyze(graph, batch)
    problems = list(an.problems)
    counts: dict[str, int] = {}
    est = None
    device_text = ""
    if an.model_ok and graph.nodes:
        import torch

        from netstudio.compiler import memory
        from netstudio.compiler.build import compile_model
        from netstudio.errors import CompileError

        try:
            with torch.device("meta"):  # shapes and counts only: no weight is allocated
                compiled = compile_model(graph, batch, an)
            for nid, attr in compiled.module_names.items():
                if "/" not in nid:  # a node inside a block ("block/inner") is counted in its block
                    counts[nid] = _count_params(compiled.module.get_submodule(attr))
            for nid, attr in compiled.parameter_names.items():
                if "/" not in nid:
                    counts[nid] = compiled.module.get_parameter(attr).numel()
        except CompileError as e:
            problems.append(Problem.from_error(e))
        est = memory.estimate(graph, an)
        from netstudio.training.preflight import training_device

        device = training_device(project.training.device)
        have, where = memory.device_memory(device)
        device_text = f" of {memory.fmt_bytes(have)} {where} ({device})" if have is not None else ""
        try:
            memory.check_training_fits(graph, an, device, est)
        except CompileError as e:
            problems.append(Problem.from_error(e))

    rows = [("id", "node", "type", "output", "memory", "params")]
    cat = graph.catalog
    order = an.order or list(graph.nodes)
    for nid in order:
        node = graph.nodes[nid]
        res = an.results.get(nid)
        out = _outputs_text(res.outputs) if res is not None else "?"
        if any(p.node_id == nid and p.severity == "error" for p in problems):
            out = "✗ " + out if res is not None else "✗"
        n = counts.get(nid)
        mem = est.nodes.get(nid) if est is not None else None
        rows.append((clip_text(nid, 60), clip_text(node.name, 60), cat.get(node.type_id).title, out,
                     _fmt_bytes(mem.training_bytes) if mem is not None else "—", f"{n:,}" if n is not None else "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    print(f"{clip_text(project.name, 200)} ({clip_text(args.project, 500)})")
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) if j < 4 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    total = sum(counts.values())
    print(f"total parameters: {total:,}" if counts else "total parameters: unknown (model invalid)")
    if est is not None:
        print(f"memory (estimated, before allocating): {est.summary()}{device_text}")
    for nid in order:  # how the data was read: rows dropped or filled for missing values, token vocabulary
        res = an.results.get(nid)
        info = res.extra.get("dataset") if res is not None else None
        for note in getattr(info, "notes", ()) or ():
            print(f"note: [{nid}] {note}")
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        err(format_problem(p))
    if errors:
        err(f"{len(errors)} error{'s' if len(errors) != 1 else ''}; the project cannot be trained yet")
        return EXIT_ERROR
    print("ok: the project is valid and ready to train")
    return EXIT_OK


def _fmt_bytes(n: int) -> str:
    from netstudio.compiler.memory import fmt_bytes

    return fmt_bytes(n)


# ----------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------



def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc is not None or args.nnodes > 1 or args.rdzv_endpoint:
        return _train_distributed(args)
    if not args.json:
        return _train(args)
    # --json: whatever fails, the last line of stdout is still one JSON object
    try:
        return _train(args)
    except CliError as e:
        text = str(e)
        print(error_json(text[len("error: "):] if text.startswith("error: ") else text), flush=True)
        raise
    except NetStudioError as e:
        print(error_json(e.message, e.node_id, e.hint), flush=True)
        raise
    except KeyboardInterrupt:
        print(error_json("interrupted"), flush=True)
        raise
    except Exception as e:  # noqa: BLE001 - reported by _run as well
        print(error_json(f"unexpected {type(e).__name__}: {e}"), flush=True)
        raise


def _train(args: argparse.Namespace) -> int:
    from netstudio.errors import ProjectError
    from netstudio.training import job as training_job
    from netstudio.training.tensorboard import with_tensorboard

    if args.tensorboard:
        from netstudio.training.tensorboard import require_tensorboard

        require_tensorboard()  # missing: one line saying how to install it, before anything is loaded
    project = load(args.project, args.trust)
    try:
        config = training_job.configure(project.training, {k: getattr(args, k, None)
                                                           for k in training_job.OVERRIDABLE})
    except ProjectError as e:
        raise CliError(format_error(e.message, hint=e.hint)) from None
    from netstudio.project.export import project_start_weights

    start = None if args.fresh_weights else project_start_weights(project)
    # device, memory preflight, seed, plan, data: in the one order every caller uses
    job = training_job.prepare(project.graph, config, start_weights=start)
    device, plan, data = job.device, job.plan, job.data

    lines = sys.stderr if args.json else sys.stdout  # --json: stdout carries only the JSON object
    if job.start_note:
        print(f"Starting from {project.weights} (beside the project; --fresh-weights: without it): "
              + "; ".join(job.start_note.splitlines()), file=lines, flush=True)
    bar = sys.stderr if sys.stderr.isatty() and not args.quiet else None
    progress = Progress(lines, bar, config.epochs)
    stop, pause = threading.Event(), threading.Event()
    interrupted = {"count": 0, "signum": int(signal.SIGINT)}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt  # second Ctrl-C: give up immediately
        interrupted["signum"] = signum
        stop.set()
        if signum == signal.SIGINT:
            err("\nstopping after the current batch… (Ctrl-C again to abort)")
        else:  # SIGTERM / SIGHUP: stop like Ctrl-C, end with 128 + the signal's number
            err(f"stopping after the current batch ({signal.Signals(signum).name})…")

    in_main = threading.current_thread() is threading.main_thread()
    stop_signals = [sig for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                    if sig is not None]
    previous = {sig: signal.signal(sig, on_sigint) for sig in stop_signals} if in_main else {}
    t0 = time.perf_counter()
    try:
        ckpt = args.checkpoint_dir
        if args.resume and not ckpt:
            from netstudio.training.checkpoints import default_checkpoint_dir

            ckpt = default_checkpoint_dir(args.project)
        report, stats_file = with_stats(progress, args.stats)
        report, tb = with_tensorboard(report, args.tensorboard, Path(args.project).stem)
        if tb is not None:
            print(f"TensorBoard: logging to {tb.log_dir} (view with: tensorboard --logdir {args.tensorboard})",
                  file=lines, flush=True)
        try:
            result = training_job.run(job, report, stop, pause, checkpoint_dir=ckpt, resume=args.resume)
        finally:
            if stats_file is not None:
                stats_file.close()
            if tb is not None:
                tb.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        progress.clear()
    seconds = time.perf_counter() - t0
    result_summary = summary(result, progress.device or device, seconds)
    status = str(getattr(result, "status", ""))
    message = str(getattr(result, "message", "") or "")
    failed = status == FitStatus.ERROR
    model = getattr(result, "model", None)

    exported = export_results(model, project, job, out=args.out, save_weights=args.save_weights,
                              no_preprocess=args.no_preprocess) if not failed else []
    result_summary["exported"] = exported
    if not args.no_record:  # the run history beside the project (netstudio runs P)
        from netstudio.cli.console import record_run

        result_summary["run_folder"] = record_run(args.project, project, config, result, seconds,
                                                  result_summary.get("device") or device)
    if failed:
        result_summary["node"] = None

    if failed:
        err(format_error(message or f"training {status}"))
    else:
        tail = f" ({message})" if message else ""
        print(f"{status}{tail} in {seconds:.1f}s", file=lines)
        for line in outcome_lines(result_summary):
            print(line, file=lines)
        for path in exported:
            print(f"wrote {path}", file=lines)
        if args.out:
            from netstudio.project.export import generator_note
            from netstudio.project.preprocess import export_input

            note = generator_note(model)  # a GAN: --out is its generator, which takes noise
            text = note if note is not None else export_input(data, preprocess=not args.no_preprocess, plan=plan).text()
            for line in text.splitlines():
                print(f"  {line}", file=lines)
    if args.json:
        print(json.dumps(result_summary), flush=True)
    if failed:
        return EXIT_ERROR
    if stop.is_set() and interrupted["count"]:
        return 128 + interrupted["signum"]  # EXIT_INTERRUPTED for Ctrl-C
    return EXIT_OK


def _train_distributed(args: argparse.Namespace) -> int:
    """``--nproc N`` (and/or several nodes): torchrun starts N ranks of the rank program (netstudio.cli.rank)."""
    from netstudio.compiler.build import build_plan
    from netstudio.training import distributed as D
    from netstudio.training.checkpoints import default_checkpoint_dir

    project = load(args.project, args.trust)  # a broken project fails here once, not in every rank
    from netstudio.training.preflight import check_memory

    check_memory(project.graph, args.batch_size or project.training.batch_size,
                 args.device or project.training.device, processes=args.nproc or 1)
    build_plan(project.graph, args.batch_size or project.training.batch_size)
    ckpt = args.checkpoint_dir or default_checkpoint_dir(args.project)
    device = args.device or (project.training.device if project.training.device in ("cpu", "cuda") else "auto")
    rank_args = ["--device", device, "--checkpoint-dir", ckpt, "--timeout", str(args.timeout)]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--seed", args.seed),
                        ("--threads", args.threads), ("--out", args.out), ("--save-weights", args.save_weights),
                        ("--stats", args.stats), ("--stats-every", args.stats_every),
                        ("--tensorboard", args.tensorboard)):
        if value is not None:
            rank_args += [flag, str(value)]
    rank_args += control_argv(args)
    rank_args += [f for f, on in (("--resume", args.resume), ("--json", args.json), ("--no-record", args.no_record),
                                  ("--trust", args.trust),
                                  ("--fresh-weights", args.fresh_weights),
                                  ("--no-preprocess", args.no_preprocess)) if on]
    return D.launch(args.project, rank_args, nproc=args.nproc or 1, nnodes=args.nnodes,
                    rdzv_endpoint=args.rdzv_endpoint, node_rank=args.node_rank, checkpoint_dir=ckpt)


# ----------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------


def _export_script(args: argparse.Namespace) -> int:
    """``--format script``: a standalone training program folder (weights optional)."""
    from netstudio.project import export as ex
    from netstudio.project.script_export import export_script

    source = Path(args.project)
    state = None
    if source.suffix in (".pt", ".pth") and args.weights is None:
        project, state = ex.load_weights(source)
    else:
        project = load(args.project, args.trust)
        if args.weights is not None:
            _, state = ex.read_weights(args.weights)
    out = Path(args.out) if args.out else source.with_name(source.stem + "_training")
    res = export_script(project, out, weights=state)
    extra = ", initial_weights.pt" if res.weights is not None else ""
    print(f"wrote {res.folder} (train.py, model.py, README.md{extra})")
    print("run it with:")
    print(f"    python {res.script}")
    print(f"    torchrun --standalone --nproc_per_node 2 {res.script}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from netstudio.compiler.build import compile_model
    from netstudio.project import export as ex

    if args.format == "script":
        return _export_script(args)

    source = Path(args.project)
    out = Path(args.out) if args.out else source.with_suffix(ex.suffix_for(args.format))
    # the .py export writes its weights next to it
    weights_out = ex.weights_path_for(out) if args.format == "py" else None
    from_weights_file = source.suffix in (".pt", ".pth") and args.weights is None
    project = None if from_weights_file else load(args.project, args.trust)
    weights = args.weights
    if project is not None and weights is None:  # an imported project: the weights file beside it
        beside = project.weights_path()
        if beside is None or not beside.is_file():
            raise CliError("error: --weights is required → pass the trained weights (.pt) to export")
        weights = str(beside)
    inputs = [source] + ([Path(weights)] if weights else [])
    for target in (out, weights_out):
        if target is not None and any(target.resolve() == p.resolve() for p in inputs):
            raise CliError(f"error: refusing to overwrite the input file {target} → choose another --out")
    if project is None:
        # a weights file written by NetStudio carries its project
        project, state = ex.load_weights(source)
        from netstudio.project.trust import require

        require(project, args.trust, f"exporting {source.name}")
    else:
        assert weights is not None
        _, state = ex.read_weights(weights)
    ex.check_quantize(args.format, args.quantize)  # before any work: pt2/onnx/py cannot hold quantized layers
    compiled = compile_model(project.graph, project.training.batch_size)
    ex.apply_state_dict(compiled.module, state)
    compiled.module.eval()
    weights_file = source if from_weights_file else weights
    inp = _export_input(project, compiled, weights_file, args.no_preprocess)
    gan_note = ex.generator_note(compiled) if args.format == "pt" else None
    if gan_note is not None:
        inp = None  # the generator takes noise: the dataset's preprocessing does not apply

    path = ex.export(args.format, compiled, out, project=project, weights=weights_out, inp=inp,
                     quantize=args.quantize)
    print(f"wrote {path}")
    if args.quantize is not None and gan_note is None:
        for line in _quantize_comparison(project, compiled, inp, args.quantize).splitlines():
            print(line)
    if weights_out is not None:
        print(f"wrote {weights_out}")
    if gan_note is not None:
        print(gan_note)
    if inp is not None:
        print("the exported model expects:")
        for line in inp.text().splitlines():
            print("    " + line)
    print("load it with:")
    for line in ex.load_snippet(args.format, path).splitlines():
        print("    " + line)
    _user_code_note(project, args.format)
    return EXIT_OK


def _user_code_note(project: Any, fmt: str) -> None:
    """What an export of a model with classes from the user's own file needs besides PyTorch."""
    from netstudio.nodes.user_module import references

    for file, sha in references(project.graph):
        name = Path(file).stem
        if fmt == "pt":
            print(f"note: the model uses classes from {file}: torch.load imports them as `{name}`, so put that "
                  f"file's folder on sys.path (PYTHONPATH) where you load it")
        elif fmt == "py":
            print(f"note: the .py loads {file} by its path relative to the .py and refuses it if its sha256 is not "
                  f"{sha}")


def _quantize_comparison(project: Any, compiled: Any, inp: Any, mode: str) -> str:
    """Sizes and validation figures of the quantized export beside the float model's."""
    import netstudio.data as data_mod
    from netstudio.compiler.build import build_plan
    from netstudio.errors import NetStudioError
    from netstudio.project import export as ex

    plan = data = None
    try:
        plan = build_plan(project.graph, project.training.batch_size)
        plan.compiled = compiled  # the trained weights
        data = data_mod.load(plan.dataset_params)
    except NetStudioError as e:
        print(f"note: no validation figures ({e.message})")
    return ex.quantize_summary(ex.compare_quantized(compiled, plan if data is not None else None, data,
                                                    inp=inp, mode=mode))


def _export_input(project: Any, compiled: Any, weights_file: Any, no_preprocess: bool) -> Any:
    """The preprocessing + metadata of an export: stored in the weights file, else from the data."""
    import netstudio.data as data_mod
    from netstudio.compiler.build import build_plan
    from netstudio.errors import DataError
    from netstudio.project import export as ex
    from netstudio.project import preprocess as pp

    if compiled.dataset_node is None or project.graph.nodes[compiled.dataset_node].type_id == "data.input":
        return None  # an Input node (an imported model) has no data, so no preprocessing
    params = project.graph.nodes[compiled.dataset_node].params
    if no_preprocess:
        try:
            info = data_mod.describe(params)
            if info.task == "regression":  # the metadata states whether the bare network's output is standardized
                return pp.export_input(data_mod.load(params), preprocess=False)
            return pp.input_for(info, None)
        except DataError:
            return None  # the bare network; nothing to state about data that is not there
    stored = ex.read_export_input(weights_file) if weights_file else None
    if stored is not None and stored.spec is not None:
        return stored
    try:
        plan = build_plan(project.graph, project.training.batch_size)  # which output is the regression's
    except NetStudioError:
        plan = None
    try:
        data = data_mod.load(params)
    except DataError as e:
        raise CliError(format_error(f"the export's input preprocessing is fitted on the training data, which "
                                    f"cannot be loaded: {e.message}", compiled.dataset_node,
                                    "make the data available, or pass --no-preprocess to export the bare "
                                    "network")) from None
    return pp.export_input(data, plan=plan)


# ----------------------------------------------------------------------------
# import
# ----------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    """``torchvision:NAME`` or a .pt2 file -> a project (+ weights); a .nsproj: weights loaded onto it."""
    from netstudio.compiler.build import compile_model
    from netstudio.project import export as ex
    from netstudio.project import importer

    spec = args.spec
    if not spec.endswith(".nsproj"):
        if args.out is None:
            raise CliError("error: --out is required → the project file to write, e.g. --out model.nsproj")
        result, out, w_out = importer.import_to_files(spec, args.out, weights_out=args.weights_out,
                                                      input_shape=args.input_shape, weights=args.weights,
                                                      seed=args.seed, blocks=not args.flat, trust=args.trust,
                                                      args=args.args)
        print(f"wrote {out} ({result.n_layers} layers with weights, {len(result.project.graph.nodes)} nodes; "
              f"outputs match the model within {result.max_abs_diff:.2g})")
        for line in result.opaque:
            print(f"opaque node: {line}")
        for line in result.notes:
            print(f"note: {line}")
        print(f"wrote {w_out}")
        trust = " --trust" if args.trust else ""
        print(f"export it with: netstudio export {out} --weights {w_out} --format pt --no-preprocess{trust}")
        return EXIT_OK
    if args.weights is None or args.weights_out is None:
        raise CliError("error: loading weights onto a project needs --weights W and --weights-out OUT.pt")
    w_out = Path(args.weights_out)
    if any(w_out.resolve() == Path(p).resolve() for p in (spec, args.weights)):
        raise CliError(f"error: refusing to overwrite the input file {w_out} → choose another --weights-out")
    project = load(spec, args.trust)
    compiled = compile_model(project.graph, project.training.batch_size)
    report = importer.load_weights_onto(compiled.module, importer.read_state_dict(args.weights))
    for line in report.text().splitlines():
        print(line)
    ex.export_weights(compiled, project, w_out)
    print(f"wrote {w_out}")
    return EXIT_OK


# ----------------------------------------------------------------------------
# GUI
# ----------------------------------------------------------------------------


def launch_gui(path: str | None) -> int:
    if path is not None and not Path(path).exists():
        err(format_error(f"No such project file: {path}"))
        return EXIT_ERROR
    try:
        import PySide6  # noqa: F401
    except ImportError as e:
        err(f"error: the NetStudio window needs PySide6, which cannot be imported ({e}) "
             "→ pip install PySide6-Essentials, or use the headless commands: netstudio check|train|export")
        return EXIT_ERROR
    try:
        from netstudio.ui.app import run_app
    except ImportError as e:
        err(f"error: the NetStudio user interface cannot be loaded ({e})")
        return EXIT_ERROR
    return int(run_app(path) or 0)


# ----------------------------------------------------------------------------
# argument parsing
# ----------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {v}")
    return v


def cmd_samples(args: argparse.Namespace) -> int:
    """One line per bundled sample: its name and its path (to pass to check/train/export)."""
    from netstudio.project.samples import bundled_samples

    samples = bundled_samples()
    if not samples:
        raise CliError("error: no sample projects found → reinstall NetStudio")
    width = max(len(p.stem) for p in samples)
    for p in samples:
        print(f"{p.stem:<{width}}  {p}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netstudio",
        description="NetStudio: design, train and export PyTorch networks. "
                    "Without a command, opens the app (optionally with a project).",
        epilog="netstudio [FILE.nsproj] opens the app; the commands below work without a display.")
    parser.add_argument("--version", action="version", version=f"netstudio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="validate a project: per-node shapes and parameter counts")
    p.add_argument("project", help="a .nsproj file")
    p.add_argument("--batch-size", type=_positive, default=None, help="batch size shown in shapes")
    p.add_argument("--trust", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("samples", help="list the bundled sample projects and where they are")
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("train", help="train a project headless")
    p.add_argument("project", help="a .nsproj file")
    p.add_argument("--epochs", type=_positive, default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the project's)")
    p.add_argument("--batch-size", type=_positive, default=None)
    p.add_argument("--seed", type=_non_negative, default=None)
    p.add_argument("--threads", type=_non_negative, default=None, metavar="N",
                   help="CPU threads per process; 0 = automatic: the fastest count, re-measured as the machine's "
                        "load changes (default: the project's setting)")
    add_control_args(p)
    p.add_argument("--out", default=None, help="save the trained model (whole module, torch.load) here")
    p.add_argument("--save-weights", default=None, metavar="W",
                   help="save a weights file (state_dict + project, safe to load) for `netstudio export`")
    p.add_argument("--no-preprocess", action="store_true",
                   help="--out: leave the dataset's preprocessing out (the model then takes normalized features)")
    p.add_argument("--json", action="store_true",
                   help="print the final metrics (or, on failure, status/message/node) as JSON on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--fresh-weights", action="store_true",
                   help="start from freshly initialised weights, not from the weights file beside the project "
                        "(an imported model's)")
    p.add_argument("--no-record", action="store_true",
                   help="do not keep this run in PROJECT.runs/ (listed by `netstudio runs`)")
    p.add_argument("--trust", action="store_true", help=TRUST_HELP)
    p.add_argument("--stats", default=None, metavar="FILE",
                   help="write per-node statistics (output mean/std/zeros/saturation/min/max/NaN count, weight and "
                        "gradient norms, update ratio) as one JSON object per sample to FILE")
    p.add_argument("--stats-every", type=_non_negative, default=None, metavar="N",
                   help="sample the per-node statistics every N steps (default: the project's, 200; 0 = off)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="log the epoch scalars (losses, accuracies, lr) for TensorBoard into a folder of this run "
                        "under DIR (needs: pip install netstudio[tensorboard])")
    g = p.add_argument_group("distributed training (torchrun + DistributedDataParallel)")
    g.add_argument("--nproc", type=_positive, default=None, metavar="N",
                   help="processes on this machine: one per GPU, or CPU processes (gloo)")
    g.add_argument("--nnodes", type=_positive, default=1, metavar="M", help="machines taking part (default 1)")
    g.add_argument("--node-rank", type=_non_negative, default=None, help="this machine's index (0 … M-1)")
    g.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="rendezvous address, the first machine (needed when M > 1)")
    g.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="save model/optimizer/scheduler/epoch here after every epoch "
                        "(distributed default: PROJECT.checkpoints)")
    g.add_argument("--resume", action="store_true", help="continue after the last epoch saved in the checkpoint dir")
    g.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="seconds a rank waits for the others before the job fails (default 300)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export trained weights as pt, pt2, py or onnx, or a training script")
    p.add_argument("project", help="a .nsproj file (or a weights file written by NetStudio)")
    p.add_argument("--weights", default=None, metavar="W", help="weights file (.pt state_dict)")
    p.add_argument("--format", required=True, choices=("pt", "pt2", "py", "onnx", "script"),
                   help="script: a folder with a standalone training program (torchrun-ready)")
    p.add_argument("--out", default=None, metavar="F", help="output file (default: next to the project)")
    p.add_argument("--no-preprocess", action="store_true",
                   help="leave the dataset's preprocessing out: the exported model then takes the normalized "
                        "features NetStudio trains on instead of raw pixels/columns")
    p.add_argument("--quantize", default=None, choices=("dynamic-int8",),
                   help="pt only: Linear/LSTM/GRU weights as int8 (torch dynamic quantization); prints the file "
                        "sizes and validation accuracy beside the float model's")
    p.add_argument("--trust", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="import a model: torchvision:NAME, a torch.export .pt2 file or a class in "
                                      "your Python file becomes a project; a .nsproj gets weights loaded onto it")
    p.add_argument("spec", metavar="SPEC", help="torchvision:NAME (random init, never downloads), a .pt2 file, "
                                                "path/model.py:ClassName (runs the file: needs --trust), or a "
                                                ".nsproj to load --weights onto (matched by module path)")
    p.add_argument("--out", default=None, metavar="P", help="the project file to write (.nsproj)")
    p.add_argument("--weights", default=None, metavar="W",
                   help="a local state_dict (.pth/.pt, read with weights_only=True)")
    p.add_argument("--weights-out", default=None, metavar="W",
                   help="where to write the weights for `netstudio export --weights` (default: P with .pt)")
    p.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="the traced input shape with batch (default 1,3,224,224; a .pt2: its own; "
                        "path/model.py:ClassName: required)")
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the random initialisation")
    p.add_argument("--flat", action="store_true",
                   help="keep every layer in one flat graph (default: each container module, such as a "
                        "ResNet's layer1.0, becomes a block)")
    p.add_argument("--trust", action="store_true",
                   help="path/model.py:ClassName: run the file's code to build the model (refused without it); "
                        "a .nsproj: run the user code its model uses")
    p.add_argument("--args", default=None, metavar="JSON",
                   help='path/model.py:ClassName: the constructor\'s keyword arguments as a JSON object, e.g. '
                        '\'{"width": 16}\' (default: built with no arguments)')
    p.set_defaults(func=cmd_import)

    from netstudio.cli.experiments import add_commands

    add_commands(sub, _positive, _non_negative)  # lr-find, runs
    from netstudio.cli.sweep import add_command as add_sweep

    add_sweep(sub, _positive, _non_negative)
    return parser


def _gui_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.add_argument("file", nargs="?", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``netstudio`` console script and ``python -m netstudio``."""
    safe_streams()
    args_list = list(sys.argv[1:] if argv is None else argv)
    first_positional = next((a for a in args_list if not a.startswith("-")), None)
    if first_positional not in COMMANDS:
        # `netstudio` / `netstudio FILE`: the app. Parsed separately so a file named
        # like a command is never confused with one.
        if any(a in ("-h", "--help", "--version") for a in args_list):
            build_parser().parse_args(args_list)  # prints and exits
        extra = [a for a in args_list if a.startswith("-")]
        if extra:
            err(f"error: unknown option {extra[0]} → see netstudio --help")
            return 2
        if len(args_list) > 1:
            err(f"error: expected at most one project file, got {len(args_list)} arguments → "
                 "see netstudio --help")
            return 2
        return _run(lambda: launch_gui(args_list[0] if args_list else None))
    args = build_parser().parse_args(args_list)
    code = _run(lambda: _with_stop_signals(lambda: args.func(args)))
    if argv is None and args.command == "train":
        _exit_now(code)
    return code


class _StopSignal(KeyboardInterrupt):
    """SIGTERM/SIGHUP outside a training loop: ends the command like Ctrl-C, with 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)


def _with_stop_signals(fn: Callable[[], int]) -> int:
    """Run a headless command with SIGTERM/SIGHUP raising :class:`_StopSignal` (``train`` and
    torchrun install their own handlers while they run); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        return fn()

    def on_signal(signum: int, frame: Any) -> None:
        raise _StopSignal(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return fn()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_now(code: int) -> None:
    """End a ``netstudio train`` process without the interpreter's teardown.

    Everything is written and flushed by now (exports are closed by torch.save). With
    torch, dynamo and sympy loaded, tearing down the modules takes longer than the
    whole run of a small model (bench B7); a hand-written script pays it too, but
    nobody waits for it on purpose. Only the program itself exits this way: ``main``
    called with arguments (tests, other Python code) returns.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # pragma: no cover - a closed pipe
            pass
    os._exit(code)


def _run(fn: Callable[[], int]) -> int:
    """Map every failure to one readable line and exit code 1."""
    try:
        return fn()
    except CliError as e:
        err(clip_text(str(e), MAX_MESSAGE + MAX_HINT))
    except NetStudioError as e:
        code = getattr(e, "exit_code", None)  # a job stopped by a signal: 128 + its number, not an error
        line = format_error(e.message, e.node_id, e.hint)
        err(line[len("error: "):] if code else line)
        if code:
            return int(code)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", None)
        if signum is None:
            err("interrupted")
            return EXIT_INTERRUPTED
        err(f"interrupted by {signal.Signals(signum).name}")
        return 128 + int(signum)
    except MemoryError:
        err("error: out of memory → use a smaller batch size or model")
    except Exception as e:  # last resort: a bug, still no traceback unless asked for
        if os.environ.get("NETSTUDIO_DEBUG"):
            raise
        err(f"error: unexpected {type(e).__name__}: {clip_text(e, MAX_MESSAGE)} (set NETSTUDIO_DEBUG=1 for details)")
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
