"""Tests for the validation searches behind the calibrated points.

Oracles: the committed records (docs/calibration/*.jsonl) against the
constants the runner uses, through the selection rule; the grid-extension
rule against the same records (nothing left pending); the rule's pieces
against hand-built records.
"""

import json
import math
import pathlib

import numpy as np
import pytest

from optax_ramda.experiments import _calibrate, _grid_rule, _lm, _selection, digits
from optax_ramda.experiments._optimizers import CALIBRATED, METHODS
from optax_ramda.experiments._pruning import CALIBRATED_SCHEDULES

RECORDS = pathlib.Path(__file__).parent.parent / "docs" / "calibration"


def _record(name, reg, lr, quality, structure, lm=True):
  record = {"optimizer": name, "reg_strength": reg, "learning_rate": lr, "seconds": 1.0}
  if lm:
    record.update(val_perplexity=quality, group_sparsity=structure)
  else:
    record.update(accuracy=quality, low_rank_level=structure)
  return record


def test_choose_takes_the_most_structure_within_the_bar_else_the_best_quality():
  records = [
    _record("adamw", 0.0, 1e-3, 10.0, 0.0),
    _record("adamw", 0.0, 1e-2, 7.0, 0.0),  # The bar: 7.0, within 2 %: ≤ 7.14.
    _record("ramda", 1e-4, 1e-2, 7.1, 0.3),
    _record("ramda", 3e-4, 1e-2, 7.14, 0.5),  # Most sparsity within the bar.
    _record("ramda", 1e-3, 1e-2, 9.0, 0.9),
    _record("rmda", 1e-4, 1.0, 9.0, 0.0),  # None within: the lowest perplexity.
    _record("rmda", 1e-3, 1.0, 12.0, 0.8),
    _record("rmda", 3e-3, 1.0, math.nan, 1.0),  # Diverged: never chosen.
  ]
  chosen = _calibrate.choose(records, "group_sparsity", 0.02)
  assert chosen["adamw"] is records[1]
  assert chosen["ramda"] is records[3]
  assert chosen["rmda"] is records[5]


def test_choose_for_accuracy_uses_an_absolute_tolerance():
  records = [
    _record("sgd", 0.0, 0.1, 0.99, 0.0, lm=False),
    _record("ramda", 1e-3, 1e-2, 0.985, 0.4, lm=False),
    _record("ramda", 1e-2, 1e-2, 0.98, 0.9, lm=False),  # 0.99 − 0.01: still within.
    _record("ramda", 3e-2, 1e-2, 0.979, 0.95, lm=False),
  ]
  chosen = _calibrate.choose(records, "low_rank_level", 0.01)
  assert chosen["ramda"] is records[2]


def test_markdown_table_bolds_the_chosen_rows():
  records = [
    _record("adamw", 0.0, 1e-2, 7.0, 0.0),
    _record("ramda", 1e-3, 1e-2, 9.0, 0.9),
    _record("ramda", 1e-4, 1e-2, 7.1, 0.3),
  ]
  lines = _calibrate.markdown_table(records, "group_sparsity", 0.02).splitlines()
  assert len(lines) == 2 + len(records)
  # Sorted by method, then η, then λ; the chosen λ = 1e-4 row is bold.
  assert lines[3].startswith("| RAMDA | 0.0001 | 0.01 (0.01) | **7.10** | **30.0** |")
  assert "**" not in lines[4]


@pytest.mark.parametrize(
  "setting, table, key, tol",
  [
    ("lm", _lm.CALIBRATED, "group_sparsity", 0.02),
    ("nuclear", _lm.NUCLEAR_CALIBRATED, "low_rank_level", 0.01),
  ],
)
def test_calibrated_points_follow_from_the_committed_records(setting, table, key, tol):
  # The constants the runner uses are what the rule picks from the search's
  # records (written by `python -m optax_ramda.experiments._calibrate`).
  with open(RECORDS / f"{setting}.jsonl") as f:
    records = [json.loads(line) for line in f if line.strip()]
  assert {r["setting"] for r in records} == {setting}
  chosen = _calibrate.choose(records, key, tol)
  points = {name: (r["reg_strength"], r["learning_rate"]) for name, r in chosen.items()}
  expected = {name: point for (_, name), point in table.items()}
  assert points.keys() == expected.keys()
  for name, (reg, lr) in points.items():
    assert (reg, lr) == pytest.approx(expected[name], rel=1e-9), name


def _committed(setting):
  with open(RECORDS / f"{setting}.jsonl") as f:
    return [json.loads(line) for line in f if line.strip()]


MAIN_TASKS = ("logreg", "mlp", "cnn")


@pytest.mark.parametrize("task", MAIN_TASKS)
def test_main_job_points_follow_from_the_committed_records(task):
  # CALIBRATED (and magnitude pruning's schedule) is exactly what the sweep's
  # rule picks from the records of `--sweep` (docs/calibration.md).
  runs = [r for r in _committed("digits") if r["setting"] == task]
  names = list(dict.fromkeys(r["optimizer"] for r in runs))
  assert set(names) == set(METHODS)
  chosen = _selection.summarize(runs, names)["calibrated"]
  expected = {n: point for (t, n), point in CALIBRATED.items() if t == task}
  assert expected.keys() == chosen.keys()
  for name, point in chosen.items():
    reg = point["reg_strength"] if METHODS[name].regularized else 0.0
    assert (reg, point["learning_rate"]) == pytest.approx(expected[name], rel=1e-9)
  assert CALIBRATED_SCHEDULES[task] == chosen["magnitude"]["schedule"]


@pytest.mark.parametrize("setting", ["lm", "nuclear", *MAIN_TASKS])
def test_no_choice_sits_at_an_end_of_its_grid_unless_the_rule_stopped(setting):
  # The done-when: every value the grid-extension rule would add
  # beyond a choice at an end was tried (and lost), or lies past its cap.
  if setting in MAIN_TASKS:
    runs = [r for r in _committed("digits") if r["setting"] == setting]
    names = list(dict.fromkeys(r["optimizer"] for r in runs))
    result = _selection.summarize(runs, names)
    chosen, short = result["calibrated"], result["short"]
  else:
    runs = _committed(setting)
    key, tol = _calibrate.SEARCHES[setting].key, _calibrate.SEARCHES[setting].tol
    chosen = _calibrate.choose(runs, key, tol)
    short = _selection.short_of_bar(runs, key, tol)
  assert _grid_rule.pending(chosen, runs, short) == []


def test_select_with_tol_zero_is_a_zero_tolerance(tmp_path, capsys):
  # `--tol 0` must not fall back to the default tolerance (0.01 for nuclear).
  records = [
    {**_record("sgd", 0.0, 0.1, 0.9, 0.0, lm=False), "setting": "nuclear"},
    {**_record("ramda", 1e-3, 0.01, 0.9, 0.3, lm=False), "setting": "nuclear"},
    {**_record("ramda", 1e-2, 0.01, 0.895, 0.8, lm=False), "setting": "nuclear"},
  ]
  path = tmp_path / "records.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  assert _calibrate.main(["nuclear", "--select", "--tol", "0", "--out", str(path)]) == 0
  assert '("mlp", "ramda"): (0.001, 0.01)' in capsys.readouterr().out
  assert _calibrate.main(["nuclear", "--select", "--out", str(path)]) == 0
  assert '("mlp", "ramda"): (0.01, 0.01)' in capsys.readouterr().out


def test_nuclear_search_scores_on_the_training_examples_never_the_test_split():
  data, test = _calibrate.search_data(_calibrate.SEARCHES["nuclear"])
  full = digits()
  n_val = math.ceil(0.2 * len(full.y_train))
  train = full.x_train.reshape(len(full.y_train), -1)
  # Scored on the last 20 % of the training images, trained on the rest.
  np.testing.assert_array_equal(data.x_test, train[-n_val:])
  np.testing.assert_array_equal(data.y_test, full.y_train[-n_val:])
  np.testing.assert_array_equal(data.x_train, train[:-n_val])
  assert test is None
  test_rows = set(map(bytes, full.x_test.reshape(len(full.y_test), -1)))
  train_rows = set(map(bytes, train))
  # No scored image is a test image (unless it also appears among the training ones).
  assert not (set(map(bytes, data.x_test)) & test_rows) - train_rows


def test_a_search_without_the_dense_reference_has_no_bar_and_finishes(
  tmp_path, monkeypatch, capsys
):
  # `--optimizer ramda` alone: no AdamW run sets the bar. The search used to end
  # in `min() arg is an empty sequence` (short_of_bar); it now says there is no
  # bar and prints each method's best-quality point.
  class FakeTrainer:
    def __init__(self, task, data, method, settings, *args, **kwargs):
      self.reg = settings.reg_strength

    def run(self, seed, epochs):
      ppl = {1e-4: 7.0, 1e-3: 8.0}[self.reg]
      final = {"val_perplexity": ppl, "group_sparsity": 10 * self.reg}
      return type("Result", (), {"final": final})()

  data = type("Data", (), {"y_train": np.zeros(64)})()
  monkeypatch.setattr(_calibrate, "search_data", lambda search: (data, None))
  monkeypatch.setattr(_calibrate, "Trainer", FakeTrainer)
  path = tmp_path / "records.jsonl"
  argv = ["lm", "--optimizer", "ramda", "--reg", "1e-4", "1e-3", "--lr-factors", "1"]
  assert _calibrate.main([*argv, "--out", str(path)]) == 0
  out = capsys.readouterr().out
  assert "no dense reference among the runs" in out
  assert "grid rule:" not in out  # The rule's requests.
  assert '("lm", "ramda"): (0.0001, 0.01),' in out
  # The same from the records, and with only a diverged dense run.
  assert _calibrate.main(["lm", "--select", "--out", str(path)]) == 0
  assert "no dense reference among the runs" in capsys.readouterr().out
  records = [json.loads(line) for line in path.read_text().splitlines()]
  diverged = _record("adamw", 0.0, 1e-3, math.inf, 0.0)
  assert _selection.short_of_bar([diverged, *records], "group_sparsity", 0.02) == []
  chosen = _selection.choose([diverged, *records], "group_sparsity", 0.02)
  assert chosen["ramda"] == records[0]
