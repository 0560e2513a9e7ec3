"""λ × η sweeps: accuracy–sparsity fronts and the calibrated hyperparameters.

``python -m optax_ramda.experiments --sweep`` trains every selected method on
a grid: for a regularized method every (λ, η) of its λ grid (log-spaced, wide
enough to go from no zero group to most of them) and its η grid (the paper's
η times :data:`LR_FACTORS`), for a dense reference every η. Every point runs
over several seeds with the main job's schedule and budget.

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

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from optax_ramda.experiments import _optimizers
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._optimizers import METHODS, Method
from optax_ramda.experiments._report import mean_std
from optax_ramda.experiments._tasks import Task
from optax_ramda.experiments._train import Trainer

# The share of the training examples held out for validation.
VAL_FRACTION = 0.2
# The η grid: the paper's η times these factors.
LR_FACTORS = (1 / 3, 1.0, 3.0, 10.0)
# The accuracy tolerances of the table, in accuracy units (0.5 and 1 point).
TOLERANCES = (0.005, 0.01)
# The tolerance that defines the calibrated point.
CALIBRATION_TOLERANCE = 0.01
# Default λ grids: per (task, method), the ends of a log-spaced grid of POINTS
# values, set from a one-seed pilot over λ = 1e-5 ... 0.3 at the paper's η so
# that each grid runs from (nearly) no zero group to most groups zero, with its
# points where the sparsity changes. Other tasks use DEFAULT_RANGE.
REG_RANGES: dict[tuple[str, str], tuple[float, float]] = {
  ("logreg", "ramda"): (1e-5, 3e-2),
  ("logreg", "rmda"): (1e-3, 5e-2),
  ("logreg", "proxgen"): (1e-4, 5e-2),
  ("logreg", "prox_sgd"): (1e-3, 5e-2),
  ("logreg", "proxssi"): (1e-4, 5e-2),
  ("mlp", "ramda"): (1e-5, 1e-2),
  ("mlp", "rmda"): (5e-4, 2e-2),
  ("mlp", "proxgen"): (3e-5, 1e-2),
  ("mlp", "prox_sgd"): (5e-4, 2e-2),
  ("mlp", "proxssi"): (3e-5, 1e-2),
  ("cnn", "ramda"): (3e-5, 1e-2),
  ("cnn", "rmda"): (5e-4, 3e-2),
  ("cnn", "proxgen"): (1e-4, 2e-2),
  ("cnn", "prox_sgd"): (5e-4, 3e-2),
  ("cnn", "proxssi"): (1e-4, 2e-2),
}
DEFAULT_RANGE = (1e-5, 3e-2)
POINTS = 8


def reg_grid(task: str, name: str) -> tuple[float, ...]:
  """The default λ grid of a regularized method on a task (log-spaced).

  Examples:
    >>> from optax_ramda.experiments._sweep import POINTS, reg_grid
    >>> grid = reg_grid("logreg", "ramda")
    >>> len(grid) == POINTS and grid[0] == 1e-5 and grid[-1] == 0.03
    True
  """
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


def validation_split(
  data: Dataset, fraction: float = VAL_FRACTION, seed: int = 0
) -> Dataset:
  """The training examples split in two: fit on the first part, score the second.

  The test split is left out entirely: the returned data set's ``x_test`` and
  ``y_test`` are the held-out *training* examples.

  Args:
    data: the task's data set.
    fraction: the share of the training examples held out, in (0, 1).
    seed: seeds the (fixed) permutation.

  Returns:
    A :class:`Dataset` named ``<name>-val`` whose training arrays are the
    remaining training examples and whose test arrays are the validation ones.

  Raises:
    ValueError: if either part would be empty.

  Examples:
    >>> from optax_ramda.experiments import digits
    >>> from optax_ramda.experiments._sweep import validation_split
    >>> val = validation_split(digits())
    >>> val.x_train.shape[0], val.x_test.shape[0]
    (1149, 288)
  """
  n = len(data.y_train)
  held = math.ceil(fraction * n)
  if not 0 < held < n:
    raise ValueError(
      f"a validation fraction of {fraction:g} of {n} training examples leaves "
      "one part empty"
    )
  order = np.random.default_rng(seed).permutation(n)
  val, fit = order[:held], order[held:]
  return data._replace(
    name=f"{data.name}-val",
    x_train=data.x_train[fit],
    y_train=data.y_train[fit],
    x_test=data.x_train[val],
    y_test=data.y_train[val],
  )


def _aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per (optimizer, λ, η): mean/std over seeds of every recorded number."""
  groups: dict[tuple[str, float, float], list[dict[str, Any]]] = {}
  for run in runs:
    key = (run["optimizer"], run["reg_strength"], run["learning_rate"])
    groups.setdefault(key, []).append(run)
  points = []
  for (name, reg, lr), members in groups.items():
    point: dict[str, Any] = {"optimizer": name, "reg_strength": reg}
    point["learning_rate"] = lr
    for metric in ("val_accuracy", "group_sparsity", "prox_group_sparsity"):
      point[metric] = mean_std([m[metric] for m in members])
    point["test_accuracy"] = mean_std([m["test_accuracy"] for m in members])
    points.append(point)
  return points


def _validation_view(point: dict[str, Any]) -> dict[str, Any]:
  """What selection may read of a point: no test accuracy."""
  keys = ("optimizer", "reg_strength", "learning_rate", "val_accuracy")
  return {k: point[k] for k in (*keys, "group_sparsity")}


def _score(point: dict[str, Any]) -> float:
  value = point["val_accuracy"]["mean"]
  return value if math.isfinite(value) else -math.inf


def best_dense(points: list[dict[str, Any]]) -> dict[str, Any] | None:
  """The dense reference point with the best mean validation accuracy."""
  dense = [
    _validation_view(p) for p in points if not METHODS[p["optimizer"]].regularized
  ]
  return max(dense, key=_score) if dense else None


def front(points: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
  """A method's front: per λ (increasing), its best-η point by validation.

  Returns:
    Validation views (no test accuracy) of the chosen points.
  """
  mine = [_validation_view(p) for p in points if p["optimizer"] == name]
  chosen = []
  for reg in sorted({p["reg_strength"] for p in mine}):
    chosen.append(max((p for p in mine if p["reg_strength"] == reg), key=_score))
  return chosen


def within(
  points: list[dict[str, Any]], name: str, target: float, tolerance: float
) -> dict[str, Any] | None:
  """The point of `name` with the largest mean group sparsity whose mean
  validation accuracy is at least ``target - tolerance`` (ties: the more
  accurate); None if no point qualifies."""
  mine = [_validation_view(p) for p in points if p["optimizer"] == name]
  ok = [p for p in mine if _score(p) >= target - tolerance - 1e-12]
  if not ok:
    return None
  return max(ok, key=lambda p: (p["group_sparsity"]["mean"], _score(p)))


def calibrated_point(
  points: list[dict[str, Any]], name: str, target: float | None
) -> dict[str, Any]:
  """The point the main job runs `name` at.

  A regularized method: its sparsest point within 1 point of the best dense
  reference's validation accuracy; if it has none, its sparsest point within
  1 point of its own best validation accuracy (what it can zero at nearly its
  best). A dense method: its most accurate point.
  """
  mine = [_validation_view(p) for p in points if p["optimizer"] == name]
  best = max(mine, key=_score)
  if not METHODS[name].regularized:
    return best
  for bar in (target, _score(best)):
    if bar is not None:
      chosen = within(points, name, bar, CALIBRATION_TOLERANCE)
      if chosen is not None:
        return chosen
  return best


def _full(points: list[dict[str, Any]], view: dict[str, Any] | None) -> Any:
  """The full point (with its test accuracy) behind a chosen validation view."""
  if view is None:
    return None
  key = (view["optimizer"], view["reg_strength"], view["learning_rate"])
  return next(
    p for p in points if (p["optimizer"], p["reg_strength"], p["learning_rate"]) == key
  )


def summarize(runs: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
  """Fronts, dense references, the table and the calibrated points of one task.

  Args:
    runs: one record per (optimizer, λ, η, seed) with ``val_accuracy``,
      ``group_sparsity``, ``prox_group_sparsity`` and ``test_accuracy``.
    names: the optimizers, in table order.

  Returns:
    ``{"points", "best_dense", "dense", "fronts", "table", "calibrated"}``;
    the chosen points carry their test accuracy, looked up after choosing.
  """
  points = _aggregate(runs)
  reference = best_dense(points)
  target = None if reference is None else reference["val_accuracy"]["mean"]
  dense, fronts, table, calibrated = {}, {}, {}, {}
  for name in names:
    if METHODS[name].regularized:
      fronts[name] = [_full(points, p) for p in front(points, name)]
      if target is not None:
        table[name] = {
          f"{100 * tol:g}": _full(points, within(points, name, target, tol))
          for tol in TOLERANCES
        }
    else:
      dense[name] = _full(points, calibrated_point(points, name, None))
    calibrated[name] = _full(points, calibrated_point(points, name, target))
  return {
    "points": points,
    "best_dense": _full(points, reference),
    "dense": dense,
    "fronts": fronts,
    "table": table,
    "calibrated": calibrated,
  }


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
  bar: Any = None,
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
    bar: a tqdm bar advanced once per run (None: none).
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
    settings = _optimizers.settings(
      method,
      total_steps=total_steps,
      stages=stages,
      decay=decay,
      reg_strength=regs[0],
      solver=solver,
      learning_rate=lrs[0],
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
          if bar is not None:
            bar.set_postfix_str(f"{task.name}/{name} λ={reg:g} η={lr:g} seed {seed}")
          result = trainer.run(
            seed, epochs, progress=False, every_epoch=False, prune=False
          )
          record = {
            "task": task.name,
            "optimizer": name,
            "reg_strength": reg,
            "learning_rate": lr,
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
          if bar is not None:
            bar.update()
  return records


def progress_bar(total: int, disable: bool) -> Any:
  """The one bar over a whole sweep (on stderr)."""
  return tqdm(total=total, desc="sweep", unit="run", disable=disable)


def _pct(stat: dict[str, Any] | None) -> str:
  if stat is None or not math.isfinite(stat["mean"]):
    return "-"
  return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def table(title: str, summary: dict[str, Any]) -> str:
  """The Markdown table of one task's sweep: per tolerance and method, the
  sparsest point within it, with λ, η, validation and test accuracy."""
  reference = summary["best_dense"]
  lines = [f"**{title}: λ × η sweep**", ""]
  if reference is None:
    lines.append("(no dense reference in the sweep: no tolerance table)")
  else:
    label = METHODS[reference["optimizer"]].label
    lines.append(
      f"Best dense reference: {label} at η = {reference['learning_rate']:g}, "
      f"validation accuracy {_pct(reference['val_accuracy'])} % "
      f"(test {_pct(reference['test_accuracy'])} %)."
    )
    lines += [
      "",
      "| method | within | λ | η | group sparsity (%) | val. accuracy (%) "
      "| test accuracy (%) |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, by_tolerance in summary["table"].items():
      for tolerance, point in by_tolerance.items():
        label = METHODS[name].label
        if point is None:
          best = max(
            (p for p in summary["points"] if p["optimizer"] == name),
            key=lambda p: p["val_accuracy"]["mean"],
          )
          lines.append(
            f"| {label} | {tolerance} pt | none | | (most accurate point: λ = "
            f"{best['reg_strength']:g}, η = {best['learning_rate']:g}, "
            f"{_pct(best['group_sparsity'])}) | {_pct(best['val_accuracy'])} "
            f"| {_pct(best['test_accuracy'])} |"
          )
          continue
        lines.append(
          f"| {label} | {tolerance} pt | {point['reg_strength']:g} "
          f"| {point['learning_rate']:g} | {_pct(point['group_sparsity'])} "
          f"| {_pct(point['val_accuracy'])} | {_pct(point['test_accuracy'])} |"
        )
  return "\n".join(lines)


def calibrated_lines(task: str, summary: dict[str, Any]) -> list[str]:
  """The calibrated points as entries of ``_optimizers.CALIBRATED``."""
  lines = []
  for name, point in summary["calibrated"].items():
    reg = point["reg_strength"] if METHODS[name].regularized else 0.0
    lines.append(
      f"  # paper η {METHODS[name].learning_rate:g}; validation accuracy "
      f"{100 * point['val_accuracy']['mean']:.2f} %, group sparsity "
      f"{100 * point['group_sparsity']['mean']:.2f} %"
    )
    lines.append(f'  ("{task}", "{name}"): ({reg:g}, {point["learning_rate"]:g}),')
  return lines


def plot(summaries: dict[str, dict[str, Any]], path: str) -> None:
  """Saves the fronts: per task, validation accuracy against group sparsity.

  Args:
    summaries: ``{task title: summarize(...)}``.
    path: the PNG file to write.

  One line per regularized method through its front in λ order (mean over seeds, with a
  ± one std band of accuracy and horizontal error bars of sparsity), every
  other (λ, η) point of the method as a faint dot; the dense references as
  horizontal dashed lines, and the best one's −0.5 and −1 point levels dotted.
  """
  from matplotlib.figure import Figure

  titles = list(summaries)
  fig = Figure(figsize=(5.2 * len(titles), 4.4), layout="constrained")
  axes = fig.subplots(1, len(titles), squeeze=False)[0]
  colors = {name: f"C{i}" for i, name in enumerate(METHODS)}
  for ax, title in zip(axes, titles, strict=True):
    summary = summaries[title]
    tops = []
    for p in summary["points"]:
      if METHODS[p["optimizer"]].regularized:
        ax.plot(
          100 * p["group_sparsity"]["mean"], 100 * p["val_accuracy"]["mean"],
          ".", color=colors[p["optimizer"]], alpha=0.3, ms=4,
        )  # fmt: skip
    for name, points in summary["fronts"].items():
      order = points  # In λ order: the path the method takes as λ grows.
      x = np.array([100 * p["group_sparsity"]["mean"] for p in order])
      xerr = np.array([100 * p["group_sparsity"]["std"] for p in order])
      y = np.array([100 * p["val_accuracy"]["mean"] for p in order])
      yerr = np.array([100 * p["val_accuracy"]["std"] for p in order])
      tops.append(np.max(y + yerr))
      color = colors[name]
      ax.errorbar(
        x, y, xerr=xerr, fmt="o-", ms=3.5, lw=1.4, capsize=2, color=color,
        label=METHODS[name].label,
      )  # fmt: skip
      ax.fill_between(x, y - yerr, y + yerr, color=color, alpha=0.15)
    for name, point in summary["dense"].items():
      value = 100 * point["val_accuracy"]["mean"]
      tops.append(value)
      ax.axhline(
        value, color=colors[name], ls="--", lw=1.1,
        label=f"{METHODS[name].label} (dense)",
      )  # fmt: skip
    reference = summary["best_dense"]
    if reference is not None:
      best = 100 * reference["val_accuracy"]["mean"]
      for drop in (0.5, 1.0):
        ax.axhline(best - drop, color="0.4", ls=":", lw=0.9)
      ax.set_ylim(max(0.0, best - 12), min(100.5, max(tops) + 1.5))
    ax.set(title=title, xlabel="group sparsity (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xlim(-3, 103)
    ax.grid(alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=8, fontsize=8)
  fig.savefig(path, dpi=110)
