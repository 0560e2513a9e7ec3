"""The notebooks of notebooks/: stored clean, paired with their .py, and they run.

Each notebook is executed top to bottom in a fresh Jupyter kernel (nbclient,
the engine behind nbmake) with ``OXR_NOTEBOOK_SMALL=1``, the notebooks' switch
to their small smoke-run sizes. The kernel is this interpreter, through a
kernel spec written for the test, so the notebooks see the same environment
as the tests whatever kernels the machine has installed. A failure names the
notebook, the cell and its first line, with the error and traceback.

The .ipynb files are generated from the percent-format .py files by jupytext
(notebooks/README.md); the tests check that the two hold the same cells and
that the .ipynb carries no outputs.
"""

import json
import pathlib
import re
import sys

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = (
  "quickstart",
  "comparison",
  "solver_study",
  "identification",
  "transformer",
)
KERNEL = "optax-ramda-tests"
CELL_TIMEOUT_S = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Colours of IPython tracebacks.


def _read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _first_line(cell: nbformat.NotebookNode) -> str:
  lines = [line for line in cell.source.splitlines() if line.strip()]
  return lines[0] if lines else "<empty>"


def test_every_notebook_is_tested():
  found = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
  assert found == set(NOTEBOOKS), (
    f"notebooks/ holds {sorted(found)}, but this module tests {sorted(NOTEBOOKS)}; "
    "add new notebooks to NOTEBOOKS."
  )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  for index, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
      continue
    assert not cell.outputs and cell.execution_count is None, (
      f"{name}.ipynb cell {index + 1} ({_first_line(cell)!r}) has stored outputs; "
      f"regenerate it with `jupytext --to ipynb notebooks/{name}.py`."
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_py_source(name):
  stored = [(c.cell_type, c.source) for c in _read(name).cells]
  source = [
    (c.cell_type, c.source) for c in jupytext.read(NOTEBOOK_DIR / f"{name}.py").cells
  ]
  for index, (a, b) in enumerate(zip(stored, source, strict=False)):
    assert a == b, (
      f"{name}.ipynb cell {index + 1} differs from notebooks/{name}.py; run "
      f"`jupytext --sync notebooks/{name}.py` (or --to ipynb) and commit both."
    )
  assert len(stored) == len(source), (
    f"{name}.ipynb has {len(stored)} cells, notebooks/{name}.py {len(source)}; run "
    f"`jupytext --sync notebooks/{name}.py`."
  )


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory):
  """A Jupyter data dir whose only kernel runs this interpreter."""
  root = tmp_path_factory.mktemp("jupyter")
  spec = root / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(
    json.dumps(
      {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "optax_ramda tests",
        "language": "python",
      }
    )
  )
  return root


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, jupyter_path, monkeypatch):
  monkeypatch.setenv("OXR_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  nb = _read(name)
  client = NotebookClient(
    nb,
    timeout=CELL_TIMEOUT_S,
    kernel_name=KERNEL,
    resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
  )
  try:
    client.execute()
    return
  except CellExecutionError as e:
    error = _ANSI.sub("", str(e))
  failed = [
    index
    for index, cell in enumerate(nb.cells)
    if any(out.output_type == "error" for out in cell.get("outputs", []))
  ]
  where = (
    f"cell {failed[0] + 1} of {len(nb.cells)} ({_first_line(nb.cells[failed[0]])!r})"
    if failed
    else "a cell"
  )
  pytest.fail(f"notebooks/{name}.ipynb: {where} raised:\n{error}", pytrace=False)
