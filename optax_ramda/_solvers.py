"""Solvers for the per-leaf subproblem of RAMDA and its baselines.

The mathematics (screening, the stopping rules, the exact solver) is in
docs/algorithm.md#the-subproblem.

For one leaf, with preconditioner ``d > 0`` (RAMDA's D), dual average ``v``
(V), anchor ``W⁰`` and threshold ``τ = αλ``, the subproblem is

.. math::

  \\min_z \\; ⟨v, z - W⁰⟩ + \\tfrac12 \\sum_i d_i (z_i - W⁰_i)^2
    + τ \\bar ψ(z),

with ψ̄ = ψ/λ the spec's regularizer at unit strength (τψ̄ = αψ). It is
separable over the groups of ψ. Everything here is jit-compatible: screened
groups are masked, never dropped, and iterations run in ``lax.while_loop``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_ramda import _checks

_SOLVERS = ("pg", "exact", "exact_unrolled")
Solver = Literal["pg", "exact", "exact_unrolled"]
_STOPPINGS = ("decrease", "subgradient")
Stopping = Literal["decrease", "subgradient"]
_WARM_STARTS = ("params", "prox")
WarmStart = Literal["params", "prox"]

# ε_k = ε₀ k^(−SUBGRADIENT_DECAY) for the paper's condition (7); see
# `subgradient_tolerance`.
SUBGRADIENT_DECAY = 0.51

# The exact solver stops a group once |φ(μ) − τω_g| ≤ _EXACT_TOL_ULPS · eps · τω_g
# (eps of the compute dtype); from the upper end of its bracket safeguarded Newton
# gets there in 4-7 evaluations when D spans a few decades within a group and in at
# most ~16 when it spans 16, so the cap only guards against non-finite input.
_EXACT_TOL_ULPS = 4
_EXACT_MAX_ITERS = 40
# The Newton steps "exact_unrolled" takes before it checks convergence: from the
# Jensen start the models of BENCHMARKS.md need 1-3 (the "exact" solver's 2-4
# evaluations, the last of which only confirms); a group that needs more is
# finished by the loop of "exact", so the count trades speed, not accuracy.
UNROLLED_STEPS = 3


def check_solver(solver: str) -> None:
  """Raises unless `solver` names a mode of the subproblem solver."""
  if solver not in _SOLVERS:
    raise ValueError(f"`solver` must be one of {_SOLVERS}, got {solver!r}.")


def check_warm_start(warm_start: str) -> None:
  """Raises unless `warm_start` names a starting point of the iterative solvers."""
  if warm_start not in _WARM_STARTS:
    raise ValueError(f"`warm_start` must be one of {_WARM_STARTS}, got {warm_start!r}.")


def check_stopping(stopping: str, subgradient_tol: jax.typing.ArrayLike) -> None:
  """Raises unless `stopping` names a rule and a concrete tolerance is >= 0."""
  if stopping not in _STOPPINGS:
    raise ValueError(f"`stopping` must be one of {_STOPPINGS}, got {stopping!r}.")
  _checks.check_nonnegative("subgradient_tol", subgradient_tol)


def subgradient_tolerance(
  eps0: jax.typing.ArrayLike,
  alpha: jax.typing.ArrayLike,
  k: jax.typing.ArrayLike,
  size: int,
) -> jax.Array:
  r"""The leaf's bound on ‖s‖₂, s ∈ ∂q(z), for ``stopping="subgradient"``.

  The paper's condition (7) asks for :math:`\min_{s∈∂Q_t(z)} ‖s‖ ≤ ε_t` and
  :math:`Q_t(z) ≤ Q_t(W_{t-1})` with a square-summable sequence ε_t. The
  library applies it, as an *interpretation*, to :math:`q/α_k`, the subproblem
  divided by α (its subgradients have the scale of one averaged gradient
  whatever k; the paper's Algorithm 1 hands this scaled problem to its inner
  solver, while its (7) and App. B state the condition for the unscaled
  :math:`Q_t`). With ν = `eps0` and a leaf of n entries,

  .. math::

    ε_k = ν \sqrt{n} \, k^{-0.51}, \qquad
    \text{stop once } ‖s‖ ≤ α_k ε_k,

  that is, a root-mean-square entry of :math:`s/α_k` of at most
  :math:`ν k^{-0.51}`; over all leaves (N regularized entries) the bounds
  combine to :math:`ν \sqrt{N} k^{-0.51}`, and
  :math:`\sum_k ε_k^2 = ν^2 n ζ(1.02) < ∞`. On the unscaled residual the
  bound :math:`α_k ε_k` grows like :math:`k^{0.99}` within a stage
  (:math:`α_k ≈ \tfrac23 η k^{1.5}`), where the literal condition would
  shrink. Any exponent above ½ keeps :math:`\sum ε_k^2` finite; 0.51, just
  above ½, asks for the least extra accuracy late in a stage, and so for the
  fewest inner iterations. k restarts with the dual average at each stage
  (finitely many), so the sum stays finite over a run.

  Args:
    eps0: ν ≥ 0 (the optimizers' `subgradient_tol`), the root-mean-square
      bound on the entries of s/α at k = 1.
    alpha: α_k of the subproblem.
    k: the step count of the current stage (≥ 1).
    size: n, the leaf's number of entries.

  Returns:
    The bound for ``solve_group_lasso(..., subgradient_tol=...)``.

  Examples:
    >>> import optax_ramda as oxr
    >>> float(oxr.subgradient_tolerance(1e-3, alpha=2.0, k=1, size=100))
    0.02
  """
  k = jnp.asarray(k)
  dtype = jnp.result_type(alpha, float)
  decay = k.astype(dtype) ** -SUBGRADIENT_DECAY
  return jnp.asarray(eps0, dtype) * jnp.asarray(alpha, dtype) * math.sqrt(size) * decay


def group_norm(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """‖x_g‖₂ per group, keeping the group axes as size-1 axes."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def group_weight(
  shape: tuple[int, ...], axes: tuple[int, ...], weight: float | str
) -> float:
  """ω_g for groups spanning `axes` of a leaf of `shape`."""
  if weight == "sqrt":
    return math.sqrt(math.prod(shape[a] for a in axes))
  return float(weight)


def normalize_axes(axes: int | Sequence[int], ndim: int) -> tuple[int, ...]:
  """Checks group `axes` against a rank-`ndim` leaf; returns them nonnegative."""
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  if not axes:
    raise ValueError("`axes` must name at least one group axis.")
  if not all(-ndim <= a < ndim for a in axes):
    raise ValueError(f"`axes` {axes} are out of range for rank {ndim}.")
  out = tuple(sorted(a % ndim for a in axes))
  if len(set(out)) != len(out):
    raise ValueError(f"`axes` {axes} name the same axis twice.")
  return out


def prox_l1(
  v: jax.Array, d: jax.Array, anchor: jax.Array, threshold: jax.typing.ArrayLike
) -> jax.Array:
  """Closed-form ℓ1 subproblem: z_i = soft(W⁰_i − v_i/d_i, τ/d_i).

  Args:
    v: the dual average (weighted gradient sum).
    d: the diagonal preconditioner, positive.
    anchor: the anchor W⁰.
    threshold: τ ≥ 0.

  Returns:
    The minimizer z, with the dtype of `v`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> oxr.prox_l1(jnp.array([-3.0, 0.5]), jnp.ones(2), jnp.zeros(2), 1.0)
    Array([2., 0.], dtype=float32)
  """
  tau = jnp.asarray(threshold, v.dtype)
  return soft_threshold(anchor - v / d, tau / d)


def soft_threshold(x: jax.Array, cut: jax.typing.ArrayLike) -> jax.Array:
  """sign(x)·max(|x| − cut, 0), the prox of cut·|·|, entrywise."""
  # +0, not -0; and |x| ≤ cut, not |x| > cut, so that a NaN stays NaN.
  return jnp.where(jnp.abs(x) <= cut, 0, x - jnp.sign(x) * cut).astype(x.dtype)


def block_soft_threshold(
  x: jax.Array, cut: jax.typing.ArrayLike, axes: tuple[int, ...]
) -> jax.Array:
  """x_g·max(1 − cut/‖x_g‖, 0) per group: the prox of cut·‖·‖₂ on each group."""
  norm = group_norm(x, axes)
  # Zero iff ‖x_g‖ ≤ cut, as safe screening does: comparing (rather than
  # clipping 1 − cut/‖x_g‖) keeps a group whose norm underflows to 0 at zero,
  # and a NaN norm NaN.
  return x * jnp.where(norm <= cut, 0, 1 - cut / norm)


def solve_group_lasso(
  v: jax.Array,
  d: jax.Array,
  anchor: jax.Array,
  threshold: jax.typing.ArrayLike,
  axes: int | Sequence[int],
  weight: float | Literal["sqrt"] = "sqrt",
  init: jax.Array | None = None,
  solver: Solver = "pg",
  max_iters: jax.typing.ArrayLike = 100,
  rtol: jax.typing.ArrayLike = 1e-8,
  *,
  stopping: Stopping = "decrease",
  subgradient_tol: jax.typing.ArrayLike = 0.0,
) -> tuple[jax.Array, jax.Array]:
  r"""Solves the group-lasso subproblem of one leaf.

  .. math::

    \min_z \; ⟨v, z - W⁰⟩ + \tfrac12 \sum_i d_i (z_i - W⁰_i)^2
      + τ \sum_g ω_g ‖z_g‖_2

  Per group, with :math:`b_g = d_g ∘ W⁰_g − v_g`, *safe screening* is exact:
  :math:`z_g^* = 0` iff :math:`‖b_g‖ ≤ τ ω_g`. Screened groups are set to zero
  and left out of the iteration and of the stopping objective. With τ = 0 the
  solution is the closed form :math:`W⁰ − v/d` (zero iterations). The
  remaining groups are solved by `solver`:

  * ``"pg"``, the paper's proximal gradient with per-group step
    :math:`h_g = 1/\max_{i∈g} d_i`,

    .. math::

      y = z − h_g (v_g + d_g ∘ (z − W⁰_g)), \qquad
      z = y \max(0, 1 − h_g τ ω_g / ‖y‖),

    warm-started at `init` and stopped at `max_iters` or, with
    ``stopping="decrease"`` (the authors' code, default), after iteration
    :math:`j ≥ 2` once :math:`(\bar q_{j−1} − \bar q_j)/(|\bar q_j| + 1) <
    \text{rtol}` (q̄ the objective over unscreened groups); with
    ``stopping="subgradient"`` (after the paper's condition (7); see
    :func:`subgradient_tolerance`), once the
    subgradient :math:`s = (d − 1/h)∘(z − z^-) ∈ ∂q(z)` left by the last step
    :math:`z^- → z` has :math:`‖s‖_2 ≤` `subgradient_tol` and
    :math:`q(z) ≤ q(\text{init})`.
  * ``"exact"``: the optimum is :math:`z_g = b_g / (d_g + μ_g)` where
    :math:`μ_g > 0` is the root of the increasing *secular equation*
    :math:`φ(μ) = μ ‖b_g / (d_g + μ)‖ = τ ω_g`. It lies in the bracket
    :math:`τω_g [\min d_g, \bar d_g] / (‖b_g‖ − τω_g)` with
    :math:`\bar d_g = Σ b_g^2 d_g / ‖b_g‖^2` (Jensen; one point, the closed
    form, when d is constant where b ≠ 0). Newton's method on the concave
    :math:`F(μ) = μ/φ(μ) − μ/τω_g`, started at the bracket's upper end,
    decreases monotonically to the root and converges quadratically; it is
    safeguarded by bisection (in log scale) on the bracket and stops a group
    once :math:`|φ(μ) − τω_g| ≤ 4\,\text{eps}\,τω_g`. All groups of the leaf
    iterate together, each frozen once converged; one iteration is one pass
    over b and d (3–4 suffice in the solver study of BENCHMARKS.md, at most
    ~16 when d spans 16 decades within a group). The PG arguments `init`,
    `max_iters`, `rtol`, `stopping` and `subgradient_tol` are not used.
  * ``"exact_unrolled"`` (what ``"exact"`` runs when JAX's default backend is
    not the CPU): the same solution with the fewest sequential loop trips.
    K = 3 safeguarded Newton steps from the same start run without a loop (a
    converged group is left as it is); the test
    :math:`|μ‖z_g‖ − τω_g| ≤ 4\,\text{eps}\,τω_g` on the resulting
    :math:`z_g = b_g/(d_g + μ)` (φ(μ) = μ‖z_g‖, so no further evaluation)
    decides whether the loop of ``"exact"`` must finish some group, behind one
    ``lax.cond``. On the models of BENCHMARKS.md three steps always sufficed
    (zero loop trips); on random data with d over a few decades some groups
    need 4-9 evaluations and the fallback takes them, so the result is exact
    either way.

  Args:
    v: the dual average (weighted gradient sum) of the leaf.
    d: the diagonal preconditioner, positive, same shape as `v`.
    anchor: the anchor W⁰.
    threshold: τ ≥ 0; ω_g is applied inside.
    axes: the axes one group spans, as in :func:`group_lasso`.
    weight: ``"sqrt"`` for ω_g = √|g|, or a float.
    init: the warm start of ``"pg"`` (default: `anchor`). To reproduce an
      optimizer's step, pass its warm start: the params before that update.
    solver: ``"pg"`` (default here: the paper's solver, faithful stopping; the
      optimizers default to ``"exact"``), ``"exact"``
      (per-group Newton to machine precision; on accelerators it runs as
      ``"exact_unrolled"``) or ``"exact_unrolled"`` (the same solution, its
      first 3 steps without a loop).
    max_iters: the iteration cap of ``"pg"``.
    rtol: the relative-decrease tolerance of ``"pg"``.
    stopping: ``"decrease"`` or ``"subgradient"``, the stopping rule of
      ``"pg"``.
    subgradient_tol: the bound on ‖s‖₂ (over the leaf) of
      ``stopping="subgradient"``; :func:`subgradient_tolerance` gives the
      paper's sequence.

  Returns:
    ``(z, iterations)``: the solution, with the dtype of `v`, and the number of
    PG iterations (``"pg"``) or of Newton evaluations needed by the slowest
    group (``"exact"``), or 3 plus the trips of the fallback loop
    (``"exact_unrolled"``), an int32 scalar; 0 when τ = 0 (and, for ``"pg"``
    and ``"exact"``, when every group is screened or, for ``"exact"``, solved
    in closed form).

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> v = jnp.array([[-4.0, 0.0], [0.1, 0.1]])
    >>> z, iters = oxr.solve_group_lasso(
    ...     v, jnp.ones_like(v), jnp.zeros_like(v), threshold=1.0, axes=(1,))
    >>> z  # row 0 shrinks by τ·√2 in norm, row 1 is screened to zero
    Array([[2.585..., 0.  ],
           [0.   , 0.  ]], dtype=float32)
    >>> int(iters)
    2

    With a preconditioner that varies within a group, ``"exact"`` reaches the
    optimum that PG only approaches:

    >>> d = jnp.array([[1.0, 100.0], [1.0, 1.0]])
    >>> z, iters = oxr.solve_group_lasso(
    ...     v, d, jnp.zeros_like(v), threshold=1.0, axes=(1,), solver="exact")
    >>> z
    Array([[2.585..., 0.  ],
           [0.   , 0.  ]], dtype=float32)
    >>> int(iters)  # d is constant where b ≠ 0: the closed form, no Newton step
    0

  References:
    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural Network
    <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.

    Moré & Sorensen, `Computing a Trust Region Step
    <https://doi.org/10.1137/0904038>`_, SIAM J. Sci. Stat. Comput., 1983
    (Newton on the reciprocal norm of a secular equation).
  """
  check_solver(solver)
  check_stopping(stopping, subgradient_tol)
  _checks.check_max_iters(max_iters)
  _checks.check_nonnegative("rtol", rtol)
  _checks.check_nonnegative("threshold", threshold)
  axes = normalize_axes(axes, v.ndim)
  if v.size == 0:  # No entries, nothing to solve (and no max over an empty group).
    return jnp.zeros_like(v), jnp.zeros([], jnp.int32)
  dtype = v.dtype
  init = anchor if init is None else init
  tau_w = jnp.asarray(threshold, dtype) * group_weight(v.shape, axes, weight)

  def closed_form():
    return anchor - v / d, jnp.zeros([], jnp.int32)

  def proximal_gradient():
    # Screened inside the branch, so a step with τ = 0 does not pay for it.
    screen = screen_group_lasso(v, d, anchor, tau_w, axes)
    return pg_group_lasso(
      v,
      d,
      anchor,
      tau_w,
      screen,
      init.astype(dtype),
      axes,
      max_iters,
      rtol,
      stopping,
      subgradient_tol,
    )

  def exact():
    z, iters, _ = exact_group_lasso(v, d, anchor, tau_w, axes)
    return z, iters

  def exact_unrolled():
    z, iters, _ = exact_group_lasso(v, d, anchor, tau_w, axes, unrolled=UNROLLED_STEPS)
    return z, iters

  # The branch's operands are buffers: without the lax.cond, XLA:CPU fuses the
  # producers of v and d (RAMDA's cube root) into every unrolled pass and
  # recomputes them (measured: the VAE step at 4.0× AdamW instead of 2.3×).
  iterate = dict(pg=proximal_gradient, exact=exact, exact_unrolled=exact_unrolled)
  if solver == "exact" and jax.default_backend() != "cpu":
    # Off CPU each loop trip is a host round trip: the fewest trips win.
    solver = "exact_unrolled"
  return lax.cond(tau_w > 0, iterate[solver], closed_form)


def solve_nuclear(
  v: jax.Array,
  d: jax.Array,
  anchor: jax.Array,
  threshold: jax.typing.ArrayLike,
  init: jax.Array | None = None,
  max_iters: jax.typing.ArrayLike = 5,
  rtol: jax.typing.ArrayLike = 1e-3,
  *,
  stopping: Stopping = "decrease",
  subgradient_tol: jax.typing.ArrayLike = 0.0,
) -> tuple[jax.Array, jax.Array]:
  r"""Solves the nuclear-norm subproblem of one 2-D leaf.

  .. math::

    \min_z \; ⟨v, z - W⁰⟩ + \tfrac12 \sum_i d_i (z_i - W⁰_i)^2 + τ ‖z‖_*

  by proximal gradient with the global step :math:`h = 1/\max_i d_i`; the prox
  of :math:`hτ‖·‖_*` soft-thresholds the singular values:

  .. math::

    y = z − h (v + d ∘ (z − W⁰)), \qquad
    z = U \max(Σ − hτ, 0) V^⊤ \quad (y = U Σ V^⊤).

  When d is constant the first step is exact. The stopping rules are those of
  :func:`solve_group_lasso` (q̄ is the whole objective); the defaults
  ``max_iters=5, rtol=1e-3`` are the authors'. With τ = 0 the solution is the
  closed form :math:`W⁰ − v/d` (zero iterations).

  Args:
    v: the dual average of the leaf, a matrix.
    d: the diagonal preconditioner, positive, same shape as `v`.
    anchor: the anchor W⁰.
    threshold: τ ≥ 0.
    init: the warm start (default: `anchor`).
    max_iters: the iteration cap.
    rtol: the relative-decrease tolerance of ``stopping="decrease"``.
    stopping: ``"decrease"`` or ``"subgradient"``, as in
      :func:`solve_group_lasso`.
    subgradient_tol: the bound on ‖s‖₂ of ``stopping="subgradient"``.

  Returns:
    ``(z, iterations)``: the solution, with the dtype of `v`, and the number of
    PG iterations (an int32 scalar).

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> v = -jnp.diag(jnp.array([3.0, 0.5]))  # singular values 3 and 0.5
    >>> z, iters = oxr.solve_nuclear(v, jnp.ones_like(v), jnp.zeros_like(v), 1.0)
    >>> z  # rank one: 3 shrinks to 2, 0.5 to 0
    Array([[2., 0.],
           [0., 0.]], dtype=float32)
  """
  check_stopping(stopping, subgradient_tol)
  _checks.check_max_iters(max_iters)
  _checks.check_nonnegative("rtol", rtol)
  _checks.check_nonnegative("threshold", threshold)
  if v.ndim != 2:
    raise ValueError(f"solve_nuclear needs a matrix, got shape {v.shape}.")
  if v.size == 0:  # No entries, nothing to solve (and no max over an empty D).
    return jnp.zeros_like(v), jnp.zeros([], jnp.int32)
  dtype = v.dtype
  # SVDs of narrow floats are not supported everywhere; work in at least f32.
  compute = jnp.promote_types(dtype, jnp.float32)
  v, d, anchor = v.astype(compute), d.astype(compute), anchor.astype(compute)
  init = anchor if init is None else init.astype(compute)
  tau = jnp.asarray(threshold, compute)
  step = 1 / jnp.max(d)
  gap = d - 1 / step

  # The iterate travels with its nuclear norm, which the prox knows for free.
  def pg_step(carry):
    z, _ = carry
    u, sigma, vt = jnp.linalg.svd(
      z - step * (v + d * (z - anchor)), full_matrices=False
    )
    sigma = jnp.maximum(sigma - step * tau, 0)
    return (u * sigma) @ vt, jnp.sum(sigma)

  def objective(carry):
    z, nuclear_norm = carry
    dz = z - anchor
    return jnp.sum(v * dz + 0.5 * d * jnp.square(dz)) + tau * nuclear_norm

  def subgradient_norm(carry, carry_prev):
    return jnp.sqrt(jnp.sum(jnp.square(gap * (carry[0] - carry_prev[0]))))

  def closed_form():
    return anchor - v / d, jnp.zeros([], jnp.int32)

  def proximal_gradient():
    start = (init, jnp.sum(jnp.linalg.svd(init, compute_uv=False)))
    run = jnp.ones([], bool)
    if stopping == "subgradient":
      carry, iters = _pg_subgradient_loop(
        pg_step,
        objective,
        subgradient_norm,
        start,
        start,
        subgradient_tol,
        max_iters,
        run,
      )
    else:
      carry, iters = _pg_decrease_loop(pg_step, objective, start, max_iters, rtol, run)
    return carry[0], iters

  z, iters = lax.cond(tau > 0, proximal_gradient, closed_form)
  return z.astype(dtype), iters


class Screening(NamedTuple):
  """One pass of safe screening over a leaf (see :func:`screen_group_lasso`).

  Attributes:
    b: D∘W⁰ − V, entrywise.
    norm_b: ‖b_g‖₂ per group (group axes kept as size-1 axes).
    d_min: min_{i∈g} d_i per group.
    d_max: max_{i∈g} d_i per group.
    active: ``~(‖b_g‖ ≤ τω_g)``: the groups whose optimum is not zero (a NaN
      norm stays active).
  """

  b: jax.Array
  norm_b: jax.Array
  d_min: jax.Array
  d_max: jax.Array
  active: jax.Array


def screen_group_lasso(
  v: jax.Array,
  d: jax.Array,
  anchor: jax.Array,
  tau_w: jax.Array,
  axes: tuple[int, ...],
) -> Screening:
  r"""Safe screening and the per-group setup of both solvers, computed once.

  ‖b_g‖ with b = D∘W⁰ − V decides screening (:math:`z_g^* = 0` iff
  :math:`‖b_g‖ ≤ τω_g`); the extreme entries of d give PG's step
  :math:`1/\max_g d` and the exact solver's bracket.
  """
  b = d * anchor - v
  # Three reductions, not one variadic one: on XLA:CPU each of these is a
  # vectorized kernel, and together they measured no slower than the variadic
  # reduction (a sequential loop), whose sum is also less accurate.
  sq = jnp.sum(jnp.square(b), axis=axes, keepdims=True)
  d_min = jnp.min(d, axis=axes, keepdims=True)
  d_max = jnp.max(d, axis=axes, keepdims=True)
  norm_b = jnp.sqrt(sq)
  return Screening(b, norm_b, d_min, d_max, ~(norm_b <= tau_w))


def newton_step(
  b: jax.Array,
  d: jax.Array,
  tau_w: jax.Array,
  axes: tuple[int, ...],
  mu: jax.Array,
  lo: jax.Array,
  hi: jax.Array,
  done: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One safeguarded Newton evaluation of the exact solver, for every group.

  Reads b and d once per sum, with one reciprocal 1/(d + μ) per entry;
  groups already `done` keep their μ.

  Args:
    b: D∘W⁰ − V.
    d: the positive preconditioner.
    tau_w: τω_g > 0.
    axes: the (normalized) group axes.
    mu: μ per group (group axes kept as size-1 axes).
    lo: the lower end of each group's bracket.
    hi: the upper end.
    done: the groups that have converged.

  Returns:
    ``(mu, lo, hi, done)`` after the evaluation.
  """
  eps = jnp.finfo(mu.dtype).eps
  # In w = μ/(d + μ) ∈ (0, 1] nothing overflows: φ = ‖b∘w‖ and
  # μφ'(μ) = Σ b²w²(1 − w)/φ, with 1 − w = d/(d + μ) formed without
  # cancellation.
  r = 1 / (d + mu)
  bw2 = jnp.square(b * (mu * r))
  # One sum over the stacked pair, not two sums (XLA:CPU writes out the shared
  # operands of two reductions and reads them once per sum) nor a variadic
  # reduction (XLA:CPU's is a sequential sum, not accurate enough for the
  # 4-ulp convergence test).
  pair = jnp.stack([bw2, bw2 * (d * r)])
  s2, s3 = jnp.sum(pair, axis=tuple(a + 1 for a in axes), keepdims=True)
  err = jnp.sqrt(s2) - tau_w
  converged = jnp.abs(err) <= _EXACT_TOL_ULPS * eps * tau_w
  lo = jnp.where(err < 0, mu, lo)
  hi = jnp.where(err > 0, mu, hi)
  # Newton on F(μ) = μ/φ − μ/τω_g, rearranged: μ ← μ·s3τω/(s3τω + s2(φ − τω)).
  newton = mu * (s3 * tau_w) / (s3 * tau_w + s2 * err)
  inside = (newton >= lo) & (newton <= hi)  # False on NaN.
  bisect = jnp.where(lo > 0, jnp.sqrt(lo) * jnp.sqrt(hi), 0.5 * hi)
  step = jnp.where(inside, newton, bisect)
  stalled = jnp.abs(step - mu) <= 2 * eps * mu
  mu = jnp.where(done | converged, mu, step)
  done = done | converged | stalled | ~jnp.isfinite(err)
  return mu, lo, hi, done


def exact_group_lasso(
  v: jax.Array,
  d: jax.Array,
  anchor: jax.Array,
  tau_w: jax.Array,
  axes: tuple[int, ...],
  mu_init: jax.Array | None = None,
  unrolled: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The ``"exact"`` and ``"exact_unrolled"`` solvers (see :func:`solve_group_lasso`).

  Args:
    v: the dual average.
    d: the positive preconditioner.
    anchor: the anchor W⁰.
    tau_w: τω_g > 0, a scalar.
    axes: the (normalized) group axes.
    mu_init: optional per-group Newton start (group axes kept as size-1 axes),
      clipped into the bracket; default: the bracket's upper end.
    unrolled: ``None`` for ``"exact"`` (a ``while_loop`` until every group has
      converged); an int K for ``"exact_unrolled"``: K Newton steps without a
      loop, the convergence test on the resulting z, and the loop of ``"exact"``
      (behind one ``lax.cond``) only for a leaf with a group not yet converged.

  Returns:
    ``(z, iterations, mu)``: the solution in the dtype of `v`; for ``"exact"``
    the Newton evaluations of the slowest group, for ``"exact_unrolled"`` K plus
    the trips of its fallback loop; and μ per group (on screened groups, a
    finite placeholder).
  """
  dtype = v.dtype
  # Narrow floats would make the root as coarse as their epsilon; solve in f32.
  compute = jnp.promote_types(dtype, jnp.float32)
  v, d, anchor = v.astype(compute), d.astype(compute), anchor.astype(compute)
  tau_w = jnp.asarray(tau_w, compute)
  tol = _EXACT_TOL_ULPS * jnp.finfo(compute).eps
  b = d * anchor - v
  norm_b = group_norm(b, axes)
  d_min = jnp.min(d, axis=axes, keepdims=True)
  active = ~(norm_b <= tau_w)  # Safe screening; a NaN norm stays active.
  gap = jnp.where(active, norm_b - tau_w, 1)
  # The bracket. φ(μ) ≤ μ‖b‖/(min d + μ) gives the lower end. By Jensen
  # (1/(x + μ)² is convex), φ(μ) ≥ μ‖b‖/(d̄ + μ) with d̄ = Σb²d/Σb², so
  # τω d̄/(‖b‖ − τω) is at or above the root: the upper end, and Newton's
  # start, closer to the root than the textbook τω max d/(‖b‖ − τω).
  # The weights (b/‖b‖)² ≤ 1 keep Σ b²d from overflowing where b² and d are
  # large. b/‖b‖ is not b² shared with ‖b‖, which XLA:CPU would write out
  # for its two reductions (measured 0.2 ms of 1.6 on the Dense VAE's leaves).
  unit = b * (1 / jnp.where(active, norm_b, 1))
  d_bar = jnp.sum(jnp.square(unit) * d, axis=axes, keepdims=True)
  lo = tau_w * d_min / gap
  hi = jnp.maximum(tau_w * d_bar / gap, lo)
  mu = hi if mu_init is None else jnp.clip(mu_init.astype(compute), lo, hi)
  # Screened groups, and groups with constant d (lo = hi up to the rounding of
  # d̄: the closed form, to within the solver's 4-ulp tolerance), are done.
  done = ~active | (hi - lo <= tol * hi)

  def solution(mu):
    return jnp.where(active, b / (d + mu), 0)

  def body(carry):
    j, *state = carry
    return j + 1, *newton_step(b, d, tau_w, axes, *state)

  def cond(carry):
    j, *_, done = carry
    return (j < _EXACT_MAX_ITERS) & ~jnp.all(done)

  def newton_loop(mu, lo, hi, done):
    iters, mu, *_ = lax.while_loop(
      cond, body, (jnp.zeros([], jnp.int32), mu, lo, hi, done)
    )
    return iters, mu

  if unrolled is None:
    iters, mu = newton_loop(mu, lo, hi, done)
    return solution(mu).astype(dtype), iters, mu

  for _ in range(unrolled):
    mu, lo, hi, done = newton_step(b, d, tau_w, axes, mu, lo, hi, done)
  z = solution(mu)
  # The convergence test of the last step's μ without a further evaluation:
  # φ(μ) = μ‖b/(d + μ)‖ = μ‖z_g‖.
  err = mu * group_norm(z, axes) - tau_w
  done = done | (jnp.abs(err) <= tol * tau_w) | ~jnp.isfinite(err)

  def finish():
    iters, mu_end = newton_loop(mu, lo, hi, done)
    return solution(mu_end), unrolled + iters, mu_end

  def keep():
    return z, jnp.asarray(unrolled, jnp.int32), mu

  z, iters, mu = lax.cond(jnp.all(done), keep, finish)
  return z.astype(dtype), iters, mu


def pg_step(
  z: jax.Array,
  v: jax.Array,
  d: jax.Array,
  anchor: jax.Array,
  step: jax.Array,
  shrink_by: jax.Array,
  active: jax.Array,
  axes: tuple[int, ...],
) -> jax.Array:
  """One PG iteration on the unscreened groups (screened ones stay zero).

  y = z − h(v + d∘(z − W⁰)), then z = y·max(0, 1 − hτω_g/‖y_g‖) per group.

  Args:
    z: the current iterate.
    v: the dual average.
    d: the positive preconditioner.
    anchor: the anchor W⁰.
    step: h_g = 1/max_{i∈g} d_i per group (group axes kept as size-1 axes).
    shrink_by: h_g τω_g.
    active: the unscreened groups.
    axes: the (normalized) group axes.

  Returns:
    The next iterate.
  """
  y = z - step * (v + d * (z - anchor))
  norm = group_norm(y, axes)
  # A zero y gives z = 0 whatever the factor; guard the division only.
  factor = jnp.maximum(0, 1 - shrink_by / jnp.where(norm > 0, norm, 1))
  return jnp.where(active, y * factor, 0)


def pg_objective(
  z: jax.Array,
  v: jax.Array,
  d: jax.Array,
  anchor: jax.Array,
  tau_w: jax.Array,
  axes: tuple[int, ...],
) -> jax.Array:
  """q_g(z) = ⟨v_g, z_g − W⁰_g⟩ + ½‖z_g − W⁰_g‖²_{d_g} + τω_g‖z_g‖ per group."""
  dz = z - anchor
  smooth = jnp.sum(v * dz + 0.5 * d * jnp.square(dz), axis=axes, keepdims=True)
  return smooth + tau_w * group_norm(z, axes)


def pg_group_lasso(
  v, d, anchor, tau_w, screen, init, axes, max_iters, rtol, stopping, subgradient_tol
):
  """PG iteration over the unscreened groups, stopped by `stopping`.

  One iteration is :func:`pg_step` then, for the stopping rule,
  :func:`pg_objective`; `screen` (:func:`screen_group_lasso`) gives the
  unscreened groups and the step sizes.
  """
  active = screen.active
  step = 1 / screen.d_max
  shrink_by = step * tau_w

  def pg(z):
    return pg_step(z, v, d, anchor, step, shrink_by, active, axes)

  z0 = jnp.where(active, init, 0)
  run = jnp.any(active)
  if stopping == "subgradient":
    gap = d - 1 / step
    return _pg_subgradient_loop(
      pg,
      lambda z: jnp.sum(pg_objective(z, v, d, anchor, tau_w, axes)),
      lambda z, z_prev: jnp.sqrt(jnp.sum(jnp.square(gap * (z - z_prev)))),
      z0,
      init,
      subgradient_tol,
      max_iters,
      run,
    )
  return _pg_decrease_loop(
    pg,
    lambda z: jnp.sum(jnp.where(active, pg_objective(z, v, d, anchor, tau_w, axes), 0)),
    z0,
    max_iters,
    rtol,
    run,
  )


def _pg_decrease_loop(pg_step, objective, z0, max_iters, rtol, run):
  """The authors' rule: stop after j ≥ 2 once (q̄ⱼ₋₁ − q̄ⱼ)/(|q̄ⱼ| + 1) < rtol."""

  def cond(carry):
    j, _, q_prev, q = carry
    converged = (j >= 2) & ((q_prev - q) / (jnp.abs(q) + 1) < rtol)
    return (j < max_iters) & ~converged & run

  def body(carry):
    j, z, _, q = carry
    z = pg_step(z)
    return j + 1, z, q, objective(z)

  zero = jnp.zeros([], jax.tree.leaves(z0)[0].dtype)
  iters, z, _, _ = lax.while_loop(
    cond, body, (jnp.zeros([], jnp.int32), z0, zero, zero)
  )
  return z, iters


def _pg_subgradient_loop(
  pg_step, objective, subgradient_norm, z0, init, tol, max_iters, run
):
  """The paper's condition (7): stop once ‖s‖ ≤ tol and q(z) ≤ q(init).

  After a PG step z⁻ → z with step h, s = (d − 1/h)∘(z − z⁻) ∈ ∂q(z): the prox
  gives (z⁻ − h∇f(z⁻) − z)/h ∈ τ∂ψ(z), and ∇f(z) − ∇f(z⁻) = d∘(z − z⁻).
  `subgradient_norm(z, z⁻)` returns ‖s‖₂.
  """
  q_init = objective(init)
  tol = jnp.asarray(tol, q_init.dtype)

  def cond(carry):
    j, _, done = carry
    return (j < max_iters) & ~done & run

  def body(carry):
    j, z_prev, _ = carry
    z = pg_step(z_prev)
    done = (subgradient_norm(z, z_prev) <= tol) & (objective(z) <= q_init)
    return j + 1, z, done

  iters, z, _ = lax.while_loop(
    cond, body, (jnp.zeros([], jnp.int32), z0, jnp.zeros([], bool))
  )
  return z, iters
