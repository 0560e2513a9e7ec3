"""Tests for optax_ramda/experiments/identification.py.

Oracles: the first-order optimality (KKT) conditions of the group lasso,
checked with a gradient written here (jax.grad of an independent float64 loss),
not the module's; and, for RAMDA, the KKT-certified optimum's support.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_ramda.experiments import identification as ident

# λ = 0.15 λ_max recovers the planted support with a zero-group margin ≥ 0.1
# for seeds 0-3 (checked below for the seeds used).
SMALL_PLANTED = dict(n=200, p=20, k=3, s=5, noise=0.5, lam_fraction=0.15)


def independent_loss(problem, w, b):
  """f written from the problem statement: mean CE, or ‖XW − Y‖²/(2n)."""
  x = jnp.asarray(problem.x)
  if problem.loss == "logistic":
    logits = x @ w + b
    log_probs = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.mean(jnp.take_along_axis(log_probs, problem.y[:, None], axis=1))
  return jnp.sum((x @ w - jnp.asarray(problem.y)) ** 2) / (2 * x.shape[0])


def assert_kkt(problem, params, tol):
  """0 ∈ ∇f + ∂ψ, group by group, with the gradient of `independent_loss`."""
  w = jnp.asarray(params["w"])
  b = jnp.asarray(params["b"]) if problem.has_bias else jnp.zeros(0)
  gw, gb = jax.grad(independent_loss, argnums=(1, 2))(problem, w, b)
  gw, w = np.asarray(gw), np.asarray(w)
  tau = problem.reg_strength * np.sqrt(w.shape[1])  # λω, ω = √|g|
  norms = np.linalg.norm(w, axis=1)
  zero = norms == 0
  # Zero groups: ‖∇_g f‖ ≤ λω.  Nonzero groups: ∇_g f = −λω W_g/‖W_g‖.
  assert np.all(np.linalg.norm(gw[zero], axis=1) <= tau + tol)
  stationarity = gw[~zero] + tau * w[~zero] / norms[~zero, None]
  np.testing.assert_array_less(np.abs(stationarity), tol)
  np.testing.assert_array_less(np.abs(np.asarray(gb)), tol)


@pytest.mark.parametrize(
  "make",
  [ident.digits_problem, lambda: ident.planted_problem(**SMALL_PLANTED, seed=0)],
  ids=["digits", "planted"],
)
def test_optimum_satisfies_kkt(x64, make):
  del x64
  problem = make()
  opt = ident.solve_optimum(problem)
  assert opt.kkt_residual <= 1e-10
  assert_kkt(problem, opt.params, tol=1e-9)
  # A nontrivial support: some but not all groups are zero.
  assert 0 < opt.zeros.sum() < problem.num_groups
  # Zero groups satisfy their condition strictly (the margin is reported).
  assert opt.zero_margin > 0
  np.testing.assert_array_equal(opt.zeros, ident.zero_groups(opt.params["w"]))


def test_kkt_residual_detects_a_non_optimal_point(x64):
  del x64
  problem = ident.planted_problem(**SMALL_PLANTED, seed=0)
  opt = ident.solve_optimum(problem)
  moved = {"w": opt.params["w"] + 1e-3}
  assert ident.kkt_residual(problem, moved) > 1e-4
  assert ident.objective(problem, moved) > opt.objective


def test_training_loss_matches_the_exact_objective(x64):
  """The JAX minibatch loss and the NumPy objective are the same function."""
  del x64
  problem = ident.digits_problem(num_samples=300)
  params = ident.initial_params(problem, seed=3)
  loss = ident.jax_loss(problem)
  jparams = {k: jnp.asarray(v) for k, v in params.items()}
  value, grads = jax.value_and_grad(loss)(
    jparams, jnp.asarray(problem.x), jnp.asarray(problem.y)
  )
  np_value, np_grads = ident.loss_and_grad(problem, params)
  np.testing.assert_allclose(float(value), np_value, rtol=1e-12)
  for k in params:
    np.testing.assert_allclose(np.asarray(grads[k]), np_grads[k], atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_ramda_weights_reach_the_optimal_support(x64, seed):
  del x64
  problem = ident.planted_problem(**SMALL_PLANTED, seed=seed)
  opt = ident.solve_optimum(problem)
  np.testing.assert_array_equal(opt.zeros, problem.planted_zeros)
  epochs = 60
  batches = ident.minibatches(len(problem.x), 20, epochs, seed)
  tx, _ = ident.optimizers(problem, epochs, batches.shape[1], {"RAMDA": 0.01})["RAMDA"]
  init = ident.initial_params(problem, seed)
  trace = ident.run(problem, tx, init, batches)
  final_w = trace.final_params["w"]
  assert final_w.dtype == np.float64
  np.testing.assert_array_equal(np.all(final_w == 0, axis=1), opt.zeros)
  # Identified with room to spare: the last 5 epochs all have the support.
  np.testing.assert_array_equal(trace.weight_zeros[-5:], np.tile(opt.zeros, (5, 1)))
  assert ident.objective(problem, trace.final_params) - opt.objective < 1e-3
  np.testing.assert_array_equal(trace.prox_zeros[-1], opt.zeros)  # Ŵ too.


def test_identification_epoch_and_errors():
  optimal = np.array([True, False, True])
  rows = np.array(
    [
      [False, False, False],  # start: 2 false nonzeros
      [True, True, True],  # 1 false zero
      [True, False, True],
      [True, False, True],
    ]
  )
  fz, fnz = ident.support_errors(rows, optimal)
  np.testing.assert_array_equal(fz, [0, 1, 0, 0])
  np.testing.assert_array_equal(fnz, [2, 0, 0, 0])
  assert ident.identification_epoch(rows, optimal) == 2
  assert ident.identification_epoch(rows[:2], optimal) is None
  assert ident.identification_epoch(rows[2:], optimal) == 0


def test_main_writes_table_json_and_plot(tmp_path):
  report = ident.main(["--small", "--epochs", "6", "--out", str(tmp_path)])
  names = {"RAMDA", "RMDA", "ProxGen", "ProxSGD", "ProxSSI"}
  assert [r["problem"]["name"] for r in report["problems"]] == ["digits", "planted"]
  for rec in report["problems"]:
    assert set(rec["optimizers"]) == names
    for r in rec["optimizers"].values():
      assert len(r["per_epoch"]["false_zeros"]) == 7  # start + 6 epochs
  saved = json.loads((tmp_path / "identification.json").read_text())
  assert (
    saved["problems"][1]["optimum"]["zeros"]
    == (report["problems"][1]["optimum"]["zeros"])
  )
  table = (tmp_path / "identification.md").read_text()
  assert all(f"| {name} |" in table for name in names)
  assert (tmp_path / "identification.png").read_bytes()[:4] == b"\x89PNG"
