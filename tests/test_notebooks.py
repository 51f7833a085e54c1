"""The tutorial notebooks: clean, in sync with their sources, and runnable top to bottom.

Each notebook's source of truth is a jupytext percent script (``notebooks/NN_name.py``, linted by
ruff) paired with ``notebooks/NN_name.ipynb`` (what a reader opens). The test executes the cells read
from the ``.py``, so what is linted is what runs, in a fresh ``python3`` kernel with ``nbclient``; a
failing cell fails the test with the cell's traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
PAIRING = "ipynb,py:percent"
RESYNC = (
    "the .py is the source of truth: resync with `jupytext --sync notebooks/*.py` (it takes the cells of "
    "the newer file; if the .ipynb is newer than your .py edit, e.g. after a git checkout, run "
    "`jupytext --update --to ipynb notebooks/*.py` instead, which writes from the .py and keeps cell ids)"
)


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def test_notebooks_are_found_and_paired():
    assert [p.name for p in SOURCES] == [
        "00_quickstart.py",
        "01_train_rl2.py",
        "02_custom_agent_and_problem.py",
        "03_ensemble_and_hpo.py",
        "04_bring_your_own_model.py",
    ]
    notebooks = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert notebooks == [p.with_suffix(".ipynb").name for p in SOURCES], (
        "every notebooks/NN_name.py needs its paired .ipynb and vice versa; "
        "pair a new one with `jupytext --set-formats ipynb,py:percent notebooks/NN_name.py`"
    )
    for source in SOURCES:
        notebook = source.with_suffix(".ipynb")
        for path, nb in ((source, jupytext.read(source)), (notebook, nbformat.read(notebook, as_version=4))):
            formats = nb.metadata.get("jupytext", {}).get("formats")
            assert formats == PAIRING, (
                f"{path.name} is paired as {formats!r}, not {PAIRING!r}; "
                f"run `jupytext --set-formats {PAIRING} notebooks/{source.name}`"
            )


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_is_clean_and_in_sync(source):
    path = source.with_suffix(".ipynb")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} is saved with outputs; clear them before saving "
                "(Jupyter: Edit > Clear Outputs of All Cells)"
            )
    expected, saved = cells(jupytext.read(source)), cells(nb)
    if saved != expected:
        first = next((i for i, (a, b) in enumerate(zip(saved, expected)) if a != b), min(len(saved), len(expected)))
        pytest.fail(
            f"{path.name} is out of sync with {source.name} ({len(saved)} cells against {len(expected)}, "
            f"first difference at cell {first}); {RESYNC}",
            pytrace=False,
        )


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(source)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    images = sum("image/png" in output.get("data", {}) for cell in nb.cells for output in cell.get("outputs", []))
    assert images >= 1, f"{source.name} rendered no inline figure"
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
