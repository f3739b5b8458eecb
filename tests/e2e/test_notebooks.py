"""The teaching notebooks (notebooks/*.ipynb) run from top to bottom, draw pictures, leave the
repository alone, and are stored without outputs.

Each notebook ends with a cell of assertions on the claims its text makes, so a change to hwsim
that makes a sentence untrue fails here. Executed with nbclient on the `python3` kernel of the
interpreter running the tests (jupyter_client starts the kernelspec's "python" as sys.executable),
with the notebooks' folder as the working directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01_first_simulation", "02_pipeline_schedules", "03_memory_zero_recompute",
            "04_scaling_to_1024_gpus", "05_capacity_planning", "06_software_stacks", "07_reliability_goodput",
            "08_moe_on_nvl72")
CELL_TIMEOUT_S = 300


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _tree(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder` (caches excluded)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts}


def _image_outputs(nb) -> int:
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if out.get("output_type") == "display_data" and "image/png" in out.get("data", {}))


def test_every_expected_notebook_is_there():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs; store notebooks cleared (the tests execute them)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_and_draws(path: Path):
    nb = nbformat.read(path, as_version=4)
    before = {"notebooks": _tree(NOTEBOOK_DIR), "scenarios": _tree(REPO / "scenarios")}
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError on the first cell that fails
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.get("output_type") == "error"]
    assert not errors
    assert _image_outputs(nb) >= 1, "the notebook showed no picture (display_data with image/png)"
    claims = [cell for cell in nb.cells if cell.cell_type == "code" and "all claims hold" in cell.source]
    assert claims, "the notebook has no cell that checks its claims"
    printed = "".join(out.get("text", "") for out in claims[-1].outputs if out.get("output_type") == "stream")
    assert "all claims hold" in printed
    after = {"notebooks": _tree(NOTEBOOK_DIR), "scenarios": _tree(REPO / "scenarios")}
    assert after == before, "the notebook wrote into the repository; write outputs to a temporary directory"
