"""Fuzzing (issue #17): project files, node names and CSV inputs.

Whatever the input, NetStudio either works or raises one of its typed errors
(NetStudioError), whose message is bounded and free of control characters
(no raw newline, no ANSI escape). Examples are bounded so the suite stays fast;
the seed is fixed (derandomize) so a failure reproduces.
"""

from __future__ import annotations

import json
import keyword
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAMPLES
from netstudio.errors import MAX_HINT, MAX_MESSAGE, NetStudioError
from netstudio.project.io import Project, load_project

LIMIT = MAX_MESSAGE + MAX_HINT + 10
CONTROL = {chr(c) for c in range(32)} | {chr(c) for c in range(0x7f, 0xa0)}
#: examples per category; NETSTUDIO_FUZZ_EXAMPLES=1000 for a longer run (README "Reliability" reports both)
EXAMPLES = int(os.environ.get("NETSTUDIO_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES == 120,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def assert_clean(err: BaseException) -> None:
    text = str(err)
    assert len(text) <= LIMIT, len(text)
    bad = sorted({c for c in text if c in CONTROL})
    assert not bad, (bad, text[:300])


def _sample_records() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SAMPLES.glob("*.nsproj"))[:6]]


SAMPLE_RECORDS = _sample_records()

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                      st.sampled_from(["auto", "\x1b[31m", "", "n1", "output", "input", "layer.linear"]))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), kids, max_size=4)),
                          max_leaves=12)


def _mutate(rec: Any, rng: random.Random, value: Any) -> Any:
    """Replace one random spot of a record tree by ``value`` (or delete a key / drop a list item)."""
    rec = json.loads(json.dumps(rec))
    path: list[Any] = []
    node = rec
    for _ in range(rng.randint(1, 6)):
        if isinstance(node, dict) and node:
            k = rng.choice(list(node))
        elif isinstance(node, list) and node:
            k = rng.randrange(len(node))
        else:
            break
        path.append(k)
        node = node[k]
    if not path:
        return value
    parent = rec
    for k in path[:-1]:
        parent = parent[k]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.25 and isinstance(parent, list):
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return rec


@FUZZ
@given(which=st.integers(0, len(SAMPLE_RECORDS) - 1), seed=st.integers(0, 2**32), value=json_value)
def test_mutated_project_files_give_typed_bounded_errors(which: int, seed: int, value: Any) -> None:
    rng = random.Random(seed)
    rec = _mutate(SAMPLE_RECORDS[which], rng, value)
    try:
        text = json.dumps(rec, allow_nan=True)
    except (TypeError, ValueError):
        return
    try:
        Project.loads(text)
    except NetStudioError as e:
        assert_clean(e)


@FUZZ
@given(data=st.binary(max_size=300), how=st.integers(0, 3))
def test_random_and_damaged_bytes_give_typed_bounded_errors(tmp_path_factory: Any, data: bytes, how: int) -> None:
    base = (SAMPLES / "resnet_block.nsproj").read_bytes()
    if how == 1:  # truncated
        data = base[: len(data) * 10 % len(base)]
    elif how == 2:  # bytes flipped
        b = bytearray(base)
        for i, x in enumerate(data[:8]):
            b[(x * 97 + i * 131) % len(b)] ^= 1 << (x % 8)
        data = bytes(b)
    elif how == 3:  # random bytes spliced in
        at = len(data) * 7 % len(base)
        data = base[:at] + data + base[at:]
    p = Path(tmp_path_factory.mktemp("fuzz")) / "f.nsproj"
    p.write_bytes(data)
    try:
        load_project(p)
    except NetStudioError as e:
        assert_clean(e)


names = st.one_of(st.text(max_size=30), st.sampled_from(keyword.kwlist + keyword.softkwlist),
                  st.sampled_from(["self", "training", "code", "graph", "torch", "x", "forward", "1abc", "__init__",
                                   "\x1b[2J", "a\nb", "é", "\ud800", "_", "__", "meta"]))


@FUZZ
@given(a=names, b=names, c=names)
def test_any_node_names_compile_or_give_typed_errors(a: str, b: str, c: str) -> None:
    import torch

    from netstudio.compiler.build import compile_model

    rec = json.loads((SAMPLES / "resnet_block.nsproj").read_text(encoding="utf-8"))
    for idx, name in ((2, a), (3, b), (7, c)):  # a Linear, a ReLU, the Add
        rec["graph"]["nodes"][idx]["name"] = name
    try:
        project = Project.from_dict(rec)
        compiled = compile_model(project.graph, 2)
        assert compiled.module(torch.randn(2, 64)).shape == (2, 10)
    except NetStudioError as e:
        assert_clean(e)


cell = st.one_of(st.integers(-5, 5).map(str), st.floats(allow_nan=True).map(repr), st.text(max_size=6),
                 st.sampled_from(["", "nan", "inf", "1e999", '"a,b"', "\x1b[31m", "\x00"]))


@FUZZ
@given(rows=st.lists(st.lists(cell, min_size=0, max_size=5), min_size=0, max_size=8),
       delim=st.sampled_from([",", ";", "\t"]), target=st.sampled_from(["", "y", "0", "-1", "missing"]),
       task=st.sampled_from(["auto", "classification", "regression"]))
def test_csv_inputs_give_typed_bounded_errors(tmp_path_factory: Any, rows: list[list[str]], delim: str, target: str,
                                              task: str) -> None:
    import netstudio.data as data

    p = Path(tmp_path_factory.mktemp("csv")) / "d.csv"
    with p.open("w", encoding="utf-8", errors="surrogatepass", newline="") as f:
        for r in rows:
            f.write(delim.join(r) + "\n")
    params = {"source": "csv", "path": str(p), "target_column": target, "task": task}
    try:
        info = data.describe(params)
        assert info is not None
        data.load(params)
    except NetStudioError as e:
        assert_clean(e)
    finally:
        data.clear_cache()


def test_the_fuzz_budget_is_what_the_readme_says() -> None:
    # README "Reliability" reports 120 generated cases per category; keep them in step
    assert FUZZ.max_examples == EXAMPLES
    with pytest.raises(AssertionError):
        assert_clean(ValueError("two\nlines"))  # the check itself can fail
    assert_clean(NetStudioError("two\nlines \x1b[2J" + "x" * 10**6))  # ... and NetStudio's errors pass it
