"""The module layout of spikepipe_jax/train/: no import cycles, one module builds the optimiser chain.

Imports are read from the source (AST), at every depth, so an import inside a function, which
Python resolves lazily and which hides a cycle at import time, counts like one at the top.
"""
import ast
import pathlib

import pytest

TRAIN = pathlib.Path(__file__).resolve().parents[1] / "spikepipe_jax" / "train"
PACKAGE = "spikepipe_jax.train"


def _imports(source: str, modules: set[str]) -> set[str]:
    """The ``train/`` modules a module's source imports (``"__init__"`` for the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    found.add("__init__")
                elif alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name[len(PACKAGE) + 1:].split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from . import x", "from .x import y"
                base = node.module.split(".")[0] if node.module else None
            elif node.module == "spikepipe_jax":
                if any(a.name == "train" for a in node.names):
                    found.add("__init__")
                continue
            elif node.module == PACKAGE:
                base = None
            elif node.module and node.module.startswith(PACKAGE + "."):
                base = node.module[len(PACKAGE) + 1:].split(".")[0]
            else:
                continue
            if base is not None:
                found.add(base)
            else:  # names from the package: a submodule, or something its __init__ re-exports
                found.update(a.name if a.name in modules else "__init__" for a in node.names)
    return found & (modules | {"__init__"})


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in TRAIN.glob("*.py") if p.stem != "__init__"}
    return {p.stem: _imports(p.read_text(), modules) - {p.stem} for p in TRAIN.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a closed path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_train_has_no_import_cycles():
    graph = _graph()
    assert {"loop", "pipesim", "delays", "mitigation", "optimizer", "step"} <= set(graph)
    assert _cycle(graph) is None, f"import cycle in spikepipe_jax/train: {' -> '.join(_cycle(graph))}"


def test_former_cycles_are_one_way():
    graph = _graph()
    assert "delays" in graph["mitigation"] and "mitigation" not in graph["delays"]
    assert "pipesim" in graph["loop"] and "loop" not in graph["pipesim"]


def test_optimizer_chain_built_in_one_module():
    """Only train/optimizer.py puts transforms into an ``optax.chain``."""
    chains = {}
    for p in TRAIN.glob("*.py"):
        calls = [n for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "chain"]
        if calls:
            chains[p.stem] = len(calls)
    assert set(chains) == {"optimizer"}, chains


@pytest.mark.parametrize("source,want", [
    ("def f():\n    from spikepipe_jax.train import loop\n", {"loop"}),
    ("import spikepipe_jax.train.delays as d\n", {"delays"}),
    ("from spikepipe_jax.train.step import TrainState\n", {"step"}),
    ("from . import mitigation\nfrom .loop import x\n", {"mitigation", "loop"}),
    ("from spikepipe_jax import train\n", {"__init__"}),
    ("from spikepipe_jax.train import compute_loss\n", {"__init__"}),
    ("from spikepipe_jax import snn\nimport optax\n", set()),
])
def test_import_reader_sees_every_form(source, want):
    assert _imports(source, {"loop", "delays", "step", "mitigation"}) == want


def test_cycle_finder_finds_a_cycle_through_a_function_level_import():
    mods = {"a", "b", "c"}
    graph = {"a": _imports("from spikepipe_jax.train import b\n", mods),
             "b": _imports("def f():\n    from spikepipe_jax.train.c import x\n", mods),
             "c": _imports("import spikepipe_jax.train.a\n", mods)}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    graph["c"] = set()
    assert _cycle(graph) is None
