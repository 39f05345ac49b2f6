"""The data part of the standalone training program, assembled from the source's export loader.

:func:`loader_code` writes the dataset constants, the runtime modules of
:mod:`netstudio.data.standalone` the source asks for (the same code NetStudio runs) and the
source's ``load_data``. :mod:`netstudio.project.script_export` puts it into ``train.py``.
"""

from __future__ import annotations

import pprint
from typing import Any, Mapping

from netstudio.data import registry
from netstudio.data.base import DataSource, export_literal
from netstudio.data.standalone import MODULES, module_code


def settings_block(p: Mapping[str, Any], extra: tuple[str, ...] | list[str]) -> str:
    """The Dataset node's params for reference, and the constants the data code uses."""
    shown = {k: p[k] for k in registry.SOURCE_PARAMS.get(p["source"], tuple(p))}
    lines = [
        "# The project's Dataset node (for reference; the constants below are what the code uses).",
        "DATASET = " + pprint.pformat(shown, sort_dicts=False, width=100).replace("\n", "\n" + " " * 10),
        f"VAL_FRACTION = {export_literal(float(p['val_fraction']))}  # share of samples held out for validation",
        f"DATA_SEED = {export_literal(int(p['seed']))}  # seeds the train/validation split (and synthetic data)",
        f"NORMALIZE = {export_literal(p['normalize'])}  # standard | minmax | none, fitted on the training split",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def loader_code(p: dict[str, Any]) -> str:
    """Constants, runtime modules and ``load_data`` for normalized params ``p``.

    A source without an export loader gets a ``load_data`` that says what to do instead.
    Raises :class:`netstudio.errors.ExportError` when the source cannot be exported as code.
    """
    loader = registry.get(p["source"]).export_loader(p)
    if loader is None:
        return settings_block(p, []) + (
            '\n\ndef load_data(data_path=None):\n'
            '    raise NotImplementedError(\n'
            '        "NetStudio cannot write a standalone loader for the dataset source " + repr(DATA_SOURCE)\n'
            '        + " yet: replace load_data() in this file with code that returns "\n'
            '        "(train_x, train_y, val_x, val_y) tensors "\n'
            '        "(features float32, class labels int64)")\n')
    unknown = [m for m in loader.modules if m not in MODULES]
    if unknown:
        raise ValueError(f"data source {p['source']!r} asks for unknown standalone modules {unknown}")
    modules = "".join("\n\n" + module_code(m) for m in MODULES if m in loader.modules)
    return settings_block(p, loader.settings) + modules + loader.body


def exportable_sources() -> tuple[str, ...]:
    """Registered sources whose data the standalone program loads by itself."""
    return tuple(s.name for s in registry.all_sources() if type(s).export_loader is not DataSource.export_loader)

