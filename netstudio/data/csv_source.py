"""CSV files: header detection, column selection, label encoding, precise errors.

The file is parsed once per (path, file stamp, column/task params) and the
parsed table is shared by ``describe`` (shapes, classes) and ``load`` (split +
normalize), so a big CSV is not read twice.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netstudio.data.core import DatasetInfo, PreparedData, file_stamp, resolve_path, split_sizes
from netstudio.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: auto task: an integer target with at most this many distinct values is a class label
MAX_AUTO_CLASSES = 20
#: a target with more distinct values than this cannot be a classification target
MAX_CLASSES = 1000
_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class ParsedTable:
    x: "np.ndarray"             # (N, F) float64
    y: "np.ndarray"             # (N,) int64 class indices, or (N, 1) float64
    task: str
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    target_name: str


def _missing(path: str) -> DataError:
    if not path:
        return DataError("CSV dataset: no file selected", hint="set path to a .csv file")
    return DataError(f"CSV file not found: {path}", hint="check the path")


def csv_stamp(path: str) -> Any:
    full = resolve_path(path)
    if not full or not os.path.isfile(full):
        raise _missing(full)
    return (full, *file_stamp(full))


_parse_lock = threading.Lock()
_parse_cache: "OrderedDict[Any, ParsedTable]" = OrderedDict()


def clear_parse_cache() -> None:
    with _parse_lock:
        _parse_cache.clear()


def parsed(p: dict[str, Any]) -> ParsedTable:
    """The parsed table for params ``p``, cached by file stamp (2 entries: tables can be big)."""
    key = (csv_stamp(p["path"]), p["target_column"], p["feature_columns"], p["task"])
    with _parse_lock:
        hit = _parse_cache.get(key)
        if hit is not None:
            _parse_cache.move_to_end(key)
            return hit
    table = parse_csv(key[0][0], p["target_column"], p["feature_columns"], p["task"])
    with _parse_lock:
        _parse_cache[key] = table
        while len(_parse_cache) > 2:
            _parse_cache.popitem(last=False)
    return table


def describe_csv(p: dict[str, Any]) -> DatasetInfo:
    t = parsed(p)
    n_train, n_val = split_sizes(len(t.x), p["val_fraction"], f"CSV file {os.path.basename(p['path'])}")
    return DatasetInfo(**_info_kw(t), feature_shape=(t.x.shape[1],), n_train=n_train, n_val=n_val)


def load_csv(p: dict[str, Any]) -> PreparedData:
    from netstudio.data import prep

    t = parsed(p)
    split_sizes(len(t.x), p["val_fraction"], f"CSV file {os.path.basename(p['path'])}")
    # CSV regression targets stay raw: their scale is the user's to choose
    return prep.finish_tabular(_info_kw(t), p, t.x, t.y)


def _info_kw(t: ParsedTable) -> dict[str, Any]:
    cls = t.task == "classification"
    return dict(source="csv", feature_dtype="float32", target_shape=() if cls else (1,),
                target_dtype="int64" if cls else "float32", task=t.task,
                num_classes=len(t.class_names) if cls else None, class_names=t.class_names if cls else (),
                is_image=False, feature_names=t.feature_names)


# ----------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------


def _sniff_delimiter(path: str) -> str:
    """The candidate delimiter most frequent in the first non-empty line (',' on ties)."""
    with open(path, "r", encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                counts = {d: line.count(d) for d in _DELIMITERS}
                best = max(_DELIMITERS, key=lambda d: (counts[d], d == ","))
                return best if counts[best] else ","
    return ","


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_cells(path: str) -> "pd.DataFrame":
    import pandas as pd

    name = os.path.basename(path)
    kw: dict[str, Any] = dict(sep=_sniff_delimiter(path), header=None, dtype=str, skip_blank_lines=False,
                              keep_default_na=False, na_filter=False, skipinitialspace=True)
    try:
        try:
            return pd.read_csv(path, encoding="utf-8-sig", **kw)
        except UnicodeDecodeError:
            return pd.read_csv(path, encoding="latin-1", **kw)  # spreadsheet exports are often cp1252
    except pd.errors.EmptyDataError:
        raise DataError(f"CSV file {name} is empty", hint="the file needs a row per sample") from None
    except pd.errors.ParserError as e:
        # pandas' message names the line: "Expected 3 fields in line 5, saw 4"
        raise DataError(f"CSV file {name}: {str(e).replace('Error tokenizing data. C error: ', '')}",
                        hint="every row needs the same number of columns") from None
    except OSError as e:
        raise DataError(f"CSV file {name} could not be read: {e.strerror or e}") from None


def _column_names(first: list[str], rest: "pd.DataFrame") -> tuple[list[str], bool]:
    """(names, has_header). Header: every first-row cell is non-numeric text (empty cells
    allowed, e.g. a pandas index column) while some column of the following rows is numeric."""
    if any(first) and not any(_is_number(c) for c in first if c):
        sample = rest.head(50)
        numeric_col = any(all(_is_number(v) for v in sample[col] if v != "") and (sample[col] != "").any()
                          for col in sample.columns)
        if numeric_col or len(rest) == 0:
            names: list[str] = []
            for j, c in enumerate(first):
                base = c or f"col{j}"
                n, k = base, 1
                while n in names:  # duplicate headers: a, a.1, a.2 (like pandas)
                    n, k = f"{base}.{k}", k + 1
                names.append(n)
            return names, True
    return [f"col{j}" for j in range(len(first))], False


def _resolve_column(spec: str, names: list[str], file: str, what: str) -> int:
    spec = spec.strip()
    if spec in names:
        return names.index(spec)
    lowered = [n.lower() for n in names]
    if spec.lower() in lowered and lowered.count(spec.lower()) == 1:
        return lowered.index(spec.lower())
    try:
        idx = int(spec)
    except ValueError:
        idx = None
    if idx is not None and -len(names) <= idx < len(names):
        return idx % len(names)
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    raise DataError(f"CSV file {file}: unknown {what} column {spec!r}",
                    hint=f"use a column name or a 0-based index; columns: {shown}")


def _numeric(values: "pd.Series", lines: "np.ndarray", file: str, column: str) -> "np.ndarray":
    """Column as float64; DataError naming file, line and column for the first bad cell."""
    import numpy as np
    import pandas as pd

    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(num)
    if bad.any():
        i = int(np.argmax(bad))
        raw = values.iloc[i]
        why = "is empty (missing values are not supported)" if raw == "" else f"has {raw!r}, not a number"
        raise DataError(f"CSV file {file}, line {int(lines[i])}, column '{column}' {why}",
                        hint="fix or remove that row, or leave the column out of the features")
    return num


def _label_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def parse_csv(path: str, target_column: str, feature_columns: str, task: str) -> ParsedTable:
    import numpy as np

    file = os.path.basename(path)
    df = _read_cells(path)
    df = df.apply(lambda s: s.str.strip())
    lines = np.arange(1, len(df) + 1)  # blank lines are kept by the reader, so row i is line i+1
    keep = (df != "").any(axis=1).to_numpy()
    df, lines = df[keep].reset_index(drop=True), lines[keep]
    if len(df) == 0:
        raise DataError(f"CSV file {file} is empty", hint="the file needs a row per sample")
    names, has_header = _column_names(list(df.iloc[0]), df.iloc[1:])
    if has_header:
        df, lines = df.iloc[1:].reset_index(drop=True), lines[1:]
    if len(df) == 0:
        raise DataError(f"CSV file {file} has a header but no data rows")
    if len(names) < 2:
        raise DataError(f"CSV file {file} has a single column; it needs feature columns and a target column",
                        hint="separate columns with commas (or ; or tabs)")

    t_idx = len(names) - 1 if not target_column else _resolve_column(target_column, names, file, "target")
    if feature_columns:
        f_idx: list[int] = []
        for spec in feature_columns.split(","):
            if spec.strip():
                j = _resolve_column(spec, names, file, "feature")
                if j == t_idx:
                    raise DataError(f"CSV file {file}: column '{names[j]}' is both the target and a feature",
                                    hint="remove it from the feature columns")
                if j not in f_idx:
                    f_idx.append(j)
        if not f_idx:
            raise DataError(f"CSV file {file}: no feature columns selected")
    else:
        f_idx = [j for j in range(len(names)) if j != t_idx]

    x = np.empty((len(df), len(f_idx)), dtype=np.float64)
    for k, j in enumerate(f_idx):
        x[:, k] = _numeric(df[j], lines, file, names[j])

    target, t_name = df[t_idx], names[t_idx]
    if (target == "").any():
        i = int(np.argmax((target == "").to_numpy()))
        raise DataError(f"CSV file {file}, line {int(lines[i])}, column '{t_name}' is empty "
                        f"(missing values are not supported)", hint="fix or remove that row")
    num = None
    try:
        num = _numeric(target, lines, file, t_name)
    except DataError as e:
        if task == "regression":
            raise DataError(e.message, hint="a regression target must be numeric; choose task classification "
                            "for text labels") from None
    if task == "auto":
        integral = num is not None and bool(np.all(np.floor(num) == num))
        task = ("classification" if num is None or (integral and len(np.unique(num)) <= MAX_AUTO_CLASSES)
                else "regression")
    if task == "regression":
        assert num is not None
        return ParsedTable(x, num.reshape(-1, 1), "regression", (), tuple(names[j] for j in f_idx), t_name)

    if num is not None:
        uniq, codes = np.unique(num, return_inverse=True)
        class_names = tuple(_label_text(v) for v in uniq)
    else:
        uniq, codes = np.unique(target.to_numpy(dtype=str), return_inverse=True)
        class_names = tuple(str(v) for v in uniq)
    if len(class_names) > MAX_CLASSES:
        raise DataError(f"CSV file {file}: target column '{t_name}' has {len(class_names)} distinct values, too "
                        f"many for classification (max {MAX_CLASSES})", hint="set task to regression")
    return ParsedTable(x, codes.astype(np.int64).reshape(-1), "classification", class_names,
                       tuple(names[j] for j in f_idx), t_name)
