"""Convex group-lasso problems with a known optimum, in NumPy float64.

The problem half of the identification experiment
(:mod:`optax_ramda.experiments.identification` runs the optimizers on these
problems and reports what they identify):

* :class:`Problem`: a smooth loss (multinomial logistic regression or
  multi-output least squares) plus λ Σ_g ω ‖W_g‖₂ with one group per row of W;
* :func:`digits_problem` and :func:`planted_problem`, the two problems, with λ
  a fraction of :func:`lambda_max`;
* :func:`solve_optimum`: the minimizer W* to a KKT residual of 1e-10
  (accelerated proximal gradient with the exact block soft-threshold and
  adaptive restarts), certified by :func:`kkt_residual`, and its support.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Literal

import numpy as np

import optax_ramda as oxr

Params = dict[str, np.ndarray]


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
