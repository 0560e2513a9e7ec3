"""Tests for the main job (optax_ramda.experiments).

Oracles: the numbers in results.json are recomputed from the saved final
weights and the data the run read: with NumPy for the linear model (accuracy,
zero input groups, zero entries, the pruned parameter count with its zero
input features removed), by a fresh NNX model loaded with the weights for the
CNN's accuracy, and its pruned size counted by hand from the zero channels of
its kernels; the summary's mean/std against NumPy over the per-seed runs;
error paths against argparse's exit status 2 and a message naming the
problem; mnist1d's offline generation against a socket that refuses to
connect.
"""

import contextlib
import io
import json
import math
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from sklearn.datasets import load_digits

from optax_ramda.experiments import TASKS, digits, load_params, main, mnist1d
from optax_ramda.experiments._optimizers import METHODS, milestones, settings

N_TRAIN, N_TEST, SEEDS, EPOCHS = 300, 120, 2, 2


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
  """A user's own data set on disk: digits as flat vectors in [0, 1]."""
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  path = tmp_path_factory.mktemp("data") / "mydigits.npz"
  np.savez(
    path,
    x_train=x[:N_TRAIN],
    y_train=y[:N_TRAIN],
    x_test=x[N_TRAIN : N_TRAIN + N_TEST],
    y_test=y[N_TRAIN : N_TRAIN + N_TEST],
  )
  return path


@pytest.fixture(scope="module")
def run_dir(data_file, tmp_path_factory):
  """One end-to-end CLI run on a tiny setting: 2 optimizers × 2 seeds."""
  out = tmp_path_factory.mktemp("runs")
  argv = [
    "--task", "logreg",
    "--data", str(data_file),
    "--optimizer", "ramda", "prox_sgd",
    "--epochs", str(EPOCHS),
    "--seeds", str(SEEDS),
    "--batch-size", "20",
    "--reg-strength", "3e-3",
    "--lr", "prox_sgd=0.5",
    "--out", str(out),
  ]  # fmt: skip
  progress = io.StringIO()
  with contextlib.redirect_stderr(progress):
    assert main(argv) == 0
  (out / "progress.txt").write_text(progress.getvalue())
  return out


def test_writes_table_plot_json_and_params(run_dir, capsys):
  with open(run_dir / "results.json") as f:
    results = json.load(f)
  assert len(results["runs"]) == 2 * SEEDS
  with open(run_dir / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  table = (run_dir / "table.md").read_text()
  assert "logreg on mydigits" in table
  assert "| RAMDA |" in table and "| ProxSGD |" in table
  assert results["command"].startswith("python -m optax_ramda.experiments --task")
  progress = (run_dir / "progress.txt").read_text()  # One bar over all runs.
  assert "run 4/4: 100%" in progress and "4/4 [" in progress
  for name in ("ramda", "prox_sgd"):
    for seed in range(SEEDS):
      assert f"logreg/{name} seed {seed}, epoch {EPOCHS}/{EPOCHS}, test acc" in progress
  for run in results["runs"]:
    assert os.path.isfile(run_dir / run["params_file"])
    assert len(run["history"]["accuracy"]) == EPOCHS + 1  # with the initialization
    assert run["steps_per_epoch"] == N_TRAIN // 20
  # The step is compiled once per (task, optimizer) and reused by later seeds.
  compiles = {
    (r["optimizer"], r["seed"]): r["compile_seconds"] for r in results["runs"]
  }
  assert compiles[("ramda", 0)] > 0 and compiles[("ramda", 1)] == 0


def test_json_numbers_agree_with_the_saved_models(run_dir, data_file):
  with open(run_dir / "results.json") as f:
    results = json.load(f)
  with np.load(data_file) as d:
    x, y = d["x_test"].astype(np.float64), d["y_test"]
  template = {"layers": {0: {"kernel": None, "bias": None}}}
  for run in results["runs"]:
    path = str(run_dir / run["params_file"])
    layer = load_params(path, template)["layers"][0]
    w, b = layer["kernel"], layer["bias"]
    final = run["final"]
    # Accuracy: a float32 model's argmax can differ from float64's only on
    # near-ties, so allow one example.
    accuracy = np.mean(np.argmax(x @ w + b, -1) == y)
    assert abs(final["accuracy"] - accuracy) <= 1 / len(y) + 1e-9
    zero_rows = np.all(w == 0, axis=1)  # One group per input feature (row).
    assert final["group_sparsity"] == pytest.approx(zero_rows.mean(), abs=1e-6)
    zeros = np.sum(w == 0) + np.sum(b == 0)
    assert final["unstructured_sparsity"] == pytest.approx(zeros / (w.size + b.size))
    assert final["params"] == w.size + b.size
    # Pruning a linear model keeps its nonzero input rows and its bias.
    assert final["params_after_pruning"] == (~zero_rows).sum() * w.shape[1] + b.size
    assert final["accuracy"] == run["history"]["accuracy"][-1]
    if run["optimizer"] == "ramda":
      prox = load_params(path, template, prefix="prox/")["layers"][0]["kernel"]
      prox_zero = np.all(prox == 0, axis=1).mean()
      assert final["prox_group_sparsity"] == pytest.approx(prox_zero, abs=1e-6)
      assert final["group_sparsity"] > 0  # The ramp made the weights structured.
    else:
      assert final["prox_group_sparsity"] == final["group_sparsity"]
  (summary,) = results["summary"]
  for label, name in (("RAMDA", "ramda"), ("ProxSGD", "prox_sgd")):
    values = [r["final"]["accuracy"] for r in results["runs"] if r["optimizer"] == name]
    stats = summary["methods"][label]["accuracy"]
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values))
  settings_ = {r["optimizer"]: r["settings"] for r in results["runs"]}
  assert settings_["prox_sgd"]["learning_rate"] == 0.5  # --lr prox_sgd=0.5
  assert settings_["ramda"]["learning_rate"] == METHODS["ramda"].learning_rate
  assert settings_["ramda"]["milestones"] == list(milestones(EPOCHS * N_TRAIN // 20, 3))


def test_cnn_numbers_agree_with_the_saved_model(tmp_path):
  argv = [
    "--task", "cnn",
    "--optimizer", "ramda",
    "--epochs", "1",
    "--seeds", "1",
    "--stages", "1",
    "--train-subset", "128",
    "--test-subset", "64",
    "--batch-size", "32",
    "--reg-strength", "0.01",
    "--out", str(tmp_path),
    "--quiet",
  ]  # fmt: skip
  assert main(argv) == 0
  with open(tmp_path / "results.json") as f:
    (run,) = json.load(f)["runs"]
  final = run["final"]
  task, data = TASKS["cnn"], digits()
  model = task.model(task.prepared(data), seed=0)
  template = nnx.to_pure_dict(nnx.state(model))
  params = load_params(str(tmp_path / run["params_file"]), template)
  nnx.update(model, params)
  logits = model(data.x_test[:64, :, :, None])
  accuracy = np.mean(np.argmax(logits, -1) == data.y_test[:64])
  assert abs(final["accuracy"] - accuracy) <= 1 / 64 + 1e-9
  # Independent count of the pruned network: conv1 (3,3,1,16) → conv2 (3,3,16,32)
  # → average pool → flatten (channels last) → linear (4·4·32, 10). A conv1
  # filter survives if its input rows in conv2 are not all zero; a conv2 filter
  # if any linear row reading it (every 32nd) is nonzero.
  k2 = params["layers"][2]["kernel"]
  k3 = params["layers"][6]["kernel"]
  c1 = int(np.sum(np.any(k2 != 0, axis=(0, 1, 3))))
  c2 = int(np.sum(np.any(k3.reshape(16, 32, 10) != 0, axis=(0, 2))))
  assert 0 < c1 < 16 and 0 < c2 < 32  # λ = 0.01 zeroed some channels of each.
  expected = (9 * c1 + c1) + (9 * c1 * c2 + c2) + (16 * c2 * 10 + 10)
  assert final["params_after_pruning"] == expected


def test_momentum_is_raised_only_for_short_dual_averaging_runs():
  ramda = settings(
    METHODS["ramda"],
    total_steps=300,
    stages=3,
    decay=0.1,
    reg_strength=1.0,
    solver="pg",
  )
  assert ramda.milestones == (100, 200)
  assert ramda.momentum == pytest.approx(1 / np.sqrt(100 / 2))  # 1/√(S/2), S = 100
  long = settings(
    METHODS["ramda"],
    total_steps=3 * 10**6,
    stages=3,
    decay=0.1,
    reg_strength=1,
    solver="pg",
  )
  assert long.momentum == METHODS["ramda"].momentum  # The paper's c₀ = 0.01.
  sgd = settings(
    METHODS["sgd"], total_steps=300, stages=3, decay=0.1, reg_strength=1.0, solver="pg"
  )
  assert sgd.momentum == 0.9 and sgd.reg_strength == 0.0  # Dense: no λ.
  assert sgd.schedule()(199) == pytest.approx(0.01)  # Decays at milestones.


def test_mnist1d_is_generated_offline_and_restores_global_rngs(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("mnist1d tried to open a network connection")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  np.random.seed(7)
  random.seed(7)
  expected = (np.random.rand(), random.random())
  np.random.seed(7)
  random.seed(7)
  data = mnist1d()
  assert (np.random.rand(), random.random()) == expected
  assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
  assert data.num_classes == 10 and data.x_train.dtype == np.float32


def _error(argv, capsys):
  with pytest.raises(SystemExit) as exc:
    main(argv)
  return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--task", "resnet"], "invalid choice: 'resnet'"),
    (["--optimizer", "lion"], "invalid choice: 'lion'"),
    (["--epochs", "0"], "expected a positive integer, got '0'"),
    (["--seeds", "two"], "expected a positive integer, got 'two'"),
    (["--lr", "-1"], "expected a number > 0, got '-1'"),
    (["--lr", "lion=0.1"], "unknown optimizer 'lion'"),
    (["--optimizer", "sgd", "--lr", "ramda=0.1"], "optimizer 'ramda' is not selected"),
    (["--optimizer", "adamw", "--momentum", "adamw=0.5"], "has no such parameter"),
    (["--decay", "1.5"], "expected a number > 0 and ≤ 1, got '1.5'"),
    (["--reg-strength", "nan"], "expected a number ≥ 0, got 'nan'"),
    (["--target-sparsity", "1"], "expected a number in [0, 1), got 1"),
    (["--target-sparsity", "0.5", "--reg-strength", "1e-3"], "drop --reg-strength"),
    (["--target-sparsity", "0.5", "--sweep"], "drop --sweep"),
    (["--data", "/nonexistent/data.npz"], "does not exist"),
    (["--dataset", "digits", "--data", "x.npz"], "not allowed with argument"),
    (["--task", "cnn", "--dataset", "mnist1d"], "needs images of shape"),
    (["--task", "logreg", "--batch-size", "5000"], "exceeds the 1437 training"),
    (["--task", "logreg", "--epochs", "1", "--stages", "100"], "--stages 100 exceeds"),
  ],
)
def test_bad_input_exits_with_a_message(argv, message, capsys):
  code, err = _error(argv, capsys)
  assert code == 2
  assert message in err
  assert "Traceback" not in err


def test_bad_data_files_are_refused(tmp_path, capsys):
  missing = tmp_path / "missing.npz"
  np.savez(missing, x_train=np.ones((4, 2)), y_train=np.zeros(4, int))
  code, err = _error(["--data", str(missing)], capsys)
  assert code == 2 and "lacks the arrays ['x_test', 'y_test']" in err
  labels = tmp_path / "labels.npz"
  np.savez(
    labels,
    x_train=np.ones((4, 2)),
    y_train=np.array([0.5, 1, 0, 1]),
    x_test=np.ones((2, 2)),
    y_test=np.array([0, 1]),
  )
  code, err = _error(["--data", str(labels)], capsys)
  assert code == 2 and "y_train must hold integer class labels" in err
  text = tmp_path / "text.npz"
  text.write_text("not a zip")
  code, err = _error(["--data", str(text)], capsys)
  assert code == 2 and "cannot read data file" in err


def test_module_entry_point_reports_errors_without_traceback():
  result = subprocess.run(
    [sys.executable, "-m", "optax_ramda.experiments", "--task", "nope"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2
  assert "invalid choice: 'nope'" in result.stderr
  assert "Traceback" not in result.stderr


def test_help_states_each_tasks_own_defaults(capsys):
  with pytest.raises(SystemExit) as exc:
    main(["--help"])
  assert exc.value.code == 0
  text = capsys.readouterr().out
  for name, task in TASKS.items():
    seeds = f"{task.seeds} seed{'s' if task.seeds > 1 else ''}"
    line = (
      f"[data {task.dataset}, {task.epochs} epochs, batch {task.batch_size}, {seeds}"
    )
    assert line in text, name
  assert "[data shakespeare, 6 epochs, batch 32, 1 seed," in text
  assert "[data digits, 30 epochs, batch 64, 3 seeds]" in text
  assert "paper hyperparameters" not in text
  assert len(text.splitlines()) < 129  # The help before this restructuring.


def test_target_of_ramps_to_the_first_milestone_and_holds_from_the_last():
  """--target-sparsity S: S along a cubic by the first milestone, λ held from the
  last; one stage: S reached at the end. Oracle: s_t = S(1 − (1 − t/T)³) by hand."""
  from optax_ramda.experiments._compare import target_of

  target = target_of(0.5, (100, 200), 300)
  assert target.until == 200
  assert float(target.target(0)) == 0.0
  assert float(target.target(50)) == pytest.approx(0.5 * (1 - 0.5**3))
  assert float(target.target(100)) == float(target.target(250)) == 0.5
  single = target_of(0.5, (), 300)
  assert single.until == 300
  assert float(target.target(150)) == 0.5
  assert float(single.target(150)) == pytest.approx(0.5 * (1 - 0.5**3))
  # RAMDA and RMDA: held `settle` steps into the final stage, at a window's mean.
  settled = target_of(0.5, (100, 200), 300, settle=50, window=10)
  assert (settled.until, settled.window) == (250, 10)
  assert float(settled.target(50)) == float(target.target(50))
  late = target_of(0.5, (100, 200), 300, settle=500, window=400)
  assert (late.until, late.window) == (300, 300)


def test_target_sparsity_trains_each_method_to_the_target(data_file, tmp_path):
  """--target-sparsity: λ chosen per method, reported in the table and records;
  magnitude pruning takes S as its own target.

  Oracle: hand counts. The logreg kernel has 64 input groups of 10 entries, and
  the last update before the hold asks for ⌈0.5·64⌉ = 32 of them in Ŵ (the
  weights themselves for ProxSGD); the held λ may then move it.
  """
  out = tmp_path / "target"
  argv = [
    "--task", "logreg",
    "--data", str(data_file),
    "--optimizer", "ramda", "prox_sgd", "magnitude",
    "--epochs", "3",
    "--seeds", "1",
    "--batch-size", "20",
    "--target-sparsity", "0.5",
    "--out", str(out),
    "--quiet",
  ]  # fmt: skip
  with contextlib.redirect_stderr(io.StringIO()):
    assert main(argv) == 0
  with open(out / "results.json") as f:
    runs = json.load(f)["runs"]
  steps = 3 * (N_TRAIN // 20)
  *proximal, magnitude = runs
  assert magnitude["settings"]["reg_strength"] == 0.5  # Its own target.
  assert magnitude["final"]["group_sparsity"] == 32 / 64  # Its schedule's end.
  for run in proximal:
    settings = run["settings"]
    assert settings["target_sparsity"] == 0.5
    settle = 0  # RAMDA: held once c = min(c₀√r, 1) is 1, r = ⌈1/c₀²⌉.
    if run["optimizer"] == "ramda":
      settle = math.ceil(1 / settings["momentum"] ** 2 - 1e-9)
    until = min(milestones(steps, 3)[-1] + settle, steps)
    assert (settings["until"], settings["window"]) == (until, N_TRAIN // 20)
    assert settings["reg_strength"] > 0  # The λ the run ended with.
    assert f"{settings['reg_strength']:g}" in (out / "table.md").read_text()
  assert "target group sparsity 0.5" in (out / "table.md").read_text()
