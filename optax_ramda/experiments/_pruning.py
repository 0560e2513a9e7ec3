"""The magnitude-pruning baseline of the comparison: its schedules and their grid.

``--optimizer magnitude`` ("Magnitude" in the tables) is AdamW (the dense
reference's settings) wrapped in :func:`optax_ramda.magnitude_pruning` over
the same spec tree as the regularized methods (the paper's input groups), so
its group sparsity is measured exactly as theirs. What a regularized method
sweeps as λ, it sweeps as its *target sparsity* (the ``reg_strength`` slot of
its settings and records): the selection rule of the sweep is then the same
for every method, the sparsest point whose mean validation accuracy is within
1 point of the best dense reference's. Its schedule is a third axis of its
grid: a :class:`Schedule` is where the cubic ramp begins and ends (fractions
of the run, so that it scales with the budget), how many mask updates it takes
(which sets the frequency), and how the sparsity is allocated to the layers.
The sweep tries every schedule of :func:`schedule_grid` at every (target, η),
and the chosen one is recorded in :data:`CALIBRATED_SCHEDULES`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

# The target sparsities the sweep tries (the λ grid of the other methods), and
# how it extends one whose sparsest qualifying target is the largest: halving
# the density, 0.9 → 0.95 → 0.975.
TARGETS = (0.2, 0.35, 0.5, 0.65, 0.8, 0.9)
# The target where no calibrated one applies (another data set, --data).
DEFAULT_TARGET = 0.5


def next_target(target: float) -> float:
  """The target one step beyond `target`: half its density.

  Examples:
    >>> from optax_ramda.experiments._pruning import next_target
    >>> next_target(0.9)
    0.95
  """
  return float(f"{1 - (1 - target) / 2:.6g}")


class Steps(NamedTuple):
  """A schedule resolved for one run: the arguments of ``magnitude_pruning``."""

  begin_step: int
  end_step: int
  frequency: int
  allocation: str


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Where and how the pruning ramp runs, independent of the run's length.

  Attributes:
    name: its name in records and tables.
    begin: the first mask update, as a fraction of the run's steps.
    end: the last mask update (where the target is reached), as a fraction.
    updates: the mask updates after the first; the frequency is the steps
      between them, ``⌊(end − begin) / updates⌋`` steps (at least 1), and the
      last update moves back to ``begin + updates · frequency`` so that the
      span is a multiple of it, as ``magnitude_pruning`` requires (a run
      shorter than `updates` steps updates every step, up to `end`).
    allocation: ``"uniform"``, ``"erk"`` or ``"global"``
      (see :func:`optax_ramda.magnitude_pruning`).
  """

  name: str
  begin: float
  end: float
  updates: int
  allocation: str

  def steps(self, total_steps: int) -> Steps:
    """The schedule in steps of a run of `total_steps`.

    Examples:
      >>> from optax_ramda.experiments._pruning import SCHEDULES
      >>> SCHEDULES["uniform-2/3-x40"].steps(510)
      Steps(begin_step=0, end_step=320, frequency=8, allocation='uniform')
    """
    begin = round(self.begin * total_steps)
    span = round(self.end * total_steps) - begin
    frequency = max(1, span // self.updates)
    updates = min(self.updates, span // frequency)  # Fewer in a very short run.
    return Steps(begin, begin + updates * frequency, frequency, self.allocation)


def _schedules() -> dict[str, Schedule]:
  # With the main job's three stages: pruned by the end of the first stage (two
  # stages to recover) or of the second (the final stage recovers), in 10
  # updates or in 40 (a higher frequency); per layer at the same sparsity, or
  # ranked across layers by norm / √(group size).
  out = {}
  for allocation in ("uniform", "global"):
    for end, updates in ((1 / 3, 10), (2 / 3, 10), (2 / 3, 40)):
      name = f"{allocation}-{'1/3' if end < 0.5 else '2/3'}-x{updates}"
      out[name] = Schedule(name, 0.0, end, updates, allocation)
  return out


SCHEDULES: dict[str, Schedule] = _schedules()
# Where no calibrated schedule applies (another data set, --data, a flag's λ).
DEFAULT_SCHEDULE = "uniform-2/3-x10"


def schedule_grid(task: str) -> tuple[str, ...]:
  """The schedules the sweep tries on `task`.

  A single regularized layer (logreg) has nothing to allocate between: the
  three allocations are the same schedule there, so only ``uniform`` runs.

  Examples:
    >>> from optax_ramda.experiments._pruning import schedule_grid
    >>> schedule_grid("logreg")
    ('uniform-1/3-x10', 'uniform-2/3-x10', 'uniform-2/3-x40')
  """
  single = task == "logreg"
  return tuple(
    n for n, s in SCHEDULES.items() if not single or s.allocation == "uniform"
  )


# The schedule the main job runs magnitude pruning with, per task (from the
# records in docs/calibration/digits.jsonl, with CALIBRATED's target and η).
CALIBRATED_SCHEDULES: dict[str, str] = {
  "logreg": "uniform-2/3-x10",
  "mlp": "global-2/3-x10",
  "cnn": "global-2/3-x10",
}


def calibrated_schedule(task: str, calibrated: bool) -> Schedule:
  """The schedule of a run on `task`: its calibrated one, else the default."""
  name = CALIBRATED_SCHEDULES.get(task, DEFAULT_SCHEDULE) if calibrated else None
  return SCHEDULES[name or DEFAULT_SCHEDULE]
