"""Project files (``.nsproj``): plain, versioned JSON — never pickle.

Loading parses JSON into plain records, migrates old format versions, then
resolves node types against the catalog with full validation. Nothing in a
project file is ever executed. Saving is atomic (temp file + rename) and
deterministic, so save → load → save is byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from netstudio import __version__
from netstudio.errors import NetStudioError, ProjectError, clip_text
from netstudio.fileio import atomic_write, clean_stale_temp_files
from netstudio.graph.model import Graph
from netstudio.training.config import TrainConfig

#: the newest format this version reads and writes. 2 added blocks (a node with an inner graph, under
#: its "block" key); a project without blocks is still written as version 1, so it stays byte-identical
#: and older NetStudio versions still open it.
FORMAT_VERSION = 2
SUFFIX = ".nsproj"
BLOCK_SUFFIX = ".nsblock"
BLOCK_FORMAT = "netstudio-block"
BLOCK_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024  # a project is small; refuse to parse a huge hostile file

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: format_version N -> function upgrading a version-N record to N+1
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _migrate_0(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (pre-release) stored edges as objects and training under 'settings'."""
    graph = data.get("graph", {})
    if not isinstance(graph, Mapping):
        raise ProjectError("The project has no 'graph' object")
    edges = graph.get("edges", [])
    if not isinstance(edges, list):
        raise ProjectError("'graph.edges' must be a list")
    new_edges = []
    for e in edges:
        if isinstance(e, Mapping):
            missing = [k for k in ("src", "src_port", "dst", "dst_port") if k not in e]
            if missing:
                raise ProjectError(f"An edge record lacks {', '.join(missing)}")
            e = [e["src"], e["src_port"], e["dst"], e["dst_port"]]
        new_edges.append(e)
    data["graph"] = {**graph, "edges": new_edges}  # a copy: never edit the caller's records
    if "settings" in data and "training" not in data:
        data["training"] = data.pop("settings")
    data["format_version"] = 1
    return data


MIGRATIONS[0] = _migrate_0


def _migrate_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no blocks: its records are valid version-2 records as they are."""
    return {**data, "format_version": 2}


MIGRATIONS[1] = _migrate_1


def _has_blocks(graph: Graph) -> bool:
    return any(n.inner is not None for n in graph.nodes.values())


def format_version_for(graph: Graph) -> int:
    """The oldest format that holds ``graph``: 2 with blocks, else 1."""
    return 2 if _has_blocks(graph) else 1


@dataclass
class Project:
    graph: Graph = field(default_factory=Graph)
    training: TrainConfig = field(default_factory=TrainConfig)
    name: str = "Untitled"
    description: str = ""
    path: Path | None = None
    #: data paths that loading resolved against the project's folder: node id -> (as written, as resolved).
    #: Saving to the same folder writes them as they were written, so the file stays portable.
    resolved_paths: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False, compare=False)
    #: the model's weights file (a NetStudio weights file, read with weights_only=True), relative to the
    #: project's folder: an imported model's weights; "" = none (and no key in the file)
    weights: str = ""

    def to_dict(self, target: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The file's content; ``target``: where it will be written (default: where it was read)."""
        out = {
            "format_version": format_version_for(self.graph),
            "app": f"netstudio {__version__}",
            "name": self.name,
            "description": self.description,
            "training": self.training.to_dict(),
            "graph": self._graph_record(target),
        }
        if self.weights:
            out["weights"] = self.weights
        return out

    def weights_path(self) -> Path | None:
        """The weights file beside the project (None: the project names none, or is not saved yet)."""
        if not self.weights or self.path is None:
            return None
        return Path(self.path).parent / self.weights

    def _graph_record(self, target: str | os.PathLike[str] | None) -> dict[str, Any]:
        rec = self.graph.to_dict()
        if not self.resolved_paths or self.path is None:
            return rec
        here = Path(self.path).resolve().parent
        if target is not None and Path(target).resolve().parent != here:
            return rec  # another folder: the resolved (absolute) path is the one that still finds the data
        for node in rec.get("nodes", []):
            entry = self.resolved_paths.get(node.get("id"))
            params = node.get("params")
            if entry is not None and isinstance(params, dict) and params.get("path") == entry[1]:
                params["path"] = entry[0]
        return rec

    def dumps(self, target: str | os.PathLike[str] | None = None) -> str:
        text = json.dumps(self.to_dict(target), indent=2, ensure_ascii=False) + "\n"
        # A lone surrogate (e.g. a name pasted from a broken source) cannot be encoded as UTF-8;
        # written as a JSON escape it survives the round trip instead of making every save fail.
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "Project":
        if not isinstance(data, dict):
            raise ProjectError("A project file must contain a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ProjectError("The file has no valid 'format_version'; it is not a NetStudio project")
        if version > FORMAT_VERSION:
            raise ProjectError(f"The project uses format version {version}, but this NetStudio reads up to "
                               f"{FORMAT_VERSION}", hint="update NetStudio to open it")
        if version < 0:
            raise ProjectError(f"Invalid format_version {version}")
        data = dict(data)
        while version < FORMAT_VERSION:
            data = MIGRATIONS[version](data)
            version = data["format_version"]
        graph_rec = data.get("graph")
        if not isinstance(graph_rec, Mapping):
            raise ProjectError("The project has no 'graph' object")
        if not isinstance(graph_rec.get("nodes", []), list) or not isinstance(graph_rec.get("edges", []), list):
            raise ProjectError("'graph.nodes' and 'graph.edges' must be lists")
        _check_records(graph_rec)
        try:
            graph = Graph.from_dict(graph_rec)
        except NetStudioError as e:
            raise ProjectError(f"Invalid graph: {e.message}", node_id=e.node_id, hint=e.hint) from e
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
            raise ProjectError(f"Invalid graph record: {e!r}") from e
        training = TrainConfig.from_dict(data.get("training", {}))
        name = data.get("name", "Untitled")
        desc = data.get("description", "")
        if not isinstance(name, str) or not isinstance(desc, str):
            raise ProjectError("'name' and 'description' must be text")
        weights = data.get("weights", "")
        if not isinstance(weights, str) or Path(weights).name != weights or weights in (".", ".."):
            raise ProjectError(f"'weights' must name a file beside the project, not {clip_text(repr(weights), 80)}",
                               hint="write the weights file's name only, or remove the key")
        return cls(graph, training, name, desc, path, weights=weights)

    @classmethod
    def loads(cls, text: str, path: Path | None = None) -> "Project":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:  # ValueError also covers ints beyond Python's digit limit
            where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
            raise ProjectError(f"The project file is not valid JSON{where}; it may be truncated or corrupt") from e
        return cls.from_dict(data, path)


def _check_records(graph_rec: Mapping[str, Any]) -> None:
    """Structural checks with messages that name the record (Graph.from_dict checks the semantics)."""
    ids: set[str] = set()
    for i, rec in enumerate(graph_rec.get("nodes", [])):
        if not isinstance(rec, Mapping):
            raise ProjectError(f"Node record {i + 1} is not an object")
        for key in ("id", "type"):
            if not isinstance(rec.get(key), str) or not rec.get(key):
                raise ProjectError(f"Node record {i + 1} has no valid {key!r}")
        if "params" in rec and rec["params"] is not None and not isinstance(rec["params"], Mapping):
            raise ProjectError(f"The params of node {rec['id']!r} must be an object", node_id=rec["id"])
        if rec["id"] in ids:
            raise ProjectError(f"Node id {_clip(rec['id'])} appears twice", node_id=rec["id"])
        ids.add(rec["id"])
    for rec in graph_rec.get("edges", []):
        if not isinstance(rec, list) or len(rec) != 4 or not all(isinstance(x, str) for x in rec):
            raise ProjectError(f"Malformed edge record {_clip(rec)}; expected [src, src_port, dst, dst_port]")
        for end in (rec[0], rec[2]):
            if end not in ids:
                raise ProjectError(f"A connection refers to node {_clip(end)}, which is not in the file",
                                   hint="the file was edited by hand or is corrupt; remove that connection")


def _clip(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "…"


def _read_text(p: Path, kind: str) -> str:
    """The UTF-8 text of a project or block file (``kind``: "project" / "block"), every failure a
    :class:`ProjectError` that says which."""
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ProjectError(f"{p.name} is too large to be a {kind} file")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ProjectError(f"No such {kind} file: {p}") from None
    except IsADirectoryError:
        raise ProjectError(f"{p} is a folder, not a {kind} file") from None
    except OSError as e:
        raise ProjectError(f"Cannot read {p}: {e.strerror or e}") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProjectError(f"{p.name} is not a text file; it may be corrupt") from None


def load_project(path: str | os.PathLike[str]) -> Project:
    p = Path(path)
    clean_stale_temp_files(p.parent, p.name)  # what a crash during an earlier save left behind
    text = _read_text(p, "project")
    try:
        proj = Project.loads(text, p)
    except ProjectError as e:
        raise ProjectError(f"Cannot open {p.name}: {e.message}", node_id=e.node_id, hint=e.hint) from e
    resolve_data_paths(proj)
    return proj


def resolve_data_paths(project: Project) -> None:
    """A CSV/image folder given relative to the project file is found whatever the working directory.

    A dataset's relative ``path`` that does not exist from the working directory but does from the
    project's folder becomes that absolute path (what was written is kept in
    ``project.resolved_paths``, and saving to the same folder writes it back unchanged).
    """
    if project.path is None:
        return
    base = Path(project.path).resolve().parent
    for node in project.graph.nodes.values():
        p = node.params.get("path")
        if node.type_id == "data.dataset" and isinstance(p, str) and p and not os.path.isabs(os.path.expanduser(p)):
            if not os.path.exists(p) and os.path.exists(base / p):  # os.path: False, not OSError, for a too-long name
                node.params["path"] = str(base / p)
                project.resolved_paths[node.id] = (p, node.params["path"])


def save_project(project: Project, path: str | os.PathLike[str] | None = None) -> Path:
    """Write atomically: a crash mid-save never leaves a half-written project.

    The file keeps its mode (a new one follows the umask); saving through a
    symbolic link rewrites the link's target.
    """
    p = Path(path) if path is not None else project.path
    if p is None:
        raise ProjectError("No file name given for saving")
    try:
        _carry_weights(project, p)
        text = project.dumps(p)
        atomic_write(p, text, make_parents=True)
    except (OSError, UnicodeError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ProjectError(f"Cannot save {clip_text(str(p), 300)}: {clip_text(why, 300)}") from e
    project.path = p
    return p


def _carry_weights(project: Project, target: Path) -> None:
    """Saving into another folder copies the project's weights file beside the new project file."""
    src = project.weights_path()
    if src is None or not src.is_file():
        return
    dst = target.parent / project.weights
    if dst.resolve() == src.resolve():
        return
    if dst.exists():
        raise ProjectError(f"Cannot save the weights beside {clip_text(str(target), 300)}: "
                           f"{project.weights!r} already exists there", hint="save into another folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# ----------------------------------------------------------------------------
# block library files (.nsblock): one block's inner graph, plain JSON
# ----------------------------------------------------------------------------


def block_dumps(graph: Graph, block_id: str) -> str:
    """The text of a ``.nsblock`` file holding the block ``block_id`` of ``graph``."""
    node = graph.node(block_id)
    if node.inner is None:
        raise ProjectError(f"'{node.name}' is not a block", node_id=block_id)
    rec = {"format": BLOCK_FORMAT, "version": BLOCK_VERSION, "app": f"netstudio {__version__}",
           "name": node.name, "block": node.inner.to_dict()}
    return json.dumps(rec, indent=2, ensure_ascii=False) + "\n"


def save_block(graph: Graph, block_id: str, path: str | os.PathLike[str]) -> Path:
    """Write one block to a library file (atomically)."""
    p = Path(path)
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", block_dumps(graph, block_id))
    try:
        atomic_write(p, text, make_parents=True)
    except (OSError, UnicodeError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ProjectError(f"Cannot save {clip_text(str(p), 300)}: {clip_text(why, 300)}") from e
    return p


def block_record(text: str, where: str = "the block file") -> dict[str, Any]:
    """A node record (for ``Graph.subgraph_dict``-style pasting) of the block in a ``.nsblock`` text,
    validated: inserting it (``commands.Paste``) gives a new, independent block."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProjectError(f"{where} is not valid JSON; it may be truncated or corrupt") from e
    if not isinstance(data, dict) or data.get("format") != BLOCK_FORMAT:
        raise ProjectError(f"{where} is not a NetStudio block file", hint=f"choose a {BLOCK_SUFFIX} file")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProjectError(f"{where} has no valid 'version'")
    if version > BLOCK_VERSION:
        raise ProjectError(f"{where} uses block format version {version}, but this NetStudio reads up to "
                           f"{BLOCK_VERSION}", hint="update NetStudio to open it")
    name, inner = data.get("name", "block"), data.get("block")
    if not isinstance(name, str) or not isinstance(inner, dict):
        raise ProjectError(f"{where} has no valid 'name' and 'block'")
    if not isinstance(inner.get("nodes", []), list) or not isinstance(inner.get("edges", []), list):
        raise ProjectError(f"{where}: 'block.nodes' and 'block.edges' must be lists")
    _check_records(inner)
    try:
        Graph.from_dict(inner)
    except NetStudioError as e:
        raise ProjectError(f"{where}: invalid block: {e.message}", hint=e.hint) from e
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
        raise ProjectError(f"{where}: invalid block record: {e!r}") from e
    return {"id": "block", "type": "block.block", "name": name or "block", "pos": [0.0, 0.0], "params": {},
            "block": inner}


def load_block(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.nsblock`` file: the node record of its block (see :func:`block_record`)."""
    p = Path(path)
    text = _read_text(p, "block")
    return block_record(text, p.name)
