"""The tutorial notebooks run top to bottom (on a copy, so the clean notebooks stay without outputs).

Each notebook is executed in a fresh ``python3`` kernel with ``nbclient``; a failing cell fails the
test with the cell's traceback. Regenerate the notebooks with ``python notebooks/make_notebooks.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_are_found_and_clean():
    assert [p.name for p in NOTEBOOKS] == [
        "00_quickstart.ipynb",
        "01_train_rl2.ipynb",
        "02_custom_agent_and_problem.ipynb",
        "03_ensemble_and_hpo.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is saved with outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    images = sum("image/png" in output.get("data", {}) for cell in nb.cells for output in cell.get("outputs", []))
    assert images >= 1, f"{path.name} rendered no inline figure"
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
