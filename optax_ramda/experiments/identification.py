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
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import optax_ramda as oxr
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

# The problems are defined in _convex; they are re-exported here, the
# experiment's one public entry point.
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
# Stochastic runs, in JAX.


def jax_loss(problem: Problem) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """The minibatch loss ``(params, x, y) -> f`` in JAX (the mean over the batch)."""
  if problem.has_bias:

    def loss(params, xb, yb):
      logits = xb @ params["w"] + params["b"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  else:

    def loss(params, xb, yb):
      return 0.5 * jnp.mean(jnp.sum(jnp.square(xb @ params["w"] - yb), axis=-1))

  return loss


def initial_params(problem: Problem, seed: int = 0, scale: float = 0.1) -> Params:
  """The common start: W ~ scale·N(0, 1) (every group nonzero), b = 0."""
  rng = np.random.default_rng(seed)
  params = {"w": scale * rng.standard_normal((problem.num_groups, problem.num_outputs))}
  if problem.has_bias:
    params["b"] = np.zeros(problem.num_outputs)
  return params


def minibatches(n: int, batch_size: int, epochs: int, seed: int = 0) -> np.ndarray:
  """(epochs, steps, batch_size) sample indices: one reshuffle per epoch.

  The last incomplete batch of each epoch is dropped so every step has the
  same shape (one compilation).
  """
  rng = np.random.default_rng(seed)
  steps = n // batch_size
  return np.stack(
    [
      rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size)
      for _ in range(epochs)
    ]
  )


@dataclasses.dataclass(frozen=True)
class Trace:
  """Per-epoch record of one run; index 0 is the start, index e after epoch e.

  Attributes:
    weight_zeros: (epochs + 1, groups) zero-group patterns of the model weights.
    prox_zeros: the same for Ŵ, or None if the optimizer has no Ŵ.
    objective: (epochs + 1,) F of the model weights, float64 on the full data.
    prox_objective: F(Ŵ) per epoch, or None.
    final_params: the model weights after the last epoch.
    seconds: wall time of the run, compilation included.
  """

  weight_zeros: np.ndarray
  prox_zeros: np.ndarray | None
  objective: np.ndarray
  prox_objective: np.ndarray | None
  final_params: Params
  seconds: float


def _prox_of(state: Any) -> Any | None:
  try:
    return oxr.prox_iterate(state)
  except ValueError:  # The optimizer keeps no Ŵ; its iterate is a prox output.
    return None


def run(
  problem: Problem,
  tx: optax.GradientTransformation,
  init: Params,
  batches: np.ndarray,
) -> Trace:
  """Trains from `init` on `batches`, recording the support after each epoch.

  Call under ``jax.enable_x64(True)`` for float64 runs: parameters take the
  default float dtype. Each epoch is one jitted ``lax.scan`` over its steps;
  the host reads the weights (and Ŵ) once per epoch.

  Args:
    problem: the problem (data and loss).
    tx: the optimizer; Ŵ is recorded when :func:`prox_iterate` finds one in
      its state.
    init: the starting params.
    batches: (epochs, steps, batch_size) sample indices, see :func:`minibatches`.

  Returns:
    The :class:`Trace`.

  Examples:
    >>> import optax_ramda as oxr
    >>> from optax_ramda.experiments import identification as ident
    >>> problem = ident.planted_problem(n=40, p=4, k=2, s=2, seed=0)
    >>> tx = oxr.ramda(1e-2, reg_strength=problem.reg_strength,
    ...                regularizer=problem.specs())
    >>> trace = ident.run(problem, tx, ident.initial_params(problem),
    ...                   ident.minibatches(40, 10, epochs=3))
    >>> trace.weight_zeros.shape, trace.prox_zeros.shape  # start + 3 epochs
    ((4, 4), (4, 4))
  """
  start = time.perf_counter()
  loss = jax_loss(problem)
  x = jnp.asarray(problem.x, float)
  y = jnp.asarray(problem.y) if problem.has_bias else jnp.asarray(problem.y, float)
  params = {k: jnp.asarray(v, float) for k, v in init.items()}
  state = tx.init(params)
  has_prox = _prox_of(state) is not None

  @jax.jit
  def epoch(params, state, idx):
    def step(carry, i):
      params, state = carry
      grads = jax.grad(loss)(params, x[i], y[i])
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    return lax.scan(step, (params, state), idx)[0]

  weights, proxes = [init], [init] if has_prox else []
  for idx in batches:
    params, state = epoch(params, state, jnp.asarray(idx))
    weights.append(jax.device_get(params))
    if has_prox:
      proxes.append(jax.device_get(_prox_of(state)))
  seconds = time.perf_counter() - start

  def record(points):
    zeros = np.stack([zero_groups(p["w"]) for p in points])
    return zeros, np.array([objective(problem, p) for p in points])

  with single_threaded_blas():
    weight_zeros, values = record(weights)
    prox_zeros, prox_values = record(proxes) if has_prox else (None, None)
  return Trace(
    weight_zeros=weight_zeros,
    prox_zeros=prox_zeros,
    objective=values,
    prox_objective=prox_values,
    final_params={k: np.asarray(v) for k, v in weights[-1].items()},
    seconds=seconds,
  )


def support_errors(
  zeros: np.ndarray, optimal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """(false zeros, false nonzeros) of zero patterns `zeros` (..., groups).

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments import identification as ident
    >>> fz, fnz = ident.support_errors(np.array([True, True, False]),
    ...                                np.array([True, False, True]))
    >>> int(fz), int(fnz)
    (1, 1)
  """
  false_zeros = np.sum(zeros & ~optimal, axis=-1)
  false_nonzeros = np.sum(~zeros & optimal, axis=-1)
  return false_zeros, false_nonzeros


def identification_epoch(zeros: np.ndarray, optimal: np.ndarray) -> int | None:
  """The first epoch from which every recorded pattern equals `optimal`.

  Args:
    zeros: (epochs + 1, groups) patterns, row e recorded after epoch e.
    optimal: (groups,) the optimal pattern.

  Returns:
    The epoch e such that rows e, e + 1, ..., last all equal `optimal` and row
    e − 1 does not, or None ("never") when the last row differs.

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments import identification as ident
    >>> opt = np.array([True, False])
    >>> rows = np.array([[False, False], [True, False], [False, False],
    ...                  [True, False], [True, False]])
    >>> ident.identification_epoch(rows, opt)
    3
    >>> ident.identification_epoch(rows[:3], opt) is None
    True
  """
  matches = np.all(zeros == optimal, axis=-1)
  if not matches[-1]:
    return None
  mismatches = np.flatnonzero(~matches)
  return int(mismatches[-1] + 1) if mismatches.size else 0


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


def summarize(trace: Trace, opt: Optimum, config: dict[str, Any]) -> dict[str, Any]:
  """The JSON record of one run against the optimum."""
  fz, fnz = support_errors(trace.weight_zeros, opt.zeros)
  out: dict[str, Any] = {
    "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    "seconds": trace.seconds,
    "identified_weights": identification_epoch(trace.weight_zeros, opt.zeros),
    "false_zeros": int(fz[-1]),
    "false_nonzeros": int(fnz[-1]),
    "objective_gap": float(trace.objective[-1] - opt.objective),
    "zero_groups": int(trace.weight_zeros[-1].sum()),
    "per_epoch": {
      "false_zeros": fz.tolist(),
      "false_nonzeros": fnz.tolist(),
      "objective_gap": (trace.objective - opt.objective).tolist(),
    },
    "identified_prox": None,
  }
  if trace.prox_zeros is not None and trace.prox_objective is not None:
    pfz, pfnz = support_errors(trace.prox_zeros, opt.zeros)
    out["identified_prox"] = identification_epoch(trace.prox_zeros, opt.zeros)
    out["prox_false_zeros"] = int(pfz[-1])
    out["prox_false_nonzeros"] = int(pfnz[-1])
    out["prox_objective_gap"] = float(trace.prox_objective[-1] - opt.objective)
    out["per_epoch"]["prox_false_zeros"] = pfz.tolist()
    out["per_epoch"]["prox_false_nonzeros"] = pfnz.tolist()
  return out


def _fmt_epoch(epoch: int | None) -> str:
  return "never" if epoch is None else str(epoch)


def markdown_table(report: dict[str, Any]) -> str:
  """One markdown table per problem from :func:`run_problem` records."""
  lines = []
  for rec in report["problems"]:
    prob, opt = rec["problem"], rec["optimum"]
    lines += [
      f"**{prob['name']}** ({prob['loss']}, n = {prob['samples']}, "
      f"{prob['groups']} groups of {prob['group_size']}, "
      f"λ = {prob['lam_fraction']:g}·λ_max = {prob['reg_strength']:.4g}): "
      f"W* has {opt['zero_groups']} zero groups, KKT residual "
      f"{opt['kkt_residual']:.1e}, zero-group margin {opt['zero_margin']:.3f}, "
      f"smallest nonzero ‖W*_g‖ {opt['min_group_norm']:.3f}"
      + (
        ""
        if opt["planted_support_recovered"] is None
        else f", planted support recovered: {opt['planted_support_recovered']}"
      )
      + f"; {rec['training']['epochs']} epochs of {rec['training']['steps_per_epoch']} steps.",
      "",
      "| optimizer | learning rate | support of w identified at epoch "
      "| support of Ŵ identified at epoch | false zeros | false nonzeros "
      "| F(w) − F(w*) |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rec["optimizers"].items():
      has_prox = "prox_false_zeros" in r
      prox = _fmt_epoch(r["identified_prox"]) if has_prox else "—"
      lines.append(
        f"| {name} | {r['config']['learning_rate']:g} "
        f"| {_fmt_epoch(r['identified_weights'])} | {prox} | "
        f"{r['false_zeros']} | {r['false_nonzeros']} | {r['objective_gap']:.2e} |"
      )
    lines.append("")
  return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
  """Support error (false zeros + false nonzeros) and objective gap vs epochs.

  One column per problem; solid lines are the model weights w, dashed ones Ŵ
  (:func:`prox_iterate`) where the method has one; dotted verticals mark the
  milestones.
  """
  # Imported here: matplotlib is optional (the experiments extra).
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  recs = report["problems"]
  fig, axes = plt.subplots(2, len(recs), figsize=(6.5 * len(recs), 7.5), squeeze=False)
  for col, rec in enumerate(recs):
    top, bottom = axes[0, col], axes[1, col]
    methods = list(rec["optimizers"].items())
    for i, (name, r) in enumerate(methods):
      style = dict(color=f"C{i}", zorder=2 + len(methods) - i)  # RAMDA on top.
      per = r["per_epoch"]
      epochs = np.arange(len(per["false_zeros"]))
      err = np.add(per["false_zeros"], per["false_nonzeros"])
      top.plot(epochs, err, lw=1.5, label=f"{name} (w)", **style)
      if "prox_false_zeros" in per:
        perr = np.add(per["prox_false_zeros"], per["prox_false_nonzeros"])
        top.plot(epochs, perr, ls="--", lw=1, label=f"{name} (Ŵ)", **style)
      gap = np.maximum(np.asarray(per["objective_gap"], float), 1e-16)
      bottom.semilogy(epochs, gap, lw=1.2, **style)
    for epoch in rec["training"]["milestone_epochs"]:
      for ax in (top, bottom):
        ax.axvline(epoch, color="0.5", ls=":", lw=1)
    prob, opt = rec["problem"], rec["optimum"]
    top.set_title(
      f"{prob['name']}: {opt['zero_groups']} of {prob['groups']} groups zero at W*, "
      f"margin {opt['zero_margin']:.3f}",
      fontsize=10,
    )
    top.set_ylabel("support error (false zeros + false nonzeros)")
    top.set_yscale("symlog", linthresh=1)
    top.set_ylim(bottom=0)
    bottom.set_ylabel("objective gap F(w) − F(w*)")
    bottom.set_xlabel("epoch")
    for ax in (top, bottom):
      ax.grid(True, alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


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
