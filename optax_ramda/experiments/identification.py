"""Structure identification on convex group-lasso problems with a known optimum.

The central theorem of Huang & Lee (2024): RAMDA's iterates *identify* the
structure of the limit point (here: which groups of weights are zero) after
finitely many steps, even with inexact subproblem solutions, while proximal
SGD- and Adam-type methods keep oscillating around it. This module measures it
on problems where the limit is known exactly:

* ``digits``: multinomial logistic regression on scikit-learn's 8×8 digits,
  ``F(W, b) = mean CE(x W + b, y) + λ Σ_g √10 ‖W_g‖`` with one group per input
  pixel (a row of the (64, 10) kernel W) and an unregularized bias b;
* ``planted``: multi-output least squares ``F(W) = ‖X W − Y‖²/(2n) +
  λ Σ_g √k ‖W_g‖`` on correlated Gaussian features, with Y generated from a
  W whose support (nonzero rows) is planted.

The problems and their exact solution are in
:mod:`optax_ramda.experiments._convex` (re-exported here); this module runs the
optimizers on them and reports. For each problem, :func:`solve_optimum`
computes the minimizer W* in float64 to a KKT
residual of 1e-10 (accelerated proximal gradient with the exact block
soft-threshold and adaptive restarts) and its *support*, the set of zero
groups. λ is a fixed fraction of λ_max, the smallest λ at which W* = 0, chosen
so that some but not all groups are zero. Then RAMDA and the baselines run
from one random start on one sequence of minibatches, and each epoch records
the zero-group pattern of the model weights and of Ŵ (:func:`prox_iterate`)
where the optimizer has one. Reported per optimizer: the epoch after which the
pattern equals W*'s and never changes again, the final false zeros and false
nonzeros, and the objective gap F(w) − F(w*).

The learning rates are the paper's times a factor chosen per method by the
final objective gap on another seed (:func:`tune`, ``--tune``), stored in
:data:`TUNED_LEARNING_RATES`. Runs use float64 (``jax.enable_x64``): the gaps
go down to 1e-6 on objectives of order one, where float32 rounding (1e-7
relative) would blur them, and RAMDA's averaged weights decay towards zero
geometrically, which in float32 would reach denormals that backends flush to
zero, a zero made by rounding rather than by the optimizer
(docs/algorithm.md#numerics). At
these sizes float64 on a CPU costs nothing noticeable.

  python -m optax_ramda.experiments.identification [--out DIR] [--epochs N] [--small] [--tune]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from optax_ramda.experiments import _optimizers
from optax_ramda.experiments._convex import (
  Optimum,
  Params,
  Problem,
  block_soft_threshold,
  digits_problem,
  initial_bias_only,
  kkt_residual,
  lambda_max,
  lipschitz,
  loss_and_grad,
  objective,
  planted_problem,
  regularizer,
  single_threaded_blas,
  solve_optimum,
  zero_groups,
)
from optax_ramda.experiments._identification_report import (
  _fmt_epoch,
  markdown_table,
  plot,
  summarize,
)
from optax_ramda.experiments._identification_runs import (
  Trace,
  identification_epoch,
  initial_params,
  jax_loss,
  minibatches,
  run,
  support_errors,
)

# The problems (_convex), the runs (_identification_runs) and the report
# (_identification_report) are re-exported here, the experiment's one public
# entry point.
__all__ = [
  "EPOCHS",
  "LR_FACTORS",
  "METHOD_NAMES",
  "MOMENTUM",
  "PAPER_LEARNING_RATES",
  "SMALL_EPOCHS",
  "STAGES",
  "TUNED_LEARNING_RATES",
  "Optimum",
  "Params",
  "Problem",
  "Trace",
  "block_soft_threshold",
  "digits_problem",
  "identification_epoch",
  "initial_bias_only",
  "initial_params",
  "jax_loss",
  "kkt_residual",
  "lambda_max",
  "lipschitz",
  "loss_and_grad",
  "main",
  "markdown_table",
  "minibatches",
  "objective",
  "optimizers",
  "planted_problem",
  "plot",
  "regularizer",
  "run",
  "run_problem",
  "single_threaded_blas",
  "solve_optimum",
  "summarize",
  "support_errors",
  "tune",
  "zero_groups",
]

#: Default epochs of a full run, and of a ``--small`` one.
EPOCHS = 300
SMALL_EPOCHS = 60
#: Stages of the paper's schedule: milestones split training into equal parts.
STAGES = 3


# --------------------------------------------------------------------------
# The experiment.


#: The structured methods compared: labels of the experiments' registry
#: (:data:`optax_ramda.experiments._optimizers.METHODS`), by their names there.
METHOD_NAMES = {
  "RAMDA": "ramda",
  "RMDA": "rmda",
  "ProxGen": "proxgen",
  "ProxSGD": "prox_sgd",
  "ProxSSI": "proxssi",
}
#: The paper's learning rates (docs/algorithm.md#experiments-data-and-hyperparameters),
#: as the registry states them; ProxSSI takes ProxGen's.
PAPER_LEARNING_RATES = {
  label: _optimizers.METHODS[name].learning_rate for label, name in METHOD_NAMES.items()
}
#: c₀ of RAMDA and RMDA, and ProxSGD's momentum: 0.1, the top of the paper's
#: range (see :func:`optimizers`).
MOMENTUM = 0.1


def optimizers(
  problem: Problem,
  epochs: int,
  steps_per_epoch: int,
  learning_rates: dict[str, float] | None = None,
) -> dict[str, tuple[optax.GradientTransformation, dict[str, Any]]]:
  """Each method with the paper's hyperparameters, as (tx, config).

  The transforms come from the experiments' registry
  (:data:`optax_ramda.experiments._optimizers.METHODS`), so they are built
  exactly as in the main job. One schedule for all: the learning rate drops
  ×0.1 at milestones that split training into :data:`STAGES` equal stages of
  whole epochs (RAMDA and RMDA also restart their dual average there and ramp
  the averaging weight in the last stage). c₀ = :data:`MOMENTUM` = 0.1 (the
  top of the paper's range) for RAMDA: with runs of a few thousand steps,
  c₀ = 0.01 would leave c = min(c₀√r, 1) < 1 at the end (it reaches 1 only at
  the 10,000th step of the final stage), so the model weights would never be
  the structured Ŵ. The solver is ``"pg"``, the paper's.

  Args:
    problem: the problem (λ and the spec tree).
    epochs: the number of epochs (to place the milestones).
    steps_per_epoch: steps per epoch.
    learning_rates: initial learning rate per method; defaults to
      :data:`PAPER_LEARNING_RATES`.

  Returns:
    ``{name: (tx, config)}`` with `config` the hyperparameters as a dict.
  """
  lrs = {**PAPER_LEARNING_RATES, **(learning_rates or {})}
  milestones = tuple(
    round(epochs * i / STAGES) * steps_per_epoch for i in range(1, STAGES)
  )
  result = {}
  for label, name in METHOD_NAMES.items():
    method = _optimizers.METHODS[name]
    settings = _optimizers.Settings(
      learning_rate=lrs[label],
      momentum=None if method.momentum is None else MOMENTUM,
      reg_strength=problem.reg_strength,
      milestones=milestones,
      decay=0.1,
      solver="pg",
    )
    config = {"method": name, **dataclasses.asdict(settings)}
    result[label] = (method.make(settings, problem.specs()), config)
  return result


#: Learning-rate multipliers of the paper's values searched by :func:`tune`.
LR_FACTORS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)

#: The initial learning rates the default run uses: per problem and method, the
#: value of ``PAPER_LEARNING_RATES[name] × LR_FACTORS`` with the smallest final
#: objective gap, found by ``--tune`` (:func:`tune`) on the full problems with
#: the default epochs and seed 1 (the reported runs use seed 0).
TUNED_LEARNING_RATES: dict[str, dict[str, float]] = {
  "digits": {
    "RAMDA": 0.1,
    "RMDA": 10.0,
    "ProxGen": 0.03,
    "ProxSGD": 1.0,
    "ProxSSI": 0.03,
  },
  "planted": {
    "RAMDA": 0.003,
    "RMDA": 0.1,
    "ProxGen": 0.01,
    "ProxSGD": 0.01,
    "ProxSSI": 0.1,  # 0.01 before ProxSSI followed its authors' formulas (0.2).
  },
}


def tune(
  problem: Problem,
  optimum: Optimum,
  epochs: int,
  batch_size: int,
  seed: int,
  factors: Sequence[float] = LR_FACTORS,
) -> dict[str, dict[str, Any]]:
  """Per method, the learning rate with the smallest final objective gap.

  Searches ``PAPER_LEARNING_RATES[name] × factor`` over `factors`. The
  criterion is the objective gap F(w) − F(w*) after the last epoch, not the
  support, so the search does not favour identification. Diverged runs count
  as an infinite gap. Call with a different `seed` than the reported runs.

  Returns:
    ``{name: {"best": lr, "gaps": [[lr, gap], ...]}}``.
  """
  with jax.enable_x64(True):
    init = initial_params(problem, seed)
    batches = minibatches(len(problem.x), batch_size, epochs, seed)
    result: dict[str, dict[str, Any]] = {}
    for name, base in PAPER_LEARNING_RATES.items():
      gaps = []
      for factor in factors:
        lr = float(f"{base * factor:.3g}")  # 0.1 × 0.1 → 0.01, not 0.010000000000000002
        tx, _ = optimizers(problem, epochs, batches.shape[1], {name: lr})[name]
        trace = run(problem, tx, init, batches)
        gap = float(trace.objective[-1] - optimum.objective)
        gaps.append([lr, gap if math.isfinite(gap) else math.inf])
      best = min(gaps, key=lambda lg: lg[1])[0]
      result[name] = {"best": best, "gaps": gaps}
      print(f"  tune {problem.name:8s} {name:8s} best lr {best:g}", file=sys.stderr)
  return result


def run_problem(
  problem: Problem,
  epochs: int,
  batch_size: int,
  seed: int = 0,
  learning_rates: dict[str, float] | None = None,
  optimum: Optimum | None = None,
) -> dict[str, Any]:
  """Solves `problem` exactly, runs the optimizers in float64 and summarizes.

  Args:
    problem: the problem.
    epochs: epochs per run.
    batch_size: minibatch size.
    seed: seed of the common start and of the minibatch order.
    learning_rates: initial learning rate per method (see :func:`optimizers`).
    optimum: the precomputed :func:`solve_optimum` of `problem`, if any.

  Returns:
    A JSON-ready record: the problem, the optimum, the training setup and one
    :func:`summarize` record per method.
  """
  start = time.perf_counter()
  opt = solve_optimum(problem) if optimum is None else optimum
  solve_seconds = time.perf_counter() - start
  with jax.enable_x64(True):
    init = initial_params(problem, seed)
    batches = minibatches(len(problem.x), batch_size, epochs, seed)
    methods = optimizers(problem, epochs, batches.shape[1], learning_rates)
    results = {}
    for name, (tx, config) in methods.items():
      trace = run(problem, tx, init, batches)
      results[name] = summarize(trace, opt, config)
      print(
        f"  {problem.name:8s} {name:8s} {trace.seconds:6.1f}s  "
        f"identified(w)={_fmt_epoch(results[name]['identified_weights'])}",
        file=sys.stderr,
      )
  n, groups = problem.x.shape
  return {
    "problem": {
      "name": problem.name,
      "loss": problem.loss,
      "samples": n,
      "groups": groups,
      "group_size": problem.num_outputs,
      "group_weight": problem.group_weight,
      "reg_strength": problem.reg_strength,
      "lam_max": problem.lam_max,
      "lam_fraction": problem.reg_strength / problem.lam_max,
      "planted_zeros": None
      if problem.planted_zeros is None
      else problem.planted_zeros.tolist(),
    },
    "optimum": {
      "objective": opt.objective,
      "kkt_residual": opt.kkt_residual,
      "iterations": opt.iterations,
      "seconds": solve_seconds,
      "zero_groups": int(opt.zeros.sum()),
      "zeros": opt.zeros.tolist(),
      "zero_margin": opt.zero_margin,
      "min_group_norm": opt.min_group_norm,
      "planted_support_recovered": None
      if problem.planted_zeros is None
      else bool(np.array_equal(opt.zeros, problem.planted_zeros)),
    },
    "training": {
      "epochs": epochs,
      "batch_size": batch_size,
      "seed": seed,
      "steps_per_epoch": int(batches.shape[1]),
      "milestone_epochs": [round(epochs * i / STAGES) for i in range(1, STAGES)],
      "dtype": "float64",
    },
    "optimizers": results,
  }


def _jsonable(x: Any) -> Any:
  """`x` with non-finite floats replaced by None (strict JSON has no inf/nan)."""
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_jsonable(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment, prints the table and writes table, JSON and plot.

  Args:
    argv: command-line arguments (default: ``sys.argv[1:]``).

  Returns:
    The report that was written as JSON.
  """
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="results/identification", help="output folder")
  parser.add_argument(
    "--epochs",
    type=int,
    default=None,
    help=f"epochs (default {EPOCHS}, {SMALL_EPOCHS} with --small)",
  )
  parser.add_argument(
    "--small", action="store_true", help="small problems, few epochs (a smoke run)"
  )
  parser.add_argument("--seed", type=int, default=0, help="start and minibatch seed")
  parser.add_argument(
    "--tune",
    action="store_true",
    help="choose learning rates by a grid search on seed + 1 instead of using "
    "TUNED_LEARNING_RATES",
  )
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  epochs = args.epochs or (SMALL_EPOCHS if args.small else EPOCHS)
  if epochs < STAGES:
    parser.error(f"--epochs must be at least {STAGES}")
  if args.small:
    problems = [
      (digits_problem(num_samples=500), 32),
      (planted_problem(n=200, p=20, k=3, s=5, noise=0.5, lam_fraction=0.15), 20),
    ]
  else:
    problems = [(digits_problem(), 64), (planted_problem(), 20)]
  start = time.perf_counter()
  records = []
  for problem, batch_size in problems:
    opt = solve_optimum(problem)
    tuning = None
    if args.tune:
      tuning = tune(problem, opt, epochs, batch_size, args.seed + 1)
      lrs = {name: t["best"] for name, t in tuning.items()}
    else:
      lrs = TUNED_LEARNING_RATES[problem.name]
    record = run_problem(problem, epochs, batch_size, args.seed, lrs, optimum=opt)
    record["tuning"] = tuning
    records.append(record)
  report = {
    "command": " ".join(
      ["python -m optax_ramda.experiments.identification", *(argv or sys.argv[1:])]
    ),
    "problems": records,
    "seconds": time.perf_counter() - start,
  }
  table = markdown_table(report)
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "identification.md"), "w") as f:
    f.write(table)
  with open(os.path.join(args.out, "identification.json"), "w") as f:
    json.dump(_jsonable(report), f, indent=1)
  plot(report, os.path.join(args.out, "identification.png"))
  return report


if __name__ == "__main__":
  main()
