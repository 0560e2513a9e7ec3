"""Tests of the structure reports (optax_ramda/_sparsity.py).

Oracles: counts by hand on small trees, and a NumPy transcription of docs/algorithm.md#the-problem-and-the-regularizers
(weighted group sparsity 1 − Σ_g |g|·[W_g ≠ 0] / Σ_g |g| over regularized
leaves; unstructured sparsity over all entries) on random sparse trees.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_ramda as oxr


def _numpy_report(params, axes_by_leaf):
  """docs/algorithm.md#the-problem-and-the-regularizers in NumPy: axes_by_leaf maps leaf name -> group axes or None."""
  total = zero_weight = 0
  zero_entries = entries = 0
  for name, w in params.items():
    w = np.asarray(w)
    entries += w.size
    zero_entries += int(np.sum(w == 0))
    axes = axes_by_leaf[name]
    if axes is None:
      continue
    size = int(np.prod([w.shape[a] for a in axes])) if axes else 1
    nonzero = np.any(w != 0, axis=axes) if axes else w != 0
    total += nonzero.size * size
    zero_weight += int(np.sum(~nonzero)) * size
  return zero_weight / total, zero_entries / entries


def test_hand_counts():
  params = {
    "dense": jnp.array([[1.0, 2.0], [0.0, 0.0], [0.0, 3.0]]),  # rows: 1 of 3 zero
    "conv": jnp.zeros((2, 2, 3, 4)).at[:, :, 0, :].set(1.0),  # 2 of 3 channels zero
    "l1": jnp.array([0.0, 1.0, 0.0, 0.0]),  # 3 of 4 entries zero
    "bias": jnp.zeros(5),
  }
  specs = {
    "dense": oxr.group_lasso(axes=(1,)),
    "conv": oxr.group_lasso(axes=(0, 1, 3)),
    "l1": oxr.l1(),
    "bias": None,
  }
  report = oxr.sparsity(params, specs)
  # Weighted: zero 1·2 + 2·16 + 3·1 = 37 of 3·2 + 3·16 + 4·1 = 58.
  np.testing.assert_allclose(report["group_sparsity"], 37 / 58, rtol=1e-6)
  assert int(report["zero_groups"]) == 1 + 2 + 3
  assert report["groups"] == 3 + 3 + 4
  # Entries: zeros 3 + 32 + 3 + 5 = 43 of 6 + 48 + 4 + 5 = 63.
  np.testing.assert_allclose(report["unstructured_sparsity"], 43 / 63, rtol=1e-6)
  assert report["entries"] == 63
  conv = report["leaves"]["['conv']"]
  assert (int(conv["zero_groups"]), conv["groups"], conv["group_size"]) == (2, 3, 16)
  assert "groups" not in report["leaves"]["['bias']"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_transcription_under_jit(seed):
  rng = np.random.default_rng(seed)
  shapes = {"a": (5, 4), "b": (3, 3, 4, 6), "c": (7,), "d": (4, 3)}
  params = {}
  for name, shape in shapes.items():
    w = rng.normal(size=shape).astype(np.float32)
    w[rng.random(shape) < 0.3] = 0.0
    w[rng.integers(0, shape[0], 2)] = 0.0  # Some whole groups along axis 0.
    params[name] = jnp.asarray(w)
  axes = {"a": (1,), "b": (0, 1, 3), "c": (), "d": None}
  specs = {
    "a": oxr.group_lasso(axes["a"]),
    "b": oxr.group_lasso(axes["b"]),
    "c": oxr.l1(),
    "d": None,
  }
  expected_group, expected_entry = _numpy_report(params, axes)
  report = jax.jit(lambda p: oxr.sparsity(p, specs))(params)
  np.testing.assert_allclose(report["group_sparsity"], expected_group, rtol=1e-6)
  np.testing.assert_allclose(report["unstructured_sparsity"], expected_entry, rtol=1e-6)


def test_table_rows_and_totals():
  params = {
    "dense": jnp.array([[1.0, 2.0], [0.0, 0.0], [0.0, 3.0]]),
    "bias": jnp.ones(2),
  }
  specs = {"dense": oxr.group_lasso(axes=(1,)), "bias": None}
  lines = oxr.sparsity_table(params, specs).splitlines()
  assert len(lines) == 4  # Header, two leaves, totals.
  rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
  assert rows["['dense']"] == ["(3,", "2)", "1/3", "33.33%", "50.00%"]
  assert rows["['bias']"] == ["(2,)", "-", "-", "0.00%"]
  assert rows["total"] == ["8", "params", "1/3", "33.33%", "37.50%"]  # 3 of 8 zero
