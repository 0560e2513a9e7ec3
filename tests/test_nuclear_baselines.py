"""The baselines with a nuclear-norm leaf: RMDA, ProxGen, ProxSGD and ProxSSI.

Oracles: NumPy float64 transcriptions of each method (docs/algorithm.md, "The
baselines") whose nuclear-norm prox is singular-value soft-thresholding by
NumPy's SVD (RMDA, ProxSGD: D = I, so the prox is exact), or the NumPy PG
iteration of tests/test_nuclear.py with the spec's cap and tolerance (ProxGen,
ProxSSI: a non-constant metric); the iteration counts must agree too.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr
from tests.test_nuclear import _pg_reference, _svt

STEPS = 8
LAM = 0.05


def _regression():
  """A least-squares problem whose solution is close to rank 1."""
  rng = np.random.default_rng(7)
  target = rng.normal(size=(6, 1)) @ rng.normal(size=(1, 4))
  x = rng.normal(size=(40, 6))
  y = x @ target + 0.01 * rng.normal(size=(40, 4))
  grad = jax.jit(jax.grad(lambda w: jnp.mean((x @ w - y) ** 2)))
  w0 = 0.1 * rng.normal(size=(6, 4))
  return w0, grad


def _run(tx, w0, grad):
  w = jnp.asarray(w0)
  state = tx.init(w)
  step = jax.jit(lambda w, s: tx.update(grad(w), s, w))
  iterations = []
  for _ in range(STEPS):
    updates, state = step(w, state)
    w = optax.apply_updates(w, updates)
    iterations.append(int(state.iterations))
  return np.asarray(w), state, iterations


def _rmda_reference(w0, grad, lr, c):
  w, anchor, v, alpha = w0.copy(), w0.copy(), np.zeros_like(w0), 0.0
  for k in range(1, STEPS + 1):
    g = np.asarray(grad(w))
    s = lr * math.sqrt(k)
    alpha += s
    v += s * g
    z = _svt(anchor - v / math.sqrt(k), alpha / math.sqrt(k) * LAM)
    w = (1 - c) * w + c * z
  return w, z


def _adam_moments(m, v, g, b1, b2):
  return b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g


def _proxgen_reference(w0, grad, lr, b1, b2, eps):
  w, m, v, iterations = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), []
  for t in range(1, STEPS + 1):
    m, v = _adam_moments(m, v, np.asarray(grad(w)), b1, b2)
    a = lr / (1 - b1**t)
    p = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
    w, it = _pg_reference(a * m, p, w, lr * LAM, w, 5, 1e-3)
    iterations.append(it)
  return w, iterations


def _prox_sgd_reference(w0, grad, lr, c):
  w, b = w0.copy(), np.zeros_like(w0)
  for _ in range(STEPS):
    b = (1 - c) * b + c * np.asarray(grad(w))
    w = _svt(w - lr * b, lr * LAM)
  return w


def _proxssi_reference(w0, grad, lr, b1, b2, eps):
  """The authors' ProxSSI: ε on the uncorrected root, the uncorrected metric."""
  w, m, v, iterations = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), []
  for t in range(1, STEPS + 1):
    m, v = _adam_moments(m, v, np.asarray(grad(w)), b1, b2)
    p = np.sqrt(v) + eps
    x = w - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / p
    # argmin_z ½ Σ p (z − x)² + ηλ‖z‖_*: the subproblem with V = 0, D = p,
    # anchor x, warm-started at w.
    w, it = _pg_reference(np.zeros_like(x), p, x, lr * LAM, w, 5, 1e-3)
    iterations.append(it)
  return w, iterations


def _rank(w):
  return int(oxr.sparsity(jnp.asarray(w), oxr.nuclear())["leaves"][""]["rank"])


def test_rmda_with_nuclear_matches_float64_transcription(x64):
  del x64
  w0, grad = _regression()
  tx = oxr.rmda(
    0.1, momentum=0.5, reg_strength=LAM, regularizer=oxr.nuclear(), momentum_ramp=False
  )
  w, state, iterations = _run(tx, w0, grad)
  w_ref, z_ref = _rmda_reference(w0, grad, 0.1, 0.5)
  np.testing.assert_allclose(w, w_ref, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(oxr.prox_iterate(state), z_ref, rtol=1e-10, atol=1e-12)
  # With D = I one PG step is the exact prox; the second sees no decrease.
  assert set(iterations) <= {1, 2}


def test_proxgen_with_nuclear_matches_float64_transcription(x64):
  del x64
  w0, grad = _regression()
  tx = oxr.proxgen(0.05, reg_strength=LAM, regularizer=oxr.nuclear())
  w, _, iterations = _run(tx, w0, grad)
  w_ref, iterations_ref = _proxgen_reference(w0, grad, 0.05, 0.9, 0.999, 1e-8)
  assert iterations == iterations_ref
  assert max(iterations) <= 5
  np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-12)


def test_prox_sgd_with_nuclear_matches_float64_transcription(x64):
  del x64
  w0, grad = _regression()
  tx = oxr.prox_sgd(0.1, momentum=0.1, reg_strength=LAM, regularizer=oxr.nuclear())
  w, _, _ = _run(tx, w0, grad)
  w_ref = _prox_sgd_reference(w0, grad, 0.1, 0.1)
  np.testing.assert_allclose(w, w_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-6, 1e-2], ids=["eps1e-6", "eps1e-2"])
def test_proxssi_with_nuclear_matches_float64_transcription(x64, eps):
  del x64
  w0, grad = _regression()
  tx = oxr.proxssi(0.05, eps=eps, reg_strength=LAM, regularizer=oxr.nuclear())
  w, _, iterations = _run(tx, w0, grad)
  w_ref, iterations_ref = _proxssi_reference(w0, grad, 0.05, 0.9, 0.999, eps)
  assert iterations == iterations_ref
  np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-12)


def test_a_strong_nuclear_norm_makes_every_baseline_low_rank(x64):
  """λ large enough: each method's weights lose rank (SVT zeroes singular values)."""
  del x64
  w0, grad = _regression()
  specs = oxr.nuclear()
  for tx in (
    oxr.rmda(
      0.1, momentum=1.0, reg_strength=1.0, regularizer=specs, momentum_ramp=False
    ),
    oxr.proxgen(0.05, reg_strength=1.0, regularizer=specs),
    oxr.prox_sgd(0.1, reg_strength=1.0, regularizer=specs),
    oxr.proxssi(0.05, reg_strength=1.0, regularizer=specs),
  ):
    w, _, _ = _run(tx, w0, grad)
    assert _rank(w) < np.linalg.matrix_rank(w0)
