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
import optax.contrib
import pytest
from jax import lax

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
  # Max-abs error to the optimum after 300 steps: ~3× what the method reaches
  # (measured: RAMDA 1.3e-3, RMDA 8.8e-3, ProxGen 1.7e-7, ProxSGD 2.7e-7,
  # ProxSSI 1.1e-4; the Adam-type and SGD methods converge linearly on this
  # strongly convex problem, the dual-averaging ones as their weights s = η√k).
  atol: float
  # The learning rate of Optax's own test for the dense counterpart (MADGRAD,
  # Adam, SGD), used on the unregularized Rosenbrock target.
  rosenbrock_lr: float
  # Max-abs error to (1, 1) after those 10,000 steps. Measured in float32 from
  # (0, 0) and from 64 starts moved by ~1e-6 (rounding-sized changes): RMDA and
  # ProxSGD creep up the valley monotonically and end at 1.51e-2 and 1.10e-2 from
  # every start, so ~1.35× that. The adaptive methods end somewhere on an
  # oscillation along the valley whose phase rounding moves (RAMDA ≤ 2.5e-2,
  # ProxGen ≤ 3.2e-2, ProxSSI ≤ 4.1e-2; ≤ 2.7e-2, 4.8e-2, 5.2e-2 over the last
  # 1,000 steps, float32 and float64): RAMDA ~1.5× its envelope, and ProxGen and
  # ProxSSI keep Optax's rtol = atol = 3e-2, i.e. 6e-2 at (1, 1).
  rosenbrock_tol: float

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
    atol=4e-3,
    rosenbrock_lr=1e-2,  # MADGRAD's
    rosenbrock_tol=4e-2,
  ),
  Case(
    "rmda",
    oxr.rmda,
    (("learning_rate", 0.1), ("momentum", 0.1), ("ramp_start", 0)),
    True,
    atol=2.5e-2,
    rosenbrock_lr=1e-2,  # MADGRAD's (at SGD's 0.1 it diverges)
    rosenbrock_tol=2e-2,
  ),
  Case(
    "proxgen",
    oxr.proxgen,
    (("learning_rate", 0.02),),
    False,
    atol=1e-6,
    rosenbrock_lr=1e-1,  # Adam's
    rosenbrock_tol=6e-2,
  ),
  Case(
    "prox_sgd",
    oxr.prox_sgd,
    (("learning_rate", 0.3), ("momentum", 0.1)),
    False,
    atol=1e-6,
    rosenbrock_lr=1e-3,  # SGD's
    rosenbrock_tol=1.5e-2,
  ),
  # ProxSSI's prox uses the uncorrected metric √v + ε: at step t its fixed point is
  # the optimum for λ/√(1 − β₂ᵗ), which nears λ only after a few times 1/(1 − β₂)
  # steps. β₂ = 0.95 lets 300 steps reach the optimum for λ itself.
  Case(
    "proxssi",
    oxr.proxssi,
    (("learning_rate", 0.02), ("b2", 0.95)),
    False,
    atol=4e-4,
    rosenbrock_lr=1e-1,  # Adam's
    rosenbrock_tol=6e-2,
  ),
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
  chex.assert_trees_all_close(params, optimum, atol=case.atol)
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
  # The mean as MultiSteps accumulates it (a running mean, not sum/3): the PG
  # solver's float32 stopping is rounding-driven, so an ulp in the mean can move
  # its stopping iteration (ProxGen: 54 vs 55) and the iterate by ~1e-4.
  acc = optax.MultiSteps(optax.identity(), every_k_schedule=3)
  acc_state = acc.init(params)
  for g in grads:
    mean, acc_state = acc.update(g, acc_state, params)
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


# --- What Optax's own contract tests check, beyond the above ---------------------------


def _rosenbrock(p):
  return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


@all_optimizers
def test_rosenbrock_within_optax_step_budget(case):
  """Non-convex, unregularized, a bare-array params tree: Optax's budget and tolerance.

  As `optax/_src/alias_test.py` (10,000 steps from (0, 0)) and
  `optax/contrib/_common_test.py` (rtol = atol = 3e-2, at most, per optimizer),
  at the learning rate those tests give the dense counterpart; no milestones, so
  c stays c₀.
  """
  tx = case.factory(case.rosenbrock_lr)
  params = jnp.zeros(2, jnp.float32)

  def body(carry, _):
    p, s = carry
    updates, s = tx.update(jax.grad(_rosenbrock)(p), s, p)
    return (optax.apply_updates(p, updates), s), None

  (params, _), _ = jax.jit(lambda c: lax.scan(body, c, length=10_000))(
    (params, tx.init(params))
  )
  chex.assert_trees_all_close(params, jnp.ones(2), rtol=0, atol=case.rosenbrock_tol)


@all_optimizers
def test_tuple_and_bare_array_params(case, x64):
  """Leaves are independent: a tuple tree, and each leaf alone as a bare array,
  take the steps of the dict tree.

  In float64: in float32 the "pg" stopping test is decided by rounding, which
  differs between the differently fused programs (docs/algorithm.md#numerics).
  """
  del x64
  tx = case.make()
  step = jax.jit(_make_step(tx))
  params = _init_params(jnp.float64)
  expected, _ = _run(step, tx.init(params), params, 5)
  names = ("kernel", "sparse", "bias")

  as_tuple = case.make(regularizer=tuple(SPECS[k] for k in names))
  p = tuple(params[k] for k in names)
  state = as_tuple.init(p)
  tuple_step = jax.jit(_make_step(as_tuple))
  for _ in range(5):
    grads = _grad(dict(zip(names, p, strict=True)))
    p, state, _ = tuple_step(p, state, tuple(grads[k] for k in names))
  chex.assert_trees_all_close(p, tuple(expected[k] for k in names), rtol=1e-12)

  for name in names:
    bare = case.make(regularizer=SPECS[name])
    w = params[name]
    state = bare.init(w)
    bare_step = jax.jit(_make_step(bare))
    for _ in range(5):
      w, state, _ = bare_step(w, state, w - TARGETS[name].astype(w.dtype))
    chex.assert_trees_all_close(w, expected[name], rtol=1e-12)


@all_optimizers
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_carry_types_are_stable_over_a_long_scan(case, dtype):
  """(params, state) as a `lax.scan` carry over 600 steps, crossing milestones:
  scan itself rejects any change of dtype, shape or weak type of the carry."""
  tx = case.make(milestones=(100, 300)) if case.staged else case.make()
  params = _init_params(jnp.dtype(dtype))

  def body(carry, _):
    p, s = carry
    updates, s = tx.update(_grad(p), s, p)
    return (optax.apply_updates(p, updates), s), None

  init = (params, tx.init(params))
  (params, state), _ = jax.jit(lambda c: lax.scan(body, c, length=600))(init)
  chex.assert_trees_all_equal_shapes_and_dtypes((params, state), init)
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))


def _cond_steps(case, dtype):
  tx = case.make()
  params = _init_params(jnp.dtype(dtype))
  state = tx.init(params)
  step = jax.jit(_make_step(tx))
  for i in range(3):
    params, new_state, _ = step(params, state, _grad(params))
    # Both branches must have the same types, weak types included.
    state = lax.cond(i % 2 == 0, lambda: state, lambda: new_state)  # noqa: B023
    chex.assert_trees_all_equal_dtypes(params, _init_params(jnp.dtype(dtype)))


@all_optimizers
def test_state_is_stable_under_lax_cond_float16(case):
  _cond_steps(case, "float16")


@all_optimizers
def test_state_is_stable_under_lax_cond_float64(case, x64):
  del x64
  _cond_steps(case, "float64")


@all_optimizers
def test_multi_steps_bfloat16(case):
  """MultiSteps over bfloat16 params: bfloat16 updates, equal to one step on the
  mean gradient to a few bfloat16 ulps (the mean is accumulated in bfloat16)."""
  tx = case.make()
  multi = optax.MultiSteps(tx, every_k_schedule=3)
  params = _init_params(jnp.bfloat16)
  state = multi.init(params)
  rng = np.random.default_rng(1)
  grads = [
    {k: jnp.asarray(rng.normal(size=v.shape), jnp.bfloat16) for k, v in TARGETS.items()}
    for _ in range(3)
  ]
  update = jax.jit(multi.update)
  for g in grads:
    updates, state = update(g, state, params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  mean = jax.tree.map(lambda *g: sum(x.astype(jnp.float32) for x in g) / 3, *grads)
  mean = jax.tree.map(lambda m: m.astype(jnp.bfloat16), mean)
  expected, _ = jax.jit(tx.update)(mean, tx.init(params), params)
  ulp = float(jnp.finfo(jnp.bfloat16).eps)  # 2⁻⁷
  for name in TARGETS:
    got = np.asarray(updates[name], np.float32)
    want = np.asarray(expected[name], np.float32)
    scale = np.max(np.abs(np.asarray(params[name], np.float32))) + 1
    np.testing.assert_allclose(got, want, atol=4 * ulp * scale)


@all_optimizers
def test_wrapped_by_transforms_that_pass_extra_args(case, x64):
  """`chain`, `apply_if_finite` and `optax.contrib.mechanize` hand the params and
  extra keyword arguments to the inner optimizer, which takes the bare step
  (in float64, as in `test_tuple_and_bare_array_params`)."""
  del x64
  tx = case.make()
  step = jax.jit(_make_step(tx))
  params = _init_params(jnp.float64)
  grads = _grad(params)
  _, expected_state, expected = step(params, tx.init(params), grads)
  extra = dict(value=jnp.ones([]), unexpected_extra_arg=1)

  wrappers = {
    "chain": (optax.chain(optax.clip_by_global_norm(1e6), tx), lambda s: s[1]),
    "apply_if_finite": (optax.apply_if_finite(tx, 3), lambda s: s.inner_state),
  }
  for name, (wrapped, inner) in wrappers.items():
    updates, state = jax.jit(functools.partial(wrapped.update, **extra))(
      grads, wrapped.init(params), params
    )
    chex.assert_trees_all_close(updates, expected, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(inner(state), expected_state, rtol=1e-12, atol=1e-14)
    del name
  mechanized = optax.contrib.mechanize(tx)
  _, state = jax.jit(functools.partial(mechanized.update, **extra))(
    grads, mechanized.init(params), params
  )
  chex.assert_trees_all_close(
    state.base_optimizer_state, expected_state, rtol=1e-12, atol=1e-14
  )


@all_optimizers
def test_learning_rate_is_annotated_for_optax_tooling(case):
  """Optax's schedule test reads ``inspect.signature(f).parameters['learning_rate']
  .annotation`` and skips an optimizer unless it *is* ``optax.ScalarOrSchedule``
  (a string annotation, as ``from __future__ import annotations`` makes, fails)."""
  import inspect

  factories = [case.factory, getattr(oxr, f"scale_by_{case.name}")]
  for factory in factories:
    annotation = inspect.signature(factory).parameters["learning_rate"].annotation
    assert annotation is optax.ScalarOrSchedule, (factory.__name__, annotation)
  # And, as that test does, a constant schedule equals the constant.
  params = _init_params()
  with_schedule = case.make(learning_rate=optax.constant_schedule(0.05))
  with_constant = case.make(learning_rate=0.05)
  p1, _ = _run(
    jax.jit(_make_step(with_schedule)), with_schedule.init(params), params, 3
  )
  p2, _ = _run(
    jax.jit(_make_step(with_constant)), with_constant.init(params), params, 3
  )
  chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)
