"""The grid-extension rule of every calibration: no choice at an end of its grid.

A calibration picks one point per method from a grid (the main job's
``--sweep``, the lm and nuclear searches of :mod:`~._calibrate`). A choice at
an end of the grid says only that the best value may lie beyond it, so the
grid grows there until the choice is interior, or the value beyond it was
tried and lost:

* η, per method (the dense references included): while the chosen η is the
  largest tried, the next of the paper's η × :data:`LR_UP` (×30, ×100, then
  ×300 and ×1000);
  while it is the smallest, the next of × :data:`LR_DOWN` (⅓, ⅒, 1/30);
* the strength, per regularized method: while the chosen point has the
  largest λ tried, the next λ of the grid's own ratio (for magnitude pruning,
  the next target sparsity, :func:`~._pruning.next_target`), up to
  :data:`MAX_REG` (:data:`MAX_TARGET`); and for a method *short of the bar*
  (no point within the tolerance of the dense reference, so that its choice
  is the fallback near its own best), while the chosen point has the smallest
  λ tried, λ / 10 down to :data:`MIN_REG`: whether a weaker regularizer
  reaches the bar is what tells the method's shortfall from the grid's.

The new values are run at every other value of the method's grid, and the
choice is made again over all the runs. :func:`pending` lists what the rule
would still add; the committed records leave nothing pending
(tests/test_grid_rule.py).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from optax_ramda.experiments import _pruning
from optax_ramda.experiments._optimizers import METHODS

# Factors of the paper's η tried beyond the grid, in the order tried (the last
# a cap: a choice there is reported, not extended).
LR_UP = (30.0, 100.0, 300.0, 1000.0)
LR_DOWN = (1 / 3, 1 / 10, 1 / 30)
# A λ beyond this zeroes every group of every task here; a target beyond this
# leaves almost nothing.
MAX_REG = 1.0
MAX_TARGET = 0.99
MIN_REG = 1e-6


def lr_value(name: str, factor: float) -> float:
  """The paper's η of `name` times `factor`, to 3 significant digits (as the
  grids).

  Examples:
    >>> from optax_ramda.experiments._grid_rule import lr_value
    >>> lr_value("ramda", 30.0), lr_value("adamw", 1 / 30)
    (0.3, 3.33e-05)
  """
  return float(f"{METHODS[name].learning_rate * factor:.3g}")


def next_reg(name: str, tried: list[float]) -> float | None:
  """The strength one step beyond the largest of `tried` (None: at the cap).

  Examples:
    >>> from optax_ramda.experiments._grid_rule import next_reg
    >>> next_reg("ramda", [1e-3, 3e-3])
    0.009
    >>> next_reg("magnitude", [0.8, 0.9])
    0.95
  """
  top = max(tried)
  if name == "magnitude":
    value = _pruning.next_target(top)
    return value if value <= MAX_TARGET else None
  below = [r for r in tried if 0 < r < top]
  if not below:
    return None
  value = float(f"{top * top / max(below):.3g}")
  return value if value <= MAX_REG else None


def pending(
  chosen: dict[str, dict[str, Any]],
  records: list[dict[str, Any]],
  short: Collection[str] = (),
) -> list[tuple[str, str, float]]:
  """What the rule would still add: (optimizer, "learning_rate" or
  "reg_strength", value) per choice that sits at an end of what was tried.

  Args:
    chosen: the chosen point (or record) per optimizer, with
      ``learning_rate`` and ``reg_strength``.
    records: every run so far, with ``optimizer``, ``learning_rate`` and
      ``reg_strength``.
    short: the regularized methods short of the bar.

  Examples:
    >>> from optax_ramda.experiments._grid_rule import pending
    >>> runs = [{"optimizer": "adamw", "reg_strength": 0.0, "learning_rate": lr}
    ...         for lr in (0.001, 0.01)]
    >>> pending({"adamw": runs[1]}, runs)  # at the top: try ×30
    [('adamw', 'learning_rate', 0.03)]
  """
  out = []
  for name, point in chosen.items():
    mine = [r for r in records if r["optimizer"] == name]
    lrs = sorted({r["learning_rate"] for r in mine})
    lr = point["learning_rate"]
    if lr == lrs[-1]:
      up = [v for v in (lr_value(name, f) for f in LR_UP) if v > lr]
      if up:
        out.append((name, "learning_rate", up[0]))
    if lr == lrs[0]:
      down = [v for v in (lr_value(name, f) for f in LR_DOWN) if v < lr]
      if down:
        out.append((name, "learning_rate", down[0]))
    if METHODS[name].regularized:
      regs = sorted({r["reg_strength"] for r in mine})
      if point["reg_strength"] == regs[-1]:
        value = next_reg(name, regs)
        if value is not None:
          out.append((name, "reg_strength", value))
      low = float(f"{regs[0] / 10:.3g}")
      if name in short and point["reg_strength"] == regs[0] and low >= MIN_REG:
        out.append((name, "reg_strength", low))
  return out
