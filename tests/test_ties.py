"""Tests of tied groups, ``group_lasso(..., tie=key)`` (optax_ramda/_ties.py).

Oracle: a tied model is the same problem as one whose tied leaves are laid out
side by side as a single matrix (input feature × every entry that reads it)
with ``group_lasso(axes=(1,))``. That layout is written here in NumPy, and
every optimizer, the target rule, magnitude pruning, ``regularizer_value`` and
``sparsity`` must give on the tied leaves what they give on the matrix (float64,
to rounding). Hand counts check the sparsity report; the errors name the leaves.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ramda as oxr

N_IN = 4  # The input features that the tied kernels share.


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _rows(x, span):
  """A leaf as (groups, entries): its group-index axes first (NumPy)."""
  index = [a for a in range(x.ndim) if a not in span]
  return np.transpose(x, index + list(span)).reshape(x.shape[index[0]], -1)


def _unrows(rows, shape, span):
  index = [a for a in range(len(shape)) if a not in span]
  permuted = rows.reshape([shape[a] for a in index + list(span)])
  return np.transpose(permuted, np.argsort(index + list(span)))


SPANS = {"dense": (1,), "conv": (0, 1, 3)}


def _problem():
  rng = np.random.default_rng(0)
  params = {
    "dense": rng.normal(size=(N_IN, 3)),
    "conv": rng.normal(size=(2, 2, N_IN, 5)),
    "bias": rng.normal(size=(3,)),
  }
  targets = {k: 0.3 * rng.normal(size=v.shape) for k, v in params.items()}
  targets["dense"][:2] = 0.0  # Features 0 and 1: zero in both kernels...
  targets["conv"][:, :, :2] = 0.0
  targets["dense"][2] = 0.0  # ...feature 2 in the dense kernel only.
  scales = {k: rng.uniform(0.5, 3.0, size=v.shape) for k, v in params.items()}
  return params, targets, scales


def _joined(tree):
  """The dense and conv leaves as one (N_IN, 3 + 20) matrix."""
  rows = [_rows(np.asarray(tree[k]), SPANS[k]) for k in ("dense", "conv")]
  return {"joint": np.concatenate(rows, axis=1), "bias": np.asarray(tree["bias"])}


def _split(tree, shapes):
  dense, conv = np.split(np.asarray(tree["joint"]), [3], axis=1)
  return {
    "dense": _unrows(dense, shapes["dense"], SPANS["dense"]),
    "conv": _unrows(conv, shapes["conv"], SPANS["conv"]),
    "bias": np.asarray(tree["bias"]),
  }


def _train(tx, params, targets, scales, steps=100):
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)

  @jax.jit
  def step(params, state, t):
    grads = jax.tree.map(
      lambda p, y, s: s * (p - y) * (1 + 0.1 * jnp.sin(t + p)), params, targets, scales
    )
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for t in range(steps):
    params, state = step(params, state, t)
  return params, state


TIED = {
  "dense": oxr.group_lasso((1,), tie="in"),
  "conv": oxr.group_lasso((0, 1, 3), tie="in"),
  "bias": None,
}
JOINED = {"joint": oxr.group_lasso((1,)), "bias": None}

# λ per optimizer: rows 0 and 1 zero after 100 steps, rows 2 and 3 not.
LAMBDA = {"proxssi": 0.05}

OPTIMIZERS = {
  "ramda_exact": lambda reg, lam: oxr.ramda(
    0.05, momentum=0.1, reg_strength=lam, regularizer=reg, milestones=(15,)
  ),
  "ramda_pg": lambda reg, lam: oxr.ramda(
    0.05, momentum=0.1, reg_strength=lam, regularizer=reg, solver="pg", rtol=1e-12
  ),
  "rmda": lambda reg, lam: oxr.rmda(
    0.05, momentum=0.1, reg_strength=lam, regularizer=reg
  ),
  "proxgen": lambda reg, lam: oxr.proxgen(0.05, reg_strength=lam, regularizer=reg),
  "prox_sgd": lambda reg, lam: oxr.prox_sgd(
    0.05, momentum=0.1, reg_strength=lam, regularizer=reg
  ),
  "proxssi": lambda reg, lam: oxr.proxssi(0.05, reg_strength=lam, regularizer=reg),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_tied_leaves_train_as_their_joined_matrix(name):
  params, targets, scales = _problem()
  shapes = {k: v.shape for k, v in params.items()}
  make = OPTIMIZERS[name]
  lam = LAMBDA.get(name, 0.2)
  tied, tied_state = _train(make(TIED, lam), params, targets, scales)
  joined, _ = _train(
    make(JOINED, lam), _joined(params), _joined(targets), _joined(scales)
  )
  expected = _split(joined, shapes)
  for key in params:
    np.testing.assert_allclose(tied[key], expected[key], rtol=1e-10, atol=1e-12)
  # Ŵ (the weights, for the proximal methods) zeroes the rows that are zero in
  # both kernels' targets, jointly, and not feature 2.
  structured = oxr.prox_iterate(tied_state) if name[1:3] in ("am", "md") else tied
  zero = np.asarray(_joined(structured)["joint"]) == 0
  assert zero[:2].all() and not zero[2:].all(axis=1).any(), name


def test_untied_kernels_zero_rows_that_cannot_be_removed_from_both():
  """Without the tie, feature 2 is zero in the dense kernel only."""
  params, targets, scales = _problem()
  untied = {"dense": oxr.group_lasso((1,)), "conv": oxr.group_lasso((0, 1, 3))}
  untied["bias"] = None
  tx = OPTIMIZERS["prox_sgd"](untied, 0.2)
  trained, _ = _train(tx, params, targets, scales)
  per_leaf = oxr.sparsity(trained, untied)["leaves"]
  tied = oxr.sparsity(trained, TIED)
  assert int(per_leaf["['dense']"]["zero_groups"]) == 3
  assert int(per_leaf["['conv']"]["zero_groups"]) == 2
  assert int(tied["ties"]["in"]["zero_groups"]) == 2  # Removable: 0 and 1.


def test_target_sparsity_chooses_the_joined_matrix_lambda():
  params, targets, scales = _problem()
  shapes = {k: v.shape for k, v in params.items()}
  target = oxr.target_sparsity(0.5, until=20)
  tied, tied_state = _train(
    oxr.ramda(0.05, momentum=0.1, reg_strength=target, regularizer=TIED),
    params,
    targets,
    scales,
  )
  joined, joined_state = _train(
    oxr.ramda(0.05, momentum=0.1, reg_strength=target, regularizer=JOINED),
    _joined(params),
    _joined(targets),
    _joined(scales),
  )
  np.testing.assert_allclose(
    oxr.reg_strength(tied_state), oxr.reg_strength(joined_state), rtol=1e-12
  )
  expected = _split(joined, shapes)
  for key in params:
    np.testing.assert_allclose(tied[key], expected[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("allocation", ["uniform", "global", "erk"])
def test_magnitude_pruning_prunes_joint_groups(allocation):
  params, targets, scales = _problem()
  shapes = {k: v.shape for k, v in params.items()}

  def make(reg):
    return oxr.magnitude_pruning(
      optax.sgd(0.05),
      0.5,
      regularizer=reg,
      end_step=10,
      frequency=5,
      allocation=allocation,
    )

  tied, _ = _train(make(TIED), params, targets, scales, steps=12)
  joined, _ = _train(
    make(JOINED), _joined(params), _joined(targets), _joined(scales), steps=12
  )
  expected = _split(joined, shapes)
  for key in params:
    np.testing.assert_allclose(tied[key], expected[key], rtol=1e-12, atol=1e-14)
  rows = _joined(tied)["joint"]
  assert int((rows == 0).all(axis=1).sum()) == N_IN // 2  # Half of the joint rows.


def test_regularizer_value_and_sparsity_by_hand():
  params = {
    "q": jnp.array([[3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]),
    "k": jnp.array([[4.0], [0.0], [1.0]]),
  }
  tied = oxr.group_lasso((1,), tie="qk")
  specs = {"q": tied, "k": tied}
  # Joint groups of 3 entries: ‖(3, 0, 4)‖ = 5, 0, ‖(0, 0, 1)‖ = 1; ω = √3.
  np.testing.assert_allclose(oxr.regularizer_value(params, specs), 6 * np.sqrt(3))
  report = oxr.sparsity(params, specs)
  assert report["ties"]["qk"] == {
    "groups": 3,
    "zero_groups": 1,
    "group_size": 3,
    "leaves": ["['k']", "['q']"],
  }
  assert int(report["zero_groups"]) == 1 and report["groups"] == 3
  np.testing.assert_allclose(report["group_sparsity"], 1 / 3)
  # Each leaf's own rows, as before: q has 2 zero rows, k 1.
  assert int(report["leaves"]["['q']"]["zero_groups"]) == 2
  assert int(report["leaves"]["['k']"]["zero_groups"]) == 1
  table = oxr.sparsity_table(params, specs)
  assert re.search(r"tie 'qk'\s+2 leaves\s+1/3\s+33.33%\s+-", table), table


@pytest.mark.parametrize(
  "shape, dtype, weight, message",
  [
    ((4, 2), jnp.float64, "sqrt", "differ in groups: 4 against 3"),
    ((3, 2), jnp.float32, "sqrt", "differ in dtype: float32 against float64"),
    ((3, 2), jnp.float64, 2.0, "differ in weight"),
  ],
)
def test_a_tie_that_does_not_fit_names_both_leaves(shape, dtype, weight, message):
  # Leaves in key order: ['k'] is met first, so it is named first.
  params = {"q": jnp.ones((3, 2)), "k": jnp.ones(shape, dtype)}
  specs = {
    "q": oxr.group_lasso((1,), tie="t"),
    "k": oxr.group_lasso((1,), weight, tie="t"),
  }
  tx = oxr.ramda(0.1, reg_strength=0.1, regularizer=specs)
  with pytest.raises(ValueError, match=message) as error:
    tx.init(params)
  assert "['k']" in str(error.value) and "['q']" in str(error.value)


@pytest.mark.parametrize("tie", ["", 3])
def test_a_tie_key_is_a_nonempty_string(tie):
  with pytest.raises(ValueError, match="tie must be a nonempty string"):
    oxr.group_lasso((1,), tie=tie)
