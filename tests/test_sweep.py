"""Tests for the λ × η sweep, the calibrated default and ``--protocol paper``.

Oracles: the validation split against the training rows it must partition
(and the test rows it must not touch); selection against hand-built points
whose validation and test rankings disagree, and end to end against a second
sweep whose test labels are corrupted (the choices and validation numbers must
not move); the fronts against monotonicity in λ on a tiny budget; the group
switch counts against NumPy on hand-made masks and against the change in the
number of zero groups (a lower bound with the same parity); the paper
protocol's settings against the paper's numbers; error paths against
argparse's exit status 2 and a message naming the problem.
"""

import contextlib
import io
import itertools
import json

import numpy as np
import pytest

import optax_ramda as oxr
from optax_ramda.experiments import (
  TASKS,
  _optimizers,
  _paper,
  _selection,
  _sweep,
  digits,
  main,
)
from optax_ramda.experiments._data import subset
from optax_ramda.experiments._optimizers import METHODS, milestones
from optax_ramda.experiments._train import final_stage_switches, switches, zero_groups

EPOCHS, SEEDS = 3, 2


@pytest.fixture(scope="module")
def small():
  """Digits as vectors, 400 training and 200 test examples."""
  return TASKS["logreg"].prepared(subset(digits(), 400, 200))


def _sweep_runs(data, grids):
  return _sweep.sweep(
    TASKS["logreg"],
    data,
    grids,
    seeds=SEEDS,
    epochs=EPOCHS,
    batch_size=20,
    stages=1,
    decay=0.1,
    solver="pg",
  )


GRIDS = {
  "ramda": ((0.0, 1e-3, 1e-2, 5e-2), (0.01, 0.03)),
  "prox_sgd": ((0.0, 1e-2, 1e-1, 1.0), (0.1,)),
  "sgd": ((), (0.03, 0.1)),
}


@pytest.fixture(scope="module")
def runs(small):
  return _sweep_runs(small, GRIDS)


def test_validation_split_partitions_the_training_rows_only(small):
  val = _sweep.validation_split(small, 0.25)
  assert len(val.y_train) == 300 and len(val.y_test) == 100
  rows = np.concatenate([val.x_train, val.x_test])
  # Together the two parts are exactly the training rows, each once.
  as_set = lambda x: sorted(map(bytes, x))  # noqa: E731
  assert as_set(rows) == as_set(small.x_train)
  assert not set(map(bytes, val.x_test)) & set(map(bytes, small.x_test))
  labels = np.concatenate([val.y_train, val.y_test])
  assert sorted(labels) == sorted(small.y_train)
  with pytest.raises(ValueError, match="leaves one part empty"):
    _sweep.validation_split(small, 0.9999)


def test_sweep_records_every_point_and_fronts_grow_with_lambda(runs):
  expected = SEEDS * (4 * 2 + 4 * 1 + 2)
  assert len(runs) == expected
  summary = _selection.summarize(runs, list(GRIDS))
  for name in ("ramda", "prox_sgd"):
    front = summary["fronts"][name]
    assert [p["reg_strength"] for p in front] == list(GRIDS[name][0])
    sparsity = [p["group_sparsity"]["mean"] for p in front]
    assert sparsity[0] == 0.0  # λ = 0 zeroes no group.
    assert all(b >= a for a, b in itertools.pairwise(sparsity))
    assert sparsity[-1] > 0.3  # The largest λ zeroes many groups.
    for p in front:  # Each λ's η is the most accurate on validation.
      same = [
        q
        for q in summary["points"]
        if (q["optimizer"], q["reg_strength"]) == (name, p["reg_strength"])
      ]
      assert p["val_accuracy"]["mean"] == max(q["val_accuracy"]["mean"] for q in same)
  # Per-seed numbers agree with the aggregates.
  point = summary["fronts"]["ramda"][-1]
  values = [
    r["group_sparsity"]
    for r in runs
    if (r["optimizer"], r["reg_strength"], r["learning_rate"])
    == ("ramda", point["reg_strength"], point["learning_rate"])
  ]
  assert point["group_sparsity"]["values"] == values
  assert point["group_sparsity"]["mean"] == pytest.approx(np.mean(values))


def _points(rows):
  """Aggregated points from (optimizer, λ, η, val, sparsity, test) rows."""
  runs = []
  for name, reg, lr, val, sparsity, test in rows:
    runs.append(
      {
        "optimizer": name,
        "reg_strength": reg,
        "learning_rate": lr,
        "val_accuracy": val,
        "group_sparsity": sparsity,
        "prox_group_sparsity": sparsity,
        "test_accuracy": test,
      }
    )
  return runs


def test_selection_reads_validation_not_test_accuracy():
  # Test accuracy ranks every choice the other way round.
  runs = _points(
    [
      ("sgd", 0.0, 0.1, 0.95, 0.0, 0.50),
      ("sgd", 0.0, 0.3, 0.90, 0.0, 0.99),
      ("ramda", 1e-3, 0.01, 0.948, 0.20, 0.10),
      ("ramda", 1e-3, 0.03, 0.930, 0.25, 0.99),
      ("ramda", 1e-2, 0.01, 0.942, 0.50, 0.10),
      ("ramda", 1e-2, 0.03, 0.920, 0.60, 0.99),
      ("ramda", 1e-1, 0.01, 0.80, 0.90, 0.99),
    ]
  )
  # ProxSGD never gets within 1 point of the dense 0.95: its calibrated point
  # is its sparsest within 1 point of its own best (0.90).
  runs += _points(
    [
      ("prox_sgd", 1e-3, 0.1, 0.900, 0.00, 0.99),
      ("prox_sgd", 1e-2, 0.1, 0.892, 0.30, 0.10),
      ("prox_sgd", 1e-1, 0.1, 0.850, 0.70, 0.99),
    ]
  )
  summary = _selection.summarize(runs, ["ramda", "prox_sgd", "sgd"])
  assert summary["table"]["prox_sgd"] == {"0.5": None, "1": None}
  fallback = summary["calibrated"]["prox_sgd"]
  assert (fallback["reg_strength"], fallback["learning_rate"]) == (1e-2, 0.1)
  assert summary["best_dense"]["learning_rate"] == 0.1
  assert summary["dense"]["sgd"]["learning_rate"] == 0.1
  front = [(p["reg_strength"], p["learning_rate"]) for p in summary["fronts"]["ramda"]]
  assert front == [(1e-3, 0.01), (1e-2, 0.01), (1e-1, 0.01)]
  half, one = summary["table"]["ramda"]["0.5"], summary["table"]["ramda"]["1"]
  assert (half["reg_strength"], half["learning_rate"]) == (1e-3, 0.01)
  assert (one["reg_strength"], one["learning_rate"]) == (1e-2, 0.01)
  calibrated = summary["calibrated"]["ramda"]
  assert (calibrated["reg_strength"], calibrated["learning_rate"]) == (1e-2, 0.01)
  # The chosen points report their test accuracy, looked up after choosing.
  assert calibrated["test_accuracy"]["mean"] == 0.10
  # Nothing that chooses reads the test accuracy: NaN there changes nothing.
  poisoned = [dict(r, test_accuracy=float("nan")) for r in runs]
  again = _selection.summarize(poisoned, ["ramda", "prox_sgd", "sgd"])
  for key in ("best_dense", "calibrated", "fronts", "table"):
    assert _choices(again[key]) == _choices(summary[key])


def _choices(tree):
  """The (optimizer, λ, η, validation accuracy) of every point in `tree`."""
  if isinstance(tree, dict) and "optimizer" in tree:
    return [(tree["optimizer"], tree["reg_strength"], tree["learning_rate"],
             tree["val_accuracy"]["mean"])]  # fmt: skip
  if isinstance(tree, dict):
    return [c for k in sorted(tree) for c in _choices(tree[k])]
  if isinstance(tree, list):
    return [c for item in tree for c in _choices(item)]
  return [None]


def test_corrupting_the_test_labels_changes_no_choice(small, runs):
  corrupted = small._replace(y_test=(small.y_test + 1) % 10)
  other = _sweep_runs(corrupted, GRIDS)
  a = _selection.summarize(runs, list(GRIDS))
  b = _selection.summarize(other, list(GRIDS))
  for key in ("best_dense", "calibrated", "fronts", "table", "dense"):
    assert _choices(a[key]) == _choices(b[key])
  test_a = [r["test_accuracy"] for r in runs]
  test_b = [r["test_accuracy"] for r in other]
  assert np.mean(test_b) < np.mean(test_a) - 0.3  # The test split did change.


def test_zero_groups_and_switch_counts():
  rng = np.random.default_rng(0)
  conv = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
  conv[:, :, [1, 3], :] = 0.0  # Input channels 1 and 3 are zero groups.
  dense = rng.normal(size=(6, 2)).astype(np.float32)
  dense[[0, 5]] = 0.0
  params = {"a": {"kernel": conv, "bias": np.zeros(5)}, "b": {"kernel": dense}}
  specs = {
    "a": {"kernel": oxr.group_lasso(axes=(0, 1, 3)), "bias": None},
    "b": {"kernel": oxr.group_lasso(axes=(1,))},
  }
  expected = np.concatenate(
    [np.all(conv == 0, axis=(0, 1, 3)), np.all(dense == 0, axis=1)]
  )
  np.testing.assert_array_equal(zero_groups(params, specs), expected)


def test_switches_count_groups_turning_zero_and_nonzero():
  before = np.array([True, True, False, False, True])
  after = np.array([False, True, True, False, True])
  # Group 0 came back (zero -> nonzero), group 2 went to zero: two switches.
  assert switches(before, after) == 2
  assert switches(after, before) == 2
  assert switches(None, after) == 0  # The initialization: nothing to compare.
  # 4 steps an epoch, milestones at steps 8 and 16: epochs 4, 5 and 6 end in
  # the final stage, so the transitions into epochs 5 and 6 count.
  per_epoch = [0.0, 9.0, 7.0, 5.0, 3.0, 2.0, 1.0]
  assert final_stage_switches(per_epoch, (8, 16), 4) == 3.0
  # A milestone inside an epoch: epoch 5 (steps 17-20) is the first to end
  # after step 17.
  assert final_stage_switches(per_epoch, (8, 17), 4) == 1.0
  assert final_stage_switches(per_epoch, (), 4) == sum(per_epoch[1:])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep")
  argv = [
    "--sweep", "--task", "logreg", "--optimizer", "ramda", "sgd",
    "--epochs", "2", "--seeds", "2", "--batch-size", "32",
    "--train-subset", "320", "--test-subset", "100",
    "--sweep-reg-strengths", "ramda=0,0.003,0.03",
    "--sweep-lrs", "ramda=0.01", "--sweep-lrs", "sgd=0.05,0.1",
    "--out", str(out),
  ]  # fmt: skip
  progress = io.StringIO()
  with contextlib.redirect_stderr(progress):
    assert main(argv) == 0
  (out / "progress.txt").write_text(progress.getvalue())
  return out


def test_sweep_cli_writes_fronts_table_and_results(sweep_dir, capsys):
  with open(sweep_dir / "fronts.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  text = (sweep_dir / "sweep.md").read_text()
  assert "logreg on digits: λ × η sweep" in text and "| RAMDA | 0.5 pt |" in text
  with open(sweep_dir / "results.json") as f:
    results = json.load(f)
  (summary,) = results["summary"]  # The main job's shape: task → methods → metric.
  assert set(summary["methods"]) == {"RAMDA", "SGD-M"}
  for stats in summary["methods"].values():
    for metric in ("accuracy", "val_accuracy", "group_sparsity"):
      assert set(stats[metric]) == {"mean", "std", "values"}
      assert len(stats[metric]["values"]) == 2
  (sweep,) = results["sweep"]
  assert len(sweep["runs"]) == 2 * (3 + 2)
  # One bar over the whole sweep: 10 runs.
  progress = (sweep_dir / "progress.txt").read_text()  # One bar over the runs.
  assert "run 10/10: 100%" in progress and "10/10 [" in progress
  assert "logreg/ramda λ=0.003 η=0.01 seed 1" in progress
  assert sweep["grids"]["ramda"]["reg_strength"] == [0, 0.003, 0.03]


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--sweep", "--sweep-reg-strengths="], "empty grid"),
    (["--sweep", "--sweep-lrs", "ramda="], "empty grid"),
    (["--sweep", "--sweep-reg-strengths=-1e-3,1e-2"], "finite and nonnegative, got -0.001"),
    (["--sweep", "--sweep-lrs", "0,0.1"], "finite and positive, got 0"),
    (["--sweep", "--sweep-reg-strengths", "1e-2,1e-3"], "must be increasing, got 0.01 before 0.001"),
    (["--sweep", "--sweep-lrs", "ramda=0.1,0.1"], "duplicate grid value 0.1"),
    (["--sweep", "--sweep-lrs", "0.1,x"], "expected comma-separated numbers"),
    (["--sweep", "--sweep-lrs", "lion=0.1"], "unknown optimizer 'lion'"),
    (["--sweep-lrs", "0.1"], "--sweep-lrs sets a grid of --sweep"),
    (["--sweep", "--optimizer", "sgd", "--sweep-reg-strengths", "sgd=1"], "has no such parameter"),
    (["--sweep", "--val-fraction", "1"], "expected a number > 0 and < 1"),
    (["--protocol", "paper", "--task", "mlp"], "--protocol paper fixes --task"),
    (["--protocol", "paper", "--reg-strength", "0.1"], "fixes --reg-strength"),
    (["--protocol", "paper", "--sweep"], "fixes --sweep"),
  ],
)  # fmt: skip
def test_bad_grids_and_protocol_flags_exit_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as exc:
    main(argv)
  err = capsys.readouterr().err
  assert exc.value.code == 2
  assert message in err
  assert "Traceback" not in err


def test_paper_protocol_on_a_reduced_budget(tmp_path):
  argv = [
    "--protocol", "paper", "--epochs", "5", "--seeds", "1",
    "--train-subset", "640", "--test-subset", "100", "--out", str(tmp_path), "--quiet",
  ]  # fmt: skip
  assert main(argv) == 0
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  assert [r["optimizer"] for r in results["runs"]] == list(_paper.OPTIMIZERS)
  steps = 5 * (640 // 128)
  for run in results["runs"]:
    s = run["settings"]
    assert run["batch_size"] == 128
    assert s["reg_strength"] == 1e-3
    assert s["learning_rate"] == METHODS[run["optimizer"]].learning_rate
    assert s["milestones"] == list(milestones(steps, 5))
    # Switch counts: the sum over the final stage of the per-epoch counts, and
    # each epoch's count bounds the change in the number of zero groups (all
    # 64 groups of the linear model have the same size) with the same parity.
    history, final = run["history"], run["final"]
    first = -(-s["milestones"][-1] // run["steps_per_epoch"])
    assert final["final_stage_flips"] == sum(history["group_flips"][first + 1 :])
    zeros = np.rint(64 * np.asarray(history["group_sparsity"])).astype(int)
    flips = np.asarray(history["group_flips"][1:], int)
    assert np.all(flips >= np.abs(np.diff(zeros)))
    assert np.all((flips - np.diff(zeros)) % 2 == 0)
  table = (tmp_path / "table.md").read_text()
  assert "Table 7 LogReg row, which is **MNIST**" in table
  assert "a different data set" in table
  assert "| RAMDA | 0.01 |" in table and "| 57.40 |" in table
  assert results["paper_table7_mnist"]["rmda"]["group_sparsity"] == 57.02
  assert _paper.epochs(11) * 11 >= _paper.STEPS > (_paper.epochs(11) - 1) * 11


def test_default_run_uses_the_calibrated_points(tmp_path, capsys):
  argv = [
    "--task", "logreg", "--optimizer", "ramda", "adamw", "--epochs", "1",
    "--seeds", "1", "--train-subset", "256", "--out", str(tmp_path), "--quiet",
  ]  # fmt: skip
  assert main(argv) == 0
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  settings = results["summary"][0]["settings"]
  for name, label in (("ramda", "RAMDA"), ("adamw", "AdamW")):
    reg, lr = _optimizers.CALIBRATED[("logreg", name)]
    assert settings[label]["learning_rate"] == lr
    assert settings[label]["source"] == "calibrated"
    if METHODS[name].regularized:
      assert settings[label]["reg_strength"] == reg
  table = (tmp_path / "table.md").read_text()
  assert f"| RAMDA | {_optimizers.CALIBRATED[('logreg', 'ramda')][0]:g} |" in table
  # Every regularized method of every default task has a calibrated point.
  for task in ("logreg", "mlp", "cnn"):
    for name in METHODS:
      assert (task, name) in _optimizers.CALIBRATED, (task, name)
