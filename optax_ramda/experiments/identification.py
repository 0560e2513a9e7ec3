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

For each, :func:`solve_optimum` computes the minimizer W* in float64 to a KKT
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
zero, a zero made by rounding rather than by the optimizer (DESIGN §6). At
these sizes float64 on a CPU costs nothing noticeable.

  python -m optax_ramda.experiments.identification [--out DIR] [--epochs N] [--small] [--tune]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import optax_ramda as oxr

Params = dict[str, np.ndarray]

#: Default epochs of a full run, and of a ``--small`` one.
EPOCHS = 300
SMALL_EPOCHS = 60
#: Stages of the paper's schedule: milestones split training into equal parts.
STAGES = 3


@dataclasses.dataclass(frozen=True)
class Problem:
  """A convex group-lasso problem: a smooth loss plus λ Σ_g ω ‖W_g‖₂.

  W has shape (p, k) with one group per row, ω = √k; ``logistic`` problems
  also have an unregularized bias b of shape (k,).

  Attributes:
    name: a short identifier used in tables and file names.
    loss: ``"logistic"`` (mean softmax cross-entropy of x W + b against integer
      labels) or ``"squares"`` (‖x W − y‖² / (2n)).
    x: inputs, (n, p) float64.
    y: integer labels (n,) for ``logistic``, targets (n, k) for ``squares``.
    num_outputs: k.
    reg_strength: λ.
    lam_max: the smallest λ for which W* = 0.
    planted_zeros: for synthetic problems, the zero rows of the generating W.
  """

  name: str
  loss: Literal["logistic", "squares"]
  x: np.ndarray
  y: np.ndarray
  num_outputs: int
  reg_strength: float
  lam_max: float
  planted_zeros: np.ndarray | None = None

  @property
  def num_groups(self) -> int:
    return self.x.shape[1]

  @property
  def group_weight(self) -> float:
    return math.sqrt(self.num_outputs)

  @property
  def has_bias(self) -> bool:
    return self.loss == "logistic"

  def specs(self) -> dict[str, Any]:
    """The spec tree: one group per row of W, bias unregularized."""
    specs: dict[str, Any] = {"w": oxr.group_lasso(axes=(1,))}
    if self.has_bias:
      specs["b"] = None
    return specs


# --------------------------------------------------------------------------
# The exact problem, in NumPy float64.


def loss_and_grad(problem: Problem, params: Params) -> tuple[float, Params]:
  """The smooth part f and its gradient, in NumPy float64 on the full data."""
  x, w = problem.x, params["w"]
  n = x.shape[0]
  if problem.loss == "logistic":
    logits = x @ w + params["b"]
    logits = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1))
    value = float(np.mean(log_norm - logits[np.arange(n), problem.y]))
    residual = np.exp(logits - log_norm[:, None])
    residual[np.arange(n), problem.y] -= 1
    residual /= n
    return value, {"w": x.T @ residual, "b": residual.sum(axis=0)}
  residual = x @ w - problem.y
  value = 0.5 * float(np.sum(residual**2)) / n
  return value, {"w": x.T @ residual / n}


def regularizer(problem: Problem, w: np.ndarray) -> float:
  """ψ(W) = λ Σ_g ω ‖W_g‖₂."""
  norms = np.linalg.norm(w, axis=1)
  return problem.reg_strength * problem.group_weight * float(norms.sum())


def objective(problem: Problem, params: Params) -> float:
  """F = f + ψ on the full data, in float64 (params are cast to float64).

  A diverged run's weights give ``inf`` or ``nan``, without a warning.
  """
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  with np.errstate(over="ignore", invalid="ignore"):
    return loss_and_grad(problem, params)[0] + regularizer(problem, params["w"])


def zero_groups(w: Any) -> np.ndarray:
  """The zero-group pattern of a kernel: True where a whole row is exactly 0."""
  return np.all(np.asarray(w) == 0, axis=1)


def block_soft_threshold(w: np.ndarray, threshold: float) -> np.ndarray:
  """prox of threshold·Σ_g‖W_g‖: W_g · max(0, 1 − threshold/‖W_g‖) per row."""
  norms = np.linalg.norm(w, axis=1, keepdims=True)
  return w * np.maximum(0, 1 - threshold / np.where(norms > 0, norms, 1))


def kkt_residual(problem: Problem, params: Params) -> float:
  """dist(0, ∂F(params)): how far `params` is from first-order optimality.

  Per group, the subdifferential of ψ is {λω W_g/‖W_g‖} when W_g ≠ 0 and the
  ball of radius λω when W_g = 0, so the distance is ‖∇_g f + λω W_g/‖W_g‖‖
  or max(0, ‖∇_g f‖ − λω); the bias contributes ‖∇_b f‖. Returns the
  Euclidean norm over all of them.
  """
  _, grads = loss_and_grad(problem, params)
  w, gw = params["w"], grads["w"]
  tau = problem.reg_strength * problem.group_weight
  norms = np.linalg.norm(w, axis=1)
  safe = np.where(norms > 0, norms, 1)[:, None]
  nonzero_res = np.linalg.norm(gw + tau * w / safe, axis=1)
  zero_res = np.maximum(0, np.linalg.norm(gw, axis=1) - tau)
  per_group = np.where(norms > 0, nonzero_res, zero_res)
  squares = float(np.sum(per_group**2))
  if problem.has_bias:
    squares += float(np.sum(grads["b"] ** 2))
  return math.sqrt(squares)


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
  """A context in which NumPy's BLAS uses one thread.

  The matrices here are small (1,797 × 64 at most): a multithreaded BLAS
  spends more time synchronizing than multiplying, and on a loaded machine
  ten times more. threadpoolctl comes with scikit-learn; without it this is
  a no-op.
  """
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:
    return contextlib.nullcontext()
  return threadpool_limits(limits=1, user_api="blas")


def lipschitz(problem: Problem) -> float:
  """A Lipschitz constant of ∇f (the curvature of softmax CE is at most ½)."""
  x = problem.x
  if problem.has_bias:
    return 0.5 * float(np.linalg.norm(np.c_[x, np.ones(len(x))], 2)) ** 2 / len(x)
  return float(np.linalg.norm(x, 2)) ** 2 / len(x)


@dataclasses.dataclass(frozen=True)
class Optimum:
  """The minimizer of a :class:`Problem` and how it was certified.

  Attributes:
    params: W* (and b*), float64.
    objective: F(w*).
    kkt_residual: dist(0, ∂F(w*)), see :func:`kkt_residual`.
    iterations: accelerated proximal-gradient iterations used.
    zeros: the zero-group pattern of W*.
    zero_margin: min over zero groups of 1 − ‖∇_g f(w*)‖/(λω) (1 if none):
      how strictly the zero groups satisfy their optimality condition. A
      small margin makes a support slow to identify from noisy gradients.
    min_group_norm: min ‖W*_g‖ over the nonzero groups (inf if none).
  """

  params: Params
  objective: float
  kkt_residual: float
  iterations: int
  zeros: np.ndarray
  zero_margin: float
  min_group_norm: float


def solve_optimum(
  problem: Problem,
  tol: float = 1e-10,
  max_iters: int = 200_000,
  check_every: int = 10,
) -> Optimum:
  """The minimizer of F to a KKT residual ≤ `tol` (FISTA with restarts).

  Accelerated proximal gradient (Beck & Teboulle 2009) with step 1/L, the
  exact prox :func:`block_soft_threshold` for W and a plain gradient step for
  the bias, and O'Donoghue & Candès' gradient restart (momentum resets when
  the step points against the last move), which restores linear convergence
  on these locally strongly convex problems. Runs in NumPy float64.

  Args:
    problem: the problem.
    tol: the KKT residual :func:`kkt_residual` to reach.
    max_iters: the iteration cap.
    check_every: iterations between KKT evaluations.

  Returns:
    The :class:`Optimum`.

  Raises:
    RuntimeError: if `tol` is not reached within `max_iters` iterations.

  Examples:
    >>> from optax_ramda.experiments import identification as ident
    >>> problem = ident.planted_problem(n=60, p=8, k=2, s=3, seed=0)
    >>> opt = ident.solve_optimum(problem)
    >>> bool(opt.kkt_residual <= 1e-10)
    True

  References:
    Beck & Teboulle, `A Fast Iterative Shrinkage-Thresholding Algorithm for
    Linear Inverse Problems <https://doi.org/10.1137/080716542>`_, SIAM J.
    Imaging Sciences, 2009.

    O'Donoghue & Candès, `Adaptive Restart for Accelerated Gradient Schemes
    <https://arxiv.org/abs/1204.3982>`_, Found. Comput. Math., 2015.
  """
  with single_threaded_blas():
    return _fista(problem, tol, max_iters, check_every)


def _fista(problem: Problem, tol: float, max_iters: int, check_every: int) -> Optimum:
  step = 1 / lipschitz(problem)
  tau = step * problem.reg_strength * problem.group_weight
  params = initial_bias_only(problem)
  extrapolated = dict(params)
  t = 1.0
  for it in range(1, max_iters + 1):
    _, grads = loss_and_grad(problem, extrapolated)
    new = {k: v - step * grads[k] for k, v in extrapolated.items()}
    new["w"] = block_soft_threshold(new["w"], tau)
    # Gradient restart: the prox-gradient step (y − x⁺) opposes the move (x⁺ − x).
    if sum(np.vdot(extrapolated[k] - new[k], new[k] - params[k]) for k in new) > 0:
      t = 1.0
    t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
    extrapolated = {k: new[k] + (t - 1) / t_next * (new[k] - params[k]) for k in new}
    params, t = new, t_next
    if it % check_every == 0:
      residual = kkt_residual(problem, params)
      if residual <= tol:
        return _certify(problem, params, residual, it)
  raise RuntimeError(
    f"solve_optimum: KKT residual {kkt_residual(problem, params):.2e} > tol "
    f"{tol:.0e} after {max_iters} iterations on problem {problem.name!r}."
  )


def _certify(problem: Problem, params: Params, residual: float, it: int) -> Optimum:
  _, grads = loss_and_grad(problem, params)
  zeros = zero_groups(params["w"])
  tau = problem.reg_strength * problem.group_weight
  grad_norms = np.linalg.norm(grads["w"], axis=1)
  margins = 1 - grad_norms[zeros] / tau
  norms = np.linalg.norm(params["w"], axis=1)[~zeros]
  return Optimum(
    params=params,
    objective=objective(problem, params),
    kkt_residual=residual,
    iterations=it,
    zeros=zeros,
    zero_margin=float(margins.min()) if margins.size else 1.0,
    min_group_norm=float(norms.min()) if norms.size else math.inf,
  )


def initial_bias_only(problem: Problem) -> Params:
  """The minimizer over the bias with W = 0, the point that defines λ_max."""
  params = {"w": np.zeros((problem.num_groups, problem.num_outputs))}
  if problem.has_bias:
    freq = np.bincount(problem.y, minlength=problem.num_outputs) / len(problem.y)
    bias = np.log(freq)
    params["b"] = bias - bias.mean()
  return params


def lambda_max(
  loss: Literal["logistic", "squares"], x: np.ndarray, y: np.ndarray, num_outputs: int
) -> float:
  """The smallest λ for which W* = 0: max_g ‖∇_g f(0, b₀)‖ / ω."""
  probe = Problem("probe", loss, x, y, num_outputs, 0.0, 0.0)
  _, grads = loss_and_grad(probe, initial_bias_only(probe))
  return float(np.linalg.norm(grads["w"], axis=1).max() / math.sqrt(num_outputs))


def digits_problem(
  lam_fraction: float = 0.2, num_samples: int | None = None
) -> Problem:
  """Group-lasso multinomial logistic regression on scikit-learn's digits.

  Inputs are the 64 pixel intensities scaled to [0, 1]; W is (64, 10) with one
  group per pixel (ω = √10) and the bias is unregularized. Three pixels are
  blank in every image, so their groups are zero for any λ > 0.

  Args:
    lam_fraction: λ / λ_max.
    num_samples: use the first `num_samples` images (all 1,797 by default).

  Returns:
    The :class:`Problem`.
  """
  # Imported here: scikit-learn is an optional dependency (test/experiments).
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  x, y = x[:num_samples] / 16.0, y[:num_samples].astype(np.int64)
  lam_max = lambda_max("logistic", x, y, 10)
  return Problem("digits", "logistic", x, y, 10, lam_fraction * lam_max, lam_max)


def planted_problem(
  n: int = 400,
  p: int = 40,
  k: int = 5,
  s: int = 10,
  noise: float = 1.0,
  correlation: float = 0.5,
  lam_fraction: float = 0.2,
  seed: int = 0,
) -> Problem:
  """Multi-output least squares with a planted row support.

  Rows of X are N(0, Σ) with Σ_ij = `correlation`^|i−j|; the generating W has
  `s` nonzero rows at random positions with N(0, 1) entries, and
  Y = X W + `noise`·N(0, 1).

  Args:
    n: samples.
    p: features, i.e. groups.
    k: outputs, the group size.
    s: planted nonzero groups.
    noise: the noise standard deviation.
    correlation: the feature correlation decay.
    lam_fraction: λ / λ_max.
    seed: the data seed.

  Returns:
    The :class:`Problem`, with ``planted_zeros`` set.

  Examples:
    >>> from optax_ramda.experiments import identification as ident
    >>> problem = ident.planted_problem(n=50, p=6, k=2, s=2, seed=1)
    >>> problem.x.shape, problem.y.shape, int(problem.planted_zeros.sum())
    ((50, 6), (50, 2), 4)
  """
  rng = np.random.default_rng(seed)
  idx = np.arange(p)
  cov = correlation ** np.abs(idx[:, None] - idx[None, :])
  x = rng.standard_normal((n, p)) @ np.linalg.cholesky(cov).T
  support = rng.choice(p, size=s, replace=False)
  w = np.zeros((p, k))
  w[support] = rng.standard_normal((s, k))
  y = x @ w + noise * rng.standard_normal((n, k))
  lam_max = lambda_max("squares", x, y, k)
  return Problem(
    "planted", "squares", x, y, k, lam_fraction * lam_max, lam_max, zero_groups(w)
  )


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


#: The paper's learning rates (DESIGN §5); ProxSSI takes ProxGen's.
PAPER_LEARNING_RATES = {
  "RAMDA": 1e-2,
  "RMDA": 0.1,
  "ProxGen": 1e-3,
  "ProxSGD": 0.1,
  "ProxSSI": 1e-3,
}


def optimizers(
  problem: Problem,
  epochs: int,
  steps_per_epoch: int,
  learning_rates: dict[str, float] | None = None,
) -> dict[str, tuple[optax.GradientTransformation, dict[str, Any]]]:
  """Each method with the paper's hyperparameters (DESIGN §5), as (tx, config).

  One schedule for all: the learning rate drops ×0.1 at milestones that split
  training into :data:`STAGES` equal stages (RAMDA and RMDA also restart their
  dual average there and ramp the averaging weight in the last stage).
  c₀ = 0.1 (the top of the paper's range) for RAMDA: with runs of a few
  thousand steps, c₀ = 0.01 would leave c = c₀√(k + 1) < 1 at the end, so the
  model weights would never be the structured Ŵ.

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

  def decayed(lr):
    return optax.piecewise_constant_schedule(lr, dict.fromkeys(milestones, 0.1))

  lam, specs = problem.reg_strength, problem.specs()
  da = dict(momentum=0.1, milestones=milestones, decay=0.1, momentum_ramp=True)
  adam = dict(b1=0.9, b2=0.999, lr_milestones=milestones, lr_decay=0.1)
  configs: dict[str, dict[str, Any]] = {
    "RAMDA": dict(learning_rate=lrs["RAMDA"], eps=1e-6, solver="pg", **da),
    "RMDA": dict(learning_rate=lrs["RMDA"], **da),
    "ProxGen": dict(learning_rate=lrs["ProxGen"], eps=1e-8, solver="pg", **adam),
    "ProxSGD": dict(
      learning_rate=lrs["ProxSGD"], momentum=0.1, lr_milestones=milestones, lr_decay=0.1
    ),
    "ProxSSI": dict(learning_rate=lrs["ProxSSI"], eps=1e-6, **adam),
  }
  reg: dict[str, Any] = dict(reg_strength=lam, regularizer=specs)
  txs = {
    "RAMDA": oxr.ramda(
      lrs["RAMDA"], 0.1, 1e-6, **reg, milestones=milestones, decay=0.1
    ),
    "RMDA": oxr.rmda(lrs["RMDA"], 0.1, **reg, milestones=milestones, decay=0.1),
    "ProxGen": oxr.proxgen(
      decayed(lrs["ProxGen"]), 0.9, 0.999, 1e-8, **reg, solver="pg"
    ),
    "ProxSGD": oxr.prox_sgd(decayed(lrs["ProxSGD"]), 0.1, **reg),
    "ProxSSI": oxr.proxssi(decayed(lrs["ProxSSI"]), 0.9, 0.999, 1e-6, **reg),
  }
  return {name: (txs[name], configs[name]) for name in txs}


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
    "ProxSSI": 0.01,
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
