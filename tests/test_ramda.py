"""Tests of `optax_ramda._ramda`: RAMDA against its oracles and its contract.

Oracles: `optax.contrib.scale_by_madgrad` (λ = 0, with η = L + e, ε = e, c = 1 − β), the
independent NumPy float64 transcription in `tests/numpy_reference.py`, and the
high-accuracy optimum of a convex group-lasso problem.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr
from optax_ramda import _common, _stages
from tests import numpy_reference as ref


def _mlp_problem(dtype=jnp.float32):
  """A small two-layer regression problem with a nonconvex loss."""
  kx, kw1, kw2, ky = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(kx, (64, 6), dtype)
  y = jax.random.normal(ky, (64, 2), dtype)
  params = {
    "dense1": {
      "kernel": 0.5 * jax.random.normal(kw1, (6, 8), dtype),
      "bias": jnp.zeros(8, dtype),
    },
    "dense2": {
      "kernel": 0.5 * jax.random.normal(kw2, (8, 2), dtype),
      "bias": jnp.zeros(2, dtype),
    },
  }

  def loss(p):
    h = jnp.tanh(x @ p["dense1"]["kernel"] + p["dense1"]["bias"])
    return jnp.mean((h @ p["dense2"]["kernel"] + p["dense2"]["bias"] - y) ** 2)

  specs = {
    "dense1": {"kernel": oxr.group_lasso(axes=(1,)), "bias": None},
    "dense2": {"kernel": oxr.group_lasso(axes=(1,)), "bias": None},
  }
  return params, loss, specs


def _assert_weights_are_prox(params, prox):
  """w = Ŵ once c = 1: up to the rounding of w + (Ŵ − w), with the same zeros."""
  chex.assert_trees_all_close(params, prox, rtol=1e-6, atol=0)
  chex.assert_trees_all_equal(
    jax.tree.map(lambda w: w == 0, params), jax.tree.map(lambda w: w == 0, prox)
  )


def _run(tx, params, loss, steps, jit=True):
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  for _ in range(steps):
    updates, state = update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


# --- λ = 0 is MADGRAD -----------------------------------------------------------


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
def test_lambda_zero_equals_madgrad(x64, scheduled):
  """Oracle: optax.contrib.scale_by_madgrad with η = L + e, ε = e, c = 1 − β."""
  del x64
  params, loss, specs = _mlp_problem(jnp.float64)
  lr, beta, eps, steps = 1e-2, 0.9, 1e-6, 120
  if scheduled:
    base = optax.cosine_decay_schedule(lr, steps)
    madgrad_lr, ramda_lr = base, (lambda count: base(count) + eps)
  else:
    madgrad_lr, ramda_lr = lr, lr + eps
  madgrad = optax.contrib.scale_by_madgrad(madgrad_lr, beta, eps)
  # Default ramp arguments: without milestones c stays c₀. Specs given: λ = 0
  # must still take the closed form.
  ramda = oxr.ramda(ramda_lr, 1 - beta, eps, reg_strength=0.0, regularizer=specs)
  p_madgrad, _ = _run(madgrad, params, loss, steps)
  p_ramda, state = _run(ramda, params, loss, steps)
  # Under x64 optax still forms √(count + 1) from an int32 count in float32:
  # the two agree to ~1e-8 relative, not to machine precision.
  chex.assert_trees_all_close(p_ramda, p_madgrad, rtol=1e-7, atol=1e-9)
  chex.assert_trees_all_equal(
    state.iterations, jax.tree.map(jnp.zeros_like, state.iterations)
  )


def test_lambda_zero_equals_numpy_madgrad(x64):
  """Oracle: an independent float64 MADGRAD loop, to ~1e-12 relative."""
  del x64
  params, loss, _ = _mlp_problem(jnp.float64)
  flat = {"w1": params["dense1"]["kernel"], "w2": params["dense2"]["kernel"]}

  def loss_flat(p):
    return loss({"dense1": {"kernel": p["w1"], "bias": jnp.zeros(8)},
                 "dense2": {"kernel": p["w2"], "bias": jnp.zeros(2)}})  # fmt: skip

  grad = jax.jit(jax.grad(loss_flat))
  records = ref.madgrad_reference(
    {k: np.asarray(v) for k, v in flat.items()},
    lambda p, step: {k: np.asarray(v) for k, v in grad(p).items()},
    50,
    learning_rate=3e-2,
    momentum=0.1,
    eps=1e-6,
  )
  p_ramda, _ = _run(oxr.ramda(3e-2, 0.1, 1e-6), flat, loss_flat, 50)
  chex.assert_trees_all_close(p_ramda, records[-1], rtol=1e-11, atol=1e-13)


# --- The NumPy float64 transcription, with restarts, ramp and all leaf kinds ------


def _reference_problem():
  rng = np.random.default_rng(1)
  params = {
    "conv": rng.normal(size=(3, 3, 4, 5)),
    "dense": rng.normal(size=(6, 4)),
    "sparse": rng.normal(size=(7,)),
    "bias": rng.normal(size=(4,)),
  }
  targets = {k: 0.3 * rng.normal(size=v.shape) for k, v in params.items()}
  targets["dense"][:3] = 0.0  # Rows the regularizer should switch off.
  scales = {k: rng.uniform(0.5, 3.0, size=v.shape) for k, v in params.items()}
  noise = [
    {k: 0.1 * rng.normal(size=v.shape) for k, v in params.items()} for _ in range(64)
  ]

  def grads_fn(p, step):
    return {
      k: scales[k] * (p[k] - targets[k]) + 0.2 * np.sin(3 * p[k]) + noise[step][k]
      for k in p
    }

  return params, grads_fn


def test_prox_warm_start_matches_numpy_reference(x64):
  """Oracle: tests/numpy_reference.py with PG started at the previous Ŵ.

  Through both restarts (Ŵ is kept across them); iteration counts equal.
  """
  del x64
  params, grads_fn = _reference_problem()
  hyper = dict(
    learning_rate=0.05, momentum=0.3, eps=1e-6, reg_strength=0.3,
    milestones=(5, 10), decay=0.5, max_iters=100, rtol=1e-8,
  )  # fmt: skip
  ref_specs = {"conv": ("group", (0, 1, 3), "sqrt"), "dense": ("group", (1,), 2.0),
               "sparse": ("l1",), "bias": None}  # fmt: skip
  specs = {"conv": oxr.group_lasso((0, 1, 3)), "dense": oxr.group_lasso(1, weight=2.0),
           "sparse": oxr.l1(), "bias": None}  # fmt: skip
  records = {
    start: ref.ramda_reference(
      params, grads_fn, 16, regularizers=ref_specs, warm_start=start, **hyper
    )
    for start in ("params", "prox")
  }
  tx = oxr.ramda(regularizer=specs, solver="pg", warm_start="prox", **hyper)
  update = jax.jit(tx.update)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for step, record in enumerate(records["prox"]):
    grads = jax.tree.map(jnp.asarray, grads_fn(jax.tree.map(np.asarray, p), step))
    updates, state = update(grads, state, p)
    p = optax.apply_updates(p, updates)
    chex.assert_trees_all_close(p, record["params"], rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(state.prox, record["prox"], rtol=1e-9, atol=1e-12)
    assert jax.tree.map(int, state.iterations) == record["iterations"], step
  # The warm start is what differs: the two references take different PG paths.
  total = {
    s: sum(sum(r["iterations"].values()) for r in rs) for s, rs in records.items()
  }
  assert total["prox"] != total["params"], total


def test_subproblem_from_state_gives_back_the_prox_iterate(x64):
  """Oracle: RAMDA's own Ŵ. Solving `oxr.subproblem(state)` from the weights
  before the step reproduces it bit for bit, in the second stage (ε decayed)
  with a λ schedule; D is ∛U + ε γ^stage in float64 NumPy."""
  del x64
  params, grads_fn = _reference_problem()
  params = {"dense": params["dense"]}
  hyper = dict(eps=1e-3, reg_strength=lambda n: 0.2 + 0.01 * n, milestones=(3,),
               decay=0.5)  # fmt: skip
  tx = oxr.ramda(0.05, regularizer={"dense": oxr.group_lasso(1)}, solver="pg", **hyper)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for step in range(5):
    before = p
    grads = jax.tree.map(jnp.asarray, grads_fn(jax.tree.map(np.asarray, p), step))
    updates, state = tx.update({"dense": grads["dense"]}, state, p)
    p = optax.apply_updates(p, updates)
  sub = oxr.subproblem((optax.EmptyState(), state), **hyper)  # Found in a chain.

  u = np.asarray(state.grad_sq_sum["dense"])
  np.testing.assert_allclose(sub.d["dense"], np.cbrt(u) + 1e-3 * 0.5, rtol=1e-15)
  assert float(sub.threshold) == float(state.alpha) * (0.2 + 0.01 * 4)
  z, iters = oxr.solve_group_lasso(
    sub.v["dense"], sub.d["dense"], sub.anchor["dense"], sub.threshold, (1,),
    init=before["dense"],
  )  # fmt: skip
  np.testing.assert_array_equal(z, state.prox["dense"])
  assert int(iters) == int(state.iterations["dense"]) > 0
  with pytest.raises(ValueError, match="exactly one RAMDA state"):
    oxr.subproblem((state, state))


def test_bad_warm_start_raises():
  with pytest.raises(ValueError, match="`warm_start` must be one of"):
    oxr.ramda(1e-2, warm_start="anchor")


@pytest.mark.parametrize(
  ("milestones", "ramp_start"),
  [((5, 10), None), ((5, 10), 7), ((), 6)],
  ids=["final_stage_ramp", "ramp_from_7", "no_milestones_ramp_from_6"],
)
@pytest.mark.parametrize("solver_rtol", [1e-8, 1e-4])
def test_matches_numpy_reference(x64, solver_rtol, milestones, ramp_start):
  """Oracle: tests/numpy_reference.py, step by step, iteration counts equal.

  Through restarts, ε decay and the ramp, from the final stage or from
  `ramp_start`; every run reaches c = 1 (the weights become Ŵ).
  """
  del x64
  params, grads_fn = _reference_problem()
  hyper = dict(
    learning_rate=lambda count: 0.05 * (1 + 0.01 * count),
    momentum=0.3,  # c = 1 from step ⌈1/0.3²⌉ = 12 of the ramp on.
    eps=1e-6,
    reg_strength=0.3,
    milestones=milestones,
    decay=0.5,
    max_iters=100,
    rtol=solver_rtol,
    ramp_start=ramp_start,
  )
  ref_specs = {"conv": ("group", (0, 1, 3), "sqrt"), "dense": ("group", (1,), 2.0),
               "sparse": ("l1",), "bias": None}  # fmt: skip
  specs = {"conv": oxr.group_lasso((0, 1, 3)), "dense": oxr.group_lasso(1, weight=2.0),
           "sparse": oxr.l1(), "bias": None}  # fmt: skip
  steps = 24
  records = ref.ramda_reference(
    params, grads_fn, steps, regularizers=ref_specs, **hyper
  )

  tx = oxr.ramda(regularizer=specs, solver="pg", **hyper)
  update = jax.jit(tx.update)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for step, record in enumerate(records):
    grads = jax.tree.map(jnp.asarray, grads_fn(jax.tree.map(np.asarray, p), step))
    updates, state = update(grads, state, p)
    p = optax.apply_updates(p, updates)
    chex.assert_trees_all_close(p, record["params"], rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(state.prox, record["prox"], rtol=1e-9, atol=1e-12)
    assert jax.tree.map(int, state.iterations) == record["iterations"], step
    assert int(state.stage_count) == record["k"]
    np.testing.assert_allclose(float(state.alpha), record["alpha"], rtol=1e-12)
  # The run went through both restarts into the ramp, and the ramp reached c = 1,
  # so the weights are the exactly structured Ŵ.
  _assert_weights_are_prox(p, state.prox)
  assert 0 < float(oxr.sparsity(p, specs)["group_sparsity"]) < 1
  assert any(v > 1 for r in records for v in r["iterations"].values())


# --- Stages, restarts, Ŵ ---------------------------------------------------------


def test_milestone_restarts_at_current_params():
  params, loss, specs = _mlp_problem()
  tx = oxr.ramda(1e-2, reg_strength=1e-3, regularizer=specs, milestones=(3,))
  params, state = _run(tx, params, loss, 3)
  assert int(state.stage_count) == 3
  _updates, state = tx.update(jax.grad(loss)(params), state, params)
  assert int(state.stage_count) == 1
  chex.assert_trees_all_equal(state.anchor, params)


def test_manual_restart_and_prox_iterate_in_a_chain():
  params, loss, specs = _mlp_problem()
  tx = optax.chain(
    optax.clip_by_global_norm(1.0), oxr.ramda(0.1, reg_strength=0.05, regularizer=specs)
  )
  params, state = _run(tx, params, loss, 5)
  prox = oxr.prox_iterate(state)
  chex.assert_trees_all_equal_shapes_and_dtypes(prox, params)
  assert float(oxr.sparsity(prox, specs)["group_sparsity"]) > 0

  restarted = oxr.restart(state, params)
  inner = restarted[1]
  assert int(inner.stage_count) == 0 and float(inner.alpha) == 0
  assert int(inner.count) == 5
  chex.assert_trees_all_equal(inner.anchor, params)
  chex.assert_trees_all_equal(inner.grad_sum, optax.tree.zeros_like(params))
  leaf = params["dense1"]["kernel"]
  assert inner.anchor["dense1"]["kernel"] is not leaf  # A copy, not an alias.


def test_prox_iterate_needs_a_ramda_state():
  with pytest.raises(ValueError, match="exactly one"):
    oxr.prox_iterate(optax.adam(1e-3).init({"w": jnp.zeros(2)}))


def test_ramp_reaches_one_and_weights_become_prox():
  params, loss, specs = _mlp_problem()
  tx = oxr.ramda(0.05, momentum=0.3, reg_strength=0.02, regularizer=specs, ramp_start=0)
  # c = min(0.3 √r, 1) = 1 from r = ⌈1/0.09⌉ = 12 on.
  params, state = _run(tx, params, loss, 12)
  _assert_weights_are_prox(params, state.prox)


def _averaging_weights(tx, steps):
  """The c of every step, read off the update: w_new − w = c (Ŵ − w), float64."""
  params, loss, _ = _mlp_problem(jnp.float64)
  update, grad = jax.jit(tx.update), jax.jit(jax.grad(loss))
  state = tx.init(params)
  weights = []
  for _ in range(steps):
    updates, state = update(grad(params), state, params)
    step = np.asarray(updates["dense1"]["kernel"])
    gap = np.asarray(state.prox["dense1"]["kernel"] - params["dense1"]["kernel"])
    weights.append(float(np.sum(step * gap) / np.sum(gap * gap)))
    params = optax.apply_updates(params, updates)
  return np.asarray(weights)


@pytest.mark.parametrize("c0", [0.2, 0.3])
def test_final_stage_ramp_follows_the_paper(x64, c0):
  """Paper App. A.1: c_t = min(c₀√i, 1), i counting the final stage's steps.

  The first step of the final stage still uses c₀, and c first reaches 1 on
  step ⌈1/c₀²⌉ of that stage.
  """
  del x64
  milestone, steps = 7, 7 + 30
  c = _averaging_weights(
    oxr.ramda(0.05, momentum=c0, milestones=(milestone,), decay=0.5), steps
  )
  expected = [c0] * milestone + [
    min(c0 * np.sqrt(r), 1.0) for r in range(1, steps - milestone + 1)
  ]
  np.testing.assert_allclose(c, expected, rtol=1e-9)
  assert c[milestone] == pytest.approx(c0, rel=1e-12)
  first_one = milestone + int(np.ceil(1 / c0**2)) - 1  # 0-based step index.
  assert np.all(c[:first_one] < 1 - 1e-6)
  np.testing.assert_allclose(c[first_one:], 1.0, rtol=1e-12)


def test_no_ramp_without_milestones_unless_asked(x64):
  """Default arguments keep c = c₀; `ramp_start` starts the ramp at that step."""
  del x64
  np.testing.assert_allclose(_averaging_weights(oxr.ramda(0.05), 30), 0.1, rtol=1e-9)
  c = _averaging_weights(oxr.ramda(0.05, momentum=0.25, ramp_start=10), 30)
  expected = [0.25] * 10 + [min(0.25 * np.sqrt(r), 1.0) for r in range(1, 21)]
  np.testing.assert_allclose(c, expected, rtol=1e-9)
  c = _averaging_weights(
    oxr.ramda(0.05, momentum=0.25, milestones=(5,), momentum_ramp=False), 30
  )
  np.testing.assert_allclose(c, 0.25, rtol=1e-9)


def test_averaging_weight_is_traceable():
  """The ramp is a jnp.where on the traced count: one compilation for all steps."""
  weight = jax.jit(lambda c0, count: _stages.averaging_weight(c0, count, 3))
  got = [float(weight(jnp.float32(0.5), jnp.int32(n))) for n in range(8)]
  expected = [0.5, 0.5, 0.5, 0.5, 0.5**0.5, 0.5 * 3**0.5, 1, 1]
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert weight._cache_size() == 1


# --- Convex problem: the averaged weights find the optimal zero groups ------------


def _group_lasso_optimum(x, y, lam, iters=20000):
  """FISTA with the exact block soft-threshold prox, float64, to convergence."""
  n, p = x.shape
  lipschitz = np.linalg.eigvalsh(x.T @ x / n).max()
  w = np.zeros((p, y.shape[1]))
  z, t = w.copy(), 1.0
  weight = np.sqrt(y.shape[1])
  for _ in range(iters):
    grad = x.T @ (x @ z - y) / n
    u = z - grad / lipschitz
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    w_next = u * np.maximum(0, 1 - lam * weight / lipschitz / np.maximum(norms, 1e-300))
    t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
    z = w_next + (t - 1) / t_next * (w_next - w)
    w, t = w_next, t_next
  return w


def test_convex_group_lasso_support_is_identified(x64):
  """Oracle: the zero rows of a high-accuracy FISTA solution (KKT-checked)."""
  del x64
  rng = np.random.default_rng(0)
  n, p, k = 200, 12, 3
  x = rng.normal(size=(n, p))
  w_true = np.zeros((p, k))
  w_true[:5] = rng.normal(size=(5, k))
  y = x @ w_true + 0.1 * rng.normal(size=(n, k))
  lam = 0.05
  w_star = _group_lasso_optimum(x, y, lam)
  # KKT of the oracle: zero rows satisfy ‖∇_g f‖ ≤ λω, nonzero rows stationarity.
  grad = x.T @ (x @ w_star - y) / n
  zero = np.all(w_star == 0, axis=1)
  assert np.all(np.linalg.norm(grad[zero], axis=1) <= lam * np.sqrt(k))
  nz = w_star[~zero]
  stat = grad[~zero] + lam * np.sqrt(k) * nz / np.linalg.norm(nz, axis=1, keepdims=True)
  assert np.abs(stat).max() < 1e-10
  assert 0 < zero.sum() < p

  xj, yj = jnp.asarray(x), jnp.asarray(y)

  def loss(params):
    return 0.5 * jnp.mean(jnp.sum((xj @ params["w"] - yj) ** 2, axis=1))

  tx = oxr.ramda(
    0.1,
    momentum=0.1,
    reg_strength=lam,
    regularizer={"w": oxr.group_lasso(axes=(1,))},
    milestones=(100, 200),
  )
  params, state = _run(tx, {"w": jnp.zeros((p, k))}, loss, 400)
  found_zero = np.all(np.asarray(params["w"]) == 0, axis=1)
  np.testing.assert_array_equal(found_zero, zero)
  _assert_weights_are_prox(params, state.prox)  # c = 1 was reached.


# --- jit, recompilation, hyperparameter injection, dtypes, donation ---------------


def test_jit_equals_eager():
  params, loss, specs = _mlp_problem()
  tx = oxr.ramda(0.05, reg_strength=0.01, regularizer=specs, milestones=(2,))
  p_jit, s_jit = _run(tx, params, loss, 4, jit=True)
  p_eager, s_eager = _run(tx, params, loss, 4, jit=False)
  chex.assert_trees_all_close(p_jit, p_eager, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s_jit.prox, s_eager.prox, rtol=1e-5, atol=1e-6)


def test_no_recompilation_across_steps():
  params, loss, specs = _mlp_problem()
  tx = oxr.ramda(0.05, reg_strength=0.01, regularizer=specs, milestones=(2, 4))
  update = jax.jit(tx.update)
  state = tx.init(params)
  for _ in range(6):  # Crosses both milestones and enters the ramp.
    updates, state = update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert update._cache_size() == 1


def test_inject_hyperparams():
  params, loss, specs = _mlp_problem()
  hyper = dict(learning_rate=0.05, momentum=0.2, reg_strength=0.01)
  injected = optax.inject_hyperparams(oxr.ramda)(regularizer=specs, **hyper)
  plain = oxr.ramda(regularizer=specs, **hyper)
  p_injected, s_injected = _run(injected, params, loss, 4)
  p_plain, _ = _run(plain, params, loss, 4)
  chex.assert_trees_all_close(p_injected, p_plain, rtol=1e-5, atol=1e-6)

  # A hyperparameter changed in the state takes effect without recompiling.
  update = jax.jit(injected.update)
  s_injected.hyperparams["reg_strength"] = jnp.asarray(0.0, jnp.float32)
  grads = jax.grad(loss)(p_injected)
  _, s_free = update(grads, s_injected, p_injected)
  s_injected.hyperparams["reg_strength"] = jnp.asarray(10.0, jnp.float32)
  _, s_sparse = update(grads, s_injected, p_injected)
  assert update._cache_size() == 1
  assert float(oxr.sparsity(oxr.prox_iterate(s_free), specs)["group_sparsity"]) == 0
  assert float(oxr.sparsity(oxr.prox_iterate(s_sparse), specs)["group_sparsity"]) == 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("state_dtype", [None, jnp.float32])
def test_dtypes_are_kept(dtype, state_dtype):
  params, loss, specs = _mlp_problem(dtype)
  tx = oxr.ramda(0.05, reg_strength=0.01, regularizer=specs, state_dtype=state_dtype)
  new_params, state = _run(tx, params, loss, 3)
  chex.assert_trees_all_equal_dtypes(new_params, params)
  expected = state_dtype or dtype
  assert all(leaf.dtype == expected for leaf in jax.tree.leaves(state.grad_sum))
  assert all(jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(new_params))


def test_jit_with_donated_params_and_state():
  params, loss, specs = _mlp_problem()
  tx = oxr.ramda(0.05, reg_strength=0.01, regularizer=specs, milestones=(3,))

  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  def run(step_fn):
    p = jax.tree.map(jnp.copy, params)
    # The anchor must not alias p, or donating p would delete it.
    state = tx.init(p)
    for _ in range(6):
      p, state = step_fn(p, state)
    return p, state

  donated, state = run(jax.jit(step, donate_argnums=(0, 1)))
  expected, expected_state = run(jax.jit(step))
  chex.assert_trees_all_equal(donated, expected)
  chex.assert_trees_all_equal(state, expected_state)


# --- Bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    (dict(reg_strength=-1e-3), "reg_strength"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(momentum=0.0), "momentum"),
    (dict(momentum=1.5), "momentum"),
    (dict(eps=0.0), "eps"),
    (dict(max_iters=0), "max_iters"),
    (dict(rtol=-1.0), "rtol"),
    (dict(milestones=(10, 5)), "increase"),
    (dict(milestones=(-1,)), "positive"),
    (dict(decay=0.0), "decay"),
    (dict(solver="newton"), "solver"),
    (dict(ramp_start=-1), "`ramp_start` must be >= 0"),
    (dict(ramp_start=np.int64(-1)), "`ramp_start` must be >= 0"),
    (dict(ramp_start=jnp.asarray(-1)), "`ramp_start` must be >= 0"),
    (dict(ramp_start=jnp.asarray([0, 1])), "`ramp_start` must be a step count"),
    (dict(ramp_start=2.5), "`ramp_start` must be a step count"),
    (dict(ramp_start=True), "`ramp_start` must be a step count"),
    (dict(ramp_start=5, momentum_ramp=False), "`ramp_start=5`.*`momentum_ramp=False`"),
    (dict(momentum_ramp="yes"), "`momentum_ramp` must be a bool"),
  ],
)
def test_bad_hyperparameters_raise_at_construction(kwargs, match):
  args = dict(learning_rate=1e-2) | kwargs
  with pytest.raises(ValueError, match=match):
    oxr.ramda(**args)


def test_update_without_params_raises():
  tx = oxr.ramda(1e-2)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  with pytest.raises(ValueError, match="params"):
    tx.update(params, state)


@pytest.mark.parametrize(
  ("specs", "match"),
  [
    ({"w": oxr.group_lasso(axes=(2,)), "b": None}, r"\['w'\].*out of range"),
    (
      {"w": None, "b": oxr.group_lasso(axes=(0,)), "c": None},
      r"\['c'\] that matches no",
    ),
    ({"w": None}, r"\['b'\] has no entry"),
    ({"w": "group", "b": None}, r"\['w'\]"),
    ({"w": None, "b": {"x": oxr.l1()}}, r"\['b'\]\['x'\] that matches no"),
  ],
)
def test_bad_spec_tree_raises_at_init_naming_the_leaf(specs, match):
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  with pytest.raises(ValueError, match=match):
    oxr.ramda(1e-2, reg_strength=1e-3, regularizer=specs).init(params)


def test_group_lasso_on_a_scalar_leaf_raises():
  with pytest.raises(ValueError, match=r"scalar leaf \['s'\]"):
    oxr.ramda(1e-2, regularizer=oxr.group_lasso(0)).init({"s": jnp.ones(())})


def test_integer_params_raise():
  with pytest.raises(ValueError, match=r"\['steps'\].*int32"):
    oxr.ramda(1e-2).init({"w": jnp.ones(2), "steps": jnp.zeros(2, jnp.int32)})


# --- The preconditioner's cube root --------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cube_root_is_within_one_ulp_of_numpy(x64, dtype):
  """Oracle: NumPy's cbrt, over the whole normal range, zeros and non-finite values."""
  del x64
  info = np.finfo(dtype)
  rng = np.random.default_rng(0)
  exponents = rng.uniform(np.log10(info.tiny), np.log10(info.max) - 1, 20000)
  u = np.concatenate([10.0**exponents, [0.0, 1.0, 8.0, 27.0, info.tiny, info.max]])
  u = u.astype(dtype)
  got = np.asarray(_common.cube_root(jnp.asarray(u)))
  want = np.cbrt(u.astype(np.float64)).astype(dtype)  # Correctly rounded enough.
  ulps = np.abs(got - want) / np.spacing(want)
  assert got.dtype == dtype
  assert ulps.max() <= 1, ulps.max()
  special = np.asarray(_common.cube_root(jnp.asarray([np.inf, np.nan], dtype)))
  assert special[0] == np.inf and np.isnan(special[1])


def test_cube_root_keeps_narrow_dtypes():
  u = jnp.asarray([0.0, 1e-3, 8.0, 3e4], jnp.bfloat16)
  got = _common.cube_root(u)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(got, np.float32), np.cbrt(np.asarray(u, np.float32)), rtol=1e-2
  )
