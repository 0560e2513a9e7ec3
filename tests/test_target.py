"""Target sparsity (`oxr.target_sparsity`), for every optimizer of the library.

Oracles: the fixed-λ step of the same optimizer from the same state (a brute-force
bisection on λ over it, and the held stage bit for bit), hand counts of the zero
groups that a target asks for, NumPy singular values, and the single-device run for
the sharded one.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr

# Three regularized leaves with unequal group sizes (4, 6 and 1 entries) and one
# unregularized leaf: 6·4 + 5·6 + 8 = 62 regularized entries.
SHAPES = {"kernel": (6, 4), "conv": (3, 2, 5), "sparse": (8,), "bias": (3,)}
SPECS = {
  "kernel": oxr.group_lasso(axes=(1,)),
  "conv": oxr.group_lasso(axes=(0, 1)),
  "sparse": oxr.l1(),
  "bias": None,
}
# One leaf of six equal groups: every count is achievable.
EQUAL_SHAPES = {"kernel": (6, 4), "bias": (3,)}
EQUAL_SPECS = {"kernel": oxr.group_lasso(axes=(1,)), "bias": None}

FACTORIES = {
  "ramda": lambda lam: oxr.ramda(0.1, reg_strength=lam, regularizer=SPECS_IN_USE[0]),
  "rmda": lambda lam: oxr.rmda(0.1, reg_strength=lam, regularizer=SPECS_IN_USE[0]),
  "proxgen": lambda lam: oxr.proxgen(
    0.05, reg_strength=lam, regularizer=SPECS_IN_USE[0]
  ),
  "prox_sgd": lambda lam: oxr.prox_sgd(
    0.1, reg_strength=lam, regularizer=SPECS_IN_USE[0]
  ),
  "proxssi": lambda lam: oxr.proxssi(
    0.05, reg_strength=lam, regularizer=SPECS_IN_USE[0]
  ),
}
SPECS_IN_USE = [SPECS]  # Swapped by the tests on the equal-groups problem.
DUAL_AVERAGING = ("ramda", "rmda")  # Ŵ lives in the state; the others step to it.
all_optimizers = pytest.mark.parametrize("name", list(FACTORIES))


def _params(shapes, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def _grads(shapes, steps, seed=1, dtype=np.float64):
  return [_params(shapes, seed + 10 * i, dtype) for i in range(steps)]


def _structured(name, params, updates, state):
  """The exactly structured iterate of the step: Ŵ, or the new weights."""
  if name in DUAL_AVERAGING:
    return oxr.prox_iterate(state)
  return optax.apply_updates(params, updates)


def _zero_weight(tree, shapes) -> int:
  """Σ n_g over the zero groups, counted by hand from the group layout of SPECS."""
  total = 0
  for key, spec in (SPECS if "conv" in shapes else EQUAL_SPECS).items():
    w = np.asarray(tree[key])
    if spec is None:
      continue
    if isinstance(spec, oxr.L1):
      total += int(np.sum(w == 0))
    else:
      axes = spec.axes
      size = math.prod(w.shape[a] for a in axes)
      total += size * int(np.sum(np.all(w == 0, axis=axes)))
  return total


def _regularized_entries(shapes):
  return sum(math.prod(s) for k, s in shapes.items() if k != "bias")


@pytest.fixture
def problem_equal():
  SPECS_IN_USE[0] = EQUAL_SPECS
  yield
  SPECS_IN_USE[0] = SPECS


@pytest.fixture
def problem(request):
  kind = request.param
  SPECS_IN_USE[0] = SPECS if kind == "mixed" else EQUAL_SPECS
  yield kind, SHAPES if kind == "mixed" else EQUAL_SHAPES
  SPECS_IN_USE[0] = SPECS


@all_optimizers
@pytest.mark.parametrize(
  ("problem", "target"), [("mixed", 0.5), ("equal", 0.3)], indirect=["problem"]
)
def test_lambda_is_the_bisection_and_zeroes_the_target(name, problem, target, x64):
  """Each step's λ equals a bisection on the fixed-λ step; its zeros meet the target.

  Oracle: the optimizer's own fixed-λ step from the same state, bisected on λ for
  the smallest λ whose structured iterate (Ŵ, or the new weights) has a zero weight
  of at least ⌈s·N⌉. On the equal-groups problem that is exactly ⌈s·6⌉ groups
  (2 for 0.3, 3 for 0.5); with unequal sizes, the smallest achievable weight at or
  above the target.
  """
  kind, shapes = problem
  factory = FACTORIES[name]
  need = math.ceil(target * _regularized_entries(shapes) - 1e-6)
  tx = factory(oxr.target_sparsity(target, until=100))
  params = _params(shapes)
  state = tx.init(params)
  step = jax.jit(tx.update)

  @jax.jit
  def fixed(lam, g, state, params):
    updates, new_state = factory(lam).update(g, state, params)
    return _structured(name, params, updates, new_state)

  for g in _grads(shapes, 3):
    updates, new_state = step(g, state, params)
    lam = float(oxr.reg_strength(new_state))
    zeros = _zero_weight(_structured(name, params, updates, new_state), shapes)
    assert zeros >= need
    if kind == "equal":
      assert zeros == need  # Hand count: ⌈0.3·6⌉ = 2 or ⌈0.5·6⌉ = 3 groups of 4.
    # Bisection on the fixed-λ step.
    lo, hi = 0.0, 1.0
    while _zero_weight(fixed(hi, g, state, params), shapes) < need:
      hi *= 4
    while hi - lo > 1e-14 * hi:
      mid = 0.5 * (lo + hi)
      if _zero_weight(fixed(mid, g, state, params), shapes) >= need:
        hi = mid
      else:
        lo = mid
    np.testing.assert_allclose(lam, hi, rtol=1e-12)
    assert _zero_weight(fixed(hi, g, state, params), shapes) == zeros
    assert _zero_weight(fixed(lam * (1 - 1e-10), g, state, params), shapes) < need
    params, state = optax.apply_updates(params, updates), new_state


@all_optimizers
def test_groups_without_gradient_do_not_set_the_held_lambda(name, problem_equal, x64):
  """A target met by groups that never had a gradient: λ follows it to 0, but
  the λ to be held still regularizes the other groups.

  Three of six groups are zero and receive no gradient (a dead unit's inputs):
  they are zero at every λ ≥ 0, so the smallest λ meeting a target of 0.3 (two
  groups) is 0, as on the first update. On the last update before `until`,
  whose λ is held, λ is the smallest at which a group *with* a gradient is
  zero. Oracle: a bisection on the fixed-λ step for the smallest λ with four
  zero groups; hand counts: three, then exactly four.
  """
  factory = FACTORIES[name]
  tx = factory(oxr.target_sparsity(0.3, until=2))
  silent = np.arange(6) < 3
  params = _params(EQUAL_SHAPES)
  params["kernel"] = jnp.where(silent[:, None], 0.0, params["kernel"])
  state, step = tx.init(params), jax.jit(tx.update)

  @jax.jit
  def fixed(lam, g, state, params):
    updates, new_state = factory(lam).update(g, state, params)
    return _structured(name, params, updates, new_state)

  for t, g in enumerate(_grads(EQUAL_SHAPES, 3)):
    g["kernel"] = jnp.where(silent[:, None], 0.0, g["kernel"])
    updates, new_state = step(g, state, params)
    lam = float(oxr.reg_strength(new_state))
    zeros = _zero_weight(_structured(name, params, updates, new_state), EQUAL_SHAPES)
    if t == 0:  # Following: the smallest λ, met by the silent groups alone.
      assert (lam, zeros) == (0.0, 12)
    elif t == 1:  # Held from the next update.
      assert zeros == 16
      lo, hi = 0.0, 1.0
      while _zero_weight(fixed(hi, g, state, params), EQUAL_SHAPES) < 16:
        hi *= 4
      while hi - lo > 1e-14 * hi:
        mid = 0.5 * (lo + hi)
        if _zero_weight(fixed(mid, g, state, params), EQUAL_SHAPES) >= 16:
          hi = mid
        else:
          lo = mid
      np.testing.assert_allclose(lam, hi, rtol=1e-12)
      held = lam
    else:
      assert lam == held
    params, state = optax.apply_updates(params, updates), new_state


@all_optimizers
def test_held_lambda_is_the_fixed_lambda_step_bit_for_bit(name):
  """From `until` on, the step is the fixed-λ step at the λ found, bit for bit.

  The oracle takes λ as an array argument of its jitted step, as
  ``optax.inject_hyperparams`` passes it. Against a λ compiled in as a constant
  XLA may fold the threshold differently (measured: 1-ulp differences in a few
  entries of nonzero groups, the fixed-λ optimizer against itself under
  inject_hyperparams alike); there the zeros are the same and the values agree
  to float32 rounding.
  """
  factory = FACTORIES[name]
  until = 3
  tx = factory(oxr.target_sparsity(0.5, until=until))
  params = _params(SHAPES, dtype=np.float32)
  grads = _grads(SHAPES, 7, dtype=np.float32)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for g in grads[:until]:
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
  lam = oxr.reg_strength(state)
  assert float(lam) > 0
  fixed_step = jax.jit(lambda lam, g, s, p: factory(lam).update(g, s, p))
  # The constant-λ comparison for the cheap-to-compile ones only.
  constant_step = (
    jax.jit(factory(float(lam)).update) if name in ("rmda", "prox_sgd") else None
  )
  held_params, held_state = params, state
  for g in grads[until:]:
    u1, held_state = step(g, held_state, held_params)
    u3 = None if constant_step is None else constant_step(g, state, params)[0]
    u2, state = fixed_step(lam, g, state, params)
    chex.assert_trees_all_equal(u1, u2)
    chex.assert_trees_all_equal(held_state, state)
    if u3 is not None:
      chex.assert_trees_all_close(u3, u2, rtol=1e-5, atol=1e-7)
      for k in params:
        np.testing.assert_array_equal(
          np.asarray(params[k] + u3[k]) == 0, np.asarray(params[k] + u2[k]) == 0
        )
    held_params = optax.apply_updates(held_params, u1)
    params = optax.apply_updates(params, u2)
  assert oxr.reg_strength(held_state) == lam


@pytest.mark.parametrize(
  ("kwargs", "untils"),
  [
    ({"momentum": 0.5}, (6, 6)),  # c = min(0.5√r, 1) is 1 from r = 4: after count 5.
    ({"momentum": 0.5, "ramp_start": 1}, (5, 5)),
    ({"momentum": 0.5, "momentum_ramp": False}, (2, 2)),  # No ramp: last milestone.
    # A schedule's R is unknown before training; inject_hyperparams hands the
    # optimizer the schedule's value at each step instead, as a constant.
    ({"momentum": optax.constant_schedule(0.5)}, (2, 6)),
  ],
)
@pytest.mark.parametrize("make", [oxr.ramda, oxr.rmda])
def test_until_defaults_to_where_the_averaging_weight_reaches_one(make, kwargs, untils):
  """RAMDA and RMDA, without `until`: λ follows the target through the first
  update whose averaging weight c is one (the dual averages restart at the last
  milestone and settle through its ramp), and is held from the next; without a
  ramp, or with c₀ a schedule, from the last milestone. The same under
  ``optax.inject_hyperparams``, whose c₀ and ramp start are traced arrays.
  """
  params = _params(SHAPES, dtype=np.float32)
  grads = _grads(SHAPES, max(untils) + 3, dtype=np.float32)
  settings = dict(reg_strength=oxr.target_sparsity(0.5), regularizer=SPECS, **kwargs)
  injected = optax.inject_hyperparams(
    make, static_args=("regularizer", "milestones", "momentum_ramp")
  )
  for tx, until in zip(
    (
      make(0.1, milestones=(2,), **settings),
      injected(learning_rate=0.1, milestones=(2,), **settings),
    ),
    untils,
    strict=True,
  ):
    state, lams, step = tx.init(params), [], jax.jit(tx.update)
    p = params
    for g in grads:
      updates, state = step(g, state, p)
      p = optax.apply_updates(p, updates)
      lams.append(float(oxr.reg_strength(state)))
    assert lams[until - 1] != lams[until - 2]  # Still following at count until - 1.
    assert len(set(lams[until - 1 :])) == 1  # Held from count `until`.


def test_nuclear_leaves_count_singular_values(x64):
  """RMDA and ProxSGD: exact for a constant metric, so Ŵ's rank is the target's.

  A 6×4 nuclear leaf weighs each singular value max(6, 4) = 6, and a group-lasso
  leaf of 4 rows of 3 adds 12: N = 36, and s = 0.5 asks for a zero weight of 18.
  Oracle: NumPy's singular values of Ŵ (or the new weights).
  """
  shapes = {"m": (6, 4), "k": (4, 3)}
  specs = {"m": oxr.nuclear(), "k": oxr.group_lasso(axes=(1,))}
  for name, make in (("rmda", oxr.rmda), ("prox_sgd", oxr.prox_sgd)):
    tx = make(0.1, reg_strength=oxr.target_sparsity(0.5, until=10), regularizer=specs)
    params = _params(shapes)
    state, step = tx.init(params), jax.jit(tx.update)
    for g in _grads(shapes, 3):
      updates, state = step(g, state, params)
      out = _structured(name, params, updates, state)
      params = optax.apply_updates(params, updates)
      sigma = np.linalg.svd(np.asarray(out["m"]), compute_uv=False)
      zero_sigmas = int(np.sum(sigma <= 1e-12 * max(sigma.max(), 1)))
      zero_rows = int(np.sum(np.all(np.asarray(out["k"]) == 0, axis=1)))
      weight = 6 * zero_sigmas + 3 * zero_rows
      assert weight >= 18
      # The smallest achievable: removing the last-zeroed group falls below 18.
      assert weight - 3 < 18 or weight - 6 < 18


def test_a_scheduled_target_asks_for_its_value_at_each_step():
  """Hand counts on six equal groups: s_t = 0, 1/6, 2/6, 3/6 zero 0, 1, 2, 3 rows."""
  schedule = optax.linear_schedule(0.0, 0.5, 3)
  tx = oxr.prox_sgd(
    0.1,
    reg_strength=oxr.target_sparsity(schedule, until=10),
    regularizer=EQUAL_SPECS,
  )
  params = _params(EQUAL_SHAPES, dtype=np.float32)
  state, step = tx.init(params), jax.jit(tx.update)
  grads = _grads(EQUAL_SHAPES, 5, dtype=np.float32)
  for expected, g in zip([0, 1, 2, 3, 3], grads, strict=True):
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
    zero_rows = np.all(np.asarray(params["kernel"]) == 0, axis=1)
    assert int(zero_rows.sum()) == expected
  assert float(oxr.reg_strength(state)) > 0


def test_non_finite_gradients_do_not_poison_lambda():
  """A NaN group counts as never zero; an all-NaN step keeps the previous λ."""
  specs = {"kernel": oxr.group_lasso(axes=(1,))}
  tx = oxr.prox_sgd(
    1.0, momentum=1.0, reg_strength=oxr.target_sparsity(0.5, until=9), regularizer=specs
  )
  w = jnp.zeros((6, 4))
  # Rows of norms 1..6 (x = −g), the 6th NaN, ω = √4 = 2: the ⌈0.5·6⌉ = 3 rows
  # of norm ≤ 3 are zero at λ = 3/2.
  g = jnp.asarray(np.arange(1.0, 7.0)[:, None] * np.eye(1, 4))
  g = g.at[5, 0].set(jnp.nan)
  updates, state = tx.update({"kernel": g}, tx.init({"kernel": w}), {"kernel": w})
  np.testing.assert_allclose(float(oxr.reg_strength(state)), 1.5, rtol=1e-5)
  np.testing.assert_array_equal(
    np.all(np.asarray(updates["kernel"]) == 0, axis=1), [1, 1, 1, 0, 0, 0]
  )
  nan = jnp.full((6, 4), jnp.nan)
  _, state = tx.update({"kernel": nan}, state, {"kernel": w})
  np.testing.assert_allclose(float(oxr.reg_strength(state)), 1.5, rtol=1e-5)


def test_reader_and_wrappers():
  """inject_hyperparams, MultiSteps and chain keep the target; the reader finds λ."""
  params = _params(SHAPES, dtype=np.float32)
  g = _grads(SHAPES, 1, dtype=np.float32)[0]
  target = oxr.target_sparsity(0.5, until=5)
  plain = oxr.prox_sgd(0.1, reg_strength=target, regularizer=SPECS)
  _, plain_state = jax.jit(plain.update)(g, plain.init(params), params)
  injected = optax.inject_hyperparams(oxr.prox_sgd, static_args=("regularizer",))
  wrapped = [
    injected(learning_rate=0.1, reg_strength=target, regularizer=SPECS),
    optax.chain(optax.identity(), plain),
    optax.MultiSteps(plain, every_k_schedule=1),
  ]
  for tx in wrapped:
    _, state = jax.jit(tx.update)(g, tx.init(params), params)
    assert oxr.reg_strength(state) == oxr.reg_strength(plain_state)
  # A numeric λ under inject_hyperparams sits in `hyperparams` too: not read.
  tx = injected(learning_rate=0.1, reg_strength=0.25, regularizer=SPECS)
  _, state = tx.update(g, tx.init(params), params)
  assert float(oxr.reg_strength(state)) == 0.25
  with pytest.raises(ValueError, match="exactly one"):
    oxr.reg_strength((plain_state, plain_state))


def test_pmap_equals_jit():
  """Under pmap each device takes the same quantile of its (replicated) scores."""
  tx = oxr.proxgen(
    0.05, reg_strength=oxr.target_sparsity(0.5, until=5), regularizer=SPECS
  )
  params = _params(SHAPES, dtype=np.float32)
  g = _grads(SHAPES, 1, dtype=np.float32)[0]
  state = tx.init(params)
  u1, s1 = jax.jit(tx.update)(g, state, params)

  def stack(tree):
    return jax.tree.map(lambda x: x[None], tree)

  u2, s2 = jax.pmap(tx.update)(stack(g), stack(state), stack(params))
  # Two compilations of one program: equal up to float32 rounding, zeros alike.
  chex.assert_trees_all_close(stack(u1), u2, rtol=1e-6, atol=1e-8)
  for k in params:
    np.testing.assert_array_equal(params[k] + u1[k] == 0, params[k] + u2[k][0] == 0)
  np.testing.assert_allclose(oxr.reg_strength(s2)[0], oxr.reg_strength(s1), rtol=1e-6)


def test_subproblem_reads_the_chosen_lambda():
  """oxr.subproblem with the target solves to the update's Ŵ."""
  params = _params(EQUAL_SHAPES, dtype=np.float32)
  target = oxr.target_sparsity(0.5, until=5)
  tx = oxr.ramda(0.1, eps=1e-6, reg_strength=target, regularizer=EQUAL_SPECS)
  g = _grads(EQUAL_SHAPES, 1, dtype=np.float32)[0]
  _, state = jax.jit(tx.update)(g, tx.init(params), params)
  sub = oxr.subproblem(state, 1e-6, reg_strength=target)
  z, _ = oxr.solve_group_lasso(
    sub.v["kernel"],
    sub.d["kernel"],
    sub.anchor["kernel"],
    sub.threshold,
    (1,),
    solver="exact",
  )
  chex.assert_trees_all_equal(z, oxr.prox_iterate(state)["kernel"])


def test_checkpoint_round_trip_resumes_bit_for_bit():
  """The state (λ included) through NumPy and back resumes the same run."""
  tx = oxr.rmda(0.1, reg_strength=oxr.target_sparsity(0.5, until=3), regularizer=SPECS)
  params = _params(SHAPES, dtype=np.float32)
  grads = _grads(SHAPES, 5, dtype=np.float32)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for g in grads[:2]:
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
  leaves, treedef = jax.tree.flatten(state)
  restored = jax.tree.unflatten(treedef, [jnp.asarray(np.array(x)) for x in leaves])
  a, b = state, restored
  for g in grads[2:]:
    ua, a = step(g, a, params)
    ub, b = step(g, b, params)
    chex.assert_trees_all_equal((ua, a), (ub, b))


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"target": 1.0}, r"\[0, 1\)"),
    ({"target": -0.1}, r"\[0, 1\)"),
    ({"target": True}, "float"),
    ({"target": "half"}, "float"),
    ({"target": 0.5, "until": 0}, "integer >= 1"),
    ({"target": 0.5, "until": 2.5}, "integer >= 1"),
    ({"target": 0.5, "until": True}, "integer >= 1"),
    ({"target": 0.5, "until": 4, "window": 0}, "integer >= 1"),
    ({"target": 0.5, "until": 4, "window": 1.5}, "integer >= 1"),
    ({"target": 0.5, "until": 4, "window": 5}, "longer than `until`=4"),
  ],
)
def test_bad_targets_fail_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    oxr.target_sparsity(**kwargs)


@all_optimizers
def test_missing_until_and_missing_groups_fail_early(name):
  """No `until` and no milestone: at construction; no regularized leaf: at init."""
  with pytest.raises(ValueError, match="until=N"):
    FACTORIES[name](oxr.target_sparsity(0.5))
  params = _params(SHAPES, dtype=np.float32)
  SPECS_IN_USE[0] = {k: None for k in SHAPES}
  try:
    tx = FACTORIES[name](oxr.target_sparsity(0.5, until=3))
    with pytest.raises(ValueError, match="regularizes no parameter"):
      tx.init(params)
  finally:
    SPECS_IN_USE[0] = SPECS


_SHARDED_SCRIPT = """
import jax, numpy as np, optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import optax_ramda as oxr

rng = np.random.default_rng(0)
params = {"w": rng.normal(size=(16, 8)), "v": rng.normal(size=(8, 12)),
          "s": rng.normal(size=(16,))}
params = jax.tree.map(lambda x: x.astype(np.float32), params)
specs = {"w": oxr.group_lasso(axes=(1,)), "v": oxr.group_lasso(axes=(1,)),
         "s": oxr.l1()}
grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(p.dtype), params)
         for _ in range(5)]
target = oxr.target_sparsity(0.5, until=3)
makers = {
  "ramda": lambda: oxr.ramda(0.1, reg_strength=target, regularizer=specs),
  "rmda": lambda: oxr.rmda(0.1, reg_strength=target, regularizer=specs),
  "proxgen": lambda: oxr.proxgen(0.05, reg_strength=target, regularizer=specs),
  "prox_sgd": lambda: oxr.prox_sgd(0.1, reg_strength=target, regularizer=specs),
  "proxssi": lambda: oxr.proxssi(0.05, reg_strength=target, regularizer=specs),
}
for axis_type in (AxisType.Explicit, AxisType.Auto):
  mesh = jax.make_mesh((4,), ("x",), axis_types=(axis_type,))
  # Groups (rows) split across devices in 'w'; each group split in 'v'.
  shard = {"w": NamedSharding(mesh, P("x", None)), "v": NamedSharding(mesh, P(None, "x")),
           "s": NamedSharding(mesh, P("x"))}
  for name, make in makers.items():
    tx = make()
    def train(where):
      p = jax.device_put(params, where)
      state = tx.init(p)
      step = jax.jit(lambda p, s, g: tx.update(g, s, p))
      lams = []
      for g in grads:
        u, state = step(p, state, jax.device_put(g, where))
        p = optax.apply_updates(p, u)
        lams.append(float(oxr.reg_strength(state)))
      return p, lams
    p1, l1 = train(jax.devices()[0])
    p4, l4 = train(shard)
    np.testing.assert_allclose(l4, l1, rtol=1e-6, err_msg=name)
    for k in params:
      np.testing.assert_array_equal(np.asarray(p4[k]) == 0, np.asarray(p1[k]) == 0)
      np.testing.assert_allclose(np.asarray(p4[k]), np.asarray(p1[k]), rtol=1e-5,
                                 atol=1e-6, err_msg=name)
print("ok")
"""


@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device():
  """One global quantile over the group scores, whatever the sharding."""
  from tests.multidevice import launch

  group = launch.Group(
    "target", [launch.Process("sharded", ["-c", _SHARDED_SCRIPT], 4)], 300
  )
  launch.wait([group])
  assert group.error is None, group.report()
