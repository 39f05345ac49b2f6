"""Which user Python files the user trusts, by path and content hash, like an editor's trusted workspaces.

A project whose model keeps classes from a user's file (``layer.user_module`` nodes, see
``netstudio/nodes/usercode.py``) never runs that file silently. The app asks once per (file, sha256)
and remembers the answer "trust" in ``trusted_files.json`` in the user's config folder
(``$NETSTUDIO_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/netstudio``, else ``~/.config/netstudio``); a changed
file has another hash, so it is asked about again. The CLI does not read this list: its commands need
``--trust`` each time (:func:`require`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netstudio.errors import NetStudioError, ProjectError
from netstudio.fileio import atomic_write, user_dir
from netstudio.nodes import usercode
from netstudio.nodes.user_module import TYPE_ID, references, repin

CONFIG_ENV = "NETSTUDIO_CONFIG_DIR"
TRUST_FILE = "trusted_files.json"
_FORMAT = "netstudio-trusted-files"


class UntrustedCodeError(NetStudioError):
    """A command would run code from a user's file that it was not told to trust."""


def config_dir() -> Path:
    """The folder of NetStudio's user settings (not created here)."""
    return user_dir(CONFIG_ENV, "XDG_CONFIG_HOME", ".config")


def _store_path() -> Path:
    return config_dir() / TRUST_FILE


def _read() -> list[dict[str, str]]:
    try:
        data: Any = json.loads(_store_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # none yet, or unreadable: nothing is trusted (asked again)
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("trusted"), list):
        return []
    return [e for e in data["trusted"] if isinstance(e, dict) and isinstance(e.get("path"), str)
            and isinstance(e.get("sha256"), str)]


def is_trusted(path: str | os.PathLike[str], sha: str) -> bool:
    """True when the user trusted the file at ``path`` with content hash ``sha`` before."""
    p = usercode.normpath(path)
    return any(e["path"] == p and e["sha256"] == sha for e in _read())


def remember(path: str | os.PathLike[str], sha: str) -> None:
    """Remember that the user trusts ``path`` with content ``sha`` (and allow it in this process)."""
    usercode.allow(path, sha)
    p = usercode.normpath(path)
    entries = _read()
    if any(e["path"] == p and e["sha256"] == sha for e in entries):
        return
    entries.append({"path": p, "sha256": sha})
    text = json.dumps({"format": _FORMAT, "version": 1, "trusted": entries}, indent=2, ensure_ascii=False) + "\n"
    try:
        atomic_write(_store_path(), text, make_parents=True)
    except OSError as e:
        raise ProjectError(f"Cannot remember the trusted file in {_store_path()}: {e.strerror or e}") from e


@dataclass(frozen=True)
class Request:
    """One user file a project's model runs: what to ask the user about."""

    #: the path the project records
    file: str
    #: the sha256 the project records (at import, or when the file was last trusted)
    recorded: str
    #: the file's sha256 now; None: missing
    current: str | None

    @property
    def changed(self) -> bool:
        return self.current is not None and self.current != self.recorded

    def question(self) -> str:
        name = Path(self.file).name
        if self.changed:
            return (f"The model's code file {self.file} has changed since the project recorded it.\n\n"
                    f"recorded sha256: {self.recorded}\nnow:             {self.current}\n\n"
                    f"Opening the project with it runs the new code in {name}. Trust the file as it is now?")
        return (f"This project's model runs Python code from {self.file}\n(sha256 {self.recorded}).\n\n"
                "Trust this file and run its code? If not, the project opens with the nodes that use it "
                "shown as unavailable, and nothing from the file is run.")


def requests(graph: Any) -> list[Request]:
    """The user files ``graph`` references that this process may not run yet (missing files excluded:
    nothing to ask, the node says the file is missing)."""
    out = []
    for file, sha in references(graph):
        now = usercode.file_sha256(file)
        if now is None or (now == sha and usercode.is_allowed(file, sha)):
            continue
        out.append(Request(file, sha, now))
    return out


def apply_remembered(graph: Any) -> list[Request]:
    """Allow the files the user trusted before (same path and hash); return the ones still to ask about."""
    left = []
    for r in requests(graph):
        if r.current is not None and is_trusted(r.file, r.current) and not r.changed:
            usercode.allow(r.file, r.current)
        else:
            left.append(r)
    return left


def repin_changes(graph: Any, r: Request) -> list[tuple[Any, str, dict[str, Any]]]:
    """After the user trusted a changed file: (graph, node id, new params) for each node to update."""
    assert r.current is not None
    out = []
    for g, nid in repin(graph, r.file, r.recorded, r.current):
        params = dict(g.nodes[nid].params)
        params["sha256"] = r.current
        out.append((g, nid, params))
    return out


def require(project: Any, trust: bool, what: str = "this command") -> None:
    """The CLI's rule: a project that runs code from a user's file needs ``--trust``; with it, that code is
    allowed (at the recorded hashes only: a changed file stays unavailable)."""
    refs = references(project.graph)
    if not refs:
        return
    if not trust:
        files = "; ".join(f"{f} (sha256 {sha})" for f, sha in refs)
        raise UntrustedCodeError(f"{what} would run Python code from {files}, which this project's model uses",
                                 hint="review the file and pass --trust to run it")
    for f, sha in refs:
        usercode.allow(f, sha)


__all__ = ["CONFIG_ENV", "TYPE_ID", "Request", "UntrustedCodeError", "apply_remembered", "config_dir",
           "is_trusted", "remember", "repin_changes", "require", "requests"]
