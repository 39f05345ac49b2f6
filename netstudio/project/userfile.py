"""Import a model class from the user's own Python file: ``path/model.py:ClassName``.

This runs the file's code, so it happens only when the caller says the user trusts the file
(``netstudio import ... --trust``, the app's confirmation). The class is built with no arguments (or the
JSON object ``args``), traced like any model (:func:`netstudio.project.importer.import_module`): catalog
layers become their node types, container modules (the model itself, its own blocks) are traced through,
and each module class *of the file* without children (a custom activation) becomes one opaque
``layer.user_module`` node that records the file's path, its sha256 and the class's qualified name, with
its weights and shapes. Functions of the file are traced through into the torch operations they call.

Opening such a project later runs nothing until that (file, sha256) is trusted again
(:mod:`netstudio.project.trust`, the CLI's ``--trust``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from netstudio.errors import NetStudioError
from netstudio.nodes import usercode

_SPEC_RE = re.compile(r"^(?P<file>.+\.py):(?P<cls>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$")


def parse_spec(spec: str) -> tuple[Path, str] | None:
    """``path/model.py:ClassName`` -> (path, "ClassName"); None for any other SPEC."""
    m = _SPEC_RE.match(spec.strip())
    if m is None:
        return None
    return Path(m.group("file")), m.group("cls")


def is_user_spec(spec: str) -> bool:
    return parse_spec(spec) is not None


def spec_file(spec: str) -> Path | None:
    parsed = parse_spec(spec)
    return parsed[0] if parsed is not None else None


def trust_prompt(path: str | Path, sha: str) -> str:
    """What the CLI and the app say before running a user file."""
    return (f"Importing runs the Python code in {usercode.normpath(path)} (sha256 {sha}). "
            "Only import files you trust.")


class UserFileError(NetStudioError):
    """A user file or class that cannot be imported (or may not run: no trust)."""


def _import_error(message: str, hint: str | None = None) -> NetStudioError:
    return UserFileError(message, hint=hint)


def parse_args(text: str | dict[str, Any] | None) -> dict[str, Any]:
    """The constructor's keyword arguments: a JSON object (``--args '{"width": 16}'``)."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        value: Any = text
    else:
        try:
            value = json.loads(text)
        except ValueError as e:
            raise _import_error(f"--args is not valid JSON: {e}", hint='write a JSON object, e.g. {"width": 16}') from None
    if not isinstance(value, dict):
        raise _import_error("--args must be a JSON object of keyword arguments", hint='e.g. {"width": 16}')
    return value


@dataclass
class UserFile:
    """The one user file of an import: which of its classes are kept as user-module nodes."""

    path: str
    sha: str

    def owns(self, m: nn.Module) -> bool:
        return usercode.origin_of(type(m)) == (self.path, self.sha)

    def is_leaf(self, m: nn.Module) -> bool:
        """A module class of this file without child modules: one opaque node (its code is not traced)."""
        return self.owns(m) and next(m.children(), None) is None

    def reference(self, m: nn.Module) -> dict[str, str] | None:
        """The user-module node's file, sha256 and qualname for ``m``; None: not a class of this file."""
        if not self.owns(m):
            return None
        return {"file": self.path, "sha256": self.sha, "qualname": type(m).__qualname__}

    def label(self, m: nn.Module) -> str:
        return f"{type(m).__qualname__} from {Path(self.path).name} (your code, sha256 {usercode.short(self.sha)})"


def load_model(path: str | Path, qualname: str, *, args: str | dict[str, Any] | None = None,
               trust: bool = False) -> tuple[nn.Module, UserFile]:
    """Run the user file (only with ``trust``) and build its class ``qualname`` with ``args``."""
    p = Path(path)
    if not p.is_file():
        raise _import_error(f"No such file: {p}")
    sha = usercode.file_sha256(p)
    if sha is None:
        raise _import_error(f"Cannot read {p}")
    if not trust:
        raise _import_error(f"{trust_prompt(p, sha)} It was not run",
                            hint="pass --trust if you trust this file")
    kwargs = parse_args(args)
    usercode.allow(p, sha)
    try:
        cls = usercode.load_attr(p, sha, qualname)
    except NetStudioError as e:
        raise _import_error(e.message, e.hint) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise _import_error(f"{qualname} in {p.name} is not a torch.nn.Module class")
    try:
        model = cls(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's constructor
        raise _import_error(f"{qualname}({', '.join(kwargs)}) failed: {type(e).__name__}: {e}",
                            hint="the class is built with no arguments; pass the ones it needs as --args JSON") from None
    return model.eval(), UserFile(usercode.normpath(p), sha)


def prepare(spec: str, *, input_shape: Sequence[int] | None, seed: int = 0, trust: bool = False,
            args: str | dict[str, Any] | None = None) -> tuple[nn.Module, UserFile, torch.Tensor]:
    """The model of ``path/model.py:ClassName`` (see the module docstring), its file and the seeded example
    input it is traced with (``input_shape`` includes the batch); ``importer.import_spec`` imports it."""
    parsed = parse_spec(spec)
    assert parsed is not None
    path, qualname = parsed
    if input_shape is None:
        raise _import_error(f"{path.name}:{qualname} needs the input shape it is traced with",
                            hint="pass --input-shape with the batch, e.g. 1,3,32,32")
    torch.manual_seed(seed)
    model, user = load_model(path, qualname, args=args, trust=trust)
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    return model, user, example


# ----------------------------------------------------------------------------
# exports: what a model with user modules needs besides PyTorch
# ----------------------------------------------------------------------------


def user_classes(root: nn.Module) -> dict[str, tuple[str, str]]:
    """Module name -> (file, sha256) of every user file whose classes ``root`` contains."""
    out: dict[str, tuple[str, str]] = {}
    for m in root.modules():
        key = usercode.origin_of(type(m))
        if key is not None:
            out[type(m).__module__] = key
    return out


_LOADER = '''

def _user_module(name):
    """Run the file USER_FILES[name] as the module `name` (once per process) and return it."""
    import hashlib
    import sys
    import types

    rel, sha256 = USER_FILES[name]
    path = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), rel))
    with open(path, "rb") as f:
        code = f.read()
    if hashlib.sha256(code).hexdigest() != sha256:
        raise RuntimeError(path + " is not the file this model was exported with (sha256 " + sha256 + ")")
    loaded = sys.modules.get(name)
    if loaded is not None and os.path.realpath(getattr(loaded, "__file__", "") or "") == path:
        return loaded
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules.setdefault(name, module)  # torch.save(model) then pickles its classes as name.Class
    exec(compile(code, path, "exec"), module.__dict__)
    return module
'''


def source_lines(root: nn.Module, here: Path | None) -> list[str]:
    """The lines of an exported ``.py`` that load the user files ``root`` needs: by path (relative to the
    ``.py``'s folder ``here``; absolute without it or on another drive), refused if the file's sha256 differs
    from the one it was exported with. [] when the model uses no user code."""
    import os

    files = user_classes(root)
    if not files:
        return []
    table = {}
    for name, (path, sha) in sorted(files.items()):
        rel = path
        if here is not None:
            try:
                rel = os.path.relpath(path, here).replace(os.sep, "/")
            except ValueError:  # another drive
                rel = path
        table[name] = (rel, sha)
    lines = ["", "# The model uses classes from your own Python file(s), loaded from here (relative to this file)",
             "# and refused if changed since the export: name -> (path, sha256).",
             "USER_FILES = " + repr(table), *_LOADER.splitlines(), ""]
    lines += ["", ""] + [f"_user_{name} = _user_module({name!r})" for name in sorted(table)]
    return lines
