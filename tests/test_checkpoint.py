"""Checkpoint/restore of model and optimizer state with Orbax (README, Flax).

Oracle: an uninterrupted run. A run saved mid-way, restored into freshly built
(differently initialised) objects and continued must end bit-identical to it on
CPU: parameters, every optimizer-state leaf (step counts, stage, dual averages,
anchor, Ŵ), and dtypes. The interruption falls between two milestones, so the
resumed run must also restart the dual average at the right step.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from flax.training import train_state

import optax_ramda as oxr

STEPS, INTERRUPT = 12, 6

# One transform object for every run: the jitted steps then compile once.
TX = optax.chain(
  optax.clip_by_global_norm(1.0),
  oxr.ramda(
    0.1,
    momentum=0.1,
    reg_strength=1e-2,
    regularizer=oxr.input_channel_groups,
    milestones=(4, 9),
  ),
)


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(STEPS, 16, 8)).astype(np.float32)
  return x, rng.integers(0, 3, (STEPS, 16))


def _assert_trees_identical(a, b):
  a_leaves, a_def = jax.tree.flatten(a)
  b_leaves, b_def = jax.tree.flatten(b)
  assert a_def == b_def
  for x, y in zip(a_leaves, b_leaves, strict=True):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def _nnx_run(seed):
  model = nnx.Sequential(
    nnx.Linear(8, 6, rngs=nnx.Rngs(seed)),
    nnx.relu,
    nnx.Linear(6, 3, rngs=nnx.Rngs(seed)),
  )
  return model, nnx.Optimizer(model, TX, wrt=nnx.Param)


@nnx.jit
def _nnx_step(model, optimizer, x, y):
  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  optimizer.update(model, nnx.grad(loss_fn)(model))


def test_nnx_resume_is_bit_identical(data, tmp_path):
  x, y = data
  model, optimizer = _nnx_run(0)
  for i in range(STEPS):
    _nnx_step(model, optimizer, x[i], y[i])

  model, optimizer = _nnx_run(0)
  for i in range(INTERRUPT):
    _nnx_step(model, optimizer, x[i], y[i])
  path = tmp_path / "nnx"
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, nnx.state((model, optimizer)))
    checkpointer.wait_until_finished()
  del model, optimizer

  resumed_model, resumed_optimizer = _nnx_run(1)  # A fresh process's objects.
  with ocp.StandardCheckpointer() as checkpointer:
    target = nnx.state((resumed_model, resumed_optimizer))
    nnx.update((resumed_model, resumed_optimizer), checkpointer.restore(path, target))
  assert int(resumed_optimizer.step[...]) == INTERRUPT
  for i in range(INTERRUPT, STEPS):
    _nnx_step(resumed_model, resumed_optimizer, x[i], y[i])

  initial = nnx.state(_nnx_run(0)[0])  # Guard: the runs do move the params.
  full_model, full_optimizer = _nnx_run(0)
  for i in range(STEPS):
    _nnx_step(full_model, full_optimizer, x[i], y[i])
  with pytest.raises(AssertionError):
    _assert_trees_identical(initial, nnx.state(full_model))
  _assert_trees_identical(
    nnx.state((resumed_model, resumed_optimizer)),
    nnx.state((full_model, full_optimizer)),
  )


class _Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(6)(x)))


MLP = _Mlp()  # Shared, so that every TrainState has the same static apply_fn.


def _linen_state(seed):
  params = MLP.init(jax.random.key(seed), jnp.ones((1, 8)))["params"]
  return train_state.TrainState.create(apply_fn=MLP.apply, params=params, tx=TX)


@jax.jit
def _linen_step(state, x, y):
  def loss_fn(params):
    logits = state.apply_fn({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))


def test_linen_train_state_resume_is_bit_identical(data, tmp_path):
  x, y = data
  full = _linen_state(0)
  for i in range(STEPS):
    full = _linen_step(full, x[i], y[i])

  state = _linen_state(0)
  for i in range(INTERRUPT):
    state = _linen_step(state, x[i], y[i])
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "linen", state)
    checkpointer.wait_until_finished()
    resumed = checkpointer.restore(tmp_path / "linen", _linen_state(1))
  assert int(resumed.step) == INTERRUPT
  for i in range(INTERRUPT, STEPS):
    resumed = _linen_step(resumed, x[i], y[i])
  _assert_trees_identical(resumed, full)
  prox = oxr.prox_iterate(resumed.opt_state)
  _assert_trees_identical(prox, oxr.prox_iterate(full.opt_state))
