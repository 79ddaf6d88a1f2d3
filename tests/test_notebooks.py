"""Every notebook runs top to bottom (instructor version): no errors, every test cell passes."""
import pytest

from notebook_tools import NOTEBOOKS, errors, executed, graded_cells, text

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_instructor_notebook_runs_clean(path):
    nb = executed(path)
    assert errors(nb) == []
    tests = graded_cells(nb)
    assert tests, "a notebook without graded cells"
    for cell in tests:
        assert text(cell).startswith("PASSED"), cell.source
    # The hidden suite ran too (instructor version keeps the hidden tests).
    assert any("(hidden)" in text(cell) for cell in tests)
    # No cell wrote to stderr except progress bars (warnings would zero a student's cell under a naive config).
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("name") == "stderr":
                assert "Warning" not in out["text"], (cell.source[:80], out["text"][:300])


def test_notebooks_are_stored_without_outputs():
    import nbformat
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path
