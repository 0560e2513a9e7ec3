"""λ × η sweeps: accuracy–sparsity fronts and the calibrated hyperparameters.

``python -m optax_ramda.experiments --sweep`` trains every selected method on
a grid: for a regularized method every (λ, η) of its λ grid (log-spaced, wide
enough to go from no zero group to most of them) and its η grid (the paper's
η times :data:`LR_FACTORS`), for a dense reference every η. Every point runs
over several seeds with the main job's schedule and budget.
Magnitude pruning sweeps its target sparsity in λ's place and, as a third
axis, the schedules of :func:`~._pruning.schedule_grid`. The default grids
then grow by the grid-extension rule (:mod:`~._grid_rule`) until no choice
sits at an end it would extend; a grid given by flag is taken as given.

Selection never sees the test split. The training examples are split once
(:func:`validation_split`): the runs train on the first part and are scored on
the held-out *validation* part; every choice (:func:`front`,
:func:`best_dense`, :func:`within`) reads validation accuracy and group
sparsity only. The test accuracy of the same final weights is recorded beside
them for the report, and read by nothing that chooses.

Outputs, per task:

* the *front* of each regularized method: for every λ, the η with the best
  mean validation accuracy, as (group sparsity, validation accuracy) mean ±
  std over seeds; the dense references' best validation accuracy;
* the table: the largest group sparsity whose mean validation accuracy is
  within 0.5 and within 1 point of the best dense reference, with its λ and η,
  validation and test accuracy;
* the calibrated point of each method (the within-1-point one; where no
  point gets that close, the sparsest point within 1 point of the method's own
  best), printed as the entries of
  :data:`optax_ramda.experiments._optimizers.CALIBRATED`.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_ramda.experiments import (
  _grid_rule,
  _optimizers,
  _pruning,
  _selection,
  _sweep_report,
)
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._data import validation_split as validation_split
from optax_ramda.experiments._optimizers import METHODS, Method
from optax_ramda.experiments._progress import Progress
from optax_ramda.experiments._task import Task
from optax_ramda.experiments._train import Trainer

# The share of the training examples held out for validation.
VAL_FRACTION = 0.2
# The η grid: the paper's η times these factors.
LR_FACTORS = (1 / 3, 1.0, 3.0, 10.0)
# Default λ grids: per (task, method), the ends of a log-spaced grid of POINTS
# values, set from a one-seed pilot over λ = 1e-5, 3e-5, ..., 0.3 at the
# paper's η with the exact solver (the command is in docs/calibration.md) so
# that each grid runs from (nearly) no zero group to most groups zero, with its
# points where the sparsity changes; the grid-extension rule (:mod:`~._grid_rule`)
# carries a grid on where a choice sits at its end. Other tasks use
# DEFAULT_RANGE.
REG_RANGES: dict[tuple[str, str], tuple[float, float]] = {
  ("logreg", "ramda"): (1e-5, 2e-2),
  ("logreg", "rmda"): (3e-3, 3e-2),
  ("logreg", "proxgen"): (1e-4, 5e-2),
  ("logreg", "prox_sgd"): (3e-3, 3e-2),
  ("logreg", "proxssi"): (1e-4, 1.5e-2),
  ("mlp", "ramda"): (3e-5, 5e-3),
  ("mlp", "rmda"): (1e-3, 1e-2),
  ("mlp", "proxgen"): (3e-5, 5e-3),
  ("mlp", "prox_sgd"): (1e-3, 1e-2),
  ("mlp", "proxssi"): (1e-5, 1e-3),
  ("cnn", "ramda"): (1e-4, 5e-3),
  ("cnn", "rmda"): (1e-3, 2e-2),
  ("cnn", "proxgen"): (3e-4, 1.5e-2),
  ("cnn", "prox_sgd"): (1e-3, 2e-2),
  ("cnn", "proxssi"): (1e-4, 3e-3),
}
DEFAULT_RANGE = (1e-5, 3e-2)
POINTS = 8


def reg_grid(task: str, name: str) -> tuple[float, ...]:
  """The default λ grid of a regularized method on a task (log-spaced; for
  magnitude pruning, its target sparsities :data:`~._pruning.TARGETS`).

  Examples:
    >>> from optax_ramda.experiments._sweep import POINTS, reg_grid
    >>> grid = reg_grid("logreg", "ramda")
    >>> len(grid) == POINTS and grid[0] == 1e-5 and grid[-1] == 0.02
    True
  """
  if name == "magnitude":
    return _pruning.TARGETS
  low, high = REG_RANGES.get((task, name), DEFAULT_RANGE)
  return tuple(float(f"{v:.3g}") for v in np.geomspace(low, high, POINTS))


def lr_grid(method: Method) -> tuple[float, ...]:
  """The default η grid of `method`: its paper η times :data:`LR_FACTORS`.

  Examples:
    >>> from optax_ramda.experiments._optimizers import METHODS
    >>> from optax_ramda.experiments._sweep import lr_grid
    >>> lr_grid(METHODS["ramda"])
    (0.00333, 0.01, 0.03, 0.1)
  """
  return tuple(float(f"{method.learning_rate * f:.3g}") for f in LR_FACTORS)


def check_grid(values: Sequence[float], *, positive: bool) -> tuple[float, ...]:
  """Validates a grid: non-empty, finite, ≥ 0 (> 0), strictly increasing.

  Args:
    values: the grid.
    positive: whether 0 is refused too (η) or allowed (λ).

  Returns:
    The grid as a tuple of floats.

  Raises:
    ValueError: naming the problem (empty, negative, unsorted, duplicate).

  Examples:
    >>> from optax_ramda.experiments._sweep import check_grid
    >>> check_grid([0, 1e-3, 1e-2], positive=False)
    (0.0, 0.001, 0.01)
    >>> check_grid([1e-2, 1e-3], positive=True)
    Traceback (most recent call last):
    ...
    ValueError: grid values must be increasing, got 0.01 before 0.001
  """
  grid = tuple(float(v) for v in values)
  if not grid:
    raise ValueError("empty grid: give at least one value")
  for v in grid:
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
      kind = "positive" if positive else "nonnegative"
      raise ValueError(f"grid values must be finite and {kind}, got {v:g}")
  for a, b in itertools.pairwise(grid):
    if a == b:
      raise ValueError(f"duplicate grid value {a:g}")
    if a > b:
      raise ValueError(f"grid values must be increasing, got {a:g} before {b:g}")
  return grid


def sweep(
  task: Task,
  data: Dataset,
  grids: dict[str, tuple[tuple[float, ...], tuple[float, ...]]],
  *,
  seeds: int,
  epochs: int,
  batch_size: int,
  stages: int,
  decay: float,
  solver: Any,
  val_fraction: float = VAL_FRACTION,
  progress: Progress | None = None,
  on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
  """Trains every grid point of every method over `seeds`; one record per run.

  Args:
    task: the model family.
    data: the task's data set (prepared); its test split is scored only for
      the report.
    grids: per optimizer name, its (λ grid, η grid), the λ grid None for
      the task's default (:func:`reg_grid`); a dense method's is ignored.
    seeds: runs per point, seeds 0..seeds-1.
    epochs: epochs per run.
    batch_size: the minibatch size.
    stages: equal training stages.
    decay: γ at each stage boundary.
    solver: the subproblem solver of RAMDA and ProxGen.
    val_fraction: the share of the training examples held out for selection.
    progress: the job's bar, advanced once per run (None: none).
    on_run: called with each record as it completes.

  Returns:
    Records with the optimizer, λ, η, seed, validation accuracy, group
    sparsity (weights and Ŵ), final training loss and test accuracy.
  """
  fit = validation_split(data, val_fraction)
  steps_per_epoch = len(fit.y_train) // batch_size
  total_steps = epochs * steps_per_epoch
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  records = []
  for name, (regs, lrs) in grids.items():
    method = METHODS[name]
    if regs is None:
      regs = reg_grid(task.name, name)
    regs = regs if method.regularized else (0.0,)
    magnitude = name == "magnitude"
    for schedule in _pruning.schedule_grid(task.name) if magnitude else (None,):
      settings = _optimizers.settings(
        method,
        total_steps=total_steps,
        stages=stages,
        decay=decay,
        reg_strength=regs[0],
        solver=solver,
        learning_rate=lrs[0],
        schedule=None if schedule is None else _pruning.SCHEDULES[schedule],
      )
      trainer = Trainer(task, fit, method, settings, batch_size)
      test_accuracy = jax.jit(
        lambda p, trainer=trainer: jnp.mean(
          jnp.argmax(trainer.logits(p, x_test), -1) == y_test
        )
      )
      for reg in regs:
        for lr in lrs:
          trainer.set_hyperparameters(learning_rate=lr, reg_strength=reg)
          for seed in range(seeds):
            if progress is not None:
              where = f"λ={reg:g} η={lr:g}" + (f" {schedule}" if schedule else "")
              progress.start(f"{task.name}/{name} {where} seed {seed}")
            result = trainer.run(seed, epochs, every_epoch=False, prune=False)
            record = {
              "task": task.name,
              "optimizer": name,
              "reg_strength": reg,
              "learning_rate": lr,
              **({"schedule": schedule} if magnitude else {}),
              "momentum": trainer.settings.momentum,
              "seed": seed,
              "train_loss": result.final["train_loss"],
              "val_accuracy": result.final["accuracy"],
              "group_sparsity": result.final["group_sparsity"],
              "prox_group_sparsity": result.final["prox_group_sparsity"],
              "test_accuracy": float(test_accuracy(result.params)),
            }
            records.append(record)
            if on_run is not None:
              on_run(record)
            if progress is not None:
              progress.done()
  return records


def run_sweep(
  args: argparse.Namespace, plans: Sequence[Any], grids: dict[str, Any], is_main: bool
) -> tuple[list[dict[str, Any]], str, dict[str, Any], list[dict[str, Any]]]:
  """The ``--sweep`` job: every grid point of every plan (task).

  Args:
    args: the parsed flags (``seeds``, ``stages``, ``decay``, ``solver``,
      ``val_fraction``, ``quiet``).
    plans: the tasks with their data and budget
      (:class:`~optax_ramda.experiments._compare.Plan`).
    grids: per optimizer, its (λ grid or None for the default, η grid).
    is_main: whether this is process 0 (draws the bar).

  Returns:
    The per-task summaries, the Markdown text (tables and calibrated points),
    the fronts per title (for :func:`~._sweep_report.plot`) and the
    ``sweep`` entries of ``results.json``.
  """

  def regs(task: str, name: str) -> tuple[float, ...]:
    if not METHODS[name].regularized:
      return ()
    return grids[name][0] or reg_grid(task, name)

  def default(name: str, regs: Any, lrs: tuple[float, ...]) -> bool:
    return (regs is None or not METHODS[name].regularized) and lrs == lr_grid(
      METHODS[name]
    )

  def schedules(task: Task, name: str) -> int:
    return len(_pruning.schedule_grid(task.name)) if name == "magnitude" else 1

  total = sum(
    args.seeds * len(lrs) * max(len(regs(p.task.name, n)), 1) * schedules(p.task, n)
    for n, (_, lrs) in grids.items()
    for p in plans
  )
  progress = Progress(total, disable=args.quiet or not is_main)
  summaries, sweeps, texts, fronts = [], [], [], {}
  for plan in plans:
    task = plan.task
    title = f"{task.name} on {plan.data.name}"

    def train(grids: dict[str, Any], plan=plan) -> list[dict[str, Any]]:
      return sweep(
        plan.task,
        plan.data,
        grids,
        seeds=args.seeds,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        stages=args.stages,
        decay=args.decay,
        solver=args.solver,
        val_fraction=args.val_fraction,
        progress=progress,
      )

    runs = train(grids)
    result = _selection.summarize(runs, list(grids))
    # The grid-extension rule, on the grids left at their defaults (a grid
    # given by flag is taken as given).
    extend = {n for n, (r, lrs) in grids.items() if default(n, r, lrs)}
    while todo := _grid_rule.pending(
      {n: v for n, v in result["calibrated"].items() if n in extend},
      runs,
      short=result["short"],
    ):
      for name, axis, value in todo:
        # The new value at every value of the method's other axis.
        mine = [r for r in runs if r["optimizer"] == name]
        tried_regs = tuple(sorted({r["reg_strength"] for r in mine}))
        tried_lrs = tuple(sorted({r["learning_rate"] for r in mine}))
        new = (
          ((value,), tried_lrs) if axis == "reg_strength" else (tried_regs, (value,))
        )
        progress.add(args.seeds * len(new[0]) * len(new[1]) * schedules(task, name))
        runs += train({name: new})
      result = _selection.summarize(runs, list(grids))
    fronts[title] = result
    texts.append(_sweep_report.table(title, result))
    texts.append(
      "Calibrated points (`_optimizers.CALIBRATED`, λ, η):\n\n```python\n"
      + "\n".join(_sweep_report.calibrated_lines(task.name, result))
      + "\n```"
    )
    methods = {}
    for name, point in result["calibrated"].items():
      methods[METHODS[name].label] = {
        "accuracy": point["test_accuracy"],
        "val_accuracy": point["val_accuracy"],
        "group_sparsity": point["group_sparsity"],
        "prox_group_sparsity": point["prox_group_sparsity"],
      }
    summaries.append({"task": task.name, "title": title, "methods": methods})
    sweeps.append(
      {
        "task": task.name,
        "title": title,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "grids": {
          n: {
            k: sorted({r[k] for r in runs if r["optimizer"] == n})
            for k in ("reg_strength", "learning_rate")
          }
          for n in grids
        },
        **result,
        "runs": runs,
      }
    )
  progress.close()
  return summaries, "\n\n".join(texts), fronts, sweeps
