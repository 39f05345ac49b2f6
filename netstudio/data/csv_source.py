"""CSV files: header detection, column selection, missing values, text columns, precise errors.

The file is parsed once per (path, file stamp, column/task/encoding params) and
the parsed table is shared by ``describe`` (shapes, classes) and ``load`` (split +
fill + encode + normalize), so a big CSV is not read twice.

Reading is vectorised over cells (Python's csv reader, then numpy/pandas on the
whole table): a file with a million columns costs about what a million rows do.

* Missing cells (empty, NA, N/A, NaN, null, None, ?) in feature columns:
  ``missing="drop"`` drops those rows (the count is a note of the dataset),
  ``mean``/``median`` fill a cell with its column's statistic over the training
  split, ``constant`` with ``fill_value``. Text columns take their most frequent
  training category instead of a mean. Rows whose *target* is missing are always
  dropped (a note says how many).
* Text feature columns (at least half of the filled cells are not numbers) are
  categorical: ``categorical="onehot"`` makes one 0/1 feature per category,
  ``ordinal`` the category's index in the sorted category list, ``ids`` turns
  every feature into an integer token id for an Embedding (numeric columns must
  hold whole numbers ≥ 0 and are used as they are; text tokens share one
  vocabulary built from the training split, ids 1…k in sorted order, 0 = unknown
  or missing).
* A numeric column with a few text cells is an error that lists how many cells
  are bad and where the first few are.
"""

from __future__ import annotations

import csv
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netstudio.data import registry
from netstudio.data.base import (DataSource, DatasetInfo, ExportLoader, PreparedData, SourceSpec, export_literal,
                                 file_stamp, resolve_path, split_indices, split_sizes)
from netstudio.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: auto task: an integer target with at most this many distinct values is a class label
MAX_AUTO_CLASSES = 20
#: a target with more distinct values than this cannot be a classification target
MAX_CLASSES = 1000
#: a one-hot encoded text column may have at most this many categories
MAX_ONEHOT = 1000
#: bad cells quoted in an error message
SHOWN_CELLS = 5
_DELIMITERS = (",", ";", "\t", "|")
#: cells read as missing values (compared case-insensitively, after stripping)
NA_TOKENS = ("", "na", "n/a", "nan", "null", "none", "?")


@dataclass(frozen=True)
class ParsedTable:
    x: "np.ndarray"             # (N, F) float64: numbers, category codes of text columns, NaN = missing
    y: "np.ndarray"             # (N,) int64 class indices, or (N, 1) float64
    task: str
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    target_name: str
    #: per feature column: None (numeric) or its sorted categories (the codes in ``x`` index them)
    categories: tuple["tuple[str, ...] | None", ...] = ()
    notes: tuple[str, ...] = ()
    #: the raw text of text columns (ids mode builds its vocabulary from the training rows)
    text: "np.ndarray | None" = None

    @property
    def has_missing(self) -> bool:
        import numpy as np

        return bool(np.isnan(self.x).any())


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
    key = (csv_stamp(p["path"]), p["target_column"], p["feature_columns"], p["task"], p.get("missing", "drop"),
           p.get("categorical", "onehot"))
    with _parse_lock:
        hit = _parse_cache.get(key)
        if hit is not None:
            _parse_cache.move_to_end(key)
            return hit
    table = parse_csv(key[0][0], p["target_column"], p["feature_columns"], p["task"],
                      missing=key[4], categorical=key[5])
    with _parse_lock:
        _parse_cache[key] = table
        while len(_parse_cache) > 2:
            _parse_cache.popitem(last=False)
    return table


def encoded_width(t: ParsedTable, categorical: str) -> int:
    """Features per sample after encoding."""
    if categorical == "onehot":
        return sum(1 if c is None else len(c) for c in t.categories)
    return len(t.categories)


def encoded_names(t: ParsedTable, categorical: str) -> list[str]:
    if categorical != "onehot":
        return list(t.feature_names)
    out: list[str] = []
    for name, cats in zip(t.feature_names, t.categories):
        out.extend([name] if cats is None else [f"{name}={c}" for c in cats])
    return out


def describe_csv(p: dict[str, Any]) -> DatasetInfo:
    t = parsed(p)
    n_train, n_val = split_sizes(len(t.x), p["val_fraction"], f"CSV file {os.path.basename(p['path'])}")
    notes = t.notes
    if p["categorical"] == "ids":
        vocab = _vocabulary(t, p)
        if vocab:
            notes += (f"token vocabulary: {len(vocab)} tokens from the training split, ids 1…{len(vocab)} "
                      f"(0 = unknown or missing); set the Embedding's num_embeddings to at least {_max_id(t, vocab) + 1}",)
    kw = _info_kw(t, p)
    kw["notes"] = notes
    return DatasetInfo(**kw, feature_shape=(encoded_width(t, p["categorical"]),), n_train=n_train, n_val=n_val)


def load_csv(p: dict[str, Any]) -> PreparedData:
    import numpy as np

    from netstudio.data import prep

    t = parsed(p)
    file = os.path.basename(p["path"])
    split_sizes(len(t.x), p["val_fraction"], f"CSV file {file}")
    tr, _ = split_indices(len(t.x), p["val_fraction"], p["seed"])
    kw = _info_kw(t, p)
    kw["notes"] = describe_csv(p).notes
    if p["categorical"] == "ids":
        vocab = _vocabulary(t, p)
        ids = _ids(t, vocab)
        data = prep.finish_tabular(kw, p, ids, t.y, ids=True)
        data.preprocess = {"kind": "ids", "columns": list(t.feature_names),
                           "vocabulary": sorted(vocab, key=vocab.__getitem__) if vocab else [],
                           "text_columns": [c is not None for c in t.categories]}
        return data
    x = t.x
    fill = None
    if np.isnan(x).any():
        fill = _fill_values(t, p, tr)
        x = np.where(np.isnan(x), fill, x)
    src, codes = _encoding(t, p["categorical"])
    enc = x[:, src]
    if codes is not None:
        onehot = codes >= 0
        enc = np.where(onehot, (enc == codes).astype(np.float64), enc)
    # CSV regression targets stay raw: their scale is the user's to choose
    data = prep.finish_tabular(kw, p, enc, t.y, names=encoded_names(t, p["categorical"]))
    data.preprocess = {
        "kind": "tabular", "columns": list(t.feature_names),
        "categories": [None if c is None else list(c) for c in t.categories],
        "encoding": p["categorical"],
        "fill": None if fill is None else [float(v) for v in fill],
        "shift": data.mean, "scale": data.std,
    }
    return data


def _encoding(t: ParsedTable, categorical: str) -> "tuple[np.ndarray, np.ndarray | None]":
    """(source column of each encoded feature, one-hot category code per feature or -1), codes None if no one-hot."""
    import numpy as np

    if categorical != "onehot" or all(c is None for c in t.categories):
        return np.arange(len(t.categories)), None
    src: list[int] = []
    codes: list[int] = []
    for j, cats in enumerate(t.categories):
        if cats is None:
            src.append(j)
            codes.append(-1)
        else:
            src.extend([j] * len(cats))
            codes.extend(range(len(cats)))
    return np.asarray(src, dtype=np.int64), np.asarray(codes, dtype=np.float64)


def _fill_values(t: ParsedTable, p: dict[str, Any], train_idx: "np.ndarray") -> "np.ndarray":
    """Per column: what a missing cell becomes, fitted on the training rows."""
    import numpy as np

    how = p["missing"]
    xt = t.x[train_idx]
    fill = np.zeros(t.x.shape[1])
    numeric = np.array([c is None for c in t.categories])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
            if how == "mean":
                fill = np.nanmean(xt, axis=0)
            elif how == "median":
                fill = np.nanmedian(xt, axis=0)
            else:
                fill = np.full(t.x.shape[1], float(p["fill_value"]))
    fill = np.where(np.isfinite(fill), fill, 0.0)
    for j in np.nonzero(~numeric)[0]:  # text columns: the most frequent training category
        col = xt[:, j]
        col = col[~np.isnan(col)]
        fill[j] = float(np.bincount(col.astype(np.int64)).argmax()) if len(col) else 0.0
    return fill


def _vocabulary(t: ParsedTable, p: dict[str, Any]) -> dict[str, int]:
    """Token → id (1…k, sorted) of every text cell in the training rows."""
    import numpy as np

    if t.text is None:
        return {}
    tr, _ = split_indices(len(t.x), p["val_fraction"], p["seed"])
    cols = [j for j, c in enumerate(t.categories) if c is not None]
    cells = t.text[np.ix_(tr, cols)].ravel() if cols else np.zeros(0, dtype=str)
    tokens = sorted(set(cells.tolist()) - {""})
    return {tok: i + 1 for i, tok in enumerate(tokens)}


def _max_id(t: ParsedTable, vocab: dict[str, int]) -> int:
    import numpy as np

    numeric = [j for j, c in enumerate(t.categories) if c is None]
    m = int(np.nanmax(t.x[:, numeric])) if numeric and not np.isnan(t.x[:, numeric]).all() else 0
    return max(m, len(vocab))


def _ids(t: ParsedTable, vocab: dict[str, int]) -> "np.ndarray":
    import numpy as np

    out = np.zeros(t.x.shape, dtype=np.int64)
    for j, cats in enumerate(t.categories):
        if cats is None:
            col = t.x[:, j]
            out[:, j] = np.where(np.isnan(col), 0, col).astype(np.int64)
        else:
            assert t.text is not None
            out[:, j] = [vocab.get(s, 0) for s in t.text[:, j]]
    return out


def _info_kw(t: ParsedTable, p: dict[str, Any]) -> dict[str, Any]:
    cls = t.task == "classification"
    return dict(source="csv", feature_dtype="int64" if p["categorical"] == "ids" else "float32",
                target_shape=() if cls else (1,),
                target_dtype="int64" if cls else "float32", task=t.task,
                num_classes=len(t.class_names) if cls else None, class_names=t.class_names if cls else (),
                is_image=False, feature_names=t.feature_names)


# ----------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------


def _sniff_delimiter(path: str) -> str:
    """The candidate delimiter most frequent in the first non-empty line (',' on ties)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
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


def _one_line(text: str, limit: int = 300) -> str:
    """Control characters escaped, one line, bounded length (messages quote file contents)."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return out if len(out) <= limit else out[:limit] + "…"


def _read_rows(path: str) -> "tuple[list[list[str]], list[int]]":
    """(rows, line number of each row) with Python's csv reader; blank lines are kept as []."""
    name = os.path.basename(path)
    sep = _sniff_delimiter(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    for encoding in ("utf-8-sig", "latin-1"):  # spreadsheet exports are often cp1252
        rows: list[list[str]] = []
        lines: list[int] = []
        try:
            with open(path, encoding=encoding, newline="") as f:
                reader = csv.reader(f, delimiter=sep, skipinitialspace=True)
                start = 1
                for row in reader:
                    rows.append(row)
                    lines.append(start)
                    start = reader.line_num + 1
            return rows, lines
        except UnicodeDecodeError:
            continue
        except csv.Error as e:
            raise DataError(f"CSV file {name}, line {len(rows) + 1}: {_one_line(str(e))}",
                            hint="check the quoting of that line") from None
        except OSError as e:
            raise DataError(f"CSV file {name} could not be read: {e.strerror or e}") from None
    raise DataError(f"CSV file {name} is not a text file")  # pragma: no cover - latin-1 decodes anything


def _cells(path: str) -> "tuple[np.ndarray, np.ndarray]":
    """(stripped cells as a 2-D str array without blank rows, file line of each row)."""
    import numpy as np

    name = os.path.basename(path)
    rows, lines = _read_rows(path)
    keep = [i for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not keep:
        raise DataError(f"CSV file {name} is empty", hint="the file needs a row per sample")
    rows = [rows[i] for i in keep]
    line_no = np.asarray([lines[i] for i in keep], dtype=np.int64)
    width = len(rows[0])
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    long = np.nonzero(lengths > width)[0]
    if len(long):  # like pandas: shorter rows are padded (missing cells), longer ones are an error
        where = ", ".join(f"line {int(line_no[i])} ({int(lengths[i])})" for i in long[:SHOWN_CELLS])
        more = ", …" if len(long) > SHOWN_CELLS else ""
        raise DataError(f"CSV file {name}: {len(long)} row{'s' if len(long) != 1 else ''} with more than the "
                        f"{width} fields of the first row: {where}{more}",
                        hint="every row needs the same number of columns (quote cells that contain the separator)")
    if (lengths == width).all():
        cells = np.array(rows, dtype=object).reshape(len(rows), width)
    else:
        cells = np.full((len(rows), width), "", dtype=object)
        for i, r in enumerate(rows):
            cells[i, :len(r)] = r
    text = cells.astype(str)
    return np.char.strip(text), line_no


def _numbers(cells: "np.ndarray") -> "np.ndarray":
    """Every cell as float64 (NaN where it is not a number), in one vectorised pass."""
    import numpy as np
    import pandas as pd

    flat = cells.ravel()
    try:
        out = flat.astype(np.float64)  # the fast path: every cell a number
    except ValueError:
        out = pd.to_numeric(pd.Series(flat, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return out.reshape(cells.shape)


def _first_chars(cells: "np.ndarray") -> "np.ndarray":
    """The first character of every cell ('' for empty cells), vectorised."""

    return cells.astype("<U1")


def _is_na(cells: "np.ndarray") -> "np.ndarray":
    import numpy as np

    out = np.zeros(cells.shape, dtype=bool)
    if not cells.size:
        return out
    # only cells starting like an NA token are compared (cheap on big numeric tables)
    cand = np.isin(_first_chars(cells), ["", "n", "N", "?"])
    if cand.any():
        out[cand] = np.isin(np.char.lower(cells[cand]), NA_TOKENS)
    return out


def _maybe_number(cells: "np.ndarray") -> "np.ndarray":
    """False where a cell cannot be a number (its first character rules it out)."""
    import numpy as np

    return np.isin(_first_chars(cells), list("0123456789+-.iInN"))


def _column_names(first: "np.ndarray", rest: "np.ndarray", rest_numbers: "np.ndarray | None" = None
                  ) -> tuple[list[str], bool]:
    """(names, has_header). Header: every first-row cell is non-numeric text (empty cells
    allowed, e.g. a pandas index column) while some column of the following rows is numeric."""
    import numpy as np

    first = np.asarray(first, dtype=str)
    filled = first != ""
    cand = filled & _maybe_number(first)
    if filled.any() and (not cand.any() or np.isnan(_numbers(first[cand])).all()):
        sample = np.asarray(rest, dtype=str)[:50]
        if len(sample):
            num = ~np.isnan(_numbers(sample) if rest_numbers is None else rest_numbers[:50])
            empty = sample == ""
            numeric_col = bool(((num | empty).all(axis=0) & (~empty).any(axis=0)).any())
        else:
            numeric_col = False
        if numeric_col or len(sample) == 0:
            names: list[str] = []
            seen: set[str] = set()
            for j, c in enumerate(first.tolist()):
                base = c or f"col{j}"
                n, k = base, 1
                while n in seen:  # duplicate headers: a, a.1, a.2 (like pandas)
                    n, k = f"{base}.{k}", k + 1
                names.append(n)
                seen.add(n)
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
    shown = ", ".join(_one_line(n, 40) for n in names[:20]) + (", …" if len(names) > 20 else "")
    raise DataError(f"CSV file {file}: unknown {what} column {_one_line(spec, 80)!r}",
                    hint=f"use a column name or a 0-based index; columns: {shown}")


def _cell_list(rows: "np.ndarray", cols: "np.ndarray", lines: "np.ndarray", names: list[str],
               cells: "np.ndarray") -> str:
    parts = [f"line {int(lines[r])} column '{_one_line(names[c], 40)}' ({_one_line(cells[r, c], 40)!r})"
             for r, c in zip(rows[:SHOWN_CELLS], cols[:SHOWN_CELLS])]
    return ", ".join(parts) + (", …" if len(rows) > SHOWN_CELLS else "")


def _label_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def parse_csv(path: str, target_column: str, feature_columns: str, task: str, *, missing: str = "drop",
              categorical: str = "onehot") -> ParsedTable:
    import numpy as np

    file = os.path.basename(path)
    cells, lines = _cells(path)
    numbers = _numbers(cells[1:])  # every cell is converted once (the first row may be a header)
    names, has_header = _column_names(cells[0], cells[1:], numbers)
    if has_header:
        cells, lines = cells[1:], lines[1:]
    else:
        numbers = np.concatenate([_numbers(cells[:1]), numbers])
    if len(cells) == 0:
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
                    raise DataError(f"CSV file {file}: column '{_one_line(names[j], 80)}' is both the target and "
                                    "a feature", hint="remove it from the feature columns")
                if j not in f_idx:
                    f_idx.append(j)
        if not f_idx:
            raise DataError(f"CSV file {file}: no feature columns selected")
        fcols = np.asarray(f_idx, dtype=np.int64)
    else:
        fcols = np.delete(np.arange(len(names)), t_idx)
    fnames = [names[j] for j in fcols.tolist()]
    notes: list[str] = []

    # the target: rows without one cannot be used
    target = cells[:, t_idx]
    t_name = names[t_idx]
    t_missing = _is_na(target.reshape(-1, 1)).reshape(-1)
    if t_missing.all():
        raise DataError(f"CSV file {file}: the target column '{_one_line(t_name, 80)}' is empty in every row",
                        hint="choose another target column")
    if t_missing.any():
        k = int(t_missing.sum())
        notes.append(f"{k} row{'s' if k != 1 else ''} without a target value ('{_one_line(t_name, 40)}') "
                     f"left out")
        keep = ~t_missing
        cells, lines, target, numbers = cells[keep], lines[keep], target[keep], numbers[keep]

    # the features, all cells at once
    block = cells[:, fcols]
    num = numbers[:, fcols]
    na = _is_na(block)
    ok = np.isfinite(num) & ~na
    text_cell = ~ok & ~na
    n_text = text_cell.sum(axis=0)
    n_num = ok.sum(axis=0)
    is_text_col = (n_text > 0) & (n_text >= n_num)
    bad = text_cell & ~is_text_col[None, :]
    if bad.any():
        rows, cols = np.nonzero(bad)
        order = np.lexsort((cols, rows))  # in file order
        rows, cols = rows[order], cols[order]
        whole = sorted({fnames[c] for c in cols.tolist()})
        raise DataError(f"CSV file {file}: {len(rows)} cell{'s are' if len(rows) != 1 else ' is'} not a number "
                        f"in numeric column{'s' if len(whole) != 1 else ''}: "
                        + _cell_list(rows, cols, lines, fnames, block),
                        hint="fix those cells, or empty them to treat them as missing values")
    x = np.where(ok, num, np.nan)
    categories: list[tuple[str, ...] | None] = [None] * len(fnames)
    for k in np.nonzero(is_text_col)[0].tolist():
        col = block[:, k]
        present = ~na[:, k]
        cats, codes = np.unique(col[present], return_inverse=True)
        if categorical == "onehot" and len(cats) > MAX_ONEHOT:
            raise DataError(f"CSV file {file}: text column '{_one_line(fnames[k], 80)}' has {len(cats)} distinct "
                            f"values, too many to one-hot encode (max {MAX_ONEHOT})",
                            hint="set categorical to ordinal or ids, or leave the column out of the features")
        categories[k] = tuple(str(c) for c in cats)
        x[present, k] = codes
    if categorical == "ids":
        numeric = np.array([c is None for c in categories])
        vals = x[:, numeric]
        badid = ~np.isnan(vals) & ((vals < 0) | (np.floor(vals) != vals))
        if badid.any():
            rows, cols = np.nonzero(badid)
            idx = np.nonzero(numeric)[0][cols]
            raise DataError(f"CSV file {file}: {len(rows)} cell{'s are' if len(rows) != 1 else ' is'} not a whole "
                            "number ≥ 0, which token ids must be: " + _cell_list(rows, idx, lines, fnames, block),
                            hint="set categorical to onehot or ordinal for continuous features")

    missing_rows: Any = np.isnan(x).any(axis=1)
    n_miss = int(missing_rows.sum())
    if n_miss:
        n_cells = int(np.isnan(x).sum())
        if missing == "drop":
            if n_miss == len(x):
                raise DataError(f"CSV file {file}: every row has a missing feature value, so dropping them leaves "
                                "nothing", hint="set missing to mean, median or constant to fill the cells")
            notes.append(f"{n_miss} of {len(x)} rows have missing feature values ({n_cells} cells) and were "
                         f"dropped (missing: drop)")
            keep = ~missing_rows
            x, cells, lines, target, block = x[keep], cells[keep], lines[keep], target[keep], block[keep]
            numbers = numbers[keep]
        else:
            how = {"mean": "the column's training mean", "median": "the column's training median",
                   "constant": "fill value"}[missing]
            notes.append(f"{n_cells} missing feature cells in {n_miss} of {len(x)} rows filled with {how} "
                         f"(text columns: the most frequent category)")
    text_block = block if is_text_col.any() and categorical == "ids" else None

    num_t = numbers[:, t_idx]
    num_ok = np.isfinite(num_t)
    numeric_target = bool(num_ok.all())
    if not numeric_target and task == "regression":
        rows = np.nonzero(~num_ok)[0]
        raise DataError(f"CSV file {file}: {len(rows)} target cell{'s are' if len(rows) != 1 else ' is'} not a "
                        f"number: " + _cell_list(rows, np.zeros(len(rows), dtype=np.int64), lines, [t_name],
                                                 target.reshape(-1, 1)),
                        hint="a regression target must be numeric; choose task classification for text labels")
    if task == "auto":
        integral = numeric_target and bool(np.all(np.floor(num_t) == num_t))
        task = ("classification" if not numeric_target or (integral and len(np.unique(num_t)) <= MAX_AUTO_CLASSES)
                else "regression")
    cats_t = tuple(categories)
    if task == "regression":
        return ParsedTable(x, num_t.reshape(-1, 1), "regression", (), tuple(fnames), t_name, cats_t, tuple(notes),
                           text_block)
    if numeric_target:
        uniq, codes = np.unique(num_t, return_inverse=True)
        class_names = tuple(_label_text(v) for v in uniq)
    else:
        uniq, codes = np.unique(target, return_inverse=True)
        class_names = tuple(str(v) for v in uniq)
    if len(class_names) > MAX_CLASSES:
        raise DataError(f"CSV file {file}: target column '{_one_line(t_name, 80)}' has {len(class_names)} distinct "
                        f"values, too many for classification (max {MAX_CLASSES})", hint="set task to regression")
    return ParsedTable(x, codes.astype(np.int64).reshape(-1), "classification", class_names, tuple(fnames), t_name,
                       cats_t, tuple(notes), text_block)


# ----------------------------------------------------------------------------
# The source, and what the standalone program needs to read the same file
# ----------------------------------------------------------------------------


def export_facts(p: dict[str, Any]) -> dict[str, Any]:
    """What the generated CSV reader needs, decided now with NetStudio's own parser."""
    from netstudio.errors import ExportError

    table = parsed(p)
    path = resolve_path(p["path"])
    cells, _ = _cells(path)
    names, has_header = _column_names(cells[0], cells[1:])
    rows = len(cells) - (1 if has_header else 0)  # data rows, without blank lines and header
    if table.has_missing or len(table.x) != rows or any(c is not None for c in table.categories):
        raise ExportError("The training script cannot read this CSV file yet: it has missing values or text "
                          "feature columns", hint="export the model (pt, pt2, py, onnx) instead, or clean the file")
    target = names.index(table.target_name)
    features = [names.index(f) for f in table.feature_names]
    numeric_labels = None
    if table.task == "classification":
        import numpy as np

        try:
            vals = cells[1 if has_header else 0:, target].astype(float)
            numeric_labels = [float(v) for v in np.unique(vals)]
        except ValueError:
            numeric_labels = None  # text labels: classes are the sorted label strings
    return dict(path=path, sep=_sniff_delimiter(path), header=has_header, target=target, features=features,
                names=names, task=table.task, classes=list(table.class_names), numeric_labels=numeric_labels)


class CsvSource(DataSource):
    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        return describe_csv(p)

    def load(self, p: dict[str, Any]) -> PreparedData:
        return load_csv(p)

    def stamp(self, p: dict[str, Any]) -> Any:
        return csv_stamp(p["path"])

    def clear_cache(self) -> None:
        clear_parse_cache()

    def export_loader(self, p: dict[str, Any]) -> ExportLoader:
        import pprint

        f = export_facts(p)
        regression = f["task"] == "regression"
        settings = [
            f"DATA_PATH = {export_literal(f['path'])}  # override with --data-path",
            f"CSV_SEPARATOR = {export_literal(f['sep'])}",
            f"CSV_HAS_HEADER = {f['header']}",
            f"TARGET_COLUMN = {f['target']!r}  # 0-based column position of TARGET_NAME",
            f"TARGET_NAME = {f['names'][f['target']]!r}",
            f"FEATURE_COLUMNS = {f['features']!r}  # 0-based column positions",
            "FEATURE_NAMES = " + pprint.pformat([f['names'][j] for j in f['features']], width=100).replace(
                "\n", "\n" + " " * 16),
        ]
        if not regression:
            settings.append("CLASS_NAMES = " + pprint.pformat(f["classes"], width=100).replace("\n", "\n" + " " * 14)
                            + "  # class index -> label")
            if f["numeric_labels"] is not None:
                settings.append("CLASS_VALUES = " + pprint.pformat(f["numeric_labels"], width=100).replace(
                    "\n", "\n" + " " * 15) + "  # numeric label of each class index")
        if regression:
            target = ("    y = table[TARGET_COLUMN].astype(float).to_numpy().reshape(-1, 1)\n"
                      "    regression = True  # CSV targets keep their own scale\n")
        elif f["numeric_labels"] is not None:
            target = ("    labels = table[TARGET_COLUMN].astype(float).to_numpy()\n"
                      "    y = np.searchsorted(np.asarray(CLASS_VALUES), labels)\n"
                      "    known = (y < len(CLASS_VALUES)) & (np.asarray(CLASS_VALUES + [np.nan])[y] == labels)\n"
                      "    if not known.all():\n"
                      "        raise ValueError(f\"unknown class label {labels[~known][0]!r} in {path}\")\n"
                      "    regression = False\n")
        else:
            target = ("    index = {name: i for i, name in enumerate(CLASS_NAMES)}\n"
                      "    unknown = sorted(set(table[TARGET_COLUMN]) - set(index))\n"
                      "    if unknown:\n"
                      "        raise ValueError(f\"unknown class label {unknown[0]!r} in {path}\")\n"
                      "    y = table[TARGET_COLUMN].map(index).to_numpy()\n"
                      "    regression = False\n")
        return ExportLoader(
            settings=tuple(settings), modules=("split", "data_tabular", "data_csv"),
            body=('\n\ndef load_data(data_path=None):\n'
                  '    """(train_x, train_y, val_x, val_y) as CPU tensors."""\n'
                  '    path = data_path or DATA_PATH\n'
                  '    table = read_table(path, CSV_SEPARATOR, CSV_HAS_HEADER)\n'
                  '    x = table[FEATURE_COLUMNS].astype(float).to_numpy()\n' + target +
                  '    train_idx, val_idx = split_indices(len(x), VAL_FRACTION, DATA_SEED)\n'
                  '    return prepare_tabular(x, y, train_idx, val_idx, NORMALIZE, FITTED, regression=regression)\n'))


registry.register(CsvSource("csv", SourceSpec(
    "CSV file", "tabular", "your own table: one row per sample, one column is the target", True),
    ("source", "val_fraction", "seed", "normalize", "path", "target_column", "feature_columns", "task", "missing",
     "fill_value", "categorical")))
