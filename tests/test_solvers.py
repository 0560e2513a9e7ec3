"""Tests of the "pg" subproblem solver and the ℓ1 closed form (docs/algorithm.md#the-subproblem).

Oracles: closed forms (ℓ1; group lasso with D constant on each group), the
bisection solution of tests/numpy_reference.py, the NumPy transcription of the
PG iteration and its stopping rule, and the subproblem's KKT conditions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_ramda as oxr
from tests import numpy_reference as ref

LAYOUTS = [
  ((6, 5), (1,)),
  ((3, 3, 4, 5), (0, 1, 3)),
  ((3, 4, 6), (0, 2)),
  ((5, 7), (0,)),
]


def _problem(shape, seed, d_spread=1.0, zero_fraction=0.4):
  """A random subproblem; d spans `d_spread` decades within each leaf."""
  rng = np.random.default_rng(seed)
  v = rng.normal(size=shape)
  d = 10.0 ** rng.uniform(0, d_spread, size=shape)
  anchor = rng.normal(size=shape)
  return v, d, anchor, zero_fraction


def _kkt_residual(v, d, anchor, tau_w, z, axes):
  """‖dist(0, ∂q(z))‖ over groups: the first-order optimality residual."""
  grad = v + d * (z - anchor)
  z_norm = np.sqrt(np.sum(z**2, axis=axes, keepdims=True))
  g_norm = np.sqrt(np.sum(grad**2, axis=axes, keepdims=True))
  nonzero = z_norm > 0
  moving = np.where(nonzero, grad + tau_w * z / np.where(nonzero, z_norm, 1), 0)
  per_group = np.where(
    nonzero,
    np.sqrt(np.sum(moving**2, axis=axes, keepdims=True)),
    np.maximum(g_norm - tau_w, 0),
  )
  return float(np.sqrt(np.sum(per_group**2)))


def _threshold_for(v, d, anchor, axes, quantile):
  """τ such that about `quantile` of the groups are screened."""
  b = d * anchor - v
  norms = np.sqrt(np.sum(b**2, axis=axes))
  weight = np.sqrt(np.prod([v.shape[a] for a in axes]))
  return float(np.quantile(norms, quantile)) / weight + 1e-3


def test_l1_closed_form(x64):
  """Oracle: z_i = soft(W⁰_i − v_i/d_i, τ/d_i), and its scalar KKT conditions."""
  del x64
  v, d, anchor, _ = _problem((40,), 0, d_spread=3)
  tau = 0.7
  z = np.asarray(oxr.prox_l1(jnp.asarray(v), jnp.asarray(d), jnp.asarray(anchor), tau))
  np.testing.assert_allclose(z, ref.prox_l1_closed_form(v, d, anchor, tau), rtol=1e-15)
  grad = v + d * (z - anchor)
  assert np.all(np.abs(grad[z == 0]) <= tau + 1e-12)
  np.testing.assert_allclose(grad[z != 0], -tau * np.sign(z[z != 0]), atol=1e-12)
  assert 0 < np.sum(z == 0) < z.size


@pytest.mark.parametrize(("shape", "axes"), LAYOUTS)
def test_constant_d_per_group_lands_on_the_closed_form_in_two_iterations(
  x64, shape, axes
):
  """Oracle: block soft-thresholding z = b/d · max(0, 1 − τω/‖b‖) when d is constant."""
  del x64
  rng = np.random.default_rng(3)
  v = rng.normal(size=shape)
  anchor = rng.normal(size=shape)
  group_shape = [1 if a in axes else n for a, n in enumerate(shape)]
  d = np.broadcast_to(10.0 ** rng.uniform(-1, 2, size=group_shape), shape)
  tau = _threshold_for(v, d, anchor, axes, 0.4)
  weight = np.sqrt(np.prod([shape[a] for a in axes]))
  b = d * anchor - v
  norms = np.sqrt(np.sum(b**2, axis=axes, keepdims=True))
  expected = b / d * np.maximum(0, 1 - tau * weight / norms)

  z, iters = oxr.solve_group_lasso(
    jnp.asarray(v), jnp.asarray(d), jnp.asarray(anchor), tau, axes, init=jnp.asarray(v)
  )
  np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-12, atol=1e-14)
  assert int(iters) == 2  # One step lands on the optimum; the second confirms it.


@pytest.mark.parametrize(("shape", "axes"), LAYOUTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_screening_is_exact(x64, shape, axes, seed):
  """Oracle: screened groups are exactly the zero groups of the bisection solution."""
  del x64
  v, d, anchor, _ = _problem(shape, seed, d_spread=2)
  tau = _threshold_for(v, d, anchor, axes, 0.5)
  z, _ = oxr.solve_group_lasso(
    jnp.asarray(v), jnp.asarray(d), jnp.asarray(anchor), tau, axes, max_iters=1
  )
  exact = ref.solve_group_lasso_exact_bisection(v, d, anchor, tau, axes)
  zero_groups = np.all(np.asarray(z) == 0, axis=axes)
  np.testing.assert_array_equal(zero_groups, np.all(exact == 0, axis=axes))
  assert 0 < zero_groups.sum() < zero_groups.size


@pytest.mark.parametrize(("shape", "axes"), LAYOUTS)
@pytest.mark.parametrize("rtol", [1e-8, 1e-12])
def test_pg_matches_numpy_transcription_and_meets_kkt(x64, shape, axes, rtol):
  """Oracles: the NumPy PG transcription (same iterate, same count) and KKT.

  When the relative-decrease rule stops PG, a step h ≤ 1/L per group gives
  q(z⁻) − q(z) ≥ Σ_g ‖z_g − z⁻_g‖²/(2h_g) and a KKT residual ≤ Σ_g 2‖z_g − z⁻_g‖/h_g,
  so the residual is at most √(8 · max d · rtol · (|q| + 1)).
  """
  del x64
  v, d, anchor, _ = _problem(shape, 7, d_spread=2)
  tau = _threshold_for(v, d, anchor, axes, 0.3)
  init = anchor + 0.1 * np.random.default_rng(0).normal(size=shape)
  z, iters = oxr.solve_group_lasso(
    jnp.asarray(v), jnp.asarray(d), jnp.asarray(anchor), tau, axes,
    init=jnp.asarray(init), rtol=rtol, max_iters=1000,
  )  # fmt: skip
  z_ref, iters_ref = ref.solve_group_lasso_pg(
    v, d, anchor, tau, axes, init=init, rtol=rtol, max_iters=1000
  )
  assert int(iters) == iters_ref
  np.testing.assert_allclose(np.asarray(z), z_ref, rtol=1e-10, atol=1e-13)

  assert int(iters) < 1000  # Stopped by the rule, so the bound applies.
  weight = np.sqrt(np.prod([shape[a] for a in axes]))
  z = np.asarray(z)
  dz = z - anchor
  norms = np.sqrt(np.sum(z**2, axis=axes, keepdims=True))
  active = (
    np.sqrt(np.sum((d * anchor - v) ** 2, axis=axes, keepdims=True)) > tau * weight
  )
  q = np.sum(np.where(active, v * dz + 0.5 * d * dz**2, 0)) + tau * weight * norms.sum()
  bound = np.sqrt(8 * d.max() * rtol * (abs(q) + 1)) + 1e-9
  assert _kkt_residual(v, d, anchor, tau * weight, z, axes) <= bound


def test_pg_never_increases_the_objective_over_the_warm_start(x64):
  del x64
  v, d, anchor, _ = _problem((8, 6), 11, d_spread=3)
  axes = (1,)
  tau = _threshold_for(v, d, anchor, axes, 0.3)
  weight = np.sqrt(6)
  exact = ref.solve_group_lasso_exact_bisection(v, d, anchor, tau, axes)

  def q(z):
    dz = z - anchor
    return np.sum(v * dz + 0.5 * d * dz**2) + tau * weight * np.sum(
      np.linalg.norm(z, axis=1)
    )

  for init in (anchor, np.zeros_like(anchor), exact):
    z, _ = oxr.solve_group_lasso(
      jnp.asarray(v), jnp.asarray(d), jnp.asarray(anchor), tau, axes,
      init=jnp.asarray(init),
    )  # fmt: skip
    # Screening can only lower q: zero is the exact optimum of screened groups.
    assert q(np.asarray(z)) <= q(init) + 1e-12
    assert q(np.asarray(z)) >= q(exact) - 1e-12


def test_zero_threshold_is_the_closed_form_with_zero_iterations(x64):
  del x64
  v, d, anchor, _ = _problem((4, 3), 2)
  z, iters = oxr.solve_group_lasso(
    jnp.asarray(v), jnp.asarray(d), jnp.asarray(anchor), 0.0, (1,)
  )
  np.testing.assert_array_equal(np.asarray(z), anchor - v / d)
  assert int(iters) == 0


def test_all_groups_screened_takes_no_iteration():
  z, iters = oxr.solve_group_lasso(
    jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.zeros((3, 4)), 10.0, (1,)
  )
  assert int(iters) == 0 and not jnp.any(z)


def test_nan_input_is_not_hidden_by_screening():
  v = jnp.ones((3, 4)).at[1, 2].set(jnp.nan)
  z, _ = oxr.solve_group_lasso(v, jnp.ones((3, 4)), jnp.zeros((3, 4)), 10.0, (1,))
  assert jnp.any(jnp.isnan(z[1]))  # A NaN norm must not screen the group to 0.
  assert not jnp.any(z[0])


def test_float32_runs_under_jit_and_vmap():
  v, d, anchor, _ = _problem((6, 5), 4)
  args = [jnp.asarray(x, jnp.float32) for x in (v, d, anchor)]
  solve = jax.jit(lambda v, d, a, t: oxr.solve_group_lasso(v, d, a, t, (1,)))
  z, iters = solve(*args, 0.5)
  assert z.dtype == jnp.float32 and iters.dtype == jnp.int32
  thresholds = jnp.array([0.0, 0.5, 50.0])
  zs, its = jax.vmap(solve, in_axes=(None, None, None, 0))(*args, thresholds)
  np.testing.assert_allclose(zs[1], z, rtol=1e-6)
  assert int(its[0]) == 0 and not jnp.any(zs[2])


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    (dict(axes=(2,)), "out of range"),
    (dict(axes=()), "at least one"),
    (dict(axes=(1, -1)), "twice"),
    (dict(solver="magic"), "solver"),
    (dict(max_iters=0), "max_iters"),
    (dict(threshold=-1.0), "threshold"),
  ],
)
def test_bad_arguments_raise(kwargs, match):
  args = dict(v=jnp.ones((2, 3)), d=jnp.ones((2, 3)), anchor=jnp.ones((2, 3)))
  args |= dict(threshold=1.0, axes=(1,)) | kwargs
  with pytest.raises(ValueError, match=match):
    oxr.solve_group_lasso(**args)
