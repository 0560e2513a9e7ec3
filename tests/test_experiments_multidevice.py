"""Data-parallel and multi-process runs of the main job equal a one-device run.

Oracle: the same command (``python -m optax_ramda.experiments``, logistic
regression and the MLP on a digits subset, RAMDA with the exact subproblem
solver and ProxSGD) on one CPU device. The same command on 4 CPU devices of
one process, and as two processes × 2 CPU devices joined through
``jax.distributed`` on 127.0.0.1, must save the same final weights and Ŵ up
to float32 rounding (the mean loss's gradient is summed in another order),
with the same exactly-zero groups. A CPU process's device count is fixed when JAX starts, so every run
is a subprocess (``tests/multidevice/launch.py``), never this pytest process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from optax_ramda.experiments import main
from tests.multidevice import launch

TIMEOUT = 240  # seconds per group of processes; a run takes ~10-30 s
# Weights and Ŵ, relative to each leaf's largest entry; observed ≤ 2e-7, but
# RAMDA on the MLP: its step divides by D = ∛U + ε, tiny for rarely inked
# pixels (ε = 1e-6), which magnifies rounding in a few first-layer weights
# (observed ≤ 1.6e-4 there, median 1e-8).
RTOL = 3e-5
RTOL_RAMDA_MLP = 1e-3
ARGS = [
  "-m", "optax_ramda.experiments",
  "--task", "logreg", "mlp",
  "--optimizer", "ramda", "prox_sgd",
  "--solver", "exact",  # "pg" stops where float32 rounding says so
  "--epochs", "2",
  "--seeds", "1",
  "--train-subset", "256",
  "--test-subset", "64",
  "--batch-size", "32",
]  # fmt: skip
FILES = [
  f"{t}-group_lasso-{o}-seed0.npz"
  for t in ("logreg", "mlp")
  for o in ("ramda", "prox_sgd")
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Every run once, a few processes at a time."""
  out = tmp_path_factory.mktemp("experiments_multidevice")

  def single(name, devices, *extra):
    argv = [*ARGS, "--out", str(out / name), *extra]
    return launch.single(name, argv, devices=devices, timeout=TIMEOUT)

  makers = {
    "1": lambda: single("1", 1, "--quiet"),
    "4": lambda: single("4", 4, "--quiet"),
    "2x2": lambda: launch.distributed(
      "2x2",
      [*ARGS, "--out", str(out / "2x2")],  # with progress bars: rank 0's only
      processes=2,
      devices=2,
      timeout=TIMEOUT,
    ),
    # Expected to fail: 30 rows do not split over 4 devices.
    "bad_batch": lambda: single("bad_batch", 4, "--batch-size", "30"),
  }
  groups = {name: make() for name, make in makers.items()}
  launch.wait(list(groups.values()))
  # A port picked free can be taken before the coordinator binds it: retry once.
  if groups["2x2"].error and "in use" in groups["2x2"].report().lower():
    groups["2x2"] = makers["2x2"]()
    launch.wait([groups["2x2"]])
  return out, groups


def finished(runs, name):
  out, groups = runs
  if groups[name].error:
    pytest.fail(groups[name].report(), pytrace=False)
  return out / name


def load(folder, file):
  with np.load(folder / "params" / file) as f:
    return dict(f)


@pytest.mark.parametrize("name", ["4", "2x2"])
def test_same_weights_as_one_device(runs, name):
  reference, folder = finished(runs, "1"), finished(runs, name)
  for file in FILES:
    got, ref = load(folder, file), load(reference, file)
    assert got.keys() == ref.keys()
    assert any(k.startswith("prox/") for k in ref) == ("ramda" in file)
    tol = RTOL_RAMDA_MLP if file.startswith("mlp-ramda") else RTOL
    for key, r in ref.items():
      g = got[key]
      np.testing.assert_allclose(
        g, r, rtol=0, atol=tol * np.abs(r).max(), err_msg=f"{file} {key}"
      )
      if key.endswith("kernel"):  # Groups: input features (rows).
        np.testing.assert_array_equal(
          np.all(g == 0, axis=1), np.all(r == 0, axis=1), err_msg=f"{file} {key}"
        )
  with open(reference / "results.json") as f:
    ref_runs = json.load(f)["runs"]
  with open(folder / "results.json") as f:
    results = json.load(f)
  for run, ref_run in zip(results["runs"], ref_runs, strict=True):
    np.testing.assert_allclose(
      run["history"]["train_loss"][1:], ref_run["history"]["train_loss"][1:], rtol=1e-5
    )
  assert any(r["final"]["group_sparsity"] > 0 for r in results["runs"])
  environment = results["environment"]
  assert len(environment["devices"]) == 4
  assert environment["processes"] == (2 if name == "2x2" else 1)


def test_only_process_zero_prints(runs):
  finished(runs, "2x2")
  _, groups = runs
  rank0, rank1 = (p.output(limit=10**6) for p in groups["2x2"].processes)
  assert "logreg/ramda seed 0" in rank0 and "run 4/4: 100%" in rank0
  assert "| RAMDA |" in rank0
  assert "seed 0" not in rank1 and "RAMDA" not in rank1 and "wrote" not in rank1


def test_batch_must_split_over_the_devices(runs):
  _, groups = runs
  (process,) = groups["bad_batch"].processes
  assert process.returncode == 2, groups["bad_batch"].report()
  assert "--batch-size 30 of task logreg is not a multiple of the 4 devices" in (
    process.output()
  )


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--coordinator", "127.0.0.1:1"], "also needs --num-processes, --process-id"),
    (["--process-id", "0"], "also needs --coordinator, --num-processes"),
    (
      ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
      "expected HOST:PORT",
    ),
    (
      ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
      "--process-id 2 is not in 0..1",
    ),
    (["--num-processes", "0"], "expected a positive integer, got '0'"),
  ],
)
def test_bad_distributed_flags_exit_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as exc:
    main(argv)
  assert exc.value.code == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
