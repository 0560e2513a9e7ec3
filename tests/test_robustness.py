"""Robustness of every optimizer: bad input, non-finite gradients, degenerate
input, dtypes, donation and checkpoint resume. ROBUSTNESS.md maps each input
tried to the behaviour and to the test below that backs it.

Oracles: the independent NumPy float64 transcriptions (`tests/numpy_reference.py`,
`tests/numpy_baselines.py`) at extreme gradient scales and for narrow and mixed
dtypes; the same guarded run with the non-finite steps left out
(`optax.apply_if_finite`); the ℓ1 closed form (a group lasso whose groups have one
entry); ψ's minimizer, 0 (zero gradients, huge λ); the same run without the
degenerate leaves; an uninterrupted, undonated run (donation and resume).

Compilation dominates the cost of these tests, so each (optimizer, configuration)
is built and jitted once (`_tx`, `_step`); λ is injected as a traced hyperparameter
where tests only differ in λ.
"""

import functools
import inspect
import itertools
import math
import re
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr
from tests import numpy_baselines as nb
from tests import numpy_reference as ref

OPTIMIZERS = {
  # "pg" explicitly: the references follow the authors' iteration.
  "ramda": functools.partial(oxr.ramda, solver="pg"),
  "ramda_exact": functools.partial(oxr.ramda, solver="exact"),
  "rmda": oxr.rmda,
  "proxgen": functools.partial(oxr.proxgen, solver="pg"),
  "prox_sgd": oxr.prox_sgd,
  "proxssi": oxr.proxssi,
}
NAMES = list(OPTIMIZERS)
# One entry per factory, where the solver variant adds nothing to the behaviour.
FACTORIES = [n for n in NAMES if n != "ramda_exact"]
# The dual-averaging methods average their iterates; momentum=1 makes w = Ŵ.
AVERAGING = {"ramda", "ramda_exact", "rmda"}
# Float32 accuracy of a group-lasso leaf against the float64 reference: the "pg"
# stopping rule (rtol below float32 epsilon) stops once q stops decreasing in
# float32, a few 1e-3 relative at any gradient scale; closed forms and "exact" solve
# to float32 precision.
PG_TOL = {"ramda": 5e-3, "proxgen": 5e-3}

SPECS = {"group": oxr.group_lasso(axes=(1,)), "sparse": oxr.l1(), "free": None}
REF_SPECS = {"group": ("group", (1,), "sqrt"), "sparse": ("l1",), "free": None}
LR = 1e-2


def _hyper(name):
  return dict(learning_rate=LR, momentum=1.0) if name in AVERAGING else dict(
    learning_rate=LR
  )  # fmt: skip


def _accepts(name, arg):
  return arg in inspect.signature(OPTIMIZERS[name]).parameters


# Degenerate leaves next to the standard ones: groups of one entry (and their ℓ1
# twin), zero-size leaves under every kind of spec, an empty sub-tree.
DEGENERATE_SPECS = SPECS | {
  "single": oxr.group_lasso(axes=(1,)),
  "single_l1": oxr.l1(),
  "g0": oxr.group_lasso(axes=(0,)),  # Three groups of zero entries (ω = 0).
  "g1": oxr.group_lasso(axes=(0,)),  # No groups.
  "l1_0": oxr.l1(),
  "nuclear_0": oxr.nuclear(),
  "free_0": None,
  "empty": {},
}
EMPTY_LEAVES = {
  "g0": jnp.zeros((0, 3)),
  "g1": jnp.zeros((3, 0)),
  "l1_0": jnp.zeros((0,)),
  "nuclear_0": jnp.zeros((0, 4)),
  "free_0": jnp.zeros((2, 0)),
  "empty": {},
}


def _long_run_hyper(name):
  """Milestones where the method has them, so runs cross restarts and the ramp."""
  if _accepts(name, "milestones"):
    return _hyper(name) | dict(momentum=0.3, milestones=(4, 9))
  return _hyper(name)


@functools.cache
def _tx(name, config):
  """One transform per (optimizer, configuration)."""
  factory = OPTIMIZERS[name]
  inject = optax.inject_hyperparams(factory)
  if config == "inject":  # λ is traced: one compilation serves every λ.
    return inject(reg_strength=1e-2, regularizer=SPECS, **_hyper(name))
  if config == "degenerate":
    return inject(reg_strength=1e-2, regularizer=DEGENERATE_SPECS, **_hyper(name))
  if config == "unregularized":
    return factory(regularizer=None, **_hyper(name))
  if config == "plain":
    return factory(reg_strength=1e-2, regularizer=SPECS, **_hyper(name))
  if config == "state32":
    return factory(
      reg_strength=1e-2, regularizer=SPECS, state_dtype=jnp.float32, **_hyper(name)
    )
  if config == "guarded":
    inner = factory(reg_strength=1e-2, regularizer=SPECS, **_long_run_hyper(name))
    return optax.apply_if_finite(
      optax.chain(optax.clip_by_global_norm(10.0), inner), max_consecutive_errors=2
    )
  raise ValueError(config)


def _step_fn(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


@functools.cache
def _step(name, config, donate=False):
  return jax.jit(_step_fn(_tx(name, config)), donate_argnums=(0, 1) if donate else ())


def _init(name, config, params, reg_strength=None):
  state = _tx(name, config).init(params)
  if reg_strength is not None:
    state.hyperparams["reg_strength"] = jnp.asarray(reg_strength, jnp.float32)
  return state


def _run(name, config, params, grads_seq, reg_strength=None):
  state = _init(name, config, params, reg_strength)
  step = _step(name, config)
  for g in grads_seq:
    params, state = step(params, state, g)
  return params, state


def _params(dtypes=None, seed=0):
  rng = np.random.default_rng(seed)
  shapes = {"group": (4, 3), "sparse": (5,), "free": (2,)}
  dtypes = dtypes or {}
  return {
    k: jnp.asarray(rng.normal(size=s), dtypes.get(k, jnp.float32))
    for k, s in shapes.items()
  }


def _grads(params, steps, seed=1, scale=1.0, decades=0.0):
  """Fixed pseudo-gradients, independent of w (float32 and float64 runs agree),
  with magnitudes spread over `decades` below `scale`, rounded to each leaf's
  dtype: the references see exactly the same numbers."""
  rng = np.random.default_rng(seed)

  def draw(shape):
    return scale * rng.normal(size=shape) * 10.0 ** -rng.uniform(0, decades, shape)

  return [
    {k: jnp.asarray(draw(p.shape), p.dtype) for k, p in params.items()}
    for _ in range(steps)
  ]


def _reference(name, params, grads_seq):
  """The NumPy float64 transcription of `name` with the hyperparameters of `_tx`.

  "pg" solvers are followed with their own stopping rule; the exact solver is
  compared with PG run to convergence.
  """
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  grads_seq = [{k: np.asarray(v, np.float64) for k, v in g.items()} for g in grads_seq]
  common = dict(learning_rate=LR, reg_strength=1e-2, regularizers=REF_SPECS)
  args = (params, lambda p, step: grads_seq[step], len(grads_seq))
  if name == "ramda":
    return ref.ramda_reference(*args, momentum=1.0, eps=1e-6, **common)[-1]["params"]
  if name == "ramda_exact":
    return ref.ramda_reference(
      *args, momentum=1.0, eps=1e-6, rtol=1e-15, max_iters=5000, **common
    )[-1]["params"]
  if name == "rmda":
    return nb.rmda_reference(*args, momentum=1.0, **common)[-1]["params"]
  if name == "proxgen":
    return nb.proxgen_reference(*args, **common)[-1]["params"]
  if name == "proxssi":
    return nb.proxssi_reference(*args, **common)[-1]["params"]
  return nb.prox_sgd_reference(*args, momentum=0.1, **common)[-1]["params"]


def _assert_matches_reference(p, expected, tol, msg=""):
  for k in p:
    actual, e = np.asarray(p[k], np.float64), expected[k]
    np.testing.assert_allclose(
      actual, e, rtol=tol[k], atol=tol[k] * np.abs(e).max(), err_msg=f"{msg} {k}"
    )
    np.testing.assert_array_equal(actual == 0, e == 0, err_msg=f"{msg} {k} zeros")


def _regularizer_values(p):
  return float(oxr.regularizer_value(p, SPECS))


# --- Bad input: hyperparameters ----------------------------------------------------

BAD_HYPERPARAMETERS = [
  ("learning_rate", 0.0),
  ("learning_rate", -1e-3),
  ("learning_rate", math.nan),
  ("reg_strength", -1e-3),
  ("reg_strength", math.nan),
  ("momentum", 0.0),
  ("momentum", 1.5),
  ("eps", 0.0),
  ("eps", -1e-8),
  ("max_iters", 0),
  ("max_iters", 2.5),
  ("rtol", -1.0),
  ("milestones", (10, 5)),
  ("milestones", (5, 5)),
  ("milestones", (-1, 3)),
  ("milestones", (0,)),
  ("milestones", 5),
  ("milestones", (2.5,)),
  ("decay", 0.0),
  ("decay", 1.5),
  ("solver", "newton"),
  ("stopping", "sometimes"),
  ("subgradient_tol", -1.0),
  ("b1", 1.0),
  ("b2", -0.1),
]


@pytest.mark.parametrize(
  ("name", "arg", "value"),
  [
    pytest.param(n, a, v, id=f"{n}-{a}={v}")
    for n in FACTORIES
    for a, v in BAD_HYPERPARAMETERS
    if _accepts(n, a)
  ],
)
def test_bad_hyperparameter_raises_at_construction_naming_it(name, arg, value):
  with pytest.raises(ValueError, match=re.escape(f"`{arg}`")):
    OPTIMIZERS[name](**{"learning_rate": 1e-2, arg: value})


# --- Bad input: spec trees, params, gradients --------------------------------------

PARAMS_2D = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
BAD_SPEC_TREES = {
  "axes-out-of-range": ({"w": oxr.group_lasso(axes=(2,)), "b": None}, r"\['w'\].*out of range"),
  "wrong-rank": ({"w": None, "b": oxr.group_lasso(axes=(1,))}, r"\['b'\] of shape \(2,\)"),
  "nuclear-on-a-vector": ({"w": None, "b": oxr.nuclear()}, r"\['b'\] of shape \(2,\)"),
  "extra-entry": ({"w": None, "b": None, "c": None}, r"\['c'\] that matches no"),
  "missing-entry": ({"w": None}, r"\['b'\] has no entry"),
  "not-a-spec": ({"w": "group", "b": None}, r"\['w'\]"),
  "scalar-leaf": (oxr.group_lasso(axes=(0,)), r"scalar leaf \['s'\]"),
}  # fmt: skip


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("case", list(BAD_SPEC_TREES))
def test_bad_spec_tree_raises_at_init_naming_the_leaf(name, case):
  specs, match = BAD_SPEC_TREES[case]
  params = {"s": jnp.ones(())} if case == "scalar-leaf" else PARAMS_2D
  tx = OPTIMIZERS[name](1e-2, reg_strength=1e-2, regularizer=specs)
  with pytest.raises(ValueError, match=match):
    tx.init(params)


def test_nuclear_on_a_3d_leaf_raises_naming_the_leaf():
  tx = oxr.ramda(1e-2, regularizer={"conv": oxr.nuclear()})
  with pytest.raises(ValueError, match=r"\['conv'\] of shape \(3, 3, 2\)"):
    tx.init({"conv": jnp.ones((3, 3, 2))})


@pytest.mark.parametrize("name", FACTORIES)
def test_integer_params_raise_at_init_naming_the_leaf(name):
  tx = OPTIMIZERS[name](1e-2)
  with pytest.raises(ValueError, match=r"\['steps'\].*int32"):
    tx.init({"w": jnp.ones(2), "steps": jnp.zeros(2, jnp.int32)})


@pytest.mark.parametrize("name", FACTORIES)
def test_complex_params_raise_at_init_naming_the_leaf(name):
  tx = OPTIMIZERS[name](1e-2)
  with pytest.raises(ValueError, match=r"\['z'\].*complex64.*not supported"):
    tx.init({"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)})


@pytest.mark.parametrize("name", FACTORIES)
def test_bare_array_params_name_the_leaf_root(name):
  tx = OPTIMIZERS[name](1e-2)
  with pytest.raises(ValueError, match=r"The parameter <root> has dtype int32"):
    tx.init(jnp.zeros(2, jnp.int32))
  tx = OPTIMIZERS[name](1e-2, reg_strength=1e-2, regularizer=oxr.l1())
  with pytest.raises(ValueError, match=r"gradient at <root> has shape \(3,\)"):
    tx.update(jnp.ones(3), tx.init(jnp.ones(2)), jnp.ones(2))


@pytest.mark.parametrize("name", FACTORIES)
def test_update_without_params_raises(name):
  tx = OPTIMIZERS[name](1e-2)
  with pytest.raises(ValueError, match="params"):
    tx.update(PARAMS_2D, tx.init(PARAMS_2D))


BAD_GRADIENTS = {
  # (2,) broadcasts against (3, 2): without the check, a silent corruption.
  "broadcastable-shape": (
    {"w": jnp.ones(2), "b": jnp.ones(2)},
    r"gradient at \['w'\] has shape \(2,\), but the parameter has shape \(3, 2\)",
  ),
  "missing-leaf": ({"w": jnp.ones((3, 2))}, r"no leaf at \['b'\]"),
  "extra-leaf": (
    {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "c": jnp.ones(1)},
    r"leaf at \['c'\], where the params have none",
  ),
  "list-for-dict": ([jnp.ones((3, 2)), jnp.ones(2)], r"no leaf at \['b'\]"),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_gradients_of_another_node_type_raise(name):
  """Same leaves and key paths, but a list for a tuple: the node types differ."""
  params = (jnp.ones((3, 2)), jnp.ones(2))
  tx = OPTIMIZERS[name](1e-2)
  with pytest.raises(ValueError, match="different pytree node types"):
    tx.update(list(params), tx.init(params), params)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("case", list(BAD_GRADIENTS))
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_gradients_not_matching_params_raise_naming_the_leaf(name, case, jit):
  grads, match = BAD_GRADIENTS[case]
  tx = OPTIMIZERS[name](1e-2, reg_strength=1e-2, regularizer={"w": oxr.l1(), "b": None})
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(ValueError, match=match):
    update(grads, tx.init(PARAMS_2D), PARAMS_2D)


# --- Non-finite gradients ------------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
def test_apply_if_finite_skips_bad_steps_and_training_continues(name):
  """A NaN step and an inf step leave params and the inner state unchanged, and
  the run then equals the same guarded run with those steps left out (oracle)."""
  params = _params()
  grads = _grads(params, 12)
  bad = [
    jax.tree.map(lambda g, v=v: g.at[0].set(v), grads[2]) for v in (jnp.nan, jnp.inf)
  ]
  step = _step(name, "guarded")

  p, state = params, _init(name, "guarded", params)
  for i, g in enumerate(grads[:2] + bad + grads[2:]):
    p_next, state_next = step(p, state, g)
    if i in (2, 3):
      chex.assert_trees_all_equal(p_next, p)
      chex.assert_trees_all_equal(state_next.inner_state, state.inner_state)
    p, state = p_next, state_next
  assert int(state.total_notfinite) == 2 and int(state.notfinite_count) == 0

  expected, expected_state = _run(name, "guarded", params, grads)
  chex.assert_trees_all_equal(p, expected)
  chex.assert_trees_all_equal(state.inner_state, expected_state.inner_state)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_gradients_are_not_hidden_without_the_guard(name, bad):
  """With λ so large that every finite group is zero, a NaN/inf gradient entry
  still shows in the params: no screening or thresholding turns it into 0."""
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  grads["group"] = grads["group"].at[1, 2].set(bad)
  grads["sparse"] = grads["sparse"].at[3].set(bad)
  grads["free"] = grads["free"].at[0].set(bad)
  p, _ = _run(name, "inject", params, [grads], reg_strength=1e6)

  assert not jnp.all(jnp.isfinite(p["group"][1])), p["group"]
  assert not jnp.isfinite(p["sparse"][3]), p["sparse"]
  assert not jnp.isfinite(p["free"][0]), p["free"]
  # The finite groups and entries of the regularized leaves are zeroed by λ.
  assert not jnp.any(jnp.delete(p["group"], 1, axis=0))
  assert not jnp.any(jnp.delete(p["sparse"], 3))


# --- Degenerate but valid input -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_for_many_steps(name):
  """λ = 0: the weights do not move. λ > 0: ψ(w) never increases and the
  regularized leaves reach ψ's minimizer, exactly 0. Always finite."""
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  step = _step(name, "inject")
  for lam in (0.0, 10.0):
    p, state = params, _init(name, "inject", params, lam)
    values = [_regularizer_values(p)]
    for _ in range(60):
      p, state = step(p, state, zeros)
      values.append(_regularizer_values(p))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((p, state)))
    chex.assert_trees_all_close(p["free"], params["free"], rtol=1e-6)
    if lam == 0:
      chex.assert_trees_all_close(p, params, rtol=1e-6)
    else:
      assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(values))
      assert not jnp.any(p["group"]) and not jnp.any(p["sparse"])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [0.0, 1e-25], ids=["zero", "tiny"])
def test_all_groups_zero_or_tiny_stay_exactly_zero(name, scale):
  """Groups of norm 0 (0/0 in a shrink factor) or whose squared norm underflows
  float32 are zero whenever ‖x_g‖ ≤ τω_g: exactly 0, never NaN or a tiny residue."""
  params = jax.tree.map(lambda x: scale * jnp.sign(x), _params())
  grads = [jax.tree.map(lambda x: scale * jnp.ones_like(x), params)] * 3
  p, _ = _run(name, "inject", params, grads)
  assert not jnp.any(p["group"]) and not jnp.any(p["sparse"]), p
  assert bool(jnp.all(jnp.isfinite(p["free"])))


# The largest gradient scale each method represents in float32 with η = 1e-2: RAMDA's
# U gains (s·g)·g per step with s = η√k; Adam's second moment is formed from g² by
# optax (|g| < 1.8e19, as for optax.adam); RMDA and ProxSGD are linear in g.
MAX_SCALE = {"ramda": 1e19, "ramda_exact": 1e19, "rmda": 1e30, "proxgen": 1e18,
             "prox_sgd": 1e30, "proxssi": 1e18}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_extreme_gradient_scales_match_the_float64_reference(name):
  """Oracle: the NumPy float64 transcriptions, at gradient scales 1e-30 … MAX_SCALE."""
  params = _params()
  tol = {"group": PG_TOL.get(name, 1e-5), "sparse": 1e-6, "free": 1e-6}
  for scale in (1e-30, 1e-10, 1e10, MAX_SCALE[name]):
    grads = _grads(params, 4, scale=scale)
    p, _ = _run(name, "inject", params, grads)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p)), scale
    _assert_matches_reference(p, _reference(name, params, grads), tol, f"{scale:g}")


def test_ramda_beyond_float32_range_with_a_float64_state(x64):
  """|g| = 1e30 makes s·g² overflow float32 (U = inf, and no step); a float64
  state keeps float32 params exact. Oracle: the NumPy float64 transcription."""
  del x64
  params = _params()
  grads = _grads(params, 4, scale=1e30)
  tx = oxr.ramda(LR, momentum=1.0, reg_strength=1e-2, regularizer=SPECS,
                 solver="exact", state_dtype=jnp.float64)  # fmt: skip
  state = tx.init(params)
  step = jax.jit(_step_fn(tx))
  p = params
  for g in grads:
    p, state = step(p, state, g)
  chex.assert_trees_all_equal_dtypes(p, params)
  assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(state.grad_sq_sum))
  tol = {"group": 1e-6, "sparse": 1e-6, "free": 1e-6}
  _assert_matches_reference(p, _reference("ramda_exact", params, grads), tol)


@pytest.mark.parametrize("name", NAMES)
def test_huge_lambda_zeroes_every_regularized_leaf(name):
  """λ = 1e8: every group and entry is zero from the first step (c = 1); the
  free leaf moves exactly as with λ = 0 (leaves are independent)."""
  params = _params()
  grads = _grads(params, 3)
  p, _ = _run(name, "inject", params, grads, reg_strength=1e8)
  assert not jnp.any(p["group"]) and not jnp.any(p["sparse"])
  p_free, _ = _run(name, "inject", params, grads, reg_strength=0.0)
  chex.assert_trees_all_equal(p["free"], p_free["free"])


@pytest.mark.parametrize("name", FACTORIES)
def test_lambda_zero_equals_no_regularizer(name):
  params = _params()
  grads = _grads(params, 4)
  p, _ = _run(name, "inject", params, grads, reg_strength=0.0)
  p_free, _ = _run(name, "unregularized", params, grads)
  chex.assert_trees_all_close(p, p_free, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_leaves(name):
  """Groups of one entry equal ℓ1 (oracle: the ℓ1 closed form, ω = 1); zero-size
  leaves under every spec and empty sub-trees change nothing: the standard leaves
  move exactly as in a run without them."""
  params = _params()
  single = jnp.linspace(-0.06, 0.06, 12)
  degenerate = params | EMPTY_LEAVES | {"single": single[:, None], "single_l1": single}
  grads = _grads(params, 4)
  g_single = [jnp.asarray(np.random.default_rng(i).normal(size=12), jnp.float32)
              for i in range(4)]  # fmt: skip
  degenerate_grads = [
    g | EMPTY_LEAVES | {"single": s[:, None], "single_l1": s}
    for g, s in zip(grads, g_single, strict=True)
  ]
  # ProxSSI's threshold is 1/√(1 − β₂ᵗ) (16-32×) stronger in these first steps:
  # a smaller λ keeps some of its entries nonzero, so both branches are taken.
  lam = 0.02 if name == "proxssi" else 0.5
  p, _ = _run(name, "degenerate", degenerate, degenerate_grads, reg_strength=lam)
  expected, _ = _run(name, "inject", params, grads, reg_strength=lam)
  chex.assert_trees_all_equal({k: p[k] for k in params}, expected)
  chex.assert_trees_all_equal({k: p[k] for k in EMPTY_LEAVES}, EMPTY_LEAVES)

  chex.assert_trees_all_close(p["single"][:, 0], p["single_l1"], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(p["single"][:, 0] == 0, p["single_l1"] == 0)
  assert 0 < int(jnp.sum(p["single_l1"] == 0)) < 12, p["single_l1"]


@pytest.mark.parametrize("name", FACTORIES)
def test_empty_params(name):
  """`{}` params; and a label of `optax.partition` that no parameter carries,
  whose optimizer gets a tree without leaves."""
  tx = _tx(name, "unregularized")
  updates, _ = jax.jit(tx.update)({}, tx.init({}), {})
  assert updates == {}
  params = {"w": jnp.ones(3)}
  tx = optax.partition({"unused": _tx(name, "plain"), "sgd": optax.sgd(0.5)},
                       {"w": "sgd"})  # fmt: skip
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  chex.assert_trees_all_equal(updates, {"w": jnp.full(3, -0.5)})


# --- dtypes ----------------------------------------------------------------------------

# Narrow dtypes: 4 ulps (machine epsilons) of the params' dtype, relative to
# the float64 reference (bfloat16 3.1e-2, float16 3.9e-3): the weights are
# stored in that dtype after every step.
DTYPE_TOL = {
  jnp.float64: 1e-9,
  jnp.float32: 1e-5,
  jnp.bfloat16: 4 * float(jnp.finfo(jnp.bfloat16).eps),
  jnp.float16: 4 * float(jnp.finfo(jnp.float16).eps),
}


@pytest.mark.parametrize("name", NAMES)
def test_narrow_params_with_a_float32_state(name):
  """bfloat16 / float16 params, state_dtype=float32: updates and params keep the
  params' dtype, the state is float32, and the weights track the float64
  reference to the params' precision, for |g| from 1e-4 (a float16 g² below 6e-5
  would be flushed to zero) to 3e3 (a float16 g² above 65504 would be inf)."""
  dtypes = {"group": jnp.bfloat16, "sparse": jnp.float16, "free": jnp.float16}
  params = _params(dtypes)
  tx = _tx(name, "state32")
  tol = {k: DTYPE_TOL[d] for k, d in dtypes.items()}
  if name in PG_TOL:
    tol["group"] = max(tol["group"], PG_TOL[name])
  for scale in (1.0, 1e3):
    grads = _grads(params, 4, scale=scale, decades=4.0)
    updates, _ = jax.eval_shape(tx.update, grads[0], tx.init(params), params)
    chex.assert_trees_all_equal_dtypes(updates, params)
    p, state = _run(name, "state32", params, grads)
    chex.assert_trees_all_equal_dtypes(p, params)
    for leaf in jax.tree.leaves(state):
      assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    _assert_matches_reference(p, _reference(name, params, grads), tol, f"{scale:g}")


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtype_tree_under_x64(x64, name):
  """float64 / float32 / bfloat16 leaves in one tree with the default state dtype:
  each leaf keeps its dtype in the update and the state, and matches the float64
  reference to its own precision."""
  del x64
  dtypes = {"group": jnp.float64, "sparse": jnp.float32, "free": jnp.bfloat16}
  params = _params(dtypes)
  grads = _grads(params, 4)
  p, state = _run(name, "plain", params, grads)
  chex.assert_trees_all_equal_dtypes(p, params)
  per_param = [f for f in state if isinstance(f, dict) and f.keys() == params.keys()]
  assert per_param
  for field in per_param:
    for k, d in dtypes.items():
      assert field[k].ndim == 0 or field[k].dtype == d, (k, field[k].dtype)
  tol = {k: DTYPE_TOL[d] for k, d in dtypes.items()}
  if name == "ramda_exact":  # Against PG run to convergence (rtol 1e-15).
    tol["group"] = 1e-7
  _assert_matches_reference(p, _reference(name, params, grads), tol)


# --- Donation, checkpoint and resume ---------------------------------------------------


def _save(path, tree):
  np.savez(path, *[np.asarray(x) for x in jax.tree.leaves(tree)])


def _restore(path, like):
  """Restores leaves into the structure and dtypes of `like` (a fresh init)."""
  with np.load(path) as data:
    leaves = [data[f"arr_{i}"] for i in range(len(data.files))]
  template, treedef = jax.tree.flatten(like)
  assert [x.shape for x in leaves] == [x.shape for x in template]
  return jax.tree.unflatten(
    treedef, [jnp.asarray(x, t.dtype) for x, t in zip(leaves, template, strict=True)]
  )


@pytest.mark.parametrize("name", FACTORIES)
def test_donated_steps_and_resume_from_a_checkpoint(name, tmp_path):
  """12 donated jitted steps of a guarded chain (through milestones where the method
  has them), saved as plain arrays after 6 steps and restored into a fresh init's
  structure: identical to 12 uninterrupted undonated steps (oracle). Donation must
  succeed (no "not usable" warning, inputs deleted): the state never aliases the
  params."""
  params = _params()
  grads = _grads(params, 12)
  expected, expected_state = _run(name, "guarded", params, grads)

  step = _step(name, "guarded", donate=True)
  p = jax.tree.map(jnp.copy, params)
  state = _init(name, "guarded", p)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # "Some donated buffers were not usable".
    for i, g in enumerate(grads):
      if i == 6:
        _save(tmp_path / "ckpt.npz", (p, state))
        like = (params, _init(name, "guarded", params))
        p, state = _restore(tmp_path / "ckpt.npz", like)
      previous = (p, state.inner_state)  # Not the guard's unused flag.
      p, state = step(p, state, g)
      assert all(x.is_deleted() for x in jax.tree.leaves(previous))
  chex.assert_trees_all_equal(p, expected)
  chex.assert_trees_all_equal(state, expected_state)
