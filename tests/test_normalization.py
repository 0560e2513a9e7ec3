"""Tests of recompute_batch_stats (optax_ramda/_normalization.py).

Oracle: a NumPy float64 forward pass of the same two-BatchNorm network in
training mode (each BatchNorm normalizes with its batch's mean and biased
variance), whose per-batch statistics averaged over the batches are the
expected running statistics. The training loop through RAMDA's ramp is in
tests/test_flax_examples.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optax_ramda as oxr

EPS = 1e-5  # Flax's BatchNorm epsilon (the default of both APIs)
BATCHES = [
  np.random.default_rng(i).normal(i, 1 + i, size=(6, 3)).astype(np.float32)
  for i in range(3)
]


def _numpy_stats(w1, b1, s1, c1, w2, b2):
  """Expected (mean, var) of both BatchNorms: averages of per-batch statistics."""
  stats = {1: [], 2: []}
  for x in BATCHES:
    h = x.astype(np.float64) @ w1 + b1
    stats[1].append((h.mean(0), h.var(0)))
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + EPS) * s1 + c1
    h = np.maximum(h, 0) @ w2 + b2
    stats[2].append((h.mean(0), h.var(0)))
  return {
    k: tuple(np.mean(v, axis=0) for v in zip(*s, strict=True)) for k, s in stats.items()
  }


class _Nnx(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(3, 4, rngs=rngs)
    self.n1 = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
    self.l2 = nnx.Linear(4, 2, rngs=rngs)
    self.n2 = nnx.BatchNorm(2, momentum=0.9, use_running_average=True, rngs=rngs)

  def __call__(self, x):
    return self.n2(self.l2(jax.nn.relu(self.n1(self.l1(x)))))


def test_nnx_statistics_are_the_averages_of_the_batch_statistics():
  model = _Nnx(nnx.Rngs(0))
  model.n1.scale[...] = jnp.array([1.0, 2.0, 0.5, 1.5])  # Not the identity.
  model.n1.bias[...] = jnp.array([0.1, -0.2, 0.3, 0.0])
  params = nnx.state(model, nnx.Param)
  assert oxr.recompute_batch_stats(model, iter(BATCHES)) is model
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.as_pure(params))
  expected = _numpy_stats(
    p["l1"]["kernel"],
    p["l1"]["bias"],
    p["n1"]["scale"],
    p["n1"]["bias"],
    p["l2"]["kernel"],
    p["l2"]["bias"],
  )
  for k, norm in ((1, model.n1), (2, model.n2)):
    np.testing.assert_allclose(norm.mean[...], expected[k][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.var[...], expected[k][1], rtol=1e-5, atol=1e-6)
  # The layers' settings are restored.
  assert (model.n1.momentum, model.n2.momentum) == (0.99, 0.9)
  assert model.n1.use_running_average and model.n2.use_running_average


class _Linen(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(4)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dense(2)(nn.relu(x))
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


def test_linen_statistics_are_the_averages_of_the_batch_statistics():
  model = _Linen()
  variables = model.init(jax.random.key(0), BATCHES[0], train=False)

  def forward(v, x):
    return model.apply(v, x, train=True, mutable=["batch_stats"])

  new = oxr.recompute_batch_stats(variables, BATCHES, forward)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])
  expected = _numpy_stats(
    p["Dense_0"]["kernel"],
    p["Dense_0"]["bias"],
    p["BatchNorm_0"]["scale"],
    p["BatchNorm_0"]["bias"],
    p["Dense_1"]["kernel"],
    p["Dense_1"]["bias"],
  )
  for k, name in ((1, "BatchNorm_0"), (2, "BatchNorm_1")):
    stats = new["batch_stats"][name]
    np.testing.assert_allclose(stats["mean"], expected[k][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], expected[k][1], rtol=1e-5, atol=1e-6)
  assert new["params"] is variables["params"]


def test_bad_input_is_refused():
  model = _Nnx(nnx.Rngs(0))
  with pytest.raises(ValueError, match="at least one batch"):
    oxr.recompute_batch_stats(model, [])
  with pytest.raises(ValueError, match=r"no nnx\.BatchNorm"):
    oxr.recompute_batch_stats(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), BATCHES)
  variables = {"params": {"w": jnp.ones(2)}}
  with pytest.raises(ValueError, match="needs `forward`"):
    oxr.recompute_batch_stats(variables, BATCHES)
  with pytest.raises(ValueError, match="'batch_stats' collection"):
    oxr.recompute_batch_stats(variables, BATCHES, lambda v, x: (x, v))

  class Frozen(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.BatchNorm(use_running_average=False, momentum=1.0)(x)

  frozen = Frozen()
  variables = frozen.init(jax.random.key(0), BATCHES[0])
  with pytest.raises(ValueError, match="momentum 1"):
    oxr.recompute_batch_stats(
      variables,
      BATCHES,
      lambda v, x: frozen.apply(v, x, mutable=["batch_stats"]),
    )
