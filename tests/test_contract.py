"""The contract every optimizer of the library keeps, one test module for all five.

The pattern of `optax/contrib/_common_test.py`: each test is parametrized over `ramda`,
`rmda`, `proxgen`, `prox_sgd` and `proxssi`, on one problem with a group-lasso leaf, an ℓ1
leaf and an unregularized leaf. Oracles: the closed-form optimum of that problem (a prox of
the targets), the optimizer itself without the wrapper under test (`inject_hyperparams`,
`MultiSteps`, donation, eager execution), and jit's own compilation cache.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr

# --- The problem: f(W) = ½‖W − T‖², so argmin f + λψ = prox_{λψ}(T) -----------------

LAM = 0.2
TARGETS = {
  "kernel": np.array(
    [[1.2, -0.9, 1.0], [0.05, -0.1, 0.05], [-0.8, 0.6, 0.9], [0.03, 0.02, -0.04]]
  ),
  "sparse": np.array([1.0, -0.1, 0.5, 0.05, -1.5]),
  "bias": np.array([0.7, -0.4]),
}
SPECS = {"kernel": oxr.group_lasso(axes=(1,)), "sparse": oxr.l1(), "bias": None}


def _optimum() -> dict[str, np.ndarray]:
  """prox_{λψ}(T): block soft-threshold at λ√3 per row, soft-threshold at λ, identity."""
  kernel, sparse = TARGETS["kernel"], TARGETS["sparse"]
  norms = np.linalg.norm(kernel, axis=1, keepdims=True)
  return {
    "kernel": kernel * np.maximum(0, 1 - LAM * np.sqrt(3) / norms),
    "sparse": np.sign(sparse) * np.maximum(np.abs(sparse) - LAM, 0),
    "bias": TARGETS["bias"],
  }


def _loss(params):
  return sum(
    0.5 * jnp.sum((params[k] - TARGETS[k].astype(params[k].dtype)) ** 2) for k in params
  )


def _init_params(dtype=jnp.float32):
  return {k: jnp.asarray(v + 0.3, dtype) for k, v in TARGETS.items()}


# --- The optimizers under test --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  factory: Callable[..., optax.GradientTransformation]
  hyper: tuple[tuple[str, Any], ...]
  staged: bool  # Takes milestones (restarts the dual average).

  def make(self, **overrides) -> optax.GradientTransformation:
    kwargs = dict(self.hyper) | dict(reg_strength=LAM, regularizer=SPECS) | overrides
    return self.factory(**kwargs)


CASES = [
  # Without milestones the averaging weight stays c₀ unless a ramp is asked for;
  # ramp_start=0 ramps from the first step (c = 1 from step 100 on), so the
  # weights themselves become exactly structured.
  Case(
    "ramda",
    oxr.ramda,
    (("learning_rate", 0.1), ("momentum", 0.1), ("ramp_start", 0)),
    True,
  ),
  Case(
    "rmda",
    oxr.rmda,
    (("learning_rate", 0.1), ("momentum", 0.1), ("ramp_start", 0)),
    True,
  ),
  Case("proxgen", oxr.proxgen, (("learning_rate", 0.02),), False),
  Case("prox_sgd", oxr.prox_sgd, (("learning_rate", 0.3), ("momentum", 0.1)), False),
  # ProxSSI's prox uses the uncorrected metric √v + ε: at step t its fixed point is
  # the optimum for λ/√(1 − β₂ᵗ), which nears λ only after a few times 1/(1 − β₂)
  # steps. β₂ = 0.95 lets 300 steps reach the optimum for λ itself.
  Case("proxssi", oxr.proxssi, (("learning_rate", 0.02), ("b2", 0.95)), False),
]
all_optimizers = pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)


_grad = jax.jit(jax.grad(_loss))


def _make_step(tx, **update_kwargs):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **update_kwargs)
    return optax.apply_updates(params, updates), state, updates

  return step


@functools.cache
def _jitted_step(case: Case, dtype_name: str = "float32"):
  """One compiled step per optimizer and dtype, shared by the tests below."""
  del dtype_name  # A cache key only: jit specializes on the params' dtype.
  tx = case.make()
  return tx, jax.jit(_make_step(tx))


def _run(step, state, params, steps):
  for _ in range(steps):
    params, state, _ = step(params, state, _grad(params))
  return params, state


# --- The contract ----------------------------------------------------------------------


@all_optimizers
def test_update_takes_extra_args_and_compiles_once(case):
  """Extra keyword arguments are accepted; crossing a milestone does not recompile."""
  tx = case.make(milestones=(2, 4)) if case.staged else case.make()
  step = jax.jit(_make_step(tx, unexpected_extra_arg=1, value=jnp.ones([])))
  params = _init_params()
  _run(step, tx.init(params), params, 6)
  assert step._cache_size() == 1


@all_optimizers
def test_update_needs_params(case):
  tx = case.make()
  params = _init_params()
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


@all_optimizers
def test_tree_map_params(case):
  """optax.tree_map_params finds the params-shaped fields (for shardings, say)."""
  tx = case.make()
  params = _init_params()
  state = tx.init(params)
  mapped = optax.tree_map_params(tx, lambda v: v + 1, state)
  param_shaped = [
    field
    for field, value in state._asdict().items()
    if jax.tree.structure(value) == jax.tree.structure(params)
  ]
  assert param_shaped
  for field in state._fields:
    value = getattr(state, field)
    expected = optax.tree.add_scale(value, 1, optax.tree.ones_like(value))
    chex.assert_trees_all_equal(
      getattr(mapped, field), expected if field in param_shaped else value
    )


@all_optimizers
def test_converges_to_the_regularized_optimum(case):
  """Oracle: the closed-form optimum prox_{λψ}(T), its zeros exactly."""
  tx, step = _jitted_step(case)
  params = _init_params()
  params, state = _run(step, tx.init(params), params, 300)
  optimum = _optimum()
  chex.assert_trees_all_close(params, optimum, atol=2e-2)
  for name in ("kernel", "sparse"):
    np.testing.assert_array_equal(np.asarray(params[name]) == 0, optimum[name] == 0)
  if case.staged:  # Ŵ is exactly structured too.
    prox = oxr.prox_iterate(state)
    np.testing.assert_array_equal(
      np.asarray(prox["kernel"]) == 0, optimum["kernel"] == 0
    )


@all_optimizers
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtypes_and_state_structure_are_kept(case, dtype):
  """Params and updates keep the params' dtype; the state keeps its tree, shapes, dtypes."""
  tx, step = _jitted_step(case, dtype)
  params = _init_params(jnp.dtype(dtype))
  state = tx.init(params)
  initial = state
  for _ in range(3):
    new_params, state, updates = step(params, state, _grad(params))
    chex.assert_trees_all_equal_dtypes(updates, params)
    chex.assert_trees_all_equal_dtypes(new_params, params)
    params = new_params
  assert jax.tree.structure(state) == jax.tree.structure(initial)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, initial)
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))
  assert step._cache_size() == 1


@all_optimizers
def test_eager_equals_jit(case):
  tx, step = _jitted_step(case)
  params = _init_params()
  p_jit, s_jit = _run(step, tx.init(params), params, 2)
  p_eager, s_eager = _run(_make_step(tx), tx.init(params), params, 2)
  chex.assert_trees_all_close(p_eager, p_jit, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s_eager, s_jit, rtol=1e-5, atol=1e-6)


@all_optimizers
def test_inject_hyperparams(case):
  """Injected learning_rate and reg_strength, changed mid-run, act like schedules."""
  injected = optax.inject_hyperparams(case.factory)(
    **dict(case.hyper), reg_strength=LAM, regularizer=SPECS
  )
  step = jax.jit(_make_step(injected))
  params = _init_params()
  p_injected, state = _run(step, injected.init(params), params, 3)
  lr = dict(case.hyper)["learning_rate"]
  state.hyperparams["learning_rate"] = jnp.asarray(lr / 2, jnp.float32)
  state.hyperparams["reg_strength"] = jnp.asarray(2 * LAM, jnp.float32)
  p_injected, _ = _run(step, state, p_injected, 3)
  assert step._cache_size() == 1

  scheduled = case.make(
    learning_rate=lambda count: jnp.where(count < 3, lr, lr / 2),
    reg_strength=lambda count: jnp.where(count < 3, LAM, 2 * LAM),
  )
  p_scheduled, _ = _run(
    jax.jit(_make_step(scheduled)), scheduled.init(params), params, 6
  )
  # Injected, β's and the like are float32 arrays rather than Python floats: 1 − β
  # rounds differently, and Adam's m/√v amplifies that to ~1e-6.
  chex.assert_trees_all_close(p_injected, p_scheduled, rtol=1e-5, atol=1e-5)


@all_optimizers
def test_multi_steps(case):
  """optax.MultiSteps: zeros until the k-th micro-step, then one step on the mean."""
  tx, step = _jitted_step(case)
  multi = optax.MultiSteps(tx, every_k_schedule=3)
  update = jax.jit(multi.update)
  params = _init_params()
  state = multi.init(params)
  rng = np.random.default_rng(0)
  grads = [
    {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in TARGETS.items()}
    for _ in range(3)
  ]
  for g in grads[:2]:
    updates, state = update(g, state, params)
    chex.assert_trees_all_equal(updates, optax.tree.zeros_like(params))
  updates, state = update(grads[2], state, params)
  mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
  _, _, expected = step(params, tx.init(params), mean)
  chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-6)


@all_optimizers
def test_jit_with_donated_params_and_state(case):
  """Donating params and state is safe (the state aliases no params buffer)."""
  tx, step = _jitted_step(case)
  donating = jax.jit(_make_step(tx), donate_argnums=(0, 1))
  params = _init_params()
  expected, _ = _run(step, tx.init(params), params, 4)

  p = jax.tree.map(jnp.copy, params)
  state = tx.init(p)
  for _ in range(4):
    leaf = p["kernel"]
    p, state, _ = donating(p, state, _grad(p))
    assert leaf.is_deleted()  # The buffer was donated, and nothing else held it.
  chex.assert_trees_all_close(p, expected, rtol=1e-6, atol=1e-7)
