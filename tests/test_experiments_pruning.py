"""Tests for the magnitude-pruning baseline of the experiments and the grid rule.

Oracles: the weighted group sparsity of a trained logreg against the hand
count of the groups that the uniform allocation prunes (round(s · 64) of its
64 equal input groups), which also shows that a new target compiles a new
train step; the schedules' steps against the multiple-of-frequency rule of
``magnitude_pruning`` and hand-computed steps; the grid rule against
hand-built records.
"""

import numpy as np
import pytest

import optax_ramda as oxr
from optax_ramda.experiments import TASKS, digits
from optax_ramda.experiments._data import subset
from optax_ramda.experiments._grid_rule import pending
from optax_ramda.experiments._optimizers import METHODS, settings
from optax_ramda.experiments._pruning import SCHEDULES, schedule_grid
from optax_ramda.experiments._train import Trainer


@pytest.mark.parametrize("total", [7, 60, 510, 9999])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_steps_satisfy_magnitude_pruning(name, total):
  schedule = SCHEDULES[name]
  steps = schedule.steps(total)
  assert (steps.end_step - steps.begin_step) % steps.frequency == 0
  assert 0 <= steps.begin_step <= steps.end_step <= round(schedule.end * total)
  # The library accepts it (it checks the same rule at construction).
  oxr.magnitude_pruning(oxr.ramda(0.1), 0.5, regularizer=oxr.l1(), **steps._asdict())


def test_schedule_steps_by_hand():
  steps = SCHEDULES["global-1/3-x10"].steps(510)  # 170 steps, every 17.
  assert steps == (0, 170, 17, "global")
  assert schedule_grid("mlp") == tuple(SCHEDULES)


def test_magnitude_reaches_its_target_and_a_new_target_recompiles():
  task = TASKS["logreg"]
  data = task.prepared(subset(digits(), 256, 64))
  method = METHODS["magnitude"]
  config = settings(
    method,
    total_steps=4 * (256 // 32),
    stages=3,
    decay=0.1,
    reg_strength=0.5,
    solver="exact",
    learning_rate=0.01,
    schedule=SCHEDULES["uniform-1/3-x10"],
  )
  trainer = Trainer(task, data, method, config, 32)
  for target in (0.5, 0.25):
    trainer.set_hyperparameters(learning_rate=0.01, reg_strength=target)
    result = trainer.run(0, 4, every_epoch=False, prune=False)
    kernel = result.params["layers"][0]["kernel"]  # (64 inputs, 10 classes)
    zero_inputs = int(np.sum(~np.any(kernel != 0, axis=1)))
    assert zero_inputs == round(target * 64)
    assert result.final["group_sparsity"] == pytest.approx(target)


def _records(name, points):
  return [
    {"optimizer": name, "reg_strength": r, "learning_rate": lr} for r, lr in points
  ]


def test_grid_rule_extends_eta_up_and_down_and_the_strength():
  runs = _records("ramda", [(r, lr) for r in (1e-3, 1e-2) for lr in (0.01, 0.1)])
  # At the top η (10× the paper's 0.01) and the top λ: ×30, and λ × 10.
  top = {"optimizer": "ramda", "reg_strength": 1e-2, "learning_rate": 0.1}
  assert pending({"ramda": top}, runs) == [
    ("ramda", "learning_rate", 0.3),
    ("ramda", "reg_strength", 0.1),
  ]
  # At the bottom η (the paper's): ⅓ of it; an interior λ is left alone.
  low = {"optimizer": "ramda", "reg_strength": 1e-3, "learning_rate": 0.01}
  assert pending({"ramda": low}, runs) == [("ramda", "learning_rate", 0.00333)]
  # ×1000 is the last value up: nothing beyond it.
  runs += _records("ramda", [(1e-3, lr) for lr in (0.3, 1.0, 3.0, 10.0)])
  last = {"optimizer": "ramda", "reg_strength": 1e-3, "learning_rate": 10.0}
  assert pending({"ramda": last}, runs) == []
  # Short of the bar at the smallest λ: λ / 10; not otherwise.
  assert pending({"ramda": low}, runs, short=["ramda"])[-1] == (
    "ramda",
    "reg_strength",
    1e-4,
  )
  assert ("ramda", "reg_strength", 1e-4) not in pending({"ramda": low}, runs)


def test_grid_rule_extends_a_magnitude_target_by_halving_its_density():
  runs = _records("magnitude", [(s, 1e-3) for s in (0.8, 0.9)])
  runs += _records("magnitude", [(s, 3e-3) for s in (0.8, 0.9)])
  chosen = {"optimizer": "magnitude", "reg_strength": 0.9, "learning_rate": 1e-3}
  assert pending({"magnitude": chosen}, runs) == [
    ("magnitude", "learning_rate", 3.33e-4),
    ("magnitude", "reg_strength", 0.95),
  ]
