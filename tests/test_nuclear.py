"""Tests of the nuclear-norm regularizer: spec, subproblem solver, sparsity report.

Oracles: singular-value soft-thresholding with NumPy's SVD (the exact prox when
d is constant), a NumPy float64 transcription of the PG iteration and both
stopping rules (docs/algorithm.md#the-subproblem), the prox fixed-point condition z = SVT(z − h∇f(z), hτ)
at the optimum, NumPy's singular values and matrix rank, and a NumPy float64
transcription of RAMDA (docs/algorithm.md#the-ramda-step) with the nuclear-norm subproblem.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr

solve = jax.jit(oxr.solve_nuclear, static_argnames=("stopping",))


def _svt(y, t):
  u, s, vt = np.linalg.svd(y, full_matrices=False)
  return (u * np.maximum(s - t, 0)) @ vt


def _objective(v, d, anchor, tau, z):
  dz = z - anchor
  return float(np.sum(v * dz + 0.5 * d * dz**2) + tau * np.sum(np.linalg.svd(z)[1]))


def _pg_reference(
  v, d, anchor, tau, init, max_iters, rtol, stopping="decrease", tol=0.0
):
  """PG with SVT at h·τ, h = 1/max d; the §3 "decrease" rule or condition (7)."""
  if tau == 0:
    return anchor - v / d, 0
  h = 1 / np.max(d)
  z, q_prev, q_init = (
    np.array(init, np.float64),
    None,
    _objective(v, d, anchor, tau, init),
  )
  iters = 0
  for j in range(1, max_iters + 1):
    z_prev = z
    z = _svt(z - h * (v + d * (z - anchor)), h * tau)
    iters = j
    q = _objective(v, d, anchor, tau, z)
    if stopping == "decrease":
      if j >= 2 and (q_prev - q) / (abs(q) + 1) < rtol:
        break
      q_prev = q
    elif np.linalg.norm((d - 1 / h) * (z - z_prev)) <= tol and q <= q_init:
      break
  return z, iters


def _problem(shape, seed, d_decades=1.0):
  rng = np.random.default_rng(seed)
  v = rng.normal(size=shape)
  d = 10.0 ** rng.uniform(0, d_decades, size=shape)
  anchor = rng.normal(size=shape)
  return v, d, anchor


def test_spec_rejects_non_matrix_leaves_naming_the_path():
  params = {"dense": {"kernel": jnp.zeros((3, 4))}, "conv": jnp.zeros((3, 3, 2, 4))}
  with pytest.raises(ValueError, match=r"\['conv'\].*2-D"):
    oxr.resolve_specs(oxr.nuclear(), params)
  resolved = oxr.resolve_specs({"dense": oxr.nuclear(), "conv": None}, params)
  assert resolved["dense"]["kernel"] == oxr.Nuclear(max_iters=5, rtol=1e-3)
  with pytest.raises(ValueError, match="max_iters"):
    oxr.nuclear(max_iters=0)
  with pytest.raises(ValueError, match="rtol"):
    oxr.nuclear(rtol=-1.0)
  with pytest.raises(ValueError, match="matrix"):
    oxr.solve_nuclear(jnp.ones(3), jnp.ones(3), jnp.ones(3), 1.0)


def test_constant_d_is_one_exact_svt_step(x64):
  """Oracle: with d ≡ c the prox is SVT(W⁰ − v/c, τ/c), reached by the first step."""
  del x64
  v, _, anchor = _problem((7, 4), 0)
  d = np.full((7, 4), 2.5)
  s = np.linalg.svd(anchor - v / 2.5, compute_uv=False)
  tau = 2.5 * float(s[1] + s[2]) / 2  # Keeps the top two singular values.
  z, _ = solve(v, d, anchor, tau, init=np.zeros((7, 4)))
  expected = _svt(anchor - v / 2.5, tau / 2.5)
  np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-13)
  assert np.linalg.matrix_rank(np.asarray(z)) == 2


@pytest.mark.parametrize("shape", [(6, 4), (3, 8)])
@pytest.mark.parametrize("stopping", ["decrease", "subgradient"])
def test_pg_matches_numpy_transcription(x64, shape, stopping):
  """Oracle: `_pg_reference` (same iterations, same iterate), default and long runs."""
  del x64
  v, d, anchor = _problem(shape, 1)
  init = anchor + 0.1
  tau = 1.5
  for max_iters, rtol, tol in [(5, 1e-3, 1e-1), (200, 1e-9, 1e-6)]:
    z, iters = solve(
      v, d, anchor, tau, init, max_iters, rtol, stopping=stopping, subgradient_tol=tol
    )
    z_ref, iters_ref = _pg_reference(
      v, d, anchor, tau, init, max_iters, rtol, stopping, tol
    )
    assert int(iters) == iters_ref
    np.testing.assert_allclose(z, z_ref, rtol=1e-10, atol=1e-12)


def test_pg_converges_to_the_prox_fixed_point(x64):
  """Oracle: at the optimum z = SVT(z − h(v + d(z − W⁰)), hτ) (NumPy SVD)."""
  del x64
  v, d, anchor = _problem((6, 5), 2, d_decades=0.5)
  tau = 2.0
  z, iters = solve(
    v, d, anchor, tau, None, 20_000, stopping="subgradient", subgradient_tol=1e-12
  )
  assert int(iters) < 20_000
  z = np.asarray(z)
  h = 1 / np.max(d)
  fixed = _svt(z - h * (v + d * (z - anchor)), h * tau)
  assert np.linalg.norm(fixed - z) <= 1e-10 * np.linalg.norm(z)
  assert np.linalg.matrix_rank(z) < 5  # The threshold has cut some directions.
  # The authors' 5 iterations from the anchor get most of the way there.
  z5, _ = solve(v, d, anchor, tau)
  q5, q_opt = (_objective(v, d, anchor, tau, x) for x in (np.asarray(z5), z))
  q0 = _objective(v, d, anchor, tau, anchor)
  assert q_opt <= q5 <= q_opt + 0.1 * (q0 - q_opt)


def test_threshold_zero_and_low_precision(x64):
  """τ = 0: the closed form W⁰ − v/d, no iteration; bf16 stays bf16."""
  del x64
  v, d, anchor = _problem((4, 3), 3)
  z, iters = solve(v, d, anchor, 0.0)
  np.testing.assert_array_equal(z, anchor - v / d)
  assert int(iters) == 0
  cast = [jnp.asarray(x, jnp.bfloat16) for x in (v, d, anchor)]
  z16, _ = oxr.solve_nuclear(*cast, 1.0)
  assert z16.dtype == jnp.bfloat16
  # Oracle: the float64 solve of the same (bf16-rounded) inputs, to 2 bf16 ulps
  # of the solution's scale (measured: 0.18 ulp).
  z64, _ = solve(*(jnp.asarray(x, jnp.float64) for x in cast), 1.0)
  ulp = float(jnp.finfo(jnp.bfloat16).eps)
  atol = 2 * ulp * float(np.max(np.abs(z64)))
  np.testing.assert_allclose(np.asarray(z16, np.float64), z64, rtol=0, atol=atol)


def test_value_and_sparsity_report_rank():
  """Oracles: NumPy's singular values and matrix_rank."""
  rng = np.random.default_rng(4)
  low = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 5))
  params = {
    "w": jnp.asarray(low, jnp.float32),
    "g": jnp.ones((4, 3)),
    "b": jnp.zeros(3),
  }
  specs = {"w": oxr.nuclear(), "g": oxr.group_lasso(axes=(1,)), "b": None}
  np.testing.assert_allclose(
    oxr.regularizer_value({"w": params["w"]}, {"w": oxr.nuclear()}),
    np.sum(np.linalg.svd(low, compute_uv=False)),
    rtol=1e-5,
  )
  report = oxr.sparsity(params, specs)
  leaf = report["leaves"]["['w']"]
  assert int(leaf["rank"]) == np.linalg.matrix_rank(low) == 2
  assert leaf["max_rank"] == 5
  assert "groups" not in leaf  # Not counted in the group sparsity.
  assert report["groups"] == 4
  assert "rank 2" in oxr.sparsity_table(params, specs)
  assert int(oxr.sparsity(jnp.zeros((3, 3)), oxr.nuclear())["leaves"][""]["rank"]) == 0


def _ramda_nuclear_transcription(w0, grads_fn, steps, lr, c, eps, lam):
  """docs/algorithm.md#the-ramda-step in NumPy float64 with the nuclear subproblem by `_pg_reference`."""
  w, anchor = w0.copy(), w0.copy()
  big_v, big_u, alpha, iters = np.zeros_like(w0), np.zeros_like(w0), 0.0, []
  for k in range(1, steps + 1):
    g = grads_fn(w)
    s = lr * math.sqrt(k)
    alpha += s
    big_v += s * g
    big_u += s * g * g
    d = np.cbrt(big_u) + eps
    z, it = _pg_reference(big_v, d, anchor, alpha * lam, w, 5, 1e-3)
    iters.append(it)
    w = (1 - c) * w + c * z
  return w, z, iters


def test_ramda_with_nuclear_matches_float64_transcription(x64):
  """Oracle: `_ramda_nuclear_transcription`; Ŵ ends up low rank."""
  del x64
  rng = np.random.default_rng(5)
  target = rng.normal(size=(6, 1)) @ rng.normal(size=(1, 4))
  x = rng.normal(size=(40, 6))
  y = x @ target + 0.01 * rng.normal(size=(40, 4))

  def loss(w):
    return jnp.mean((x @ w - y) ** 2)

  grad = jax.jit(jax.grad(loss))
  tx = oxr.ramda(
    0.1,
    momentum=0.5,
    eps=1e-6,
    reg_strength=0.05,
    regularizer=oxr.nuclear(),
    momentum_ramp=False,
  )
  w = jnp.zeros((6, 4))
  state = tx.init(w)
  step = jax.jit(lambda w, s: tx.update(grad(w), s, w))
  iters = []
  for _ in range(8):
    updates, state = step(w, state)
    w = optax.apply_updates(w, updates)
    iters.append(int(state.iterations))
  w_ref, z_ref, iters_ref = _ramda_nuclear_transcription(
    np.zeros((6, 4)), lambda w: np.asarray(grad(w)), 8, 0.1, 0.5, 1e-6, 0.05
  )
  assert iters == iters_ref
  assert max(iters) <= 5
  np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(oxr.prox_iterate(state), z_ref, rtol=1e-9, atol=1e-12)
  assert (
    int(oxr.sparsity(oxr.prox_iterate(state), oxr.nuclear())["leaves"][""]["rank"]) < 4
  )
