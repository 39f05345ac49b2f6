"""Blocks (subgraph nodes): the model, the commands, shapes and nested compilation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from netstudio.compiler import analyze
from netstudio.compiler.build import CompiledModel, compile_model
from netstudio.errors import GraphError
from netstudio.graph.commands import ExpandBlock, InBlock, MakeBlock, Paste, RemoveNodes, SetParam
from netstudio.graph.model import EventKind, Graph
from tests.test_compiler import residual_concat_graph

INNER = ("relu1", "fc_a", "add1", "fc_b", "concat1")


def spread(g: Graph) -> Graph:
    """Distinct, non-round positions so a round trip that moved anything shows."""
    for i, n in enumerate(g.nodes.values()):
        g.move_node(n.id, (i * 97.25, (i % 3) * 41.5))
    return g


def blocked() -> tuple[Graph, MakeBlock, dict]:
    g, _ = residual_concat_graph()
    spread(g)
    before = g.to_dict()
    cmd = MakeBlock([g.find(n).id for n in INNER])
    cmd.redo(g)
    return g, cmd, before


def edge_set(d: dict) -> set[tuple[str, ...]]:
    return {tuple(e) for e in d["edges"]}


def test_make_block_groups_the_selection_with_ports_from_the_boundary() -> None:
    g, cmd, before = blocked()
    block = g.nodes[cmd.block_id]
    assert block.type_id == "block.block" and block.name == "block1"
    outside = {n["id"] for n in before["nodes"] if n["name"] not in INNER}
    assert set(g.nodes) == outside | {block.id}
    assert block.inner is not None
    # the inner nodes are the selected ones, unchanged (ids, names, params, positions)
    inner_recs = {n["id"]: n for n in block.inner.to_dict()["nodes"] if not n["type"].startswith("block.")}
    assert inner_recs == {n["id"]: n for n in before["nodes"] if n["name"] in INNER}
    nt = g.node_type(block)
    # one input per outside source (fc_in feeds three inner nodes), one output per value used outside
    assert [p.label for p in nt.inputs] == ["relu1_in"]
    assert [p.label for p in nt.outputs] == ["concat1_out"]
    fc_in, head = g.find("fc_in").id, g.find("head").id
    assert (fc_in, "output", block.id, nt.inputs[0].name) in edge_set(g.to_dict())
    assert (block.id, nt.outputs[0].name, head, "input") in edge_set(g.to_dict())


def test_make_block_undo_redo_is_exact() -> None:
    g, cmd, before = blocked()
    after = g.to_dict()
    cmd.undo(g)
    assert g.to_dict() == before
    cmd.redo(g)
    assert g.to_dict() == after
    cmd.undo(g)
    assert g.to_dict() == before


def test_expand_block_restores_the_flat_graph_and_undoes_exactly() -> None:
    g, cmd, before = blocked()
    made = g.to_dict()
    exp = ExpandBlock(cmd.block_id)
    exp.redo(g)
    flat = g.to_dict()
    key = {n["id"]: n for n in before["nodes"]}
    assert {n["id"]: n for n in flat["nodes"]} == key  # ids, names, params and positions come back
    assert edge_set(flat) == edge_set(before)
    exp.undo(g)
    assert g.to_dict() == made
    exp.redo(g)
    assert g.to_dict() == flat


def test_expand_after_moving_the_block_moves_its_nodes_along() -> None:
    g, cmd, before = blocked()
    x, y = g.nodes[cmd.block_id].pos
    g.move_node(cmd.block_id, (x + 10.0, y - 5.0))
    ExpandBlock(cmd.block_id).redo(g)
    for rec in before["nodes"]:
        if rec["name"] in INNER:
            assert g.nodes[rec["id"]].pos == pytest.approx((rec["pos"][0] + 10.0, rec["pos"][1] - 5.0))


def test_make_block_refuses_dataset_loss_and_empty_selection() -> None:
    g, ids = residual_concat_graph()
    before = g.to_dict()
    with pytest.raises(GraphError, match="cannot go into a block"):
        MakeBlock([ids["d"], g.find("fc_in").id]).redo(g)
    with pytest.raises(GraphError, match="cannot go into a block"):
        MakeBlock([ids["ce"]]).redo(g)
    with pytest.raises(GraphError, match="Select"):
        MakeBlock([]).redo(g)
    assert g.to_dict() == before


def test_shapes_go_through_blocks_and_errors_name_block_and_inner_node() -> None:
    g, cmd, _ = blocked()
    an = analyze(g, 32)
    assert an.ok, an.problems
    nt = g.node_type(cmd.block_id)
    assert an.output_info(cmd.block_id, nt.outputs[0].name).shape == (32, 24)
    edit = InBlock([cmd.block_id], SetParam(g.nodes[cmd.block_id].inner.find("fc_a").id, "out_features", 7))
    edit.redo(g)
    errs = analyze(g, 32).errors()
    assert len(errs) == 1 and errs[0].node_id == cmd.block_id
    assert errs[0].message.startswith("Block 'block1' › Add 'add1'") and "32×7" in errs[0].message
    edit.undo(g)
    assert analyze(g, 32).ok


def test_inner_edits_notify_the_outer_graph_and_are_one_undo_step() -> None:
    g, cmd, _ = blocked()
    events = []
    g.subscribe(events.append)
    inner = g.nodes[cmd.block_id].inner
    assert inner is not None
    edit = InBlock([cmd.block_id], SetParam(inner.find("fc_b").id, "out_features", 5))
    edit.redo(g)
    assert [e.kind for e in events] == [EventKind.BLOCK_CHANGED]
    assert events[0].node_id == cmd.block_id and events[0].new.kind == EventKind.PARAM_CHANGED
    assert inner.find("fc_b").params["out_features"] == 5
    edit.undo(g)
    assert inner.find("fc_b").params["out_features"] == 8


def test_removing_a_port_node_inside_drops_its_outside_edge_and_undo_restores_it() -> None:
    g, cmd, _ = blocked()
    made = g.to_dict()
    inner = g.nodes[cmd.block_id].inner
    assert inner is not None
    out_port = g.node_type(cmd.block_id).outputs[0].name
    edit = InBlock([cmd.block_id], RemoveNodes([out_port]))
    edit.redo(g)
    assert not [e for e in g.edges if e.src == cmd.block_id]
    assert g.node_type(cmd.block_id).outputs == ()
    edit.undo(g)
    assert g.to_dict() == made


def test_duplicated_block_is_independent() -> None:
    g, cmd, _ = blocked()
    paste = Paste(g.subgraph_dict([cmd.block_id]))
    paste.redo(g)
    (copy_id,) = paste.new_ids
    a, b = g.nodes[cmd.block_id].inner, g.nodes[copy_id].inner
    assert a is not None and b is not None and a is not b
    assert g.nodes[copy_id].name == "block2"
    InBlock([copy_id], SetParam(b.find("fc_b").id, "out_features", 3)).redo(g)
    assert a.find("fc_b").params["out_features"] == 8
    assert b.find("fc_b").params["out_features"] == 3
    # a node copy (undo snapshots) is independent too
    node_copy = g.nodes[cmd.block_id].copy()
    assert node_copy.inner is not None
    node_copy.inner.find("fc_a").params["out_features"] = 99
    assert a.find("fc_a").params["out_features"] == 16


def test_nested_blocks_compile_and_expand() -> None:
    g, cmd, before = blocked()
    outer = MakeBlock([g.find("fc_in").id, cmd.block_id], name="trunk")
    outer.redo(g)
    assert analyze(g, 8).ok
    c = compile_model(g, 8)
    assert "trunk.block1.fc_a.weight" in c.module.state_dict()
    outer.undo(g)
    cmd.undo(g)
    assert g.to_dict() == before


def test_block_compiles_to_a_nested_module_with_the_flat_outputs() -> None:
    g, cmd, before = blocked()
    flat_g = Graph.from_dict(before)
    torch.manual_seed(0)
    flat = compile_model(flat_g, 8).module
    nested = compile_model(g, 8)
    keys = list(nested.module.state_dict())
    assert sorted(keys) == sorted(["fc_in.weight", "fc_in.bias", "head.weight", "head.bias",
                                   "block1.fc_a.weight", "block1.fc_a.bias", "block1.fc_b.weight",
                                   "block1.fc_b.bias"])
    assert type(nested.module.block1).__name__ == "Block1"
    assert "self.block1(" in nested.code
    state = {(k if k.split(".")[0] in ("fc_in", "head") else "block1." + k): v for k, v in flat.state_dict().items()}
    nested.module.load_state_dict(state)
    x = torch.randn(5, 4)
    assert torch.equal(flat(x), nested.module(x))
    assert nested.module_names[cmd.block_id] == "block1"
    assert nested.module_names[f"{cmd.block_id}/{g.nodes[cmd.block_id].inner.find('fc_a').id}"] == "block1.fc_a"


# ----------------------------------------------------------------------------
# exports of a project with blocks: same outputs as the flat graph with the same weights
# ----------------------------------------------------------------------------


def _flat_and_nested() -> tuple[torch.nn.Module, CompiledModel]:
    g, cmd, before = blocked()
    torch.manual_seed(1)
    flat = compile_model(Graph.from_dict(before), 8).module.eval()
    nested = compile_model(g, 8)
    state = {(k if k.split(".")[0] in ("fc_in", "head") else "block1." + k): v for k, v in flat.state_dict().items()}
    nested.module.load_state_dict(state)
    nested.module.eval()
    return flat, nested


def test_exports_of_a_block_model_give_the_flat_outputs(tmp_path: Path) -> None:
    from netstudio.project import export as ex

    flat, nested = _flat_and_nested()
    x = torch.randn(6, 4)
    with torch.no_grad():
        ref = flat(x)
    # pt: the pickled GraphModule with its nested block module
    pt = ex.export("pt", nested, tmp_path / "m.pt")
    loaded = torch.load(pt, weights_only=False)
    assert isinstance(loaded.block1, torch.fx.GraphModule)
    with torch.no_grad():
        assert torch.allclose(loaded(x), ref, atol=1e-6)
    # pt2: torch.export keeps the nesting
    pt2 = ex.export("pt2", nested, tmp_path / "m.pt2", example_input=x)
    assert torch.allclose(torch.export.load(pt2).module()(x), ref, atol=1e-6)
    # py: the block is its own class, used by the model
    py = ex.export("py", nested, tmp_path / "m.py")
    text = py.read_text()
    assert "class Block1(nn.Module):" in text and "self.block1 = Block1()" in text
    assert text.index("class Block1(") < text.index("class Model(")
    ns: dict[str, Any] = {"__name__": "m", "__file__": str(py)}
    exec(compile(text, str(py), "exec"), ns)
    rebuilt = ns["load_model"]()
    assert sorted(rebuilt.state_dict()) == sorted(nested.module.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), ref, atol=1e-6)


def test_onnx_export_of_a_block_model(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from netstudio.project import export as ex

    flat, nested = _flat_and_nested()
    x = torch.randn(4, 4)
    path = ex.export("onnx", nested, tmp_path / "m.onnx", example_input=x)
    model = onnx.load(str(path))
    (got,) = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), flat(x), atol=1e-5)


def test_script_export_of_a_block_project(tmp_path: Path) -> None:
    from netstudio.project import script_export as se
    from netstudio.project.io import Project

    g, cmd, _ = blocked()
    out = se.export_script(Project(g, name="blocks"), tmp_path / "job")
    text = out.model.read_text()
    assert "class Block1(nn.Module):" in text and "self.block1 = Block1()" in text
    ns: dict[str, Any] = {"__name__": "model", "__file__": str(out.model)}
    exec(compile(text, str(out.model), "exec"), ns)
    model = ns["Model"]()
    assert "block1.fc_a.weight" in model.state_dict()
    assert model(torch.randn(3, 4)).shape == (3, 3)


def test_memory_estimate_counts_the_layers_inside_blocks() -> None:
    from netstudio.compiler.memory import estimate

    g, cmd, before = blocked()
    flat_g = Graph.from_dict(before)
    flat = estimate(flat_g, analyze(flat_g, 16))
    nested = estimate(g, analyze(g, 16))
    assert nested.params == flat.params == sum(p.numel() for p in compile_model(g, 16).module.parameters())
    assert nested.training_bytes == flat.training_bytes


# ----------------------------------------------------------------------------
# project format and block library
# ----------------------------------------------------------------------------


def test_project_with_blocks_saves_and_loads_byte_identically(tmp_path: Path) -> None:
    from netstudio.project.io import Project, load_project, save_project

    g, cmd, _ = blocked()
    nested = MakeBlock([g.find("fc_in").id, cmd.block_id], name="trunk")  # a block inside a block
    nested.redo(g)
    path = save_project(Project(g, name="blocks"), tmp_path / "b.nsproj")
    text = path.read_text(encoding="utf-8")
    assert '"format_version": 2' in text and '"block": {' in text
    back = load_project(path)
    assert back.graph.to_dict() == g.to_dict()
    again = save_project(back, tmp_path / "c.nsproj")
    assert again.read_bytes() == path.read_bytes()
    # the loaded blocks work: same shapes, same module structure
    assert analyze(back.graph, 8).ok
    assert sorted(compile_model(back.graph, 8).module.state_dict()) == sorted(compile_model(g, 8).module.state_dict())


def test_old_projects_load_unchanged_and_stay_version_1(tmp_path: Path) -> None:
    from netstudio.project.io import FORMAT_VERSION, MIGRATIONS, Project, save_project

    g, _ = residual_concat_graph()
    text = Project(g, name="flat").dumps()
    assert '"format_version": 1' in text and FORMAT_VERSION == 2 and 1 in MIGRATIONS
    back = Project.loads(text)
    assert back.graph.to_dict() == g.to_dict() and back.dumps() == text
    # a version-1 project that gets a block is written as version 2 from then on
    MakeBlock([back.graph.find("fc_a").id]).redo(back.graph)
    assert '"format_version": 2' in back.dumps()
    assert save_project(back, tmp_path / "p.nsproj").exists()


def test_broken_block_in_a_project_is_a_project_error_naming_it() -> None:
    from netstudio.errors import ProjectError
    from netstudio.project.io import Project

    g, cmd, _ = blocked()
    data = json.loads(Project(g).dumps())
    block_rec = next(n for n in data["graph"]["nodes"] if n["type"] == "block.block")
    next(n for n in block_rec["block"]["nodes"] if n["name"] == "fc_a")["type"] = "layer.warp"
    with pytest.raises(ProjectError, match="In block 'block1': Unknown node type 'layer.warp'"):
        Project.from_dict(data)
    del block_rec["block"]
    with pytest.raises(ProjectError, match="block 'block1' has no inner graph"):
        Project.from_dict(data)


def test_block_library_file_round_trip_into_another_project(tmp_path: Path) -> None:
    from netstudio.errors import ProjectError
    from netstudio.project.io import load_block, save_block

    g, cmd, _ = blocked()
    path = save_block(g, cmd.block_id, tmp_path / "res.nsblock")
    rec = load_block(path)
    assert rec["name"] == "block1" and rec["type"] == "block.block"
    # another project: the block comes in as a new block, independent of the file and of other copies
    other, _ = residual_concat_graph()
    paste = Paste({"nodes": [rec], "edges": []}, offset=(300.0, 120.0))
    paste.redo(other)
    paste2 = Paste({"nodes": [rec], "edges": []}, offset=(300.0, 300.0))
    paste2.redo(other)
    (a,), (b,) = paste.new_ids, paste2.new_ids
    assert other.nodes[a].name == "block1" and other.nodes[b].name == "block2"
    assert other.nodes[a].pos == (300.0, 120.0)
    inner_a, inner_b = other.nodes[a].inner, other.nodes[b].inner
    assert inner_a is not None and inner_b is not None
    assert inner_a.to_dict() == g.nodes[cmd.block_id].inner.to_dict()
    inner_a.set_param(inner_a.find("fc_b").id, "out_features", 2)
    assert inner_b.find("fc_b").params["out_features"] == 8
    # wired like any node: fc_in -> block -> head shapes check
    nt = other.node_type(a)
    other.connect(other.find("fc_in").id, "output", a, nt.inputs[0].name)
    assert analyze(other, 8).output_info(a, nt.outputs[0].name).shape == (8, 18)
    paste.undo(other)
    assert a not in other.nodes
    bad = tmp_path / "bad.nsblock"
    bad.write_text('{"format": "netstudio-block", "version": 1, "name": "x", "block": {"nodes": [1]}}')
    with pytest.raises(ProjectError, match="Node record 1 is not an object"):
        load_block(bad)
    bad.write_text('{"format_version": 1, "graph": {}}')
    with pytest.raises(ProjectError, match="not a NetStudio block file"):
        load_block(bad)
    # the file itself: the same guarded read as a project's, each failure naming a block file
    with pytest.raises(ProjectError, match="is a folder, not a block file"):
        load_block(tmp_path)
    with pytest.raises(ProjectError, match="No such block file"):
        load_block(tmp_path / "missing.nsblock")
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProjectError, match="not a text file"):
        load_block(bad)


def test_a_block_model_trains_like_the_flat_model_with_the_same_weights() -> None:
    from netstudio.training import job as J
    from netstudio.training.config import TrainConfig

    g, cmd, before = blocked()
    flat = Graph.from_dict(before)
    cfg = TrainConfig(epochs=2, batch_size=16, seed=5, device="cpu", threads=1, keep_best=False)
    flat_job, nested_job = J.prepare(flat, cfg), J.prepare(g, cfg)
    state = {(k if k.split(".")[0] in ("fc_in", "head") else "block1." + k): v.clone()
             for k, v in flat_job.plan.model.state_dict().items()}
    nested_job.plan.model.load_state_dict(state)
    a, b = J.run(flat_job), J.run(nested_job)
    assert a.status == b.status == "finished"
    for ha, hb in zip(a.history, b.history, strict=True):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
        assert hb["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-5)
    assert b.model is not None
    trained = b.model.state_dict()
    assert not torch.equal(trained["block1.fc_a.weight"], state["block1.fc_a.weight"])  # the block's layers learnt


def test_expand_gives_new_ids_and_names_only_where_they_are_taken_outside() -> None:
    g, cmd, _ = blocked()
    inner = g.nodes[cmd.block_id].inner
    assert inner is not None
    fc_a = inner.find("fc_a")
    # outside, a new node takes fc_a's name; inside, a node gets an id that the outer graph uses
    g.add_node("layer.linear", {"out_features": 2}, name="fc_a")
    extra = InBlock([cmd.block_id], Paste({"nodes": [{"id": "x", "type": "activation.relu", "name": "act",
                                                       "pos": [0, 0], "params": {}}], "edges": []}))
    extra.redo(g)
    (clash_id,) = extra.command.new_ids  # type: ignore[attr-defined]
    assert clash_id in g.nodes  # the inner graph numbers its nodes on its own
    act_name = inner.nodes[clash_id].name
    exp = ExpandBlock(cmd.block_id)
    exp.redo(g)
    names = [n.name for n in g.nodes.values()]
    assert len(names) == len(set(names)) and len(g.nodes) == len(set(g.nodes))
    assert fc_a.id in g.nodes and g.nodes[fc_a.id].name == "fc_a1"  # id kept, name renumbered
    moved = g.find(act_name)
    assert moved.id in exp.new_ids and moved.id != clash_id and moved.type_id == "activation.relu"
    assert g.find("relu1").id in exp.new_ids


def test_a_dataset_or_loss_cannot_be_added_inside_a_block() -> None:
    from netstudio.graph.commands import AddNode

    g, cmd, _ = blocked()
    made = g.to_dict()
    for type_id in ("data.dataset", "loss.mse", "optim.sgd"):
        with pytest.raises(GraphError, match="cannot go into a block"):
            InBlock([cmd.block_id], AddNode(type_id)).redo(g)
        assert g.to_dict() == made
    inner = g.nodes[cmd.block_id].inner
    assert inner is not None
    before = len(inner.nodes)
    InBlock([cmd.block_id], AddNode("layer.dropout")).redo(g)  # a layer is fine
    assert len(inner.nodes) == before + 1


def test_py_export_with_preprocessing_and_a_block_named_preprocess(tmp_path: Path) -> None:
    """The export's own preprocessing module and a user's block called 'preprocess' stay apart."""
    import netstudio.data as D
    from netstudio.compiler.build import build_plan
    from netstudio.project import export as ex
    from netstudio.project.preprocess import export_input

    g, cmd, _ = blocked()
    g.rename_node(cmd.block_id, "preprocess")
    plan = build_plan(g, 8)
    plan.model.eval()
    inp = export_input(D.load(plan.dataset_params))
    py = ex.export("py", plan.compiled, tmp_path / "m.py", inp=inp, weights=True)
    text = py.read_text()
    # the dataset preprocessing keeps its class; the block's class is made unique
    assert "self.preprocess_ = Preprocess()" in text and "self.preprocess = Preprocess_2()" in text
    assert text.count("(nn.Module):") == 3
    ns: dict[str, Any] = {"__name__": "m", "__file__": str(py)}
    exec(compile(text, str(py), "exec"), ns)
    model = ns["load_model"]()
    assert "preprocess.fc_a.weight" in model.state_dict()
    x = inp.example(batch=3)
    exported = ex._exported(plan.compiled, inp)
    with torch.no_grad():
        assert torch.allclose(model(x), exported(x), atol=1e-6)
