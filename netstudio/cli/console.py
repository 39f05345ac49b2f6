"""Console helpers shared by the ``netstudio`` command and the rank program of a distributed job:
one-line errors, per-epoch progress lines, the run summary (``--json``) and the exports after training.

Nothing here imports Qt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, TextIO

from netstudio.errors import MAX_HINT, MAX_MESSAGE, MAX_NODE_ID, Problem, clip_text

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


class CliError(Exception):
    """A failure already phrased for the user (the message is printed as is)."""


# ----------------------------------------------------------------------------
# output helpers
# ----------------------------------------------------------------------------


def format_error(message: str, node_id: str | None = None, hint: str | None = None) -> str:
    where = f"[{clip_text(node_id, MAX_NODE_ID)}] " if node_id else ""
    fix = f" → {clip_text(hint, MAX_HINT)}" if hint else ""
    return f"error: {where}{clip_text(message, MAX_MESSAGE)}{fix}"


def format_problem(p: Problem) -> str:
    line = format_error(p.message, p.node_id, p.hint)
    return line if p.severity == "error" else "warning" + line[len("error"):]


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def safe_streams() -> None:
    # Shapes print as 28×28 and hints with →; never crash on a terminal that cannot show them.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):  # pragma: no cover - detached/odd streams
                pass


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return v


TRUST_HELP = ("run the Python code of the user's file(s) the project's model uses (imported from "
              "path/model.py:Class); without it such a project is refused")


def load(path: str | os.PathLike[str], trust: bool = False) -> Any:
    """The project at ``path``; data paths relative to the project file are resolved by loading it.

    A project whose model runs code from a user's Python file is refused unless ``trust`` (``--trust``),
    with a message naming the file and its sha256 (netstudio/project/trust.py)."""
    from netstudio.project.io import load_project
    from netstudio.project.trust import require

    project = load_project(path)
    require(project, trust, f"opening {os.path.basename(str(path))}")
    return project


class Progress:
    """Per-epoch lines, plus a one-line bar on stderr when it is a terminal."""

    def __init__(self, lines: TextIO, bar: TextIO | None, epochs: int) -> None:
        self.lines = lines
        self.bar = bar
        self.epochs = epochs
        self.device: str | None = None
        self._bar_shown = False
        self._last_draw = 0.0

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        if kind == "start":
            self.device = str(ev.get("device")) if ev.get("device") is not None else None
            self.epochs = int(ev.get("epochs", self.epochs) or self.epochs)
            extra = f" on {self.device}" if self.device else ""
            if isinstance(ev.get("threads"), int) and not str(ev.get("device_id", "cpu")).startswith(("cuda", "mps")):
                from netstudio.training.threads import describe

                extra += f", {describe(ev['threads'], str(ev.get('threads_mode', 'default')))}"
            if ev.get("augmentation"):
                extra += f", augmentation: {ev['augmentation']}"
            if ev.get("phases"):
                extra += f", phases per batch: {' → '.join(map(str, ev['phases']))}"
            print(f"training {self.epochs} epoch{'s' if self.epochs != 1 else ''}{extra}", file=self.lines,
                  flush=True)
        elif kind == "batch" and self.bar is not None:
            now = time.monotonic()
            if now - self._last_draw < 0.1:
                return  # redrawing every batch would cost more than the batch
            self._last_draw = now
            self._draw(ev)
        elif kind == "epoch":
            self.clear()
            print(epoch_line(ev, self.epochs), file=self.lines, flush=True)
        elif kind == "resumed_from":
            print(f"resumed from {ev.get('path')} after epoch {ev.get('epoch')}", file=self.lines, flush=True)
        elif kind == "stats":
            self._diagnoses(ev)
        elif kind == "phases" and ev.get("scope") == "epoch":
            losses = "  ".join(f"{k} {v:.4f}" for k, v in (ev.get("losses") or {}).items())
            lrs = "  ".join(f"{k} {v:.3g}" for k, v in (ev.get("lrs") or {}).items())
            print(f"  phase losses: {losses}" + (f"  (lr {lrs})" if lrs else ""), file=self.lines, flush=True)

    def _diagnoses(self, ev: dict[str, Any]) -> None:
        """Each new finding of the per-node statistics once (the same node and kind is not repeated)."""
        seen = self.__dict__.setdefault("_seen_diagnoses", set())
        for d in ev.get("diagnoses") or []:
            key = (d.get("code"), d.get("node_id"))
            if key in seen:
                continue
            seen.add(key)
            self.clear()
            # not "error:": that prefix is the run's one failure line (scripts look for it)
            print(f"node health ({d.get('severity', 'warning')}), step {ev.get('global_step')}: {d.get('message')} "
                  f"(fix: {d.get('hint')})", file=self.lines, flush=True)

    def _draw(self, ev: dict[str, Any]) -> None:
        assert self.bar is not None
        step = ev.get("batch") or 0
        total = ev.get("n_batches") or 0
        epoch = ev.get("epoch", 0)
        frac = min(1.0, step / total) if total else 0.0
        width = 24
        filled = int(frac * width)
        loss = ev.get("loss")
        loss_txt = f" loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
        self.bar.write(f"\repoch {epoch}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] "
                       f"{frac * 100:3.0f}%{loss_txt}   ")
        self.bar.flush()
        self._bar_shown = True

    def clear(self) -> None:
        """Erase the progress bar (before a line is printed below it, and at the end)."""
        if self.bar is not None and self._bar_shown:
            self.bar.write("\r" + " " * 70 + "\r")
            self.bar.flush()
            self._bar_shown = False

    _clear = clear  # its name before it was public


class StatsWriter:
    """``--stats FILE``: one JSON object per statistics sample (step, epoch, per node id its figures,
    diagnoses); NaN/Inf figures are written as the strings "nan", "inf", "-inf"."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.samples = 0

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev.get("kind") != "stats":
            return
        import json

        from netstudio.training.nodestats import jsonable_figures

        record = {"step": ev.get("global_step"), "epoch": ev.get("epoch"), "nodes": jsonable_figures(ev["nodes"]),
                  "diagnoses": ev.get("diagnoses") or [], "nan_origin": ev.get("nan_origin"),
                  "histograms": ev.get("histograms") or {}}
        self.file.write(json.dumps(record, allow_nan=False) + "\n")
        self.file.flush()
        self.samples += 1

    def close(self) -> None:
        self.file.close()


def with_stats(report: Any, path: str | None) -> tuple[Any, "StatsWriter | None"]:
    """``report`` that also writes the statistics samples to ``path`` (unchanged without a path)."""
    if not path:
        return report, None
    writer = StatsWriter(path)

    def both(ev: dict[str, Any]) -> None:
        if report is not None:
            report(ev)
        writer(ev)

    return both, writer


def fmt_metric(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else str(v)
    return str(v)


def epoch_line(ev: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {ev.get('epoch', '?')}/{epochs}"]
    for key, label in (("train_loss", "train_loss"), ("val_loss", "val_loss"),
                       ("train_accuracy", "train_acc"), ("val_accuracy", "val_acc")):
        v = ev.get(key)
        if v is not None:
            parts.append(f"{label} {fmt_metric(v)}")
    if ev.get("lr") is not None:
        parts.append(f"lr {ev['lr']:.3g}")
    if ev.get("seconds") is not None:
        parts.append(f"{ev['seconds']:.1f}s")
    return "  ".join(parts)


def jsonable(v: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (json.dumps would write invalid NaN tokens)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    item = getattr(v, "item", None)  # 0-d tensors / numpy scalars
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(v)


def summary(result: Any, device: str | None, seconds: float) -> dict[str, Any]:
    history = list(getattr(result, "history", None) or [])
    metrics = dict(getattr(result, "metrics", None) or {})
    last = history[-1] if history else {}
    out: dict[str, Any] = {"status": getattr(result, "status", None), "message": getattr(result, "message", "")}
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):  # always present; null = n/a
        out[key] = metrics.get(key, last.get(key) if isinstance(last, dict) else None)
    out["epochs"] = metrics.get("epochs_run", len(history))
    out["best_epoch"] = getattr(result, "best_epoch", None)
    out["device"] = metrics.get("device", device)
    out["seconds"] = round(seconds, 3)
    out["history"] = history
    for k, v in metrics.items():
        out.setdefault(k, v)
    return jsonable(out)


def outcome_lines(summary: dict[str, Any]) -> list[str]:
    """Regression figures and the loss terms of a multi-loss project, for the end of a run."""
    out = []
    split = "validation" if summary.get("metrics_split") == "val" else "training"
    if summary.get("r2") is not None or summary.get("rmse") is not None:
        out.append(f"regression ({split} split): r2 {fmt_metric(summary.get('r2'))}  "
                   f"mae {fmt_metric(summary.get('mae'))}  rmse {fmt_metric(summary.get('rmse'))} (in the target's units)")
    terms = summary.get("loss_terms")
    if isinstance(terms, dict) and terms:
        total = sum(v for v in terms.values() if isinstance(v, (int, float)))
        parts = "  ".join(f"{k} {fmt_metric(v)}" for k, v in terms.items())
        out.append(f"loss terms ({split} split): {parts}  (sum {fmt_metric(total)})")
    return out


def resolve_device_label(requested: str) -> str:
    """Fail before loading data when the device cannot be used (fit would report it only later)."""
    from netstudio.training.engine import device_label, resolve_device

    return device_label(resolve_device(requested))


def error_json(message: str, node_id: str | None = None, hint: str | None = None) -> str:
    """The one JSON object ``train --json`` prints when the run fails."""
    return json.dumps({"status": "error", "message": message, "node": node_id, "hint": hint})


def export_results(model: Any, project: Any, job: Any, *, out: str | None, save_weights: str | None,
                   no_preprocess: bool = False) -> list[str]:
    """Write the trained model (``--out``, whole module) and/or a weights file (``--save-weights``,
    state_dict + project + preprocessing, for a later ``netstudio export``); returns the paths written."""
    if model is None or not (out or save_weights):
        return []
    from netstudio.project import export as ex
    from netstudio.project.preprocess import export_input

    exported: list[str] = []
    if out:
        exported.append(str(ex.export_pt(model, out, export_input(job.data, preprocess=not no_preprocess,
                                                                     plan=job.plan))))
    if save_weights:  # the preprocessing travels along
        exported.append(str(ex.export_weights(model, project, save_weights, export_input(job.data, plan=job.plan))))
    return exported


# ----------------------------------------------------------------------------
# step controls (clipping, warm-up, mixed precision): the same flags on train, lr-find and each rank
# ----------------------------------------------------------------------------

#: (flag, TrainConfig field) of the step controls
CONTROL_FLAGS = (("--clip-norm", "clip_norm"), ("--clip-value", "clip_value"), ("--warmup-epochs", "warmup_epochs"),
                 ("--precision", "precision"))


def _non_negative_float(text: str) -> float:
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return v


def add_control_args(parser: Any) -> None:
    """``--clip-norm``, ``--clip-value``, ``--warmup-epochs``, ``--precision`` (default: the project's)."""
    from netstudio.training.config import PRECISIONS

    g = parser.add_argument_group("step controls (default: the project's settings)")
    g.add_argument("--clip-norm", type=_non_negative_float, default=None, metavar="N",
                   help="clip the gradients' total L2 norm to N (0 = off)")
    g.add_argument("--clip-value", type=_non_negative_float, default=None, metavar="V",
                   help="clip every gradient element to ±V (0 = off)")
    g.add_argument("--warmup-epochs", type=int, default=None, metavar="E",
                   help="raise the learning rate linearly over the first E epochs, before the scheduler (0 = off)")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="mixed precision: off, bf16 (CPU or GPU) or fp16 (CUDA, with a gradient scaler)")


def control_overrides(args: Any) -> dict[str, Any]:
    """The step-control settings given on the command line (None: keep the project's)."""
    return {name: getattr(args, name, None) for _, name in CONTROL_FLAGS}


def control_argv(args: Any) -> list[str]:
    """The step-control flags again, to pass on (to each rank of a distributed job)."""
    out: list[str] = []
    for flag, name in CONTROL_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            out += [flag, str(v)]
    return out


def record_run(project_path: str, project: Any, config: Any, result: Any, seconds: float, device: str | None,
               *, keep_weights: bool = True, source: str = "cli") -> str | None:
    """Keep the run in ``<project>.runs/`` (netstudio.project.runs); the folder, or None when recording is off.

    A run that cannot be recorded is reported on stderr and never fails the command.
    """
    import datetime

    from netstudio.project import runs as R

    if not R.recording_enabled():
        return None
    model = getattr(result, "model", None)
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    try:
        rec = R.record_run(project_path, project.graph, config, status=str(result.status),
                           message=str(result.message or ""), history=list(result.history or []),
                           metrics=dict(result.metrics or {}), seconds=seconds, device=device, source=source,
                           started=started,
                           state_dict=model.state_dict() if keep_weights and model is not None else None)
    except OSError as e:
        err(f"warning: the run was not recorded ({e})")
        return None
    return str(rec.folder)
