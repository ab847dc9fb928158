"""Every notebook runs top to bottom without error (nbclient), from the repository root, and shows
its figures: each figure cell (tagged ``figure`` by tools/make_notebooks.py) produces an image."""
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
FIGURE_TAG = "figure"  # tools/make_notebooks.py figure_cell
# what draws a figure in these notebooks: pyplot calls, a figure object, an IPython Image display
_DRAWS = re.compile(r"\bplt\.|\bfig\b|\bImage\(")


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _is_figure_cell(cell) -> bool:
    return FIGURE_TAG in cell.get("metadata", {}).get("tags", [])


def _images(cell) -> int:
    return sum(1 for o in cell.outputs
               if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {}))


def test_there_are_three_notebooks_with_stripped_outputs():
    assert len(NOTEBOOKS) == 3
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in _code_cells(nb):
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figure_cells_are_tagged(path):
    """The tag the execution test relies on is on exactly the cells that draw."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(_code_cells(nb)):
        assert _is_figure_cell(cell) == bool(_DRAWS.search(cell.source)), f"{path.name} code cell {i}"
    assert any(_is_figure_cell(c) for c in _code_cells(nb)), f"{path.name} draws no figure"
    assert not any('matplotlib.use("Agg")' in c.source for c in _code_cells(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_shows_its_figures(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parents[1])}})
    client.execute()  # raises CellExecutionError on any failing cell
    cells = _code_cells(nb)
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert [o for c in cells for o in c.outputs], "the notebook printed or plotted nothing"
    figure_cells = [i for i, c in enumerate(cells) if _is_figure_cell(c)]
    no_image = [i for i in figure_cells if _images(cells[i]) == 0]
    assert not no_image, f"{path.name}: figure cells {no_image} (code cell index) produced no image/png output"
    assert sum(_images(c) for c in cells) >= len(figure_cells) > 0
