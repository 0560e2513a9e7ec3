"""The output folder of a run: chosen so that no result is ever lost, and written.

* Without ``--out``, every invocation writes into a fresh folder
  ``runs/<tasks joined by "+">-<UTC time %Y%m%dT%H%M%SZ>/`` (``-2``, ``-3``, …
  appended when that folder exists, so runs started in the same second never
  share one), created atomically, and its path is printed at the start and at
  the end.
* An ``--out`` that already holds results (:data:`RESULT_FILES`, or a
  non-empty ``params/``) is refused before any training, and nothing is
  changed, unless ``--overwrite`` is given.
* Each run's weights go to ``params/<task>-<regularizer>-<optimizer>-seed<k>.npz``
  (:func:`params_file`); :func:`load_params` reads them back.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

# The files of a finished run (a comparison's or a sweep's).
RESULT_FILES = ("results.json", "table.md", "sweep.md", "curves.png", "fronts.png")
DEFAULT_ROOT = "runs"


def _utc_now() -> datetime.datetime:
  return datetime.datetime.now(datetime.UTC)


def params_file(task: str, regularizer: str, optimizer: str, seed: int) -> str:
  """The path, inside an output folder, of one run's saved weights.

  Examples:
    >>> from optax_ramda.experiments._outputs import params_file
    >>> params_file("mlp", "nuclear", "ramda", 2)
    'params/mlp-nuclear-ramda-seed2.npz'
  """
  return os.path.join("params", f"{task}-{regularizer}-{optimizer}-seed{seed}.npz")


def existing_results(out: str) -> list[str]:
  """The result files that folder `out` already holds (``params/`` if non-empty)."""
  if not os.path.isdir(out):
    return []
  found = [f for f in RESULT_FILES if os.path.exists(os.path.join(out, f))]
  params = os.path.join(out, "params")
  if os.path.isdir(params) and os.listdir(params):
    found.append("params/")
  return found


def fresh_folder(tasks: Sequence[str], root: str = DEFAULT_ROOT) -> str:
  """Creates and returns ``root/<tasks joined by "+">-<UTC time>[-k]``.

  The folder is created with ``os.makedirs(exist_ok=False)``, so two runs
  started in the same second get two folders (the second with ``-2``).
  """
  stem = os.path.join(
    root, f"{'+'.join(tasks)}-{_utc_now().strftime('%Y%m%dT%H%M%SZ')}"
  )
  for k in range(1, 10_000):
    path = stem if k == 1 else f"{stem}-{k}"
    try:
      os.makedirs(path, exist_ok=False)
    except FileExistsError:
      continue
    return path
  raise FileExistsError(f"no free output folder named {stem}[-k] under {root!r}")


def prepare(
  out: str | None,
  tasks: Sequence[str],
  *,
  overwrite: bool,
  is_main: bool,
  params: bool,
  error: Callable[[str], Any],
) -> str:
  """Checks `out` (refused if it holds results), creates it; returns the folder.

  Args:
    out: ``--out``, or None for a fresh folder under ``runs/``.
    tasks: the task names (of the fresh folder's name).
    overwrite: ``--overwrite``: write into an `out` that holds results.
    is_main: whether this is process 0 (the one that creates and writes).
    params: whether the run saves ``params/``.
    error: reports a refusal and exits (``parser.error``).

  Returns:
    The output folder (on other processes than 0, `out` or ``""``).
  """
  if out is None:
    if not is_main:
      return ""
    try:
      out = fresh_folder(tasks)
    except OSError as e:
      error(f"cannot create an output folder under {DEFAULT_ROOT}/: {e}")
  else:
    found = existing_results(out)
    if found and not overwrite:
      error(
        f"--out {out!r} already holds results ({', '.join(found)}); pass "
        "--overwrite to replace them, or choose another --out"
      )
  assert out is not None
  try:
    if is_main:
      os.makedirs(os.path.join(out, "params") if params else out, exist_ok=True)
  except OSError as e:
    error(f"--out {out!r}: cannot create the output folder: {e}")
  return out


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """A nested dict of arrays as ``{"a/b/c": array}``."""
  flat: dict[str, np.ndarray] = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, name + "/"))
    else:
      flat[name] = np.asarray(value)
  return flat


def save_params(path: str, params: Any, prox: Any) -> None:
  """Saves a run's weights (and Ŵ) as ``params/…`` (and ``prox/…``) arrays."""
  arrays = {f"params/{k}": v for k, v in flatten(params).items()}
  if prox is not None:
    arrays.update({f"prox/{k}": v for k, v in flatten(prox).items()})
  np.savez(path, **arrays)  # type: ignore[arg-type]


def load_params(path: str, template: Any, prefix: str = "params/") -> Any:
  """Reads the weights a run saved back into the structure of a model's state.

  Every run of ``python -m optax_ramda.experiments`` saves its final weights
  (and, for RAMDA and RMDA, Ŵ) to
  ``<out>/params/<task>-<regularizer>-<optimizer>-seed<k>.npz``, one array per
  leaf under the leaf's path (``params/layers/0/kernel``). The file holds
  arrays only, not the model's structure: `template` supplies it, and every
  one of its leaves is replaced by the saved array of the same path. Build the
  template from a model of the same task and size, e.g.
  ``nnx.to_pure_dict(nnx.state(model))``; then ``nnx.update(model, params)``
  puts the weights into the model.

  Args:
    path: a ``params/*.npz`` file of an output folder.
    template: a nested dict with the model's structure (its leaves' values are
      not read; any value, even None, will do).
    prefix: ``"params/"`` for the weights, ``"prox/"`` for Ŵ.

  Returns:
    `template`'s structure with the saved arrays as its leaves.

  Raises:
    KeyError: if the file lacks a leaf of `template` (another model).

  Examples:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from flax import nnx
    >>> from optax_ramda.experiments import load_params
    >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    >>> path = os.path.join(tempfile.mkdtemp(), "logreg-group_lasso-ramda-seed0.npz")
    >>> np.savez(path, **{"params/layers/0/kernel": np.ones((3, 2), np.float32),
    ...                   "params/layers/0/bias": np.zeros(2, np.float32)})
    >>> template = nnx.to_pure_dict(nnx.state(model))
    >>> params = load_params(path, template)
    >>> params["layers"][0]["kernel"].shape
    (3, 2)
    >>> nnx.update(model, params)
    >>> model(np.ones((1, 3), np.float32)).tolist()
    [[3.0, 3.0]]
  """
  with np.load(path) as archive:
    stored = {
      k[len(prefix) :]: archive[k] for k in archive.files if k.startswith(prefix)
    }

  def fill(node: Any, name: str) -> Any:
    if isinstance(node, dict):
      return {k: fill(v, f"{name}{k}/") for k, v in node.items()}
    return stored[name[:-1]]

  return fill(template, "")


def _finite_or_none(tree: Any) -> Any:
  """NaN/inf floats as None (JSON has no NaN), in nested dicts and lists."""
  if isinstance(tree, dict):
    return {k: _finite_or_none(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_finite_or_none(v) for v in tree]
  if isinstance(tree, float) and not np.isfinite(tree):
    return None
  return tree


def write_outputs(
  out: str,
  command: str,
  arguments: dict[str, Any],
  tables: str,
  plot: Callable[[str], None],
  started: float,
  summaries: list[dict[str, Any]],
  *,
  table_file: str = "table.md",
  figure_file: str = "curves.png",
  params: bool = True,
  **entries: Any,
) -> None:
  """Writes the tables, the figure and ``results.json`` into `out`, and says so.

  Args:
    out: the output folder.
    command: the command line, written above the tables.
    arguments: the parsed flags (recorded as ``arguments``).
    tables: the Markdown tables (also printed).
    plot: draws the figure into the path it is given.
    started: the ``time.perf_counter()`` at the start of the runs.
    summaries: the per-task summaries (``summary``).
    table_file: the tables' file name in `out`.
    figure_file: the figure's file name in `out`.
    params: whether the runs also saved ``params/`` (named in the message).
    **entries: the other top-level entries of ``results.json`` (``runs``, or
      ``sweep``, ...), in this order after ``summary``.
  """
  with open(os.path.join(out, table_file), "w") as f:
    f.write(f"`{command}`\n\n{tables}\n")
  plot(os.path.join(out, figure_file))
  wall_seconds = time.perf_counter() - started
  results = {
    "command": command,
    "arguments": arguments,
    "environment": _environment(wall_seconds),
    "summary": summaries,
    **entries,
  }
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(_finite_or_none(results), f, indent=1, default=str, allow_nan=False)
  print(tables)
  files = ["results.json", table_file, figure_file] + (["params/"] if params else [])
  print(
    f"\nwrote {out}/{', '.join(files[:-1])} and {files[-1]} in {wall_seconds:.0f} s"
  )


def _environment(wall_seconds: float) -> dict[str, Any]:
  return {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "processes": jax.process_count(),
    "cpu_count": os.cpu_count(),
    "wall_seconds": wall_seconds,
  }
