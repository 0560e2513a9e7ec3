"""Tests of the baselines: `_rmda`, `_proxgen`, `_prox_sgd`, `_proxssi` (docs/algorithm.md#the-baselines).

Oracles:
* `optax.adam` (ProxGen and ProxSSI at λ = 0) and `optax.sgd` with momentum (ProxSGD at
  λ = 0);
* RMDA at λ = 0 against its dual average written as an explicit sum,
  Ŵ_k = W⁰ − (η/√k) Σ_j √j g_j;
* RMDA's closed-form prox against the general solver with D = √k·I;
* ProxSSI's prox against `solve_group_lasso(solver="exact")` with the same weights;
* every optimizer, step by step, against the independent NumPy float64 transcription
  in `tests/numpy_baselines.py`, on leaves with group lasso, ℓ1 and no regularizer.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr
from tests import numpy_baselines as nb

# --- A problem with every kind of leaf, in NumPy -------------------------------------

REF_SPECS = {
  "conv": ("group", (0, 1, 3), "sqrt"),
  "dense": ("group", (1,), 2.0),
  "sparse": ("l1",),
  "bias": None,
}
SPECS = {
  "conv": oxr.group_lasso((0, 1, 3)),
  "dense": oxr.group_lasso(1, weight=2.0),
  "sparse": oxr.l1(),
  "bias": None,
}


def _reference_problem(num_steps):
  rng = np.random.default_rng(3)
  params = {
    "conv": rng.normal(size=(2, 2, 4, 3)),
    "dense": rng.normal(size=(6, 4)),
    "sparse": rng.normal(size=(7,)),
    "bias": rng.normal(size=(4,)),
  }
  targets = {k: 0.3 * rng.normal(size=v.shape) for k, v in params.items()}
  targets["dense"][:3] = 0.0  # Rows the regularizer should switch off.
  targets["conv"][:, :, :2] = 0.0  # Input channels too.
  scales = {k: rng.uniform(0.5, 3.0, size=v.shape) for k, v in params.items()}
  noise = [
    {k: 0.1 * rng.normal(size=v.shape) for k, v in params.items()}
    for _ in range(num_steps)
  ]

  def grads_fn(p, step):
    return {
      k: scales[k] * (p[k] - targets[k]) + 0.2 * np.sin(3 * p[k]) + noise[step][k]
      for k in p
    }

  return params, grads_fn


def _follow(tx, params, grads_fn, records, check=None):
  """Steps `tx` (jitted) on the reference's gradients and compares every step."""
  update = jax.jit(tx.update)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for step, record in enumerate(records):
    grads = jax.tree.map(jnp.asarray, grads_fn(jax.tree.map(np.asarray, p), step))
    updates, state = update(grads, state, p)
    p = optax.apply_updates(p, updates)
    chex.assert_trees_all_close(p, record["params"], rtol=1e-10, atol=1e-12)
    if check is not None:
      check(state, record, step)
  return p, state


def _zero_groups(params):
  return int(oxr.sparsity(params, SPECS)["zero_groups"])


def _mlp_problem(dtype=jnp.float64):
  """A small two-layer regression whose kernels carry group lasso and ℓ1."""
  kx, kw1, kw2, ky = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(kx, (32, 5), dtype)
  y = jax.random.normal(ky, (32, 2), dtype)
  params = {
    "w1": 0.5 * jax.random.normal(kw1, (5, 6), dtype),
    "b1": jnp.zeros(6, dtype),
    "w2": 0.5 * jax.random.normal(kw2, (6, 2), dtype),
  }

  def loss(p):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] - y) ** 2)

  specs = {"w1": oxr.group_lasso(axes=(1,)), "b1": None, "w2": oxr.l1()}
  return params, loss, specs


def _run(tx, params, loss, steps):
  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


# --- RMDA --------------------------------------------------------------------------


def test_rmda_matches_numpy_reference(x64):
  """Oracle: numpy_baselines.rmda_reference through two restarts and the ramp."""
  del x64
  steps = 14
  params, grads_fn = _reference_problem(steps)
  hyper = dict(
    learning_rate=lambda count: 0.05 * (1 + 0.02 * count),
    momentum=0.3,
    reg_strength=4.0,
    milestones=(4, 8),
    decay=0.5,
  )
  records = nb.rmda_reference(params, grads_fn, steps, regularizers=REF_SPECS, **hyper)

  def check(state, record, step):
    chex.assert_trees_all_close(state.prox, record["prox"], rtol=1e-10, atol=1e-12)
    assert int(state.stage_count) == record["k"], step
    np.testing.assert_allclose(float(state.alpha), record["alpha"], rtol=1e-13)

  _, state = _follow(
    oxr.rmda(regularizer=SPECS, **hyper), params, grads_fn, records, check
  )
  # Ŵ has zero groups but not only zeros: both branches of the prox were taken.
  assert 0 < _zero_groups(state.prox) < 6 + 4


@pytest.mark.parametrize("ramp_start", [None, 0, 5], ids=["no_ramp", "ramp0", "ramp5"])
def test_rmda_lambda_zero_is_dual_averaging(x64, ramp_start):
  """Oracle: Ŵ_k = W⁰ − (η/√k) Σ_{j≤k} √j g_j and w ← (1 − c)w + cŴ_k, as a sum.

  Without milestones c stays c₀; from `ramp_start` on, the r-th step of the ramp
  uses c = min(c₀√r, 1).
  """
  del x64
  params, loss, specs = _mlp_problem()
  lr, c0, steps = 0.05, 0.2, 12
  # λ = 0 with specs given.
  tx = oxr.rmda(lr, c0, reg_strength=0.0, regularizer=specs, ramp_start=ramp_start)
  update, grad = jax.jit(tx.update), jax.jit(jax.grad(loss))
  state = tx.init(params)
  w, w_expected, history = params, params, []
  for k in range(1, steps + 1):
    updates, state = update(grad(w), state, w)
    w = optax.apply_updates(w, updates)

    history.append(jax.tree.map(np.asarray, grad(w_expected)))
    count = k - 1  # Updates applied before this one.
    if ramp_start is None or count < ramp_start:
      c = c0
    else:
      c = min(c0 * np.sqrt(count - ramp_start + 1), 1.0)
    w_hat = {
      n: np.asarray(params[n])
      - lr / np.sqrt(k) * sum(np.sqrt(j + 1) * h[n] for j, h in enumerate(history))
      for n in params
    }
    w_expected = {n: (1 - c) * np.asarray(w_expected[n]) + c * w_hat[n] for n in params}
    chex.assert_trees_all_close(state.prox, w_hat, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(w, w_expected, rtol=1e-12, atol=1e-14)


def _leaf_subproblem(seed, shape=(5, 4)):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape)), jnp.asarray(rng.normal(size=shape))


@pytest.mark.parametrize("solver", ["pg", "exact", "exact_unrolled"])
def test_rmda_closed_form_equals_general_solver(x64, solver):
  """Oracle: solve_group_lasso / prox_l1 with D = √k·I and threshold αλ."""
  del x64
  v, anchor = _leaf_subproblem(0)
  k, alpha = 7, 3.0
  sqrt_k = np.sqrt(k)
  x = anchor - v / sqrt_k
  d = jnp.full_like(v, sqrt_k)
  for spec, axes in ((oxr.group_lasso(1), (1,)), (oxr.group_lasso(0, 1.5), (0,))):
    spec = spec.check(v.shape, "w")
    # λ that puts τω_g at the median group norm: some groups shrink, some vanish.
    norms = np.linalg.norm(np.asarray(x), axis=axes)
    lam = np.median(norms) / spec.group_weight(v.shape) / (alpha / sqrt_k)
    threshold = alpha / sqrt_k * lam
    z, iters = spec.prox(x, threshold, anchor)
    expected, _ = oxr.solve_group_lasso(
      v, d, anchor, alpha * lam, axes, spec.weight, solver=solver
    )
    np.testing.assert_allclose(z, expected, rtol=1e-13, atol=1e-15)
    assert int(iters) == 0
    zero = np.all(np.asarray(z) == 0, axis=axes)
    assert 0 < zero.sum() < zero.size  # Some groups are shrunk, some screened.
  lam = np.median(np.abs(np.asarray(x))) / (alpha / sqrt_k)
  threshold = alpha / sqrt_k * lam
  z, _ = oxr.l1().prox(x, threshold, anchor)
  np.testing.assert_allclose(z, oxr.prox_l1(v, d, anchor, alpha * lam), rtol=1e-15)
  assert 0 < int(jnp.sum(z == 0)) < z.size


@dataclasses.dataclass(frozen=True)
class _SolvedGroupLasso(oxr.Regularizer):
  """A group lasso RMDA knows no closed form for: it uses the general solver."""

  inner: oxr.GroupLasso

  def check(self, shape, path):
    return dataclasses.replace(self, inner=self.inner.check(shape, path))

  def group_axes(self, ndim):
    return self.inner.group_axes(ndim)

  def group_weight(self, shape):
    return self.inner.group_weight(shape)

  def solve(self, v, d, anchor, threshold, init, *, solver, max_iters, rtol):
    return self.inner.solve(
      v, d, anchor, threshold, init, solver=solver, max_iters=max_iters, rtol=rtol
    )


def test_rmda_other_specs_use_the_general_solver(x64):
  """Oracle: RMDA with the closed form, against a spec solved by "pg" (D = I)."""
  del x64
  params, loss, specs = _mlp_problem()
  solved = dict(specs, w1=_SolvedGroupLasso(specs["w1"]))
  hyper = dict(
    learning_rate=0.1, momentum=0.3, reg_strength=1.5, milestones=(3,), decay=0.5
  )
  p_closed, s_closed = _run(oxr.rmda(regularizer=specs, **hyper), params, loss, 6)
  p_solved, s_solved = _run(oxr.rmda(regularizer=solved, **hyper), params, loss, 6)
  chex.assert_trees_all_close(p_solved, p_closed, rtol=1e-13, atol=1e-15)
  assert int(s_closed.iterations["w1"]) == 0
  assert int(s_solved.iterations["w1"]) == 2  # One exact PG step, one to stop.
  assert _zero_groups_of(s_closed.prox["w1"]) > 0


def _zero_groups_of(w):
  return int(jnp.sum(jnp.all(w == 0, axis=1)))


def test_rmda_restart_and_prox_iterate_in_a_chain():
  params, loss, specs = _mlp_problem(jnp.float32)
  tx = optax.chain(
    optax.clip_by_global_norm(1.0), oxr.rmda(0.1, reg_strength=1.5, regularizer=specs)
  )
  params, state = _run(tx, params, loss, 5)
  prox = oxr.prox_iterate(state)
  chex.assert_trees_all_equal_shapes_and_dtypes(prox, params)
  assert _zero_groups_of(prox["w1"]) > 0
  restarted = oxr.restart(state, params)[1]
  assert int(restarted.stage_count) == 0 and float(restarted.alpha) == 0
  assert int(restarted.count) == 5
  chex.assert_trees_all_equal(restarted.anchor, params)
  chex.assert_trees_all_equal(restarted.grad_sum, optax.tree.zeros_like(params))


# --- ProxGen -----------------------------------------------------------------------


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
def test_proxgen_lambda_zero_equals_adam(x64, scheduled):
  """Oracle: optax.adam, in float64, with regularized leaves at λ = 0."""
  del x64
  params, loss, specs = _mlp_problem()
  lr = optax.cosine_decay_schedule(1e-2, 40) if scheduled else 1e-2
  p_adam, _ = _run(optax.adam(lr, b1=0.8, b2=0.99, eps=1e-7), params, loss, 40)
  p_proxgen, state = _run(
    oxr.proxgen(lr, 0.8, 0.99, 1e-7, reg_strength=0.0, regularizer=specs),
    params,
    loss,
    40,
  )
  chex.assert_trees_all_close(p_proxgen, p_adam, rtol=1e-12, atol=1e-14)
  assert jax.tree.reduce(max, jax.tree.map(int, state.iterations)) == 0


@pytest.mark.parametrize("solver", ["pg", "exact", "exact_unrolled"])
def test_proxgen_matches_numpy_reference(x64, solver):
  """Oracle: numpy_baselines.proxgen_reference ("exact" for both exact
  solvers); "pg" iteration counts equal too."""
  del x64
  steps = 8
  params, grads_fn = _reference_problem(steps)
  hyper = dict(
    learning_rate=lambda count: 0.1 / (1 + 0.1 * count),
    b1=0.8,
    b2=0.95,
    eps=1e-8,
    reg_strength=0.5,
    max_iters=100,
    rtol=1e-8,
  )
  records = nb.proxgen_reference(
    params,
    grads_fn,
    steps,
    regularizers=REF_SPECS,
    solver="pg" if solver == "pg" else "exact",
    **hyper,
  )

  def check(state, record, step):
    if solver == "pg":
      assert jax.tree.map(int, state.iterations) == record["iterations"], step

  tx = oxr.proxgen(regularizer=SPECS, solver=solver, **hyper)
  p, _ = _follow(tx, params, grads_fn, records, check)
  assert 0 < _zero_groups(p) < 6 + 4
  if solver == "pg":
    assert any(v > 2 for r in records for v in r["iterations"].values())


# --- ProxSGD -----------------------------------------------------------------------


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
def test_prox_sgd_lambda_zero_is_momentum_sgd(x64, scheduled):
  """Oracle: b = (1 − c)b + c·g is optax.sgd with rate ηc and momentum 1 − c."""
  del x64
  params, loss, specs = _mlp_problem()
  # A float64 schedule: optax's own schedules compute in float32.
  lr = (lambda count: 0.2 / (1 + 0.1 * count)) if scheduled else 0.2
  c = 0.3
  sgd_lr = (lambda count: c * lr(count)) if scheduled else c * lr
  p_sgd, _ = _run(optax.sgd(sgd_lr, momentum=1 - c), params, loss, 30)
  p_prox, _ = _run(
    oxr.prox_sgd(lr, c, reg_strength=0.0, regularizer=specs), params, loss, 30
  )
  chex.assert_trees_all_close(p_prox, p_sgd, rtol=1e-12, atol=1e-14)


def test_prox_sgd_matches_numpy_reference(x64):
  """Oracle: numpy_baselines.prox_sgd_reference."""
  del x64
  steps = 10
  params, grads_fn = _reference_problem(steps)
  hyper = dict(
    learning_rate=lambda count: 0.1 * 0.95**count, momentum=0.3, reg_strength=0.5
  )
  records = nb.prox_sgd_reference(
    params, grads_fn, steps, regularizers=REF_SPECS, **hyper
  )
  p, _ = _follow(oxr.prox_sgd(regularizer=SPECS, **hyper), params, grads_fn, records)
  assert 0 < _zero_groups(p) < 6 + 4


# --- ProxSSI ------------------------------------------------------------------------


def test_proxssi_lambda_zero_matches_numpy_reference(x64):
  """Oracle: numpy_baselines.proxssi_reference at λ = 0, the authors' Adam step.

  With ε on the uncorrected root this is not optax.adam: it is Adam whose ε is
  ε·√(1 − β₂ᵗ) after the corrected root; the second check shows it differs from
  ProxGen (Adam) at the same ε.
  """
  del x64
  steps = 8
  params, grads_fn = _reference_problem(steps)
  hyper = dict(learning_rate=0.05, b1=0.8, b2=0.95, eps=1e-3, reg_strength=0.0)
  records = nb.proxssi_reference(
    params, grads_fn, steps, regularizers=REF_SPECS, **hyper
  )
  _follow(oxr.proxssi(regularizer=SPECS, **hyper), params, grads_fn, records)
  adam = nb.proxgen_reference(params, grads_fn, steps, regularizers=REF_SPECS, **hyper)
  differs = max(
    np.max(np.abs(adam[-1]["params"][n] - records[-1]["params"][n])) for n in params
  )
  assert differs > 1e-6  # A different method from ProxGen/Adam at this ε.


def test_proxssi_prox_equals_exact_solver(x64):
  """Oracle: solve_group_lasso(V = 0, D = P, anchor = Adam step, "exact") and prox_l1."""
  del x64
  params, loss, specs = _mlp_problem()
  # λ such that w1 keeps one of its five groups: both branches of the prox run.
  lr, lam, b1, b2, eps = 0.05, 0.01, 0.9, 0.999, 1e-6
  tx = oxr.proxssi(lr, b1, b2, eps, reg_strength=lam, regularizer=specs)
  params, state = _run(tx, params, loss, 3)
  grads = jax.grad(loss)(params)
  updates, new_state = jax.jit(tx.update)(grads, state, params)
  new_params = optax.apply_updates(params, updates)

  t = 4
  for name, spec in (("w1", specs["w1"]), ("w2", specs["w2"])):
    m = b1 * state.mu[name] + (1 - b1) * grads[name]
    v = b2 * state.nu[name] + (1 - b2) * grads[name] ** 2
    p = jnp.sqrt(v) + eps  # The authors' uncorrected metric.
    x = params[name] - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / p
    if spec == oxr.l1():
      expected = oxr.prox_l1(jnp.zeros_like(x), p, x, lr * lam)
    else:
      expected, _ = oxr.solve_group_lasso(
        jnp.zeros_like(x), p, x, lr * lam, axes=(1,), solver="exact"
      )
    np.testing.assert_allclose(new_params[name], expected, rtol=1e-12, atol=1e-14)
  assert _zero_groups_of(new_params["w1"]) > 0
  assert int(new_state.iterations["w1"]) > 0  # P varies within a group: Newton ran.


def test_proxssi_matches_numpy_reference(x64):
  """Oracle: numpy_baselines.proxssi_reference (bisection on the secular equation)."""
  del x64
  steps = 8
  params, grads_fn = _reference_problem(steps)
  hyper = dict(
    learning_rate=lambda count: 0.1 / (1 + 0.1 * count),
    b1=0.8,
    b2=0.95,
    eps=1e-6,
    reg_strength=0.5,
  )
  records = nb.proxssi_reference(
    params, grads_fn, steps, regularizers=REF_SPECS, **hyper
  )
  p, _ = _follow(oxr.proxssi(regularizer=SPECS, **hyper), params, grads_fn, records)
  assert 0 < _zero_groups(p) < 6 + 4


# --- Bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
  ("factory", "kwargs", "match"),
  [
    (oxr.rmda, dict(momentum=0.0), "momentum"),
    (oxr.rmda, dict(reg_strength=-1.0), "reg_strength"),
    (oxr.rmda, dict(milestones=(5, 5)), "increase"),
    (oxr.rmda, dict(decay=2.0), "decay"),
    (oxr.rmda, dict(ramp_start=-3), "ramp_start"),
    (oxr.rmda, dict(ramp_start=jnp.asarray(-3)), "ramp_start` must be >= 0"),
    (oxr.rmda, dict(ramp_start=4, momentum_ramp=False), "momentum_ramp"),
    (oxr.proxgen, dict(b1=1.0), "b1"),
    (oxr.proxgen, dict(b2=-0.1), "b2"),
    (oxr.proxgen, dict(eps=0.0), "eps"),
    (oxr.proxgen, dict(solver="newton"), "solver"),
    (oxr.proxgen, dict(max_iters=0), "max_iters"),
    (oxr.prox_sgd, dict(momentum=1.5), "momentum"),
    (oxr.prox_sgd, dict(learning_rate=-0.1), "learning_rate"),
    (oxr.proxssi, dict(b1=1.5), "b1"),
    (oxr.proxssi, dict(reg_strength=-1.0), "reg_strength"),
  ],
)
def test_bad_hyperparameters_raise_at_construction(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**(dict(learning_rate=1e-2) | kwargs))


@pytest.mark.parametrize("factory", [oxr.rmda, oxr.proxgen, oxr.prox_sgd, oxr.proxssi])
def test_bad_spec_tree_raises_at_init_naming_the_leaf(factory):
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  tx = factory(1e-2, regularizer={"w": oxr.group_lasso(axes=(2,)), "b": None})
  with pytest.raises(ValueError, match=r"\['w'\].*out of range"):
    tx.init(params)
