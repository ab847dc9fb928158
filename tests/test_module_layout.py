"""The module map's rules (WORKSPACE.md): no import circles inside ``schedule/``, no private names
imported across modules, ``schedule/`` free of JAX / NumPy, ``report/`` reading results only."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "spikepipe_jax"


def _imports(path: pathlib.Path):
    """``(module, names)`` of every import in a file (function-level ones included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _local_deps(folder: str) -> dict[str, set[str]]:
    pre = f"spikepipe_jax.{folder}."
    deps = {}
    for f in sorted((PKG / folder).glob("*.py")):
        if f.name == "__init__.py":
            continue
        mods = set()
        for mod, names in _imports(f):
            if mod.startswith(pre):
                mods.add(mod[len(pre):])
            elif mod == f"spikepipe_jax.{folder}":
                mods.update(names)
        deps[f.stem] = mods - {f.stem}
    return deps


@pytest.mark.parametrize("folder", ["schedule", "hardware", "report"])
def test_no_import_circles(folder):
    deps = _local_deps(folder)
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            pytest.fail(f"import circle: {' -> '.join(path + [m])}")
        if state.get(m) == 2 or m not in deps:
            return
        state[m] = 1
        for d in sorted(deps[m]):
            visit(d, path + [m])
        state[m] = 2

    for m in deps:
        visit(m, [])


@pytest.mark.parametrize("folder", ["schedule", "hardware", "report"])
def test_no_private_names_across_modules(folder):
    bad = []
    for f in (PKG / folder).glob("*.py"):
        for mod, names in _imports(f):
            if mod.startswith("spikepipe_jax"):
                bad += [f"{f.name}: {mod}.{n}" for n in names if n.startswith("_")]
    assert bad == []


def test_schedule_is_pure_python_and_report_reads_results_only():
    for f in (PKG / "schedule").glob("*.py"):
        roots = {m.split(".")[0] for m, _ in _imports(f)}
        assert not roots & {"jax", "numpy", "matplotlib"}, f.name
        assert not any(m.startswith(("spikepipe_jax.hardware", "spikepipe_jax.train", "spikepipe_jax.snn",
                                     "spikepipe_jax.report")) for m, _ in _imports(f)), f.name
    for f in (PKG / "report").glob("*.py"):
        mods = [m for m, _ in _imports(f) if m.startswith("spikepipe_jax.")]
        assert all(m.startswith(("spikepipe_jax.report", "spikepipe_jax.io")) for m in mods), (f.name, mods)
