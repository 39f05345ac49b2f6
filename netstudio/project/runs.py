"""Run history: every training run kept beside its project, in ``<project>.runs/``.

One folder per run, named by its start time (UTC) and a random suffix, holding

* ``run.json`` — readable JSON (``RUN_FORMAT``): the training settings, the graph's
  hash (:func:`graph_hash`: nodes, parameters and edges, not the layout), every node's
  parameters, the per-epoch metrics, the final metrics, status and message, device,
  start time and duration, and where the run came from (``app`` / ``cli``);
* ``weights.pt`` (optional) — the trained state_dict, read back only with
  ``torch.load(weights_only=True)``.

Both are written atomically (:func:`netstudio.fileio.atomic_write`), the JSON last,
so a folder without a readable ``run.json`` is an unfinished write and is skipped
when listing. Setting the environment variable ``NETSTUDIO_NO_RUNS`` to a non-empty
value turns recording off (the test suite does, so that its runs never land in the
checkout). Nothing here imports Qt.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from netstudio.errors import ProjectError
from netstudio.fileio import atomic_write, torch_writer

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.graph.model import Graph
    from netstudio.training.config import TrainConfig

RUNS_SUFFIX = ".runs"
RUN_FILE = "run.json"
WEIGHTS_FILE = "weights.pt"
RUN_FORMAT = 1
NO_RUNS_ENV = "NETSTUDIO_NO_RUNS"


def runs_dir(project_path: str | os.PathLike[str]) -> Path:
    """``<project>.runs`` next to the project file (like ``<project>.checkpoints``)."""
    p = Path(project_path)
    return p.with_name(p.stem + RUNS_SUFFIX)


def recording_enabled() -> bool:
    return not os.environ.get(NO_RUNS_ENV)


def graph_hash(graph: "Graph") -> str:
    """A short hash of what the network *is*: node ids, types, names, parameters and edges (no positions)."""
    d = graph.to_dict()
    nodes = [{k: v for k, v in n.items() if k != "pos"} for n in d.get("nodes", [])]
    canon = json.dumps({"nodes": nodes, "edges": d.get("edges", [])}, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def _plain(v: Any) -> Any:
    """JSON-safe copy: enums as text, non-finite floats as None, tuples as lists."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


def node_params(graph: "Graph") -> dict[str, dict[str, Any]]:
    """``{node name: {"type": type_id, **params}}`` of every node."""
    d = graph.to_dict()
    return {str(n.get("name") or n["id"]): {"type": n["type"], **_plain(n.get("params") or {})}
            for n in d.get("nodes", [])}


@dataclass
class RunRecord:
    """One recorded run: its folder and the content of its ``run.json``."""

    folder: Path
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data.get("id") or self.folder.name)

    @property
    def weights_path(self) -> Path | None:
        name = self.data.get("weights")
        if not name:
            return None
        p = self.folder / str(name)
        return p if p.is_file() else None

    def history(self) -> list[dict[str, Any]]:
        return [e for e in self.data.get("history") or [] if isinstance(e, dict)]

    def optimizer_lr(self) -> Any:
        for p in (self.data.get("nodes") or {}).values():
            if isinstance(p, dict) and str(p.get("type", "")).startswith("optim."):
                return p.get("lr")
        return None

    def summary(self) -> dict[str, Any]:
        """One row of the run table (plain JSON values)."""
        m = self.data.get("metrics") or {}
        return {"id": self.id, "started": self.data.get("started"), "source": self.data.get("source"),
                "status": self.data.get("status"), "epochs_run": m.get("epochs_run"),
                "train_loss": m.get("train_loss"), "val_loss": m.get("val_loss"),
                "val_accuracy": m.get("val_accuracy"), "lr": self.optimizer_lr(),
                "seconds": self.data.get("seconds"), "device": self.data.get("device"),
                "graph_hash": self.data.get("graph_hash"), "weights": self.weights_path is not None,
                "folder": str(self.folder), **self.sweep_fields()}

    def sweep_fields(self) -> dict[str, Any]:
        """``sweep``, ``trial``, ``trial_state``: the search this run was a trial of (all None otherwise)."""
        sw = self.data.get("sweep")
        if not isinstance(sw, dict):
            return {"sweep": None, "trial": None, "trial_state": None}
        return {"sweep": sw.get("id"), "trial": sw.get("trial"), "trial_state": sw.get("state")}

    def params(self) -> dict[str, Any]:
        """Every setting of the run, flattened: ``training.epochs``, ``fc1.out_features``, ``graph_hash``…"""
        flat: dict[str, Any] = {"graph_hash": self.data.get("graph_hash")}
        for k, v in (self.data.get("config") or {}).items():
            flat[f"training.{k}"] = v
        for name, p in (self.data.get("nodes") or {}).items():
            if isinstance(p, dict):
                for k, v in p.items():
                    flat[f"{name}.{k}"] = v
        return flat


def param_diff(a: RunRecord, b: RunRecord) -> list[tuple[str, Any, Any]]:
    """The settings that differ between two runs: (key, a's value, b's value), sorted by key.

    A key one run lacks (a node only one of them has) shows as None on that side.
    """
    pa, pb = a.params(), b.params()
    return [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]


def _new_id(now: datetime.datetime) -> str:
    return now.strftime("%Y%m%d-%H%M%S-%f")[:-3] + "-" + secrets.token_hex(2)  # milliseconds: sorts by time


def record_run(project_path: str | os.PathLike[str], graph: "Graph", config: "TrainConfig", *,
               status: str, message: str, history: list[dict[str, Any]], metrics: Mapping[str, Any],
               seconds: float, device: str | None, source: str, state_dict: Mapping[str, Any] | None = None,
               started: datetime.datetime | None = None, sweep: Mapping[str, Any] | None = None) -> RunRecord:
    """Write one run into ``<project>.runs/<id>/`` (see the module text) and return it.

    ``state_dict``: the trained weights to keep (None: none). ``sweep``: a trial of a hyperparameter
    search (netstudio.project.sweep): ``{"id", "trial", "state", "params", "value"}``, kept as the run's
    ``sweep`` entry. Raises OSError when the folder cannot be written.
    """
    from dataclasses import asdict

    now = started or datetime.datetime.now(datetime.timezone.utc)
    base = runs_dir(project_path)
    run_id = _new_id(now)
    folder = base / run_id
    while folder.exists():  # pragma: no cover - two runs in the same second drew the same suffix
        run_id = _new_id(now)
        folder = base / run_id
    data: dict[str, Any] = {
        "format": RUN_FORMAT, "id": run_id, "project": Path(project_path).name,
        "started": now.isoformat(timespec="microseconds"), "seconds": float(seconds), "source": source,
        "status": str(status), "message": str(message or ""), "device": device,
        "graph_hash": graph_hash(graph), "config": _plain(asdict(config)), "nodes": node_params(graph),
        "history": [{k: v for k, v in _plain(dict(e)).items() if k not in ("kind", "run", "first_loss")}
                    for e in history],
        "metrics": _plain(dict(metrics)), "weights": None,
    }
    if sweep is not None:
        data["sweep"] = _plain(dict(sweep))
    folder.mkdir(parents=True, exist_ok=False)
    if state_dict is not None:
        import torch

        plain = {k: v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else v for k, v in state_dict.items()}
        atomic_write(folder / WEIGHTS_FILE, torch_writer(plain))
        data["weights"] = WEIGHTS_FILE
    atomic_write(folder / RUN_FILE, json.dumps(data, indent=1, sort_keys=False) + "\n")
    return RunRecord(folder, data)


def read_run(folder: str | os.PathLike[str]) -> RunRecord | None:
    """The run in ``folder``, or None when it has no readable ``run.json`` of a known format."""
    f = Path(folder)
    try:
        data = json.loads((f / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("format"), int) or data["format"] > RUN_FORMAT:
        return None
    return RunRecord(f, data)


def list_runs(project_path: str | os.PathLike[str]) -> list[RunRecord]:
    """Every readable run of the project, oldest first."""
    base = runs_dir(project_path)
    if not base.is_dir():
        return []
    runs = [r for r in (read_run(d) for d in sorted(base.iterdir()) if d.is_dir()) if r is not None]
    return sorted(runs, key=lambda r: (str(r.data.get("started") or ""), r.folder.name))


def load_run_weights(run: RunRecord) -> dict[str, Any]:
    """The run's trained state_dict (``weights_only``: a file cannot run code). ProjectError without one."""
    import torch

    path = run.weights_path
    if path is None:
        raise ProjectError(f"Run {run.id} kept no weights", hint="train again with weights kept")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols; the error is ours
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise ProjectError(f"Cannot read the weights of run {run.id}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise ProjectError(f"The weights of run {run.id} are not a state_dict")
    return state


def delete_run(run: RunRecord) -> None:
    """Remove the run's folder (only a folder that holds a run file)."""
    if not (run.folder / RUN_FILE).is_file() or run.folder.parent.suffix != RUNS_SUFFIX:
        raise ProjectError(f"{run.folder} is not a run folder")
    shutil.rmtree(run.folder)
    try:
        run.folder.parent.rmdir()  # the last run: no empty .runs folder left behind
    except OSError:
        pass
