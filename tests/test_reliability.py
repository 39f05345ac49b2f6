"""Issue #17 items 4 (project loading), 8 (unexpected exceptions), 9 (files), 10 (messages);
issue #12 item 4 (exports follow the umask; a failed export leaves nothing behind)."""

from __future__ import annotations

import json
import keyword
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SAMPLES
from netstudio.cli import main
from netstudio.compiler.build import compile_model
from netstudio.errors import ExportError, ParamError, ProjectError, TrainingError, clip_text
from netstudio.fileio import atomic_write, clean_stale_temp_files
from netstudio.graph.model import Graph
from netstudio.project import export as ex
from netstudio.project.io import Project, load_project, save_project
from netstudio.training import distributed as D

CONTROL = [chr(c) for c in range(32)] + ["\x7f", "\x9b"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def residual_record() -> dict[str, Any]:
    return json.loads((SAMPLES / "resnet_block.nsproj").read_text(encoding="utf-8"))


@pytest.fixture
def umask_022() -> Any:
    old = os.umask(0o022)
    yield
    os.umask(old)


# ----------------------------------------------------------------------------
# item 4: loading is linear
# ----------------------------------------------------------------------------


def generated(n_blocks: int) -> dict[str, Any]:
    """data → stem → n × [fc → relu → fc → add(skip) → relu] → head → loss → optimizer."""
    nodes = [{"id": "d", "type": "data.dataset", "params": {"source": "moons"}},
             {"id": "s", "type": "layer.linear", "params": {"out_features": 4}}]
    edges = [["d", "features", "s", "input"]]
    prev = "s"
    for i in range(n_blocks):
        ids = [f"b{i}_{k}" for k in range(5)]
        for nid, t in zip(ids, ("layer.linear", "activation.relu", "layer.linear", "merge.add", "activation.relu")):
            nodes.append({"id": nid, "type": t, "params": {"out_features": 4} if t == "layer.linear" else {}})
        a, r, b, add, out = ids
        edges += [[prev, "output", a, "input"], [a, "output", r, "input"], [r, "output", b, "input"],
                  [b, "output", add, "a"], [prev, "output", add, "b"], [add, "output", out, "input"]]
        prev = out
    nodes += [{"id": "h", "type": "layer.linear", "params": {"out_features": 2}},
              {"id": "l", "type": "loss.cross_entropy"}, {"id": "o", "type": "optim.adam"}]
    edges += [[prev, "output", "h", "input"], ["h", "output", "l", "prediction"], ["d", "target", "l", "target"],
              ["l", "loss", "o", "loss"]]
    return {"format_version": 1, "graph": {"nodes": nodes, "edges": edges}}


def test_loading_walks_the_graph_once_not_once_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = Graph.successors_map

    def counting(self: Graph) -> Any:
        calls["n"] += 1
        return real(self)

    monkeypatch.setattr(Graph, "successors_map", counting)
    rec = generated(200)  # 1,005 nodes
    project = Project.from_dict(rec)
    assert len(project.graph.nodes) == 1005 and len(project.graph.edges) == 1205
    assert calls["n"] == 0  # the old load rebuilt the successor map for every connection
    assert project.graph.topological_order()[0] == "d"
    # 4x the nodes, ~4x the CPU time (the quadratic load took ~16x). CPU time, not wall time:
    # the machine may be busy with other work.
    small, big = generated(200), generated(800)

    def cpu(rec: dict[str, Any]) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            Project.from_dict(rec)
            best = min(best, time.process_time() - t)
        return best

    ratio = cpu(big) / max(cpu(small), 1e-3)
    assert ratio < 8, ratio


def test_linear_loading_refuses_the_same_edges_with_the_same_messages() -> None:
    rec = generated(3)
    rec["graph"]["edges"].append(["b2_4", "output", "b0_0", "input"])  # taken input, and a cycle: cycle first
    with pytest.raises(ProjectError, match="would create a cycle"):
        Project.from_dict(rec)
    rec = generated(3)
    rec["graph"]["edges"].insert(3, ["s", "output", "b0_2", "input"])  # b0_2's input is taken later
    with pytest.raises(ProjectError, match="is already connected"):
        Project.from_dict(rec)
    rec = generated(3)
    rec["graph"]["nodes"] += [{"id": "m1", "type": "merge.concat"}, {"id": "m2", "type": "merge.concat"}]
    rec["graph"]["edges"][3:3] = [["m1", "output", "m2", "inputs"], ["m2", "output", "m1", "inputs"]]
    rec["graph"]["edges"].append(["b1_4", "no_such_port", "h", "input"])  # an early cycle beats a later error
    with pytest.raises(ProjectError, match="Connecting '[a-z0-9_]+' to '[a-z0-9_]+' would create a cycle"):
        Project.from_dict(rec)
    rec = generated(3)
    rec["graph"]["edges"].append(["s", "output", "b1_3", "b"])  # Add's inputs are single too
    with pytest.raises(ProjectError, match="is already connected"):
        Project.from_dict(rec)
    rec = generated(3)
    rec["graph"]["nodes"].append({"id": "m", "type": "merge.concat"})
    rec["graph"]["edges"] += [["b1_4", "output", "m", "inputs"], ["m", "output", "b1_0", "input"]]
    rec["graph"]["edges"] = [e for e in rec["graph"]["edges"] if e[2:] != ["b1_0", "input"] or e[0] == "m"]
    with pytest.raises(ProjectError, match="Connecting 'concat1' to '[a-z0-9_]+' would create a cycle"):
        Project.from_dict(rec)
    rec = generated(2)
    rec["graph"]["edges"].append(rec["graph"]["edges"][1])
    with pytest.raises(ProjectError, match="already connected"):
        Project.from_dict(rec)


def _load_edge_by_edge(rec: dict[str, Any]) -> Graph:
    """The reference: what loading did before, one add_node/connect per record."""
    g = Graph()
    for n in rec["nodes"]:
        g.add_node(n["type"], n.get("params") or {}, (0.0, 0.0), node_id=n["id"], name=n.get("name") or None)
    for e in rec["edges"]:
        g.connect(*e)
    return g


@settings(max_examples=150, deadline=None, derandomize=True)
@given(types=st.lists(st.sampled_from(["layer.linear", "activation.relu", "merge.add", "merge.concat",
                                       "loss.mse", "optim.sgd"]), min_size=1, max_size=8),
       picks=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(["output", "loss", "bogus"]), st.integers(0, 8),
                                st.sampled_from(["input", "a", "b", "inputs", "prediction", "target", "loss"])),
                      max_size=14),
       names=st.lists(st.sampled_from(["fc", "fc1", "x", "", "class"]), max_size=8))
def test_linear_loading_matches_edge_by_edge_loading(types: list[str], picks: list[Any], names: list[str]) -> None:
    nodes = [{"id": f"n{i}", "type": t, "name": names[i] if i < len(names) else ""} for i, t in enumerate(types)]
    edges = [[f"n{a % len(types)}", sp, f"n{b % len(types)}", dp] for a, sp, b, dp in picks]
    rec = {"nodes": nodes, "edges": edges}
    try:
        expected: Any = _load_edge_by_edge(rec).to_dict()
    except Exception as e:  # noqa: BLE001
        expected = (type(e).__name__, str(e))
    try:
        got: Any = Graph.from_dict(rec).to_dict()
    except Exception as e:  # noqa: BLE001
        got = (type(e).__name__, str(e))
    assert got == expected


def test_loaded_names_are_unique_like_interactive_adds() -> None:
    rec = generated(2)
    for n in rec["graph"]["nodes"][2:6]:
        n["name"] = "fc"
    rec["graph"]["nodes"][6]["name"] = "3 bad name!"
    g = Project.from_dict(rec).graph
    names = [n.name for n in g.nodes.values()]
    assert len(set(names)) == len(names)
    assert names[1] == "fc1"  # unnamed: the type's prefix and the first free number
    assert names[2:7] == ["fc", "fc2", "fc3", "fc4", "n_3_bad_name_"]


# ----------------------------------------------------------------------------
# item 8: no unexpected exceptions
# ----------------------------------------------------------------------------


#: every Python keyword and soft keyword, plus names that collide with generated code or module attributes
CODE_NAMES = sorted(set(keyword.kwlist + keyword.softkwlist + [
    "torch", "x", "operator", "getattr", "self", "print", "forward", "device", "inf", "nan", "fx_pytree", "pytree",
    "_tensor_constant0", "math", "builtins", "nn", "Model", "load_model", "os", "WEIGHTS_FILE", "super", "object",
    "int", "float", "list", "tuple", "type", "dict", "output", "input", "training", "code", "graph", "meta"]))


def test_keyword_node_names_compile_and_export() -> None:
    cases = 0
    for name in CODE_NAMES:
        rec = residual_record()
        rec["graph"]["nodes"][2]["name"] = name  # a Linear: a submodule, self.<name> in the forward code
        rec["graph"]["nodes"][3]["name"] = name + "2"  # ReLU
        rec["graph"]["nodes"][7]["name"] = name + "3"  # Add: a function call, <name> = ... in the forward code
        project = Project.from_dict(rec)
        node = project.graph.nodes[rec["graph"]["nodes"][2]["id"]]
        assert node.name == name  # the user's name is kept for display
        compiled = compile_model(project.graph, 4)
        x = torch.randn(3, 64)
        assert compiled.module(x).shape == (3, 10)
        ex._check_source(ex.model_source(compiled), compiled.module, x)  # the exported .py rebuilds it exactly
        cases += 3
    assert cases == 3 * len(CODE_NAMES) >= 216


def test_too_long_names_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = residual_record()
    rec["graph"]["nodes"][0]["params"].update(source="csv", path="a" * 256 + ".csv", target_column="y")
    p = tmp_path / "long.nsproj"
    p.write_text(json.dumps(rec), encoding="utf-8")
    rc, _, err = run_cli(capsys, "check", str(p))
    assert rc == 1 and "unexpected" not in err and "CSV file not found" in err
    compiled = compile_model(Project.from_dict(residual_record()).graph, 4)
    with pytest.raises(ExportError, match="file name is too long"):
        ex.export_pt(compiled, tmp_path / ("m" * 300 + ".pt"))
    assert list(tmp_path.iterdir()) == [p]


def test_a_huge_seed_is_a_project_error() -> None:
    rec = residual_record()
    rec["training"]["seed"] = 2**64
    with pytest.raises(ProjectError, match="seed must be between 0 and 4294967295"):
        Project.from_dict(rec)
    rec = residual_record()
    rec["graph"]["nodes"][0]["params"]["seed"] = 2**64
    with pytest.raises(ProjectError, match="seed"):
        Project.from_dict(rec)


def test_export_out_into_a_folder_that_cannot_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj = save_project(Project.from_dict(residual_record()), tmp_path / "p.nsproj")
    compiled = compile_model(load_project(proj).graph, 4)
    weights = ex.export_weights(compiled, load_project(proj), tmp_path / "w.pt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for fmt in ("pt", "py", "pt2", "script"):
        for out in (blocker / "sub" / f"m.{fmt}", Path("/proc/netstudio-no-such/m.pt"),
                    tmp_path / ("q" * 300) / f"m.{fmt}", tmp_path / f"{'q' * 300}.{fmt}"):
            rc, _, err = run_cli(capsys, "export", str(proj), "--weights", str(weights), "--format", fmt,
                                 "--out", str(out))
            assert rc == 1, err
            assert err.startswith("error: ") and "unexpected" not in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "p.nsproj", "w.pt"]


# ----------------------------------------------------------------------------
# item 9 + issue #12 item 4: files
# ----------------------------------------------------------------------------


def test_exports_and_projects_follow_the_umask(tmp_path: Path, umask_022: Any) -> None:
    project = Project.from_dict(residual_record())
    compiled = compile_model(project.graph, 4)
    x = torch.randn(2, 64)
    paths = [save_project(project, tmp_path / "p.nsproj"), ex.export_pt(compiled, tmp_path / "m.pt"),
             ex.export_weights(compiled, project, tmp_path / "w.pt"), ex.export_pt2(compiled, x, tmp_path / "m.pt2"),
             ex.export_py(compiled, tmp_path / "m.py", example_input=x), tmp_path / "m_weights.pt"]
    from netstudio.project.script_export import export_script

    res = export_script(project, tmp_path / "script")
    paths += [res.script, res.model, res.readme]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    os.umask(0o077)
    assert stat.S_IMODE(atomic_write(tmp_path / "new.txt", "x").stat().st_mode) == 0o600


def test_an_existing_file_keeps_its_mode_and_a_symlink_its_link(tmp_path: Path, umask_022: Any) -> None:
    project = Project.from_dict(residual_record())
    real = save_project(project, tmp_path / "real.nsproj")
    os.chmod(real, 0o640)
    project.name = "changed"
    save_project(project, real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    link = tmp_path / "link.nsproj"
    link.symlink_to(real.name)
    project.name = "through the link"
    save_project(project, link)
    assert link.is_symlink() and os.readlink(link) == "real.nsproj"
    assert load_project(real).name == "through the link"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_a_failed_export_leaves_no_folder_and_no_file(tmp_path: Path) -> None:
    compiled = compile_model(Project.from_dict(residual_record()).graph, 4)
    target = tmp_path / "new" / "deeper" / "m.pt2"
    with pytest.raises(ExportError, match="torch.export could not trace"):
        ex.export_pt2(compiled, torch.zeros(2, 3), target)
    assert list(tmp_path.iterdir()) == []

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a" / "b.bin", broken, make_parents=True)
    assert list(tmp_path.iterdir()) == []
    # a .py export whose file cannot be written takes its freshly written weights file with it
    (tmp_path / "m.py").mkdir()
    with pytest.raises(ExportError):
        ex.export_py(compiled, tmp_path / "m.py" / "x" / ".." / ".." / "m.py", example_input=torch.randn(2, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


def test_a_failed_script_export_leaves_nothing(tmp_path: Path) -> None:
    from netstudio.errors import CompileError
    from netstudio.project.script_export import export_script

    rec = residual_record()
    rec["graph"]["edges"] = [e for e in rec["graph"]["edges"] if e[3] != "loss"]  # no optimizer input: invalid
    with pytest.raises(CompileError):
        export_script(Project.from_dict(rec), tmp_path / "out" / "train")
    assert list(tmp_path.iterdir()) == []


def test_temp_files_of_a_crashed_save_are_cleaned_when_the_project_is_next_opened(tmp_path: Path) -> None:
    p = save_project(Project(name="x"), tmp_path / "p.nsproj")
    dead = tmp_path / f".p.nsproj.{2**31 - 7}.0badc0de.nstmp"
    dead.write_text("{")
    mine = tmp_path / f".p.nsproj.{os.getpid()}.0badc0de.nstmp"  # a save in flight in this process
    mine.write_text("{")
    other = tmp_path / f".q.nsproj.{2**31 - 7}.0badc0de.nstmp"
    other.write_text("{")
    load_project(p)
    assert not dead.exists() and mine.exists() and other.exists()
    assert clean_stale_temp_files(tmp_path) == [other]


def _checkpoint(tmp_path: Path) -> Path:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return D.save_checkpoint(tmp_path / "ck" / "last.pt", model=model, optimizer=opt, scheduler=None, epoch=3)


def test_a_checkpoint_with_a_flipped_byte_is_detected(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    good = path.read_bytes()
    state = D.read_checkpoint(path)
    assert state is not None and state["epoch"] == 3 and "checksum" not in state
    weight = D.read_checkpoint(path)["model"]["weight"]  # type: ignore[index]
    raw = weight.numpy().tobytes()
    at = good.find(raw)
    assert at > 0  # the tensor's bytes are stored as-is inside the zip
    flipped = bytearray(good)
    flipped[at + 5] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(TrainingError, match="damaged"):
        D.read_checkpoint(path)


def test_a_hostile_weights_file_is_refused_without_torchs_retry_advice(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    class Boom:
        def __reduce__(self) -> Any:
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": Boom()}, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ExportError) as info:
        ex.read_weights(bad)
    text = str(info.value)
    assert "weights_only" not in text and "likely succeed" not in text
    assert "never loads" in text
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(bad.read_bytes())
    with pytest.raises(TrainingError) as info2:
        D.read_checkpoint(ck / "last.pt")
    assert "weights_only" not in str(info2.value) and "likely succeed" not in str(info2.value)
    rc, _, err = run_cli(capsys, "export", str(bad), "--format", "pt", "--out", str(tmp_path / "o.pt"))
    assert rc == 1 and "likely succeed" not in err and "weights_only" not in err


# ----------------------------------------------------------------------------
# item 10: messages
# ----------------------------------------------------------------------------


def test_a_huge_parameter_gives_a_bounded_escaped_message() -> None:
    rec = residual_record()
    rec["graph"]["nodes"][2]["params"]["out_features"] = "7" * 2_000_000 + "\x1b[2J\n"
    with pytest.raises(ProjectError) as info:
        Project.from_dict(rec)
    text = str(info.value)
    assert len(text) < 1500
    assert not any(c in text for c in CONTROL)
    with pytest.raises(ParamError) as info2:
        Graph().add_node("layer.linear", {"out_features": "\x1b[31mred\x07" * 1000})
    assert len(str(info2.value)) < 1500 and "\x1b" not in str(info2.value) and "\\x1b[31m" in str(info2.value)


def test_check_prints_the_project_name_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = residual_record()
    rec["name"] = "evil\x1b]0;owned\x07\x1b[2J" + "n" * 5000
    p = tmp_path / "evil.nsproj"
    p.write_text(json.dumps(rec), encoding="utf-8")
    rc, out, err = run_cli(capsys, "check", str(p))
    assert rc == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "evil\\x1b]0;owned" in out
    assert max(len(line) for line in out.splitlines()) < 1000


def test_clip_text_bounds_and_escapes() -> None:
    s = clip_text("a\u202eb\ud800\x9bc" + "x" * 5000, 100)
    assert len(s) == 100 and s.startswith("a\\u202eb\\ud800\\x9bc") and s.endswith("more characters)")
