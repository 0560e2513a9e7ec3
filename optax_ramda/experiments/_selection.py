"""The selection rules of the calibration: which (λ, η) each method runs at.

Two rules, each applied to validation numbers only (never to a test split):

* the main job's (:func:`summarize`, over a λ × η sweep's runs, mean over
  seeds; magnitude pruning's target sparsity is its λ, and its schedule a
  third axis): the *front* of a method is, per λ, its best-η point; its
  *calibrated point* is its sparsest point whose mean validation accuracy is
  within :data:`CALIBRATION_TOLERANCE` of the best dense reference's (ties:
  the more accurate), else its sparsest point within that tolerance of its own
  best (:func:`calibrated_point`, :func:`within`);
* the lm and nuclear searches' (:func:`choose`, one seed per point): the
  dense reference's best validation quality sets the bar; each regularized
  method gets its point with the most structure (group sparsity or low-rank
  level; ties: the better quality) whose quality is within the tolerance of
  the bar (perplexity at most ``1 + tol`` times it, or accuracy at most
  ``tol`` below it, boundaries included), else its best-quality point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._report import mean_std

# The accuracy tolerances of the sweep's table, in accuracy units (0.5 and 1 point).
TOLERANCES = (0.005, 0.01)
# The tolerance that defines the calibrated point.
CALIBRATION_TOLERANCE = 0.01


def _key(run: dict[str, Any]) -> tuple[Any, ...]:
  """A grid point: optimizer, λ, η and (magnitude pruning's) schedule."""
  return (
    run["optimizer"],
    run["reg_strength"],
    run["learning_rate"],
    run.get("schedule"),
  )


def _aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per (optimizer, λ, η): mean/std over seeds of every recorded number."""
  groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
  for run in runs:
    groups.setdefault(_key(run), []).append(run)
  points = []
  for (name, reg, lr, schedule), members in groups.items():
    point: dict[str, Any] = {"optimizer": name, "reg_strength": reg}
    point["learning_rate"] = lr
    point["schedule"] = schedule
    for metric in ("val_accuracy", "group_sparsity", "prox_group_sparsity"):
      point[metric] = mean_std([m[metric] for m in members])
    point["test_accuracy"] = mean_std([m["test_accuracy"] for m in members])
    points.append(point)
  return points


def _validation_view(point: dict[str, Any]) -> dict[str, Any]:
  """What selection may read of a point: no test accuracy."""
  keys = ("optimizer", "reg_strength", "learning_rate", "val_accuracy")
  return {k: point[k] for k in (*keys, "group_sparsity")} | {
    "schedule": point.get("schedule")
  }


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
  return next(p for p in points if _key(p) == _key(view))


def summarize(runs: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
  """Fronts, dense references, the table and the calibrated points of one task.

  Args:
    runs: one record per (optimizer, λ, η, seed) with ``val_accuracy``,
      ``group_sparsity``, ``prox_group_sparsity`` and ``test_accuracy``.
    names: the optimizers, in table order.

  Returns:
    ``{"points", "short", "best_dense", "dense", "fronts", "table",
    "calibrated"}`` ("short": the regularized methods with no point within
    the tolerance of the best dense reference); the chosen points carry their
    test accuracy, looked up after choosing.
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
  short = [
    n
    for n in names
    if METHODS[n].regularized
    and target is not None
    and _score(calibrated[n]) < target - CALIBRATION_TOLERANCE - 1e-12
  ]
  return {
    "points": points,
    "short": short,
    "best_dense": _full(points, reference),
    "dense": dense,
    "fronts": fronts,
    "table": table,
    "calibrated": calibrated,
  }


def choose(records: list[dict[str, Any]], key: str, tol: float) -> dict[str, Any]:
  """The chosen record per method of a search's records (the module doc's rule).

  Args:
    records: one per run, with ``optimizer``, the structure `key` and the
      quality (``val_perplexity`` for an lm search by group sparsity, else
      ``accuracy``, of the validation split).
    key: the structure to maximize (``group_sparsity`` or ``low_rank_level``).
    tol: the tolerance (relative for perplexity, absolute for accuracy).

  Returns:
    ``{optimizer: record}``; a method whose runs all diverged is left out.
  """
  lm = key == "group_sparsity" and "val_perplexity" in records[0]

  def quality(r):  # Larger is better.
    return -r["val_perplexity"] if lm else r["accuracy"]

  # A diverged dense run (NaN or inf) sets no bar: max() would return a NaN
  # that came first, and every comparison with it is False.
  dense = [
    r
    for r in records
    if not METHODS[r["optimizer"]].regularized and np.isfinite(quality(r))
  ]
  bar = max(quality(r) for r in dense) if dense else None
  chosen = {}
  for name in dict.fromkeys(r["optimizer"] for r in records):
    mine = [r for r in records if r["optimizer"] == name and np.isfinite(quality(r))]
    if not mine:
      continue
    if bar is None or not METHODS[name].regularized:
      best = max(mine, key=quality)
    else:
      ok = [
        r
        for r in mine
        if (
          r["val_perplexity"] <= (1 + tol) * -bar if lm else r["accuracy"] >= bar - tol
        )
      ]
      best = (
        max(ok, key=lambda r: (r[key], quality(r))) if ok else max(mine, key=quality)
      )
    chosen[name] = best
  return chosen


def has_bar(records: list[dict[str, Any]], key: str) -> bool:
  """Whether a search's records hold a dense reference run that did not
  diverge: the bar of :func:`choose` (without one, it gives every method its
  best-quality run)."""
  lm = key == "group_sparsity" and "val_perplexity" in records[0]
  return any(
    not METHODS[r["optimizer"]].regularized
    and np.isfinite(r["val_perplexity"] if lm else r["accuracy"])
    for r in records
  )


def short_of_bar(records: list[dict[str, Any]], key: str, tol: float) -> list[str]:
  """The regularized methods of a search with no run within the tolerance of
  the dense reference's best (:func:`choose` gave them their best-quality run).

  Without a bar (no dense reference among the records, or only diverged ones)
  no method is short of it: the list is empty.
  """
  if not has_bar(records, key):
    return []
  lm = key == "group_sparsity" and "val_perplexity" in records[0]
  dense = [r for r in records if not METHODS[r["optimizer"]].regularized]
  if lm:
    best = min(r["val_perplexity"] for r in dense if np.isfinite(r["val_perplexity"]))
    ok = lambda r: r["val_perplexity"] <= (1 + tol) * best  # noqa: E731
  else:
    best = max(r["accuracy"] for r in dense if np.isfinite(r["accuracy"]))
    ok = lambda r: r["accuracy"] >= best - tol  # noqa: E731
  names = dict.fromkeys(r["optimizer"] for r in records)
  return [
    n
    for n in names
    if METHODS[n].regularized and not any(ok(r) for r in records if r["optimizer"] == n)
  ]
