"""Tests for gradual magnitude pruning (optax_ramda._magnitude).

Oracles: Zhu & Gupta's cubic schedule as exact fractions, with the pruned-group
counts worked out by hand; NumPy float64 group norms and stable sorts for which
groups go; ERK densities solved by hand; the wrapped optimizer run alone (a
target of 0 must match it bit for bit); and an uninterrupted run for the
checkpoint round trip.
"""

from fractions import Fraction

import chex
import jax
import numpy as np
import optax
import pytest

import optax_ramda as oxr

ROWS = oxr.group_lasso(axes=(1,))  # One group per row (input feature).


def _params(rng, dtype=np.float32):
  return {
    "a": {"kernel": rng.normal(size=(20, 3)).astype(dtype), "bias": np.ones(3, dtype)},
    "b": {"kernel": rng.normal(size=(7, 2)).astype(dtype)},
  }


SPECS = {"a": {"kernel": ROWS, "bias": None}, "b": {"kernel": ROWS}}


def _row_norms(w):
  return np.sqrt(np.sum(np.square(np.asarray(w, np.float64)), axis=1))


def _zero_rows(w):
  return np.flatnonzero(np.all(np.asarray(w) == 0, axis=1))


def _run(tx, params, steps, seed=1):
  """`steps` updates with NumPy-drawn gradients; the params and states at each."""
  rng = np.random.default_rng(seed)
  # Only `update` is jitted: fused with the addition, XLA may contract a
  # multiply-add differently around the mask, and the bit-for-bit comparison
  # is of the updates.
  update = jax.jit(tx.update)
  state = tx.init(params)
  history = [(params, state)]
  for _ in range(steps):
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(p.dtype), params)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append((params, state))
  return history


def _cubic(t, s_i, s_f, t0, n, dt):
  """s_t at a mask update, as an exact fraction (Zhu & Gupta, eq. 1)."""
  return s_f + (s_i - s_f) * (1 - Fraction(t - t0, n * dt)) ** 3


# Schedule of the tests: s_f = 4/5 from step 2 to 14, every 4 steps (n = 3).
# s_t at the updates t = 2, 6, 10, 14 is 0, (4/5)(19/27), (4/5)(26/27), 4/5.
# Pruned rows, round(s_t · G): for G = 20 they are 0, round(11.26) = 11,
# round(15.41) = 15, 16; for G = 7 they are 0, round(3.94) = 4, round(5.39) = 5,
# round(5.6) = 6.
HAND_COUNTS = {20: [0, 11, 15, 16], 7: [0, 4, 5, 6]}
UPDATES = [2, 6, 10, 14]


def test_hand_counts_follow_the_cubic():
  for groups, counts in HAND_COUNTS.items():
    for t, count in zip(UPDATES, counts, strict=True):
      exact = groups * _cubic(t, 0, Fraction(4, 5), 2, 3, 4)
      assert abs(exact - count) < Fraction(1, 2), (groups, t)
      assert abs(abs(exact - count) - Fraction(1, 2)) > Fraction(1, 100)  # No tie.


def test_schedule_lowest_norms_and_zeros_that_stay():
  tx = oxr.magnitude_pruning(
    optax.adamw(0.1, weight_decay=0.1),
    0.8,
    regularizer=SPECS,
    begin_step=2,
    end_step=14,
    frequency=4,
  )
  history = _run(tx, _params(np.random.default_rng(0)), 30)  # 15 steps past the end.
  for t in range(30):
    (before, state0), (after, state1) = history[t], history[t + 1]
    done = [u for u in UPDATES if u <= t]
    for name in ("a", "b"):
      w0, w1 = np.asarray(before[name]["kernel"]), np.asarray(after[name]["kernel"])
      m0 = np.asarray(state0.masks[name]["kernel"])
      m1 = np.asarray(state1.masks[name]["kernel"])
      count = HAND_COUNTS[len(w0)][len(done) - 1] if done else 0
      zero = _zero_rows(w1)
      assert len(zero) == count, (t, name)
      np.testing.assert_array_equal(np.flatnonzero(~m1[:, 0]), zero)
      assert np.all(w1[m1] != 0)  # Kept rows keep training.
      assert np.all(m1 <= m0)  # Once pruned, pruned for good.
      if t in UPDATES:  # The rows pruned are the lowest by norm at that step.
        lowest = np.argsort(_row_norms(w0), kind="stable")
        np.testing.assert_array_equal(zero, np.sort(lowest[:count]))
      else:  # Masks held, and zeros stay exactly zero.
        np.testing.assert_array_equal(m1, m0)
        np.testing.assert_array_equal(w1[~m0], 0)
    assert np.all(np.asarray(after["a"]["bias"]) != 0)  # No spec: never pruned.


def test_initial_sparsity_and_one_shot():
  params = _params(np.random.default_rng(0))
  # s_i = 1/4 at t0: round(5) = 5 of 20 rows and round(1.75) = 2 of 7.
  tx = oxr.magnitude_pruning(
    optax.sgd(0.1),
    0.5,
    regularizer=SPECS,
    begin_step=1,
    end_step=3,
    frequency=2,
    initial_sparsity=0.25,
  )
  history = _run(tx, params, 4)
  assert [len(_zero_rows(p["a"]["kernel"])) for p, _ in history] == [0, 0, 5, 5, 10]
  assert [len(_zero_rows(p["b"]["kernel"])) for p, _ in history] == [0, 0, 2, 2, 4]
  # begin_step = end_step: one pruning to s_f, at that step. Of 5 rows,
  # round(2.5) = 2: ties go to even (half up would prune 3).
  params["b"]["kernel"] = params["b"]["kernel"][:5]
  tx = oxr.magnitude_pruning(optax.sgd(0.1), 0.5, regularizer=SPECS, end_step=0)
  params, _ = _run(tx, params, 1)[1]
  assert len(_zero_rows(params["a"]["kernel"])) == 10
  assert len(_zero_rows(params["b"]["kernel"])) == 2


def test_pruned_groups_outrank_kept_groups_that_reach_zero():
  # An inner optimizer that zeroes row 0 (a kept row) at every step. Counts
  # stay at 1 of 6 rows: round(6 s_t) for s_t = 0.15, 0.175, 0.2.
  row0 = np.eye(6, 1, dtype=np.float32)
  inner = optax.stateless(lambda g, p: jax.tree.map(lambda w: -w * row0, p))
  w = np.array([[2.0, 1], [1, 2], [3, 1], [0.1, 0], [1, 1], [2, 2]], np.float32)
  tx = oxr.magnitude_pruning(
    inner, 0.2, regularizer=ROWS, end_step=2, frequency=1, initial_sparsity=0.15
  )
  history = _run(tx, w, 4)
  # Row 3 is pruned first; from then on row 0 is as zero as row 3, and the
  # tie must not move the mask to the earlier row.
  for t, (params, state) in enumerate(history[1:]):
    np.testing.assert_array_equal(np.flatnonzero(~np.asarray(state.masks)[:, 0]), [3])
    np.testing.assert_array_equal(_zero_rows(params), [0, 3], err_msg=f"step {t}")


def test_l1_prunes_entries():
  w = np.arange(1.0, 13.0, dtype=np.float32).reshape(3, 4) * np.array([1, -1, 1, -1])
  tx = oxr.magnitude_pruning(optax.sgd(0.0), 0.25, regularizer=oxr.l1(), end_step=0)
  params, _ = _run(tx, w, 1)[1]
  # round(0.25 · 12) = 3 entries: those of smallest magnitude, 1, 2 and 3.
  expected = w.copy()
  expected.flat[:3] = 0
  np.testing.assert_array_equal(params, expected)


def test_conv_input_channels():
  # A 2-D convolution kernel (3, 3, in=4, out=2) under input_channel_groups:
  # groups of 3·3·2 = 18 entries, scored by ‖w_g‖ / √18.
  rng = np.random.default_rng(5)
  kernel = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
  kernel[:, :, 2] *= 0.1
  params = {"Conv_0": {"kernel": kernel, "bias": np.zeros(2, np.float32)}}
  tx = oxr.magnitude_pruning(
    optax.sgd(0.0), 0.25, regularizer=oxr.input_channel_groups, end_step=0
  )
  params, _ = _run(tx, params, 1)[1]
  zero = np.all(np.asarray(params["Conv_0"]["kernel"]) == 0, axis=(0, 1, 3))
  np.testing.assert_array_equal(zero, [False, False, True, False])


def test_global_picks_the_lowest_norm_per_root_size():
  rng = np.random.default_rng(7)
  # Groups of 3, 5 and 2·4 = 8 entries, at scales that mix the leaves' ranks.
  params = {
    "p": rng.normal(size=(6, 3)) * rng.uniform(0.1, 2, (6, 1)),
    "q": rng.normal(size=(4, 5)) * rng.uniform(0.1, 2, (4, 1)),
    "r": rng.normal(size=(3, 2, 4)) * rng.uniform(0.1, 2, (3, 1, 1)),
  }
  params = jax.tree.map(lambda x: x.astype(np.float32), params)
  specs = {"p": ROWS, "q": ROWS, "r": oxr.group_lasso(axes=(1, 2))}
  # NumPy's ranking: every group's float64 norm / √size, in tree order.
  norms, sizes = [], []
  for name, size in (("p", 3), ("q", 5), ("r", 8)):
    w = np.asarray(params[name], np.float64).reshape(params[name].shape[0], -1)
    norms.extend(np.linalg.norm(w, axis=1) / np.sqrt(size))
    sizes.extend([size] * w.shape[0])
  order = np.argsort(norms, kind="stable")
  within = np.cumsum(np.asarray(sizes)[order])
  # With a zero learning rate only the pruning moves the weights. s_t runs
  # 1/5, 7/10 - (1/2)(1/2)³ = 51/80, 7/10 at t = 0, 1, 2; of the 62 entries,
  # the budgets round(s_t · 62) are 12, 40 (39.525) and 43 (43.4).
  tx = oxr.magnitude_pruning(
    optax.sgd(0.0),
    0.7,
    regularizer=specs,
    end_step=2,
    frequency=1,
    initial_sparsity=0.2,
    allocation="global",
  )
  history = _run(tx, params, 3)
  for budget, (new, _) in zip((12, 40, 43), history[1:], strict=True):
    zero = np.concatenate(
      [np.all(np.asarray(new[k]).reshape(len(new[k]), -1) == 0, 1) for k in "pqr"]
    )
    pruned = int(np.sum(zero))
    assert pruned > 0
    # The pruned groups are the `pruned` lowest-ranked ones ...
    np.testing.assert_array_equal(np.flatnonzero(zero), np.sort(order[:pruned]))
    # ... and the longest such run within the budget of entries.
    assert within[pruned - 1] <= budget < within[pruned]


def test_ties_go_to_the_first_group():
  params = {"w": np.ones((6, 2), np.float32), "v": np.ones((3, 2), np.float32)}
  specs = {"w": ROWS, "v": ROWS}
  tx = oxr.magnitude_pruning(
    optax.sgd(0.0), 0.5, regularizer=specs, end_step=0, allocation="global"
  )
  new, _ = _run(tx, params, 1)[1]
  # round(0.5 · 18) = 9 entries: the first 4 rows in tree order ('v' before 'w').
  np.testing.assert_array_equal(_zero_rows(new["v"]), [0, 1, 2])
  np.testing.assert_array_equal(_zero_rows(new["w"]), [0])


def test_erk_densities_solved_by_hand():
  rng = np.random.default_rng(11)
  params = {
    "a": rng.normal(size=(10, 10)).astype(np.float32),  # r = 20/100, N = 100.
    "b": rng.normal(size=(4, 50)).astype(np.float32),  # r = 54/200, N = 200.
    "c": rng.normal(size=(2, 2)).astype(np.float32),  # r = 4/4, N = 4.
  }
  specs = {"a": ROWS, "b": ROWS, "c": ROWS}
  # s_t runs 0, 1/2 - (1/2)(1/2)³ = 7/16, 1/2 at t = 0, 1, 2 (sgd(0) leaves the
  # weights alone but for the pruning).
  # s = 0: D = 304; ε = 304/78 makes 'c' dense, then ε = 300/74 makes 'b'
  # dense, then ε = 100/20 = 5 gives d_a = 5 r_a = 1: nothing is pruned.
  # s = 7/16: the budget is D = (9/16)·304 = 171 entries. With no dense leaf,
  # ε = 171 / (20 + 54 + 4) = 2.19, and ε r_c > 1: 'c' is dense. Then
  # ε = (171 - 4) / (20 + 54) = 167/74, so d_a = 0.4514 and d_b = 0.6093:
  # 'a' prunes round(5.486) = 5 of its rows, 'b' round(1.563) = 2, 'c' none.
  # s = 1/2: D = 152. ε = 152 / 78 = 1.95 makes 'c' dense, then
  # ε = (152 - 4) / 74 = 2: d_a = 0.4, d_b = 0.54, so round(6) = 6 and
  # round(1.84) = 2 rows.
  tx = oxr.magnitude_pruning(
    optax.sgd(0.0), 0.5, regularizer=specs, end_step=2, frequency=1, allocation="erk"
  )
  history = _run(tx, params, 3)
  hand = [{"a": 0, "b": 0, "c": 0}, {"a": 5, "b": 2, "c": 0}, {"a": 6, "b": 2, "c": 0}]
  for counts, (new, _) in zip(hand, history[1:], strict=True):
    for name, count in counts.items():
      lowest = np.argsort(_row_norms(params[name]), kind="stable")[:count]
      np.testing.assert_array_equal(_zero_rows(new[name]), np.sort(lowest))


@pytest.mark.parametrize(
  "dtype, allocation",
  [
    (np.float32, "uniform"),
    (np.float32, "global"),
    (np.float64, "uniform"),
  ],
)
def test_target_zero_is_the_inner_optimizer_bit_for_bit(dtype, allocation, request):
  if dtype == np.float64:
    request.getfixturevalue("x64")
  inner = optax.adamw(0.05, weight_decay=0.1)
  tx = oxr.magnitude_pruning(
    inner, 0.0, regularizer=SPECS, end_step=12, frequency=3, allocation=allocation
  )
  params = _params(np.random.default_rng(2), dtype)
  ours = _run(tx, params, 25)
  theirs = _run(inner, params, 25)
  for (p, s), (q, r) in zip(ours, theirs, strict=True):
    chex.assert_trees_all_equal(p, q, strict=True)
    chex.assert_trees_all_equal(s.inner_state, r, strict=True)


def test_chain_under_jit_reports_the_target():
  rng = np.random.default_rng(4)
  params = {
    "Conv_0": {
      "kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32),
      "bias": np.zeros(8, np.float32),
    },
    "Dense_0": {
      "kernel": rng.normal(size=(8, 16)).astype(np.float32),
      "bias": np.zeros(16, np.float32),
    },
  }
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    oxr.magnitude_pruning(
      optax.adamw(1e-2),
      0.5,
      regularizer=oxr.input_channel_groups,
      begin_step=2,
      end_step=8,
      frequency=2,
    ),
  )
  params, _ = _run(tx, params, 10)[-1]
  report = oxr.sparsity(params, oxr.input_channel_groups)
  # 2 of 4 input channels (72 entries each) and 4 of 8 inputs (16 each).
  assert int(report["zero_groups"]) == 6
  assert float(report["group_sparsity"]) == 0.5


def test_checkpoint_round_trip_resumes_bit_for_bit():
  tx = oxr.magnitude_pruning(
    optax.adamw(0.05), 0.8, regularizer=SPECS, begin_step=2, end_step=14, frequency=4
  )
  params = _params(np.random.default_rng(6))
  rng = np.random.default_rng(8)
  grads = [
    jax.tree.map(lambda p: rng.normal(size=p.shape).astype(p.dtype), params)
    for _ in range(16)
  ]
  update = jax.jit(tx.update)

  def steps(params, state, grads):
    for g in grads:
      updates, state = update(g, state, params)
      params = optax.apply_updates(params, updates)
    return params, state

  state = tx.init(params)
  straight = steps(params, state, grads)
  mid = steps(params, state, grads[:7])
  # Save as plain NumPy arrays and restore into a fresh state's structure.
  saved = [np.array(x) for x in jax.tree.leaves(mid)]
  template = (params, tx.init(params))
  restored = jax.tree.unflatten(jax.tree.structure(template), saved)
  resumed = steps(*restored, grads[7:])
  chex.assert_trees_all_equal(resumed, straight, strict=True)


def test_state_mirrors_the_params():
  params = _params(np.random.default_rng(0))
  tx = oxr.magnitude_pruning(
    optax.adamw(0.1), 0.5, regularizer=SPECS, end_step=4, frequency=2
  )
  state = tx.init(params)
  chex.assert_trees_all_equal_shapes(state.masks, params)
  assert all(m.dtype == bool for m in jax.tree.leaves(state.masks))
  # optax.tree_map_params finds the masks, as it finds AdamW's moments.
  tagged = optax.tree_map_params(tx, lambda p: "params-like", state)
  assert set(jax.tree.leaves(tagged.masks)) == {"params-like"}
  abstract = jax.eval_shape(tx.init, params)
  chex.assert_trees_all_equal_shapes(abstract.masks, params)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"target_sparsity": 1.0}, r"`target_sparsity` must lie in \[0, 1\)"),
    ({"target_sparsity": -0.1}, r"`target_sparsity` must lie in \[0, 1\)"),
    ({"target_sparsity": True}, "`target_sparsity` must be a float"),
    ({"initial_sparsity": 0.9}, "`initial_sparsity` .* must not exceed"),
    ({"begin_step": -1}, "`begin_step` must be an integer >= 0"),
    ({"begin_step": 8}, "`end_step` must be an integer >= 8"),
    ({"end_step": 4.0}, "`end_step` must be an integer"),
    ({"frequency": 0}, "`frequency` must be an integer >= 1"),
    ({"frequency": 3}, r"\(4 − 0\) must be a multiple of `frequency` \(3\)"),
    ({"allocation": "layerwise"}, "`allocation` must be one of"),
    ({"inner": optax.adam}, "`inner` must be an optax.GradientTransformation"),
  ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
  args = {
    "inner": optax.sgd(0.1),
    "target_sparsity": 0.5,
    "regularizer": SPECS,
    "end_step": 4,
    "frequency": 2,
  } | kwargs
  with pytest.raises(ValueError, match=match):
    oxr.magnitude_pruning(**args)


def test_bad_trees_fail_at_init_and_update():
  params = _params(np.random.default_rng(0))
  nuclear = {"a": {"kernel": oxr.nuclear(), "bias": None}, "b": None}
  tx = oxr.magnitude_pruning(optax.sgd(0.1), 0.5, regularizer=nuclear, end_step=0)
  with pytest.raises(ValueError, match=r"nuclear\(\) for the leaf \['a'\]\['kernel'\]"):
    tx.init(params)
  tx = oxr.magnitude_pruning(optax.sgd(0.1), 0.5, regularizer=None, end_step=0)
  with pytest.raises(ValueError, match="no group to prune"):
    tx.init(params)
  tx = oxr.magnitude_pruning(optax.sgd(0.1), 0.5, regularizer=SPECS, end_step=0)
  with pytest.raises(ValueError, match=r"\['b'\]\['kernel'\] has dtype int32"):
    tx.init({"a": params["a"], "b": {"kernel": np.ones((7, 2), np.int32)}})
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"call `update\(updates, state, params\)`"):
    tx.update(params, state)


_SHARDED_SCRIPT = """
import jax, numpy as np, optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import optax_ramda as oxr

rng = np.random.default_rng(0)
params = {"w": rng.normal(size=(16, 8)), "v": rng.normal(size=(8, 12))}
params = jax.tree.map(lambda x: x.astype(np.float32), params)
specs = {"w": oxr.group_lasso(axes=(1,)), "v": oxr.group_lasso(axes=(1,))}
grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(p.dtype), params)
         for _ in range(6)]
mesh = jax.make_mesh((4,), ("x",), axis_types=(AxisType.Explicit,))
# Rows (the groups) split across devices in 'w'; each row split in 'v'.
shard = {"w": NamedSharding(mesh, P("x", None)), "v": NamedSharding(mesh, P(None, "x"))}
for allocation in ("uniform", "global"):
  tx = oxr.magnitude_pruning(optax.adamw(0.1), 0.5, regularizer=specs,
                             begin_step=1, end_step=5, frequency=2,
                             allocation=allocation)
  def train(where):
    p = jax.device_put(params, where)
    state = tx.init(p)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    for g in grads:
      u, state = step(p, state, jax.device_put(g, where))
      p = optax.apply_updates(p, u)
    return p, state
  p1, s1 = train(jax.devices()[0])
  p4, s4 = train(shard)
  for k in params:
    assert s4.masks[k].sharding.is_equivalent_to(shard[k], 2), s4.masks[k].sharding
    np.testing.assert_array_equal(np.asarray(s4.masks[k]), np.asarray(s1.masks[k]))
    np.testing.assert_allclose(np.asarray(p4[k]), np.asarray(p1[k]), rtol=1e-6)
    assert np.all(np.asarray(p4[k])[~np.asarray(s4.masks[k])] == 0)
print("ok")
"""


@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device():
  # Explicit mesh axes put the sharding in the types: the sort of the scores
  # must see whole axes, and the new masks must keep the params' sharding.
  from tests.multidevice import launch

  group = launch.Group(
    "magnitude", [launch.Process("sharded", ["-c", _SHARDED_SCRIPT], 4)], 300
  )
  launch.wait([group])
  assert group.error is None, group.report()
