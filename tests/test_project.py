"""Project files: round trips, hostile/corrupt input, fuzzing, atomic save, migration."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAMPLES
from netstudio.errors import ProjectError
from netstudio.graph.model import Graph
from netstudio.project.io import FORMAT_VERSION, Project, load_project, save_project
from netstudio.training.config import TrainConfig

SAMPLE_FILES = sorted(SAMPLES.glob("*.nsproj"))


def _residual_project() -> Project:
    """A small but varied project: dataset, layers, a residual Add, a Concat, loss, optimizer, scheduler."""
    g = Graph()
    d = g.add_node("data.dataset", {"source": "wine", "val_fraction": 0.25}, (0, 0), name="data")
    fc1 = g.add_node("layer.linear", {"out_features": 16}, (220, 0), name="fc1")
    act = g.add_node("activation.relu", {}, (440, 0), name="act")
    fc2 = g.add_node("layer.linear", {"out_features": 16}, (660, 0), name="fc2")
    add = g.add_node("merge.add", {}, (880, 0), name="res")
    cat = g.add_node("merge.concat", {"dim": 1}, (1100, 0), name="cat")
    head = g.add_node("layer.linear", {"out_features": 3}, (1320, 0), name="head")
    loss = g.add_node("loss.cross_entropy", {}, (1540, 0), name="ce")
    opt = g.add_node("optim.adam", {"lr": 0.01}, (1760, 0), name="adam")
    g.connect(d.id, "features", fc1.id, "input")
    g.connect(fc1.id, "output", act.id, "input")
    g.connect(act.id, "output", fc2.id, "input")
    g.connect(fc2.id, "output", add.id, "a")
    g.connect(fc1.id, "output", add.id, "b")
    g.connect(add.id, "output", cat.id, "inputs")
    g.connect(fc1.id, "output", cat.id, "inputs")
    g.connect(cat.id, "output", head.id, "input")
    g.connect(head.id, "output", loss.id, "prediction")
    g.connect(d.id, "target", loss.id, "target")
    g.connect(loss.id, "loss", opt.id, "loss")
    return Project(g, TrainConfig(epochs=3, batch_size=32), "Residual", "Add and Concat")


VALID_TEXT = _residual_project().dumps()
VALID = json.loads(VALID_TEXT)


def _load_text(tmp_path: Path, text: str | bytes, name: str = "p.nsproj") -> Project:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return load_project(p)


# ----------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------


def test_every_sample_exists() -> None:
    names = {p.stem for p in SAMPLE_FILES}
    assert {"net_10_20_1", "linear_regression", "logistic_regression", "mnist_mlp_sgd", "mnist_mlp_adam",
            "lenet", "resnet_block", "autoencoder"} <= names


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_sample_save_load_save_is_byte_identical(path: Path, tmp_path: Path) -> None:
    original = path.read_bytes()
    project = load_project(path)
    assert project.description, "every sample explains what it shows"
    out = save_project(project, tmp_path / path.name)
    assert out.read_bytes() == original
    again = save_project(load_project(out), tmp_path / "again.nsproj")
    assert again.read_bytes() == original


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    proj = _residual_project()
    proj.graph.move_node("n2", (12.345, -7.5))
    path = save_project(proj, tmp_path / "r.nsproj")
    assert proj.path == path
    back = load_project(path)
    assert back.name == "Residual" and back.description == "Add and Concat"
    assert back.training == proj.training
    assert back.graph.to_dict() == proj.graph.to_dict()
    assert back.graph.nodes["n2"].pos == (12.35, -7.5)  # positions are stored rounded to 0.01
    assert back.path == path
    assert path.read_text(encoding="utf-8") == back.dumps()


# ----------------------------------------------------------------------------
# corrupt input: always a ProjectError with a clear message
# ----------------------------------------------------------------------------


def _expect(tmp_path: Path, text: str | bytes, *phrases: str) -> ProjectError:
    with pytest.raises(ProjectError) as info:
        _load_text(tmp_path, text)
    msg = str(info.value)
    for phrase in phrases:
        assert phrase in msg, f"{phrase!r} not in {msg!r}"
    return info.value


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="No such project file"):
        load_project(tmp_path / "nope.nsproj")
    with pytest.raises(ProjectError, match="is a folder"):
        load_project(tmp_path)


def test_corrupt_json(tmp_path: Path) -> None:
    _expect(tmp_path, VALID_TEXT.replace('"nodes"', '"nodes" "'), "not valid JSON", "line")
    _expect(tmp_path, "", "not valid JSON")
    _expect(tmp_path, "[" * 100_000, "not valid JSON")  # recursion bomb
    _expect(tmp_path, '{"format_version": 1, "x": ' + "9" * 5000 + "}", "not valid JSON")  # > int digit limit


def test_every_prefix_is_rejected_as_truncated() -> None:
    text = VALID_TEXT.rstrip()
    for n in range(len(text)):
        with pytest.raises(ProjectError, match="not valid JSON|must contain a JSON object"):
            Project.loads(text[:n])
    assert Project.loads(text).graph.to_dict() == VALID["graph"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(VALID_TEXT.encode("utf-8")) - 2))
def test_truncated_bytes(tmp_path: Path, cut: int) -> None:
    data = ("{\"name\": \"Ünïcödé ×\", " + VALID_TEXT[1:]).encode("utf-8")
    with pytest.raises(ProjectError, match="not valid JSON|not a text file"):
        _load_text(tmp_path, data[:cut])


def test_random_bytes(tmp_path: Path) -> None:
    import random

    rng = random.Random(1234)
    for i in range(50):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        with pytest.raises(ProjectError):
            _load_text(tmp_path, blob, f"r{i}.nsproj")


@pytest.mark.parametrize("text, phrase", [
    ("[]", "must contain a JSON object"),
    ('"hello"', "must contain a JSON object"),
    ("42", "must contain a JSON object"),
    ("null", "must contain a JSON object"),
    ("{}", "no valid 'format_version'"),
    ('{"format_version": "1"}', "no valid 'format_version'"),
    ('{"format_version": true}', "no valid 'format_version'"),
    ('{"format_version": 1.0}', "no valid 'format_version'"),
    ('{"format_version": 1}', "no 'graph' object"),
    ('{"format_version": 1, "graph": []}', "no 'graph' object"),
    ('{"format_version": 1, "graph": {"nodes": {}}}', "must be lists"),
    ('{"format_version": 1, "graph": {"nodes": [], "edges": {}}}', "must be lists"),
    ('{"format_version": 1, "graph": {"nodes": [1]}}', "Node record 1 is not an object"),
    ('{"format_version": 1, "graph": {"nodes": [{"type": "layer.linear"}]}}', "no valid 'id'"),
    ('{"format_version": 1, "graph": {"nodes": [{"id": "n1", "type": "layer.linear", "params": [1]}]}}',
     "params of node 'n1' must be an object"),
    ('{"format_version": 1, "graph": {"nodes": [], "edges": [["a", "b"]]}}', "Malformed edge record"),
    ('{"format_version": 1, "graph": {"nodes": []}, "training": []}', "'training' must be an object"),
    ('{"format_version": 1, "graph": {"nodes": []}, "training": {"epochs": "ten"}}',
     "training.epochs must be int"),
    ('{"format_version": 1, "graph": {"nodes": []}, "training": {"epochs": 0}}', "epochs must be between"),
    ('{"format_version": 1, "graph": {"nodes": []}, "name": 5}', "'name' and 'description' must be text"),
])
def test_wrong_types(tmp_path: Path, text: str, phrase: str) -> None:
    _expect(tmp_path, text, phrase)


def test_unknown_format_versions(tmp_path: Path) -> None:
    future = dict(VALID, format_version=FORMAT_VERSION + 1)
    err = _expect(tmp_path, json.dumps(future), f"format version {FORMAT_VERSION + 1}", "reads up to")
    assert err.hint == "update NetStudio to open it"
    _expect(tmp_path, json.dumps(dict(VALID, format_version=-1)), "Invalid format_version -1")
    _expect(tmp_path, json.dumps(dict(VALID, format_version=10**30)), "format version")


def test_unknown_node_type(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    data["graph"]["nodes"][1]["type"] = "layer.quantum_entangler"
    node = data["graph"]["nodes"][1]
    err = _expect(tmp_path, json.dumps(data), "Unknown node type 'layer.quantum_entangler'",
                  f"for node {node['id']!r} ({node['name']!r})", "this version of NetStudio does not know this type")
    assert err.node_id == node["id"]
    # the type is unknown here; nothing says that some other (newer) version has it
    assert "newer" not in str(err) and "update" not in str(err).lower()
    assert err.hint == "check the type id in the file for a typo, or remove that node and its connections"


def test_bad_param_value(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    data["graph"]["nodes"][1]["params"]["out_features"] = -5
    err = _expect(tmp_path, json.dumps(data), "Invalid graph", "out features", "below the minimum 1")
    assert err.node_id == data["graph"]["nodes"][1]["id"]
    data["graph"]["nodes"][1]["params"]["out_features"] = "many"
    _expect(tmp_path, json.dumps(data), "'many' is not a whole number")


def test_edge_to_missing_node(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    data["graph"]["edges"].append(["n2", "output", "n99", "input"])
    err = _expect(tmp_path, json.dumps(data), "refers to node 'n99'", "not in the file")
    assert err.hint and "remove that connection" in err.hint


def test_edge_to_missing_port(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    data["graph"]["edges"].append(["n2", "nonsense", "n3", "input"])
    _expect(tmp_path, json.dumps(data), "has no output 'nonsense'")


def test_cycle_in_file(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    # act (n3) -> fc1 (n2) closes the loop fc1 -> act -> fc1; fc1's input is already taken, so free it first
    data["graph"]["edges"] = [e for e in data["graph"]["edges"] if e[2] != "n2"]
    data["graph"]["edges"].append(["n3", "output", "n2", "input"])
    err = _expect(tmp_path, json.dumps(data), "would create a cycle")
    assert err.node_id == "n2"
    assert err.hint and "acyclic" in err.hint


def test_pickle_payload_is_rejected_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(ProjectError):
            _load_text(tmp_path, pickle.dumps(Evil(), protocol=proto))
    # JSON that merely looks like a serialised object is data, not code
    data = copy.deepcopy(VALID)
    data["graph"]["nodes"][1]["params"]["__reduce__"] = ["os.system", [f"touch {marker}"]]
    data["py/object"] = "os.system"
    proj = _load_text(tmp_path, json.dumps(data))
    assert "__reduce__" not in proj.graph.nodes["n2"].params  # unknown keys are dropped
    assert not marker.exists()


def test_duplicate_node_ids(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    data["graph"]["nodes"][2]["id"] = data["graph"]["nodes"][1]["id"]
    err = _expect(tmp_path, json.dumps(data), "Node id 'n2' appears twice")
    assert err.node_id == "n2"


# ----------------------------------------------------------------------------
# fuzz: mutated valid JSON raises only ProjectError; whatever loads saves again
# ----------------------------------------------------------------------------

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json_value = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4)),
                           max_leaves=8)


def _paths(v: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in v.items():
            out.extend(_paths(x, prefix + (k,)))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out.extend(_paths(x, prefix + (i,)))
    return out


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        old = parent[key]
        how = draw(st.sampled_from(["drop", "random", "stringify", "wrap", "number", "dup"]))
        if how == "drop":
            del parent[key]
        elif how == "random":
            parent[key] = draw(_json_value)
        elif how == "stringify":
            parent[key] = str(old)
        elif how == "wrap":
            parent[key] = draw(st.sampled_from([[old], {"value": old}]))
        elif how == "number":
            parent[key] = draw(st.one_of(st.integers(-3, 10**6), st.floats(-1e9, 1e9)))
        elif how == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(old))
    return data


@settings(max_examples=200, deadline=None)
@given(data=_mutated())
def test_fuzz_mutated_projects_raise_only_project_error(data: dict[str, Any]) -> None:
    text = json.dumps(data)
    try:
        project = Project.loads(text)
    except ProjectError as e:
        assert e.message  # every rejection explains itself
        return
    # whatever is accepted must save and reload to the same text
    saved = project.dumps()
    assert Project.loads(saved).dumps() == saved


# ----------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------


def test_atomic_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_project(_residual_project(), tmp_path / "keep.nsproj")
    before = path.read_bytes()
    changed = _residual_project()
    changed.name = "Changed"

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ProjectError, match="Cannot save .*No space left on device"):
        save_project(changed, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nsproj"]  # temp file cleaned up
    assert load_project(path).name == "Residual"


def test_save_without_a_path() -> None:
    with pytest.raises(ProjectError, match="No file name"):
        save_project(_residual_project())


def test_a_lone_surrogate_in_a_name_saves_and_round_trips(tmp_path: Path) -> None:
    # issue #17 item 9: such a name used to make every save (and autosave) fail and leak a temp file
    proj = _residual_project()
    proj.name = "bad \ud800 surrogate"
    path = save_project(proj, tmp_path / "s.nsproj")
    assert [p.name for p in tmp_path.iterdir()] == ["s.nsproj"]
    path.read_bytes().decode("utf-8")  # valid UTF-8 on disk
    assert load_project(path).name == "bad \ud800 surrogate"
    assert save_project(load_project(path), path).read_bytes() == path.read_bytes()


# ----------------------------------------------------------------------------
# migration
# ----------------------------------------------------------------------------


def test_migration_from_version_0(tmp_path: Path) -> None:
    v1 = copy.deepcopy(VALID)
    v0 = {
        "format_version": 0,
        "name": v1["name"],
        "description": v1["description"],
        "settings": {"epochs": 7, "batch_size": 16},
        "graph": {"nodes": v1["graph"]["nodes"],
                  "edges": [{"src": s, "src_port": sp, "dst": d, "dst_port": dp}
                            for s, sp, d, dp in v1["graph"]["edges"]]},
    }
    original = copy.deepcopy(v0)
    proj = Project.from_dict(v0)
    assert v0 == original  # the caller's record is not modified
    assert proj.training.epochs == 7 and proj.training.batch_size == 16
    assert proj.graph.to_dict() == v1["graph"]
    path = save_project(proj, tmp_path / "m.nsproj")
    saved = json.loads(path.read_text(encoding="utf-8"))
    # a project without blocks is written in the oldest format that holds it (blocks need version 2)
    assert saved["format_version"] == 1 < FORMAT_VERSION and "settings" not in saved
    assert saved["graph"]["edges"] == v1["graph"]["edges"]


def test_migration_rejects_broken_version_0_edges() -> None:
    v0 = {"format_version": 0, "graph": {"nodes": [], "edges": [{"src": "a"}]}}
    with pytest.raises(ProjectError, match="edge record lacks src_port, dst, dst_port"):
        Project.from_dict(v0)
    with pytest.raises(ProjectError, match="no 'graph' object"):
        Project.from_dict({"format_version": 0, "graph": 3})
