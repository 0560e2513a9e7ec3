"""Tests of the calibration's selection rules (optax_ramda.experiments._selection).

Every rule is checked on hand-made records whose answer is known by reading
them: the tolerance boundary is inclusive (values chosen exactly
representable, so that ``<=`` and ``<`` differ), ties in structure go to the
better quality, and a diverged dense run sets no bar.
"""

import math

import pytest

from optax_ramda.experiments import _selection


def _record(name, reg, quality, structure, lm=True):
  record = {"optimizer": name, "reg_strength": reg, "learning_rate": 0.1}
  if lm:
    record.update(val_perplexity=quality, group_sparsity=structure)
  else:
    record.update(accuracy=quality, low_rank_level=structure)
  return record


def test_choose_includes_the_perplexity_boundary():
  # The bar is 10.0; within 50 %: perplexity ≤ 15.0 exactly.
  records = [
    _record("adamw", 0.0, 10.0, 0.0),
    _record("ramda", 1e-4, 12.0, 0.2),
    _record("ramda", 1e-3, 15.0, 0.6),  # On the boundary: qualifies, sparsest.
    _record("ramda", 1e-2, 15.5, 0.9),
  ]
  assert _selection.choose(records, "group_sparsity", 0.5)["ramda"] is records[2]


def test_choose_includes_the_accuracy_boundary():
  # The bar is 0.75; within 0.25: accuracy ≥ 0.5 exactly.
  records = [
    _record("sgd", 0.0, 0.75, 0.0, lm=False),
    _record("ramda", 1e-4, 0.6, 0.2, lm=False),
    _record("ramda", 1e-3, 0.5, 0.7, lm=False),  # On the boundary.
    _record("ramda", 1e-2, 0.4375, 0.9, lm=False),
  ]
  assert _selection.choose(records, "low_rank_level", 0.25)["ramda"] is records[2]


@pytest.mark.parametrize("lm", [True, False])
def test_choose_breaks_ties_in_structure_by_quality(lm):
  good, better = (7.1, 7.0) if lm else (0.70, 0.72)
  records = [
    _record("adamw", 0.0, 7.0 if lm else 0.72, 0.0, lm=lm),
    _record("ramda", 1e-4, good, 0.5, lm=lm),  # First in order ...
    _record("ramda", 3e-4, better, 0.5, lm=lm),  # ... but this one is better.
  ]
  key = "group_sparsity" if lm else "low_rank_level"
  assert _selection.choose(records, key, 0.05)["ramda"] is records[2]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_diverged_dense_run_sets_no_bar(bad):
  records = [
    _record("sgd", 0.0, -bad if math.isinf(bad) else bad, 0.0, lm=False),
    _record("sgd", 0.0, 0.75, 0.0, lm=False),  # The bar.
    _record("ramda", 1e-4, 0.6, 0.2, lm=False),
    _record("ramda", 1e-3, 0.5, 0.7, lm=False),  # Within 0.25 of 0.75.
  ]
  chosen = _selection.choose(records, "low_rank_level", 0.25)
  assert chosen["ramda"] is records[3]
  assert chosen["sgd"] is records[1]
  lm_records = [
    _record("adamw", 0.0, bad, 0.0),  # A diverged AdamW: perplexity NaN or inf.
    _record("adamw", 0.0, 10.0, 0.0),
    _record("ramda", 1e-4, 12.0, 0.2),
    _record("ramda", 1e-3, 15.0, 0.6),  # Within 50 % of 10.
  ]
  assert _selection.choose(lm_records, "group_sparsity", 0.5)["ramda"] is lm_records[3]


def _point(name, reg, lr, accuracy, sparsity):
  stat = lambda v: {"mean": v, "std": 0.0, "values": [v]}  # noqa: E731
  return {
    "optimizer": name,
    "reg_strength": reg,
    "learning_rate": lr,
    "val_accuracy": stat(accuracy),
    "group_sparsity": stat(sparsity),
  }


def test_within_takes_the_sparsest_point_and_breaks_ties_by_accuracy():
  points = [
    _point("ramda", 1e-4, 0.01, 0.95, 0.2),
    _point("ramda", 1e-3, 0.01, 0.93, 0.5),  # Tied in sparsity, first ...
    _point("ramda", 1e-3, 0.03, 0.94, 0.5),  # ... but more accurate.
    _point("ramda", 1e-2, 0.01, 0.90, 0.8),  # Too inaccurate.
  ]
  chosen = _selection.within(points, "ramda", 0.96, 0.03)
  assert (chosen["reg_strength"], chosen["learning_rate"]) == (1e-3, 0.03)
  assert _selection.within(points, "ramda", 0.99, 0.03) is None


def test_within_includes_its_boundary():
  points = [
    _point("ramda", 1e-4, 0.01, 0.75, 0.1),
    _point("ramda", 1e-3, 0.01, 0.5, 0.6),
  ]
  assert _selection.within(points, "ramda", 0.75, 0.25)["reg_strength"] == 1e-3


def test_calibrated_point_falls_back_to_the_methods_own_best():
  points = [
    _point("sgd", 0.0, 0.1, 0.97, 0.0),
    _point("sgd", 0.0, 0.3, 0.98, 0.0),  # The dense bar: 0.98.
    _point("rmda", 1e-4, 1.0, 0.90, 0.1),  # Its own best; nothing within 0.97.
    _point("rmda", 1e-3, 1.0, 0.895, 0.4),  # Within 1 point of 0.90: chosen.
    _point("rmda", 1e-2, 1.0, 0.85, 0.9),
    _point("ramda", 1e-4, 0.1, 0.975, 0.3),  # Within 1 point of the bar.
    _point("ramda", 1e-3, 0.1, 0.969, 0.6),  # Just outside: 0.969 < 0.97.
  ]
  target = 0.98
  assert _selection.calibrated_point(points, "sgd", None)["learning_rate"] == 0.3
  assert _selection.calibrated_point(points, "rmda", target)["reg_strength"] == 1e-3
  assert _selection.calibrated_point(points, "ramda", target)["reg_strength"] == 1e-4
