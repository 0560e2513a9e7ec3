"""Tests of the exact group-lasso solver and of the paper's stopping rule (docs/algorithm.md#the-subproblem).

Oracles:
* `_secular_reference`: an independent extended-precision (np.longdouble)
  bisection on the secular equation φ(μ) = μ‖b/(d + μ)‖ = τω_g, written from
  docs/algorithm.md#the-subproblem, and the float64 bisection of tests/numpy_reference.py;
* closed forms (τ = 0; groups of size one; d constant on a group);
* the subproblem's KKT conditions;
* the linear rate of proximal gradient, which turns the "decrease" rule's
  tolerance into a bound on the objective gap;
* `_pg_condition7_reference`: a NumPy transcription of PG stopped by the
  paper's condition (7);
* a NumPy float64 transcription of RAMDA (docs/algorithm.md#the-ramda-step) with the exact prox.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr
from tests import numpy_reference as ref

LD = np.longdouble  # 64-bit mantissa on x86; plain float64 elsewhere still works
# for the conditioning-scaled bounds below.

# The exact solvers: a while_loop until converged, and K unrolled Newton steps
# with the same loop as a fallback (K = UNROLLED_STEPS, their `iterations`
# when no fallback runs).
EXACT = ["exact", "exact_unrolled"]
K = oxr._solvers.UNROLLED_STEPS

LAYOUTS = [
  ((6, 5), (1,)),  # Flax Dense kernel: one group per row.
  ((3, 3, 4, 5), (0, 1, 3)),  # Flax Conv kernel: one group per input channel.
  ((3, 4, 6), (0, 2)),  # Conv1D kernel.
  ((5, 7), (0,)),  # PyTorch-layout matrix: one group per column.
]

solve = jax.jit(
  oxr.solve_group_lasso,
  static_argnames=("axes", "weight", "solver", "stopping"),
)


# --------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------


def _to_groups(x, axes):
  """(num_groups, group_size) view of `x`, group axes last."""
  x = np.asarray(x)
  rest = [a for a in range(x.ndim) if a not in axes]
  size = math.prod(x.shape[a] for a in axes)
  return np.transpose(x, rest + list(axes)).reshape(-1, size)


def _secular_reference(v, d, anchor, tau, axes, weight=None):
  """z in extended precision: per group, bisection for μ, z = b/(d + μ).

  Returns (z, kappa): z as (num_groups, group_size) in longdouble, and the
  per-group condition number κ_g = ‖b‖/(‖b‖ − τω_g) of z w.r.t. the data
  (1 on screened groups).
  """
  vg = _to_groups(v, axes).astype(LD)
  dg = _to_groups(d, axes).astype(LD)
  ag = _to_groups(anchor, axes).astype(LD)
  size = vg.shape[1]
  w = LD(math.sqrt(size)) if weight is None else LD(weight)
  t = LD(float(tau)) * w
  b = dg * ag - vg
  nb = np.sqrt(np.sum(b * b, axis=1))
  if t == 0:
    return b / dg, np.ones(len(b))
  active = nb > t

  def phi(mu):
    return mu * np.sqrt(np.sum((b / (dg + mu[:, None])) ** 2, axis=1))

  lo = np.zeros(len(b), LD)
  hi = np.ones(len(b), LD)
  while np.any(grow := active & (phi(hi) < t)):
    hi = np.where(grow, 2 * hi, hi)
  for _ in range(400):  # Far below extended-precision resolution of μ.
    mid = (lo + hi) / 2
    below = phi(mid) < t
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  mu = (lo + hi) / 2
  z = np.where(active[:, None], b / (dg + mu[:, None]), 0)
  kappa = np.where(active, nb / np.where(active, nb - t, 1), 1)
  return z, np.asarray(kappa, np.float64)


def _group_errors(z, z_ref):
  """‖z_g − z_ref,g‖/‖z_ref,g‖ per unscreened group (0 where z_ref,g = 0)."""
  z = np.asarray(z, LD)
  num = np.sqrt(np.sum((z - z_ref) ** 2, axis=1))
  den = np.sqrt(np.sum(z_ref**2, axis=1))
  return np.asarray(np.where(den > 0, num / np.where(den > 0, den, 1), num), float)


def _objective(v, d, anchor, tau, axes, z, weight=None):
  """q(z) in float64 over all groups (docs/algorithm.md#the-subproblem)."""
  v, d, anchor, z = (np.asarray(x, np.float64) for x in (v, d, anchor, z))
  size = math.prod(v.shape[a] for a in axes)
  w = math.sqrt(size) if weight is None else weight
  dz = z - anchor
  norms = np.sqrt(np.sum(z**2, axis=axes))
  return float(np.sum(v * dz + 0.5 * d * dz**2) + tau * w * np.sum(norms))


def _kkt_residual(v, d, anchor, tau_w, z, axes):
  """dist(0, ∂q(z)) over the leaf."""
  grad = v + d * (z - anchor)
  z_norm = np.sqrt(np.sum(z**2, axis=axes, keepdims=True))
  nonzero = z_norm > 0
  moving = grad + tau_w * z / np.where(nonzero, z_norm, 1)
  g_norm = np.sqrt(np.sum(grad**2, axis=axes, keepdims=True))
  per_group = np.where(
    nonzero,
    np.sqrt(np.sum(moving**2, axis=axes, keepdims=True)),
    np.maximum(g_norm - tau_w, 0),
  )
  return float(np.sqrt(np.sum(per_group**2)))


def _pg_condition7_reference(v, d, anchor, tau, axes, init, tol, max_iters):
  """PG per group (step 1/max d), stopped by ‖(d − 1/h)(z − z⁻)‖ ≤ tol, q(z) ≤ q(init)."""
  shape = np.shape(v)
  vg, dg, ag, ig = (
    _to_groups(x, axes).astype(np.float64) for x in (v, d, anchor, init)
  )
  tw = tau * math.sqrt(vg.shape[1])
  active = np.sqrt(np.sum((dg * ag - vg) ** 2, axis=1)) > tw
  h = 1 / np.max(dg, axis=1, keepdims=True)

  def q(z):
    dz = z - ag
    return np.sum(vg * dz + 0.5 * dg * dz**2) + tw * np.sum(np.linalg.norm(z, axis=1))

  z = np.where(active[:, None], ig, 0.0)
  q_init = q(ig)
  iters = 0
  if active.any():
    for j in range(1, max_iters + 1):
      z_prev = z
      y = z - h * (vg + dg * (z - ag))
      ny = np.linalg.norm(y, axis=1, keepdims=True)
      factor = np.maximum(0, 1 - h * tw / np.where(ny > 0, ny, 1))
      z = np.where(active[:, None], y * factor, 0.0)
      iters = j
      s = (dg - 1 / h) * (z - z_prev)
      if np.linalg.norm(s) <= tol and q(z) <= q_init:
        break
  rest = [a for a in range(len(shape)) if a not in axes]
  perm = rest + list(axes)
  z = np.transpose(z.reshape([shape[a] for a in perm]), np.argsort(perm))
  return z, iters


def _problem(shape, axes, seed, d_decades=(0.0, 1.0), dtype=np.float64):
  """A random subproblem with screened and unscreened groups, all with κ_g ≤ 100.

  τω_g is the geometric mean of the two adjacent group norms ‖b_g‖ that are
  furthest apart, so no group lies within 1% of the threshold (there the data
  would decide the solution only to κ_g·eps).
  """
  rng = np.random.default_rng(seed)
  v = rng.normal(size=shape) * 10.0 ** rng.uniform(-1, 1, size=shape)
  d = 10.0 ** rng.uniform(*d_decades, size=shape)
  anchor = rng.normal(size=shape)
  v, d, anchor = (x.astype(dtype) for x in (v, d, anchor))
  norms = np.sort(
    np.linalg.norm(_to_groups(d * anchor - v, axes).astype(np.float64), axis=1)
  )
  i = int(np.argmax(norms[1:] / norms[:-1]))
  assert norms[i + 1] / norms[i] > 1.0201, "draw another seed"
  w = math.sqrt(math.prod(shape[a] for a in axes))
  return v, d, anchor, math.sqrt(norms[i] * norms[i + 1]) / w


# --------------------------------------------------------------------------------------
# Exact solver vs the extended-precision reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("shape,axes", LAYOUTS)
@pytest.mark.parametrize("d_decades", [(0.0, 1.0), (-8.0, 8.0)], ids=["d1", "d16"])
def test_exact_matches_extended_precision_reference(
  x64, shape, axes, d_decades, solver
):
  """Oracle: longdouble bisection; relative error ≤ 1e-12 per group in float64."""
  del x64
  for seed in range(3):
    v, d, anchor, tau = _problem(shape, axes, seed, d_decades)
    z, iters = solve(v, d, anchor, tau, axes, solver=solver)
    z_ref, kappa = _secular_reference(v, d, anchor, tau, axes)
    zg = _to_groups(np.asarray(z), axes)
    np.testing.assert_array_equal(zg == 0, z_ref == 0)  # Screening is exact.
    assert np.max(_group_errors(zg, z_ref)) <= 1e-12
    assert np.max(_group_errors(zg, z_ref) / kappa) <= 32 * np.finfo(np.float64).eps
    assert 1 <= int(iters) <= 20
    # Second oracle: the float64 bisection of numpy_reference.
    z_bis = ref.solve_group_lasso_exact_bisection(v, d, anchor, tau, axes)
    np.testing.assert_allclose(np.asarray(z), z_bis, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("shape,axes", LAYOUTS[:2])
def test_exact_float32_precision(shape, axes, solver):
  """Oracle: longdouble bisection from the float32 data; error ≤ 32·eps32·κ_g."""
  for d_decades in [(0.0, 1.0), (-8.0, 8.0)]:
    v, d, anchor, tau = _problem(shape, axes, 7, d_decades, dtype=np.float32)
    z, _ = solve(v, d, anchor, np.float32(tau), axes, solver=solver)
    assert z.dtype == jnp.float32
    z_ref, kappa = _secular_reference(v, d, anchor, np.float32(tau), axes)
    errors = _group_errors(_to_groups(np.asarray(z), axes), z_ref)
    assert np.max(errors / kappa) <= 32 * np.finfo(np.float32).eps


def _adversarial(case):
  """(v, d, anchor, tau, axes) for the extreme cases of issue 4."""
  rng = np.random.default_rng(11)
  shape, axes = (8, 6), (1,)
  v, d, anchor = (
    rng.normal(size=shape),
    10.0 ** rng.uniform(-1, 1, shape),
    rng.normal(size=shape),
  )
  norms = np.linalg.norm(d * anchor - v, axis=1)
  tau = float(np.median(norms)) / math.sqrt(6) * 1.003
  if case == "d_16_decades":  # Each group's d spans 1e-8 … 1e8.
    d = 10.0 ** np.tile(np.linspace(-8, 8, 6), (8, 1))
    d = rng.permuted(d, axis=1)
    tau = float(np.median(np.linalg.norm(d * anchor - v, axis=1))) / math.sqrt(6) * 1.01
  elif case == "groups_of_size_one":
    shape = (20, 1)
    v, d, anchor = (
      rng.normal(size=shape),
      10.0 ** rng.uniform(-2, 2, shape),
      rng.normal(size=shape),
    )
    tau = 0.5
  elif case == "all_screened":
    tau = 10 * float(np.max(norms))
  elif case == "none_screened":
    tau = 1e-3 * float(np.min(norms))
  elif case == "zero_gradients":  # v = 0: b = d∘W⁰.
    v = np.zeros(shape)
    tau = float(np.median(np.linalg.norm(d * anchor, axis=1))) / math.sqrt(6) * 1.003
  elif case == "zero_anchor_and_gradients":  # b = 0: every group screened.
    v, anchor = np.zeros(shape), np.zeros(shape)
  elif case == "threshold_zero":
    tau = 0.0
  elif case == "constant_d_per_group":
    d = np.repeat(10.0 ** rng.uniform(-3, 3, (8, 1)), 6, axis=1)
  return v, d, anchor, tau, axes


ADVERSARIAL = [
  "d_16_decades",
  "groups_of_size_one",
  "all_screened",
  "none_screened",
  "zero_gradients",
  "zero_anchor_and_gradients",
  "threshold_zero",
  "constant_d_per_group",
]


@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("case", ADVERSARIAL)
def test_exact_adversarial_cases(x64, case, solver):
  """Oracles: longdouble bisection, and closed forms where they exist.

  Iteration counts by hand: "exact" takes none where every group is screened
  or has constant d; "exact_unrolled" always takes its K unrolled steps (they
  leave a converged group as it is).
  """
  del x64
  v, d, anchor, tau, axes = _adversarial(case)
  z, iters = solve(v, d, anchor, tau, axes, solver=solver)
  z = np.asarray(z)
  z_ref, _ = _secular_reference(v, d, anchor, tau, axes)
  assert np.max(_group_errors(_to_groups(z, axes), z_ref)) <= 1e-12
  b = d * anchor - v
  no_loop = 0 if solver == "exact" else K
  if case == "threshold_zero":
    np.testing.assert_array_equal(z, anchor - v / d)
    assert int(iters) == 0
  if case in ("all_screened", "zero_anchor_and_gradients"):
    np.testing.assert_array_equal(z, 0)
    assert int(iters) == no_loop
  if case == "none_screened":
    assert np.all(np.any(z != 0, axis=1))
  if case == "groups_of_size_one":  # Scalar soft-thresholding of b, over d.
    np.testing.assert_allclose(
      z, np.sign(b) * np.maximum(np.abs(b) - tau, 0) / d, rtol=1e-15
    )
    assert int(iters) == no_loop  # d is constant on every (one-entry) group.
  if case == "constant_d_per_group":  # z = b max(0, 1 − τω/‖b‖)/d, no iteration.
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    expected = b * np.maximum(0, 1 - tau * math.sqrt(6) / nb) / d
    np.testing.assert_allclose(z, expected, rtol=1e-14)
    assert int(iters) == no_loop
  if case == "d_16_decades":
    assert max(no_loop, 1) <= int(iters) <= no_loop + 20


@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("shape,axes", LAYOUTS[:2])
def test_exact_satisfies_kkt(x64, shape, axes, solver):
  """Oracle: dist(0, ∂q(z)) ≈ 0 at the exact solution, and no worse than PG's."""
  del x64
  v, d, anchor, tau = _problem(shape, axes, 3, (-2.0, 2.0))
  tau_w = tau * math.sqrt(math.prod(shape[a] for a in axes))
  z, _ = solve(v, d, anchor, tau, axes, solver=solver)
  scale = np.linalg.norm(v) + np.linalg.norm(d * anchor) + tau_w
  assert _kkt_residual(v, d, anchor, tau_w, np.asarray(z), axes) <= 1e-13 * scale


@pytest.mark.parametrize("solver", EXACT)
def test_exact_under_jit_with_traced_threshold_and_low_precision(x64, solver):
  """Oracle: the float64 solution; the threshold may be traced, bf16 stays bf16."""
  del x64
  v, d, anchor, tau = _problem((6, 5), (1,), 5)
  z64, _ = solve(v, d, anchor, tau, (1,), solver=solver)

  @jax.jit
  def traced(tau):
    return oxr.solve_group_lasso(v, d, anchor, tau, (1,), solver=solver)[0]

  np.testing.assert_allclose(traced(tau), z64, rtol=1e-13, atol=1e-300)
  np.testing.assert_array_equal(traced(0.0), anchor - v / d)  # τ = 0, traced.
  cast = [jnp.asarray(x, jnp.bfloat16) for x in (v, d, anchor)]
  z16, _ = oxr.solve_group_lasso(*cast, tau, (1,), solver=solver)
  assert z16.dtype == jnp.bfloat16
  # Oracle: the float64 solve of the same (bf16-rounded) inputs, to 2 bf16 ulps
  # of the solution's scale (measured: 0.43 ulp), with the same zero groups.
  wide = [jnp.asarray(x, jnp.float64) for x in cast]
  z64_cast, _ = solve(*wide, tau, (1,), solver=solver)
  ulp = float(jnp.finfo(jnp.bfloat16).eps)
  atol = 2 * ulp * float(np.max(np.abs(z64_cast)))
  np.testing.assert_allclose(np.asarray(z16, np.float64), z64_cast, rtol=0, atol=atol)
  np.testing.assert_array_equal(np.asarray(z16) == 0, np.asarray(z64_cast) == 0)


def _branch_primitives(jaxpr):
  """Per branch of the one top-level lax.cond: its top-level primitives."""
  (cond,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
  return [[e.primitive.name for e in b.jaxpr.eqns] for b in cond.params["branches"]]


def test_exact_unrolled_runs_no_loop_unless_it_falls_back(monkeypatch):
  """Hand count of the traced program. Both solvers sit in one lax.cond on
  τ > 0 (branch 0: the closed form, no loop). In branch 1, "exact" runs a
  while_loop; "exact_unrolled" runs no while_loop but one lax.cond, its
  fallback, which holds the loop. "exact" is "exact_unrolled" off CPU."""
  v, d, anchor, tau = _problem((6, 5), (1,), 5, dtype=np.float32)

  def branches(solver):
    return _branch_primitives(
      jax.make_jaxpr(
        lambda t: oxr.solve_group_lasso(v, d, anchor, t, (1,), solver=solver)
      )(np.float32(tau))
    )

  (closed, exact), (_, unrolled) = branches("exact"), branches("exact_unrolled")
  assert "while" not in closed and "cond" not in closed
  assert exact.count("while") == 1
  assert "while" not in unrolled and unrolled.count("cond") == 1
  # Off CPU, where each trip is a host round trip, "exact" runs unrolled.
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert branches("exact")[1] == unrolled


@pytest.mark.parametrize("d_decades", [(0.0, 1.0), (-8.0, 8.0)], ids=["d1", "d16"])
def test_exact_unrolled_agrees_with_exact(x64, d_decades):
  """Oracle: the "exact" solver, to the 4-ulp tolerance both stop at (times κ_g).

  Iterations, by the construction of both: where "exact" needs at most K + 1
  evaluations (K Newton steps and the one that confirms them), the K unrolled
  steps suffice and no loop runs (iterations = K); where it needs e > K + 1,
  the fallback loop takes the remaining e − K (iterations = e). Both branches
  occur on these seeds.
  """
  del x64
  fell_back = []
  for seed in range(6):
    v, d, anchor, tau = _problem((12, 8), (1,), seed, d_decades)
    z, iters = solve(v, d, anchor, tau, (1,), solver="exact")
    z_un, iters_un = solve(v, d, anchor, tau, (1,), solver="exact_unrolled")
    _, kappa = _secular_reference(v, d, anchor, tau, (1,))
    errors = _group_errors(_to_groups(z_un, (1,)), _to_groups(z, (1,)).astype(LD))
    assert np.max(errors / kappa) <= 32 * np.finfo(np.float64).eps
    assert int(iters_un) == (K if int(iters) <= K + 1 else int(iters))
    fell_back.append(int(iters_un) > K)
  assert any(fell_back) and not all(fell_back)


# --------------------------------------------------------------------------------------
# "pg" against the exact optimum
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axes", LAYOUTS)
@pytest.mark.parametrize("rtol", [1e-6, 1e-10])
def test_pg_decrease_rule_gap_bound(x64, shape, axes, rtol):
  """Oracle: PG's linear rate: q(z_j) − q* ≤ (κ − 1)(q_{j−1} − q_j) < (κ − 1)·rtol·(|q̄|+1).

  κ = max_g max d_g / min d_g. At the stop the relative decrease is below
  rtol, so the gap to the exact optimum is bounded by the stopping tolerance.
  """
  del x64
  v, d, anchor, tau = _problem(shape, axes, 2, (0.0, 1.0))
  z_pg, iters = solve(v, d, anchor, tau, axes, max_iters=100_000, rtol=rtol)
  z_ex, _ = solve(v, d, anchor, tau, axes, solver="exact")
  q_pg, q_ex = (_objective(v, d, anchor, tau, axes, z) for z in (z_pg, z_ex))
  dg = _to_groups(d, axes)
  kappa = float(np.max(np.max(dg, axis=1) / np.min(dg, axis=1)))
  np.testing.assert_array_equal(np.asarray(z_pg) == 0, np.asarray(z_ex) == 0)
  assert int(iters) < 100_000
  assert -1e-12 * (abs(q_ex) + 1) <= q_pg - q_ex  # The exact optimum is optimal.
  # q̄ differs from q by the screened groups' constant; |q̄| ≤ |q| + that.
  q_bar = abs(q_pg) + abs(_objective(v, d, anchor, tau, axes, np.zeros_like(v)))
  assert q_pg - q_ex <= (kappa - 1) * rtol * (q_bar + 1) + 1e-12 * (abs(q_ex) + 1)


@pytest.mark.parametrize("shape,axes", LAYOUTS)
def test_pg_condition7_matches_numpy_transcription(x64, shape, axes):
  """Oracle: `_pg_condition7_reference` (same iterations, same iterate)."""
  del x64
  v, d, anchor, tau = _problem(shape, axes, 4, (0.0, 1.5))
  init = anchor + 0.1 * np.random.default_rng(0).normal(size=shape)
  for tol in [1e-1, 1e-4, 1e-8]:
    z, iters = solve(
      v,
      d,
      anchor,
      tau,
      axes,
      init=init,
      max_iters=500,
      stopping="subgradient",
      subgradient_tol=tol,
    )
    z_ref, iters_ref = _pg_condition7_reference(v, d, anchor, tau, axes, init, tol, 500)
    assert int(iters) == iters_ref
    np.testing.assert_allclose(np.asarray(z), z_ref, rtol=1e-12, atol=1e-14)


def test_pg_condition7_bounds_distance_to_optimum(x64):
  """Oracle: strong convexity: ‖z − z*‖ ≤ ‖s‖/min d ≤ tol/min d, and q(z) ≤ q(init)."""
  del x64
  shape, axes = (3, 3, 4, 5), (0, 1, 3)
  v, d, anchor, tau = _problem(shape, axes, 6, (0.0, 1.0))
  init = np.random.default_rng(1).normal(size=shape)
  z_ex, _ = solve(v, d, anchor, tau, axes, solver="exact")
  previous = 0
  for tol in [10.0, 1e-2, 1e-5, 1e-9]:
    z, iters = solve(
      v,
      d,
      anchor,
      tau,
      axes,
      init=init,
      max_iters=10_000,
      stopping="subgradient",
      subgradient_tol=tol,
    )
    assert 1 <= int(iters) < 10_000
    assert int(iters) >= previous  # A tighter tolerance never stops earlier.
    previous = int(iters)
    assert np.linalg.norm(np.asarray(z) - np.asarray(z_ex)) <= tol / np.min(d) + 1e-12
    q = _objective(v, d, anchor, tau, axes, z)
    assert q <= _objective(v, d, anchor, tau, axes, init)


def test_pg_condition7_loose_tolerance_stops_after_one_step(x64):
  """One PG step never increases q, so with a huge ε the rule stops at j = 1."""
  del x64
  v, d, anchor, tau = _problem((6, 5), (1,), 8)
  _, iters = solve(
    v, d, anchor, tau, (1,), stopping="subgradient", subgradient_tol=1e30
  )
  assert int(iters) == 1


def test_subgradient_tolerance_sequence():
  """Oracle: ε_k = ε₀ α √n k^(−0.51) (square-summable since 2 · 0.51 > 1)."""
  k = np.arange(1, 2001)
  eps = np.asarray(oxr.subgradient_tolerance(1e-3, 2.0, k, 64))
  np.testing.assert_allclose(eps, 1e-3 * 2.0 * 8.0 * k**-0.51, rtol=1e-6)


def test_invalid_stopping_arguments():
  v = jnp.ones((2, 2))
  with pytest.raises(ValueError, match="stopping"):
    oxr.solve_group_lasso(v, v, v, 1.0, (1,), stopping="gradient")
  with pytest.raises(ValueError, match="subgradient_tol"):
    oxr.solve_group_lasso(
      v, v, v, 1.0, (1,), stopping="subgradient", subgradient_tol=-1.0
    )
  with pytest.raises(ValueError, match="solver"):
    oxr.solve_group_lasso(v, v, v, 1.0, (1,), solver="newton")
  with pytest.raises(ValueError, match="stopping"):
    oxr.ramda(1e-2, stopping="never")
  with pytest.raises(ValueError, match="solver"):
    oxr.ramda(1e-2, solver="newton")


# --------------------------------------------------------------------------------------
# Inside RAMDA
# --------------------------------------------------------------------------------------


def _ramda_exact_transcription(params, grads_fn, steps, lr, c, eps, lam, axes):
  """docs/algorithm.md#the-ramda-step in NumPy float64, the prox by the longdouble reference; no ramp."""
  w = {n: np.array(p, np.float64) for n, p in params.items()}
  anchor = {n: p.copy() for n, p in w.items()}
  big_v = {n: np.zeros_like(p) for n, p in w.items()}
  big_u = {n: np.zeros_like(p) for n, p in w.items()}
  alpha = 0.0
  for k in range(1, steps + 1):
    grads = grads_fn(w)
    s = lr * math.sqrt(k)
    alpha += s
    for n in w:
      big_v[n] += s * grads[n]
      big_u[n] += s * grads[n] ** 2
      d = np.cbrt(big_u[n]) + eps
      zg, _ = _secular_reference(big_v[n], d, anchor[n], alpha * lam, axes[n])
      shape = w[n].shape
      rest = [a for a in range(len(shape)) if a not in axes[n]]
      perm = rest + list(axes[n])
      z = np.transpose(
        np.asarray(zg, np.float64).reshape([shape[a] for a in perm]), np.argsort(perm)
      )
      w[n] = (1 - c) * w[n] + c * z
  return w


@pytest.mark.parametrize("solver", EXACT)
def test_ramda_exact_matches_float64_transcription(x64, solver):
  """Oracle: `_ramda_exact_transcription` (docs/algorithm.md#the-ramda-step with the exact prox)."""
  del x64
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 6))
  y = x[:, :2] @ rng.normal(size=(2, 3))
  params = {"w": np.zeros((6, 3)), "k": np.full((2, 3, 2), 0.1)}
  axes = {"w": (1,), "k": (0, 2)}

  def loss(p):
    return jnp.mean((x @ p["w"] - y) ** 2) + jnp.sum(jnp.tanh(p["k"]) ** 2)

  grad = jax.jit(jax.grad(loss))

  tx = oxr.ramda(
    0.05,
    momentum=0.5,
    eps=1e-6,
    reg_strength=0.3,
    momentum_ramp=False,
    regularizer={n: oxr.group_lasso(a) for n, a in axes.items()},
    solver=solver,
  )
  p_exact = jax.tree.map(jnp.asarray, params)
  state = tx.init(p_exact)
  step = jax.jit(lambda p, s: tx.update(grad(p), s, p))
  for _ in range(6):
    updates, state = step(p_exact, state)
    p_exact = optax.apply_updates(p_exact, updates)
  expected = _ramda_exact_transcription(
    params,
    lambda w: {n: np.asarray(g) for n, g in grad(w).items()},
    6,
    0.05,
    0.5,
    1e-6,
    0.3,
    axes,
  )
  for n in params:
    np.testing.assert_allclose(p_exact[n], expected[n], rtol=1e-10, atol=1e-13)
  assert np.any(np.asarray(oxr.prox_iterate(state)["w"]) == 0)


def test_ramda_condition7_and_inject_hyperparams(x64):
  """ramda(stopping="subgradient") tends to the exact-solver run as ε₀ → 0;
  the exact solver works with a traced reg_strength (inject_hyperparams)."""
  del x64
  rng = np.random.default_rng(1)
  x = rng.normal(size=(24, 5))
  y = x[:, :1] * 2.0
  specs = {"w": oxr.group_lasso(axes=(1,))}

  def loss(p):
    return jnp.mean((x @ p["w"] - y) ** 2)

  def run(tx):
    p = {"w": jnp.full((5, 2), 0.3)}
    state = tx.init(p)
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
    for _ in range(5):
      updates, state = step(p, state)
      p = optax.apply_updates(p, updates)
    return p["w"], state

  hyper = dict(learning_rate=0.1, momentum=0.3, reg_strength=0.05, regularizer=specs)
  w_exact, _ = run(oxr.ramda(**hyper, solver="exact"))
  w_loose, s_loose = run(
    oxr.ramda(**hyper, solver="pg", stopping="subgradient", subgradient_tol=1.0)
  )
  w_tight, s_tight = run(
    oxr.ramda(
      **hyper,
      solver="pg",
      stopping="subgradient",
      subgradient_tol=1e-10,
      max_iters=10_000,
    )
  )
  assert int(s_loose.iterations["w"]) <= int(s_tight.iterations["w"])
  err_loose = float(jnp.max(jnp.abs(w_loose - w_exact)))
  err_tight = float(jnp.max(jnp.abs(w_tight - w_exact)))
  assert err_tight <= 1e-9
  assert err_tight <= err_loose
  injected = optax.inject_hyperparams(oxr.ramda, static_args=("regularizer", "solver"))
  w_inj, _ = run(injected(**hyper, solver="exact"))
  np.testing.assert_allclose(w_inj, w_exact, rtol=1e-12, atol=1e-15)
