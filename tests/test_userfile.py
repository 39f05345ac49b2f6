"""Import of a model class from the user's own Python file (path/model.py:Class), and the trust it needs.

The file below has a residual connection and an activation class the catalog lacks, and leaves a marker
file beside itself whenever its code runs: what must NOT appear while a project is untrusted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from netstudio.cli import main
from netstudio.compiler.build import compile_model
from netstudio.compiler.shapes import analyze
from netstudio.errors import CompileError, NetStudioError
from netstudio.nodes import usercode
from netstudio.project import trust
from netstudio.project.importer import import_to_files
from netstudio.project.io import load_project

MODEL_PY = textwrap.dedent('''
    import pathlib

    import torch
    import torch.nn as nn

    pathlib.Path(__file__).with_name("ran.marker").write_text("model.py ran")


    class Swish(nn.Module):
        """An activation NetStudio's catalog does not have."""

        def __init__(self, beta: float = 1.5) -> None:
            super().__init__()
            self.beta = beta

        def forward(self, x):
            return x * torch.sigmoid(self.beta * x)


    class Net(nn.Module):
        def __init__(self, width: int = 16) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, width)
            self.act = Swish()
            self.fc2 = nn.Linear(width, width)
            self.head = nn.Linear(width, 3)

        def forward(self, x):
            h = self.act(self.fc1(x))
            h = h + self.fc2(torch.relu(h))  # the residual connection
            return self.head(h)
''')


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """Each test starts like a new NetStudio process: nothing allowed, no user module loaded."""
    usercode.revoke_all()
    yield
    usercode.revoke_all()
    for name, mod in list(sys.modules.items()):  # the user files this test loaded
        if getattr(mod, "__netstudio_user_file__", None):
            del sys.modules[name]


def write_model(folder: Path) -> Path:
    path = folder / "model.py"
    path.write_text(MODEL_PY)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def user_nodes(project: Any) -> list[Any]:
    return [n for n in project.graph.nodes.values() if n.type_id == "layer.user_module"]


def imported(tmp_path: Path) -> tuple[Path, Path, Path]:
    """model.py imported (trusted) into net.nsproj + net.pt; then forgotten as a new process would."""
    src = write_model(tmp_path)
    _, out, w_out = import_to_files(f"{src}:Net", tmp_path / "net.nsproj", input_shape="2,8", trust=True)
    (tmp_path / "ran.marker").unlink()
    usercode.revoke_all()
    return src, out, w_out


def test_import_refuses_to_run_the_file_without_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_model(tmp_path)
    sha = usercode.file_sha256(src)
    assert sha is not None
    rc, out, err = run_cli(capsys, "import", f"{src}:Net", "--out", str(tmp_path / "net.nsproj"),
                           "--input-shape", "2,8")
    assert rc == 1
    assert f"runs the Python code in {src}" in err and sha in err and "--trust" in err
    assert not (tmp_path / "ran.marker").exists() and not (tmp_path / "net.nsproj").exists()
    with pytest.raises(NetStudioError, match="It was not run"):
        import_to_files(f"{src}:Net", tmp_path / "net.nsproj", input_shape="2,8")
    assert not (tmp_path / "ran.marker").exists()


def test_user_file_imports_with_one_opaque_node_that_records_the_file_and_its_hash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_model(tmp_path)
    rc, out, err = run_cli(capsys, "import", f"{src}:Net", "--out", str(tmp_path / "net.nsproj"),
                           "--input-shape", "2,8", "--trust", "--args", '{"width": 12}')
    assert rc == 0, err
    assert "outputs match the model" in out
    assert out.count("opaque node:") == 1 and "act: Swish from model.py (your code" in out
    project = load_project(tmp_path / "net.nsproj")
    (node,) = user_nodes(project)
    assert node.params["file"] == str(src.resolve()) and node.params["qualname"] == "Swish"
    assert node.params["sha256"] == usercode.sha256_bytes(src.read_bytes())
    assert json.loads(node.params["arguments"]) == {"beta": 1.5}
    types = sorted(n.type_id for n in project.graph.nodes.values())
    assert types.count("layer.linear") == 3 and "merge.add" in types  # catalog layers stay catalog nodes
    assert [n.params["out_features"] for n in project.graph.nodes.values() if n.name == "fc1"] == [12]


@pytest.mark.slow
def test_exported_pt_loads_with_plain_torch_and_gives_the_original_class_outputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out, w_out = imported(tmp_path)
    rc, _, err = run_cli(capsys, "export", str(out), "--format", "pt", "--no-preprocess", "--out",
                         str(tmp_path / "m.pt"))
    assert rc == 1 and "--trust" in err and str(src.resolve()) in err  # refused without --trust
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "ran.marker").exists()
    rc, printed, err = run_cli(capsys, "export", str(out), "--format", "pt", "--no-preprocess", "--out",
                               str(tmp_path / "m.pt"), "--trust")
    assert rc == 0, err
    assert "torch.load imports them as `model`" in printed
    # a fresh interpreter without NetStudio: the .pt, and the original class with the same weights
    check = textwrap.dedent(f'''
        import sys
        import torch
        import model
        exported = torch.load({str(tmp_path / "m.pt")!r}, weights_only=False).eval()
        original = model.Net().eval()
        original.load_state_dict(torch.load({str(w_out)!r}, weights_only=True)["state_dict"])
        x = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            diff = (exported(x) - original(x)).abs().max().item()
        print("netstudio" in sys.modules, diff)
    ''')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-c", check], cwd=str(tmp_path.parent), env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    loaded_netstudio, diff = res.stdout.split()
    assert loaded_netstudio == "False"
    assert float(diff) <= 1e-6


def test_py_export_loads_the_user_file_by_relative_path_and_checks_its_hash(tmp_path: Path) -> None:
    import runpy

    from netstudio.project import export as ex

    src, out, w_out = imported(tmp_path)
    project = load_project(out)
    trust.require(project, True)
    compiled = compile_model(project.graph, 2)
    _, state = ex.read_weights(w_out)
    ex.apply_state_dict(compiled.module, state)
    compiled.module.eval()
    target = tmp_path / "export" / "m.py"
    ex.export("py", compiled, target)
    text = target.read_text()
    sha = usercode.sha256_bytes(src.read_bytes())
    assert f"USER_FILES = {{'model': ('../model.py', '{sha}')}}" in text
    assert "self.act = _user_model.Swish(beta=1.5)" in text
    model = runpy.run_path(str(target))["load_model"]()
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), compiled.module(x), atol=1e-6)
    src.write_text(MODEL_PY + "\n# edited\n")
    with pytest.raises(RuntimeError, match="is not the file this model was exported with"):
        runpy.run_path(str(target))


def test_untrusted_project_opens_with_the_node_unavailable_and_runs_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out, _ = imported(tmp_path)
    project = load_project(out)  # opening reads JSON only
    (node,) = user_nodes(project)
    an = analyze(project.graph, 4)
    (p,) = [p for p in an.problems if p.node_id == node.id]
    assert "not trusted, so it is not run" in p.message and str(src.resolve()) in p.message
    assert p.hint is not None and "Trust" in p.hint
    with pytest.raises(CompileError, match="not trusted"):
        compile_model(project.graph, 4)
    for command in (["check", str(out)], ["train", str(out), "--epochs", "1"],
                    ["export", str(out), "--format", "pt", "--out", str(tmp_path / "m.pt")]):
        rc, _, err = run_cli(capsys, *command)
        assert rc == 1 and "would run Python code from" in err, command
        assert str(src.resolve()) in err and node.params["sha256"] in err and "--trust" in err
    assert not (tmp_path / "ran.marker").exists()  # no code of the file ran
    # with --trust the same check passes (and the file's code runs)
    rc, printed, err = run_cli(capsys, "check", str(out), "--trust")
    assert rc == 0 and "ok: the project is valid" in printed, err
    assert (tmp_path / "ran.marker").exists()


def test_a_changed_or_missing_file_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out, _ = imported(tmp_path)
    recorded = usercode.sha256_bytes(src.read_bytes())
    src.write_text(MODEL_PY.replace("1.5", "2.5"))
    project = load_project(out)
    trust.require(project, True)  # --trust allows the recorded content only
    (node,) = user_nodes(project)
    (p,) = [p for p in analyze(project.graph, 4).problems if p.node_id == node.id]
    assert "changed after the project recorded it" in p.message and recorded[:12] in p.message
    with pytest.raises(CompileError):
        compile_model(project.graph, 4)
    rc, _, err = run_cli(capsys, "check", str(out), "--trust")
    assert rc == 1 and "changed after the project recorded it" in err
    src.unlink()
    (p,) = [p for p in analyze(project.graph, 4).problems if p.node_id == node.id]
    assert "which is missing" in p.message
    assert not (tmp_path / "ran.marker").exists()


def test_trust_is_remembered_by_path_and_hash(tmp_path: Path) -> None:
    src, out, _ = imported(tmp_path)
    project = load_project(out)
    (r,) = trust.apply_remembered(project.graph)
    assert not r.changed and r.recorded in r.question() and str(src.resolve()) in r.question()
    trust.remember(r.file, r.recorded)
    assert json.loads((trust.config_dir() / trust.TRUST_FILE).read_text())["trusted"][-1] == {
        "path": str(src.resolve()), "sha256": r.recorded}
    usercode.revoke_all()  # a new process: remembered, so allowed without asking
    assert trust.apply_remembered(load_project(out).graph) == []
    assert not (tmp_path / "ran.marker").exists()
    src.write_text(MODEL_PY + "\n# edited\n")  # another hash: asked again
    usercode.revoke_all()
    (r,) = trust.apply_remembered(load_project(out).graph)
    assert r.changed and r.current == usercode.sha256_bytes(src.read_bytes())
    assert "has changed since the project recorded it" in r.question()


BLOCKS_PY = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)


    class ResBlock(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)
            self.act = Swish()

        def forward(self, x):
            return x + self.act(self.bn(self.conv(x)))


    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block1 = ResBlock(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.block1(self.stem(x))
            return self.fc(x.mean((2, 3)))


    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x
''')


def test_user_container_classes_become_blocks_and_weights_load_by_module_path(tmp_path: Path) -> None:
    from netstudio.nodes.user_module import references
    from netstudio.project.importer import read_state_dict

    src = tmp_path / "blocks_net.py"
    src.write_text(BLOCKS_PY)
    usercode.allow(src, usercode.sha256_bytes(src.read_bytes()))
    net = usercode.load_attr(src, usercode.sha256_bytes(src.read_bytes()), "Net")()
    with torch.no_grad():
        net.block1.bn.running_mean.uniform_(-1, 1)  # weights that differ from a fresh model's
    torch.save(net.state_dict(), tmp_path / "sd.pth")
    usercode.revoke_all()
    result, out, w_out = import_to_files(f"{src}:Net", tmp_path / "b.nsproj", input_shape="2,3,8,8", trust=True,
                                         weights=tmp_path / "sd.pth", blocks=True)
    block = result.project.graph.nodes[next(nid for nid, n in result.project.graph.nodes.items()
                                            if n.name == "block1")]
    assert block.inner is not None
    assert [n.name for n in block.inner.nodes.values() if n.type_id == "layer.user_module"] == ["act"]
    assert references(result.project.graph) == [(str(src.resolve()), usercode.sha256_bytes(src.read_bytes()))]
    state = read_state_dict(w_out)
    assert torch.equal(state["block1.bn.running_mean"], net.block1.bn.running_mean)
    # untrusted: the node inside the block is reported, nothing is built
    usercode.revoke_all()
    an = analyze(load_project(out).graph, 2)
    assert any("not trusted" in p.message for p in an.problems)


def test_data_dependent_control_flow_in_a_user_class_names_it(tmp_path: Path) -> None:
    src = tmp_path / "branchy.py"
    src.write_text(BLOCKS_PY)
    with pytest.raises(NetStudioError, match=r"\(Branchy\) cannot be traced by torch.fx") as info:
        import_to_files(f"{src}:Branchy", tmp_path / "x.nsproj", input_shape="2,4", trust=True)
    assert "torch.where" in str(info.value)
    with pytest.raises(NetStudioError, match="needs the input shape"):
        import_to_files(f"{src}:Net", tmp_path / "x.nsproj", trust=True)
    with pytest.raises(NetStudioError, match="has no Nope"):
        import_to_files(f"{src}:Nope", tmp_path / "x.nsproj", input_shape="2,4", trust=True)


def test_a_user_file_may_not_shadow_an_installed_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "model.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(other))  # another model.py on sys.path is not an installed module
    src = write_model(tmp_path)
    assert usercode.module_name(src) == "model"
    for name in ("pytest", "json", "torch"):
        bad = tmp_path / f"{name}.py"
        bad.write_text(MODEL_PY)
        with pytest.raises(NetStudioError, match=f"would (shadow|replace) the (installed )?module '{name}'"):
            import_to_files(f"{bad}:Net", tmp_path / "x.nsproj", input_shape="2,8", trust=True)
    assert not (tmp_path / "ran.marker").exists()


def test_sweep_needs_trust_for_a_project_with_user_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optuna")
    src, out, _ = imported(tmp_path)
    sha = usercode.file_sha256(src)
    rc, _, err = run_cli(capsys, "sweep", str(out), "--param", "fc1.out_features=int(4,8)", "--trials", "1")
    assert rc == 1 and sha is not None and sha in err and "--trust" in err
    assert not (tmp_path / "ran.marker").exists()  # refused before anything ran
    rc, _, err = run_cli(capsys, "sweep", str(out), "--param", "fc1.out_features=int(4,8)", "--trials", "1",
                         "--trust")
    assert "--trust" not in err  # past the trust check: an imported model alone has no data/loss to sweep with
