"""Tests of the structured pruning export (optax_ramda/_pruning.py).

Oracles: the original model's outputs on random inputs (the pruned model must
reproduce them, to rounding, since the dropped channels only met zero weights),
and widths, kept indices, parameter and FLOP counts derived by hand from the
zero pattern planted in the weights.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optax_ramda as oxr


def _zero_rows(layer, rows):
  """Zeroes input rows (axis -2) of a layer's kernel: input groups."""
  kernel = layer.kernel
  kernel[...] = kernel[...].at[..., np.asarray(rows, int), :].set(0.0)


def _mlp(dtype):
  rngs = nnx.Rngs(0)
  kw = dict(param_dtype=dtype, rngs=rngs)
  model = nnx.Sequential(
    nnx.Linear(6, 8, **kw),
    nnx.relu,
    nnx.Linear(8, 5, **kw),
    jnp.tanh,
    nnx.Linear(5, 3, **kw),
  )
  for layer in model.layers[::2]:  # Nonzero biases, so dropping them matters.
    layer.bias[...] = jax.random.normal(jax.random.key(1), layer.bias.shape, dtype)
  _zero_rows(model.layers[0], [3])
  _zero_rows(model.layers[2], [1, 4, 6])
  _zero_rows(model.layers[4], [0, 2])
  return model


def _check_mlp(dtype, rtol, atol):
  model = _mlp(dtype)
  x = jax.random.normal(jax.random.key(2), (16, 6), dtype)
  pruned, report = oxr.prune_input_channels(model, x, prune_inputs=True)
  # By hand: hidden units {1, 4, 6} and {0, 2} and input 3 are dropped.
  assert report.widths_before == (8, 5, 3)
  assert report.widths_after == (5, 3, 3)
  np.testing.assert_array_equal(report.kept[0], [0, 2, 3, 5, 7])
  np.testing.assert_array_equal(report.kept[1], [1, 3, 4])
  np.testing.assert_array_equal(report.kept_inputs, [0, 1, 2, 4, 5])
  assert report.params_before == (6 * 8 + 8) + (8 * 5 + 5) + (5 * 3 + 3)
  assert report.params_after == (5 * 5 + 5) + (5 * 3 + 3) + (3 * 3 + 3)
  assert report.flops_before == 2 * (6 * 8 + 8 * 5 + 5 * 3)
  assert report.flops_after == 2 * (5 * 5 + 5 * 3 + 3 * 3)
  np.testing.assert_allclose(report.param_reduction, 1 - 60 / 119)
  out = pruned(x[:, report.kept_inputs])
  assert out.dtype == dtype
  np.testing.assert_allclose(out, model(x), rtol=rtol, atol=atol)
  assert pruned.layers[0].in_features == 5 and pruned.layers[2].out_features == 3
  assert model.layers[0].kernel.shape == (6, 8)  # The original is untouched.


def test_mlp_outputs_equal_float32():
  _check_mlp(jnp.float32, rtol=1e-5, atol=1e-6)


def test_mlp_outputs_equal_float64(x64):
  _check_mlp(jnp.float64, rtol=1e-13, atol=1e-14)


def _plant_cnn_zeros(conv2_kernel, dense1_kernel, dense2_kernel):
  """The zero pattern of the CNN tests, on kernel arrays; returns new ones."""
  conv2_kernel = conv2_kernel.at[:, :, jnp.array([1, 4]), :].set(0.0)
  # The flattened 4×4×8 map feeds dense 1: row r reads conv-2 channel r % 8.
  rows = np.arange(128).reshape(16, 8)
  dense1_kernel = dense1_kernel.at[rows[:, [0, 5]].ravel()].set(0.0)
  dense1_kernel = dense1_kernel.at[rows[:7, 3]].set(0.0)  # Channel 3: partly.
  dense2_kernel = dense2_kernel.at[jnp.array([2, 7])].set(0.0)
  return conv2_kernel, dense1_kernel, dense2_kernel


# By hand, for an 8×8×3 input: conv 1 (3×3, 3→6, SAME, 64 positions), pool to
# 4×4, conv 2 (3×3, 6→8, 16 positions), flatten 128, dense 128→10, dense 10→4.
# Dropped: conv-1 channels {1, 4}, conv-2 channels {0, 5}, dense-1 units {2, 7}.
CNN_WIDTHS = ((6, 8, 10, 4), (4, 6, 8, 4))
CNN_PARAMS = (
  (27 * 6 + 6) + 2 * 6 + (54 * 8 + 8) + (128 * 10 + 10) + (10 * 4 + 4),
  (27 * 4 + 4) + 2 * 4 + (36 * 6 + 6) + (96 * 8 + 8) + (8 * 4 + 4),
)
CNN_FLOPS = (
  2 * (27 * 6 * 64 + 54 * 8 * 16 + 128 * 10 + 10 * 4),
  2 * (27 * 4 * 64 + 36 * 6 * 16 + 96 * 8 + 8 * 4),
)


def _flatten(x):
  return x.reshape(x.shape[0], -1)


def test_cnn_outputs_equal():
  rngs = nnx.Rngs(0)
  model = nnx.Sequential(
    nnx.Conv(3, 6, (3, 3), rngs=rngs),
    nnx.BatchNorm(6, use_running_average=True, rngs=rngs),
    nnx.relu,
    functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2)),
    nnx.Conv(6, 8, (3, 3), rngs=rngs),
    nnx.Dropout(0.5, deterministic=True),
    nnx.relu,
    _flatten,
    nnx.Linear(128, 10, rngs=rngs),
    nnx.relu,
    nnx.Linear(10, 4, rngs=rngs),
  )
  bn = model.layers[1]
  for i, name in enumerate(("scale", "bias", "mean")):
    getattr(bn, name)[...] = jax.random.normal(jax.random.key(i), (6,))
  bn.var[...] = jax.random.uniform(jax.random.key(5), (6,), minval=0.5, maxval=2.0)
  conv2, dense1, dense2 = model.layers[4], model.layers[8], model.layers[10]
  for layer in (model.layers[0], conv2, dense1):
    layer.bias[...] = jax.random.normal(jax.random.key(6), layer.bias.shape)
  planted = _plant_cnn_zeros(conv2.kernel[...], dense1.kernel[...], dense2.kernel[...])
  for layer, kernel in zip((conv2, dense1, dense2), planted, strict=True):
    layer.kernel[...] = kernel

  x = jax.random.normal(jax.random.key(7), (32, 8, 8, 3))
  pruned, report = oxr.prune_input_channels(model, x)
  assert (report.widths_before, report.widths_after) == CNN_WIDTHS
  np.testing.assert_array_equal(report.kept[0], [0, 2, 3, 5])
  np.testing.assert_array_equal(report.kept[1], [1, 2, 3, 4, 6, 7])
  np.testing.assert_array_equal(report.kept[2], [0, 1, 3, 4, 5, 6, 8, 9])
  assert (report.params_before, report.params_after) == CNN_PARAMS
  assert (report.flops_before, report.flops_after) == CNN_FLOPS
  assert pruned.layers[1].mean.shape == (4,)
  np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)
  assert "FLOPs" in str(report)


class _LinenCnn(nn.Module):
  widths: tuple[int, int, int] = (6, 8, 10)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.widths[0], (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(self.widths[1], (3, 3))(x))
    x = nn.relu(nn.Dense(self.widths[2])(x.reshape(x.shape[0], -1)))
    return nn.Dense(4)(x)


def test_linen_params_outputs_equal():
  module = _LinenCnn()
  x = jax.random.normal(jax.random.key(7), (32, 8, 8, 3))
  variables = module.init(jax.random.key(0), x[:1])
  params = jax.tree.map(lambda a: a + 0.1, variables["params"])  # Nonzero biases.
  planted = _plant_cnn_zeros(
    params["Conv_1"]["kernel"], params["Dense_0"]["kernel"], params["Dense_1"]["kernel"]
  )
  for name, kernel in zip(("Conv_1", "Dense_0", "Dense_1"), planted, strict=True):
    params[name]["kernel"] = kernel
  stats = {
    "mean": jax.random.normal(jax.random.key(3), (6,)),
    "var": jax.random.uniform(jax.random.key(4), (6,), minval=0.5, maxval=2.0),
  }
  variables = {"params": params, "batch_stats": {"BatchNorm_0": stats}}
  layers = ["Conv_0", "BatchNorm_0", "Conv_1", "Dense_0", "Dense_1"]
  new_variables, report = oxr.prune_linen_params(module, variables, layers, x[:2])
  assert (report.widths_before, report.widths_after) == CNN_WIDTHS
  assert (report.params_before, report.params_after) == CNN_PARAMS
  assert (report.flops_before, report.flops_after) == CNN_FLOPS
  small = _LinenCnn(widths=report.widths_after[:3])
  np.testing.assert_allclose(
    small.apply(new_variables, x), module.apply(variables, x), rtol=1e-5, atol=1e-5
  )
  with pytest.raises(ValueError, match=r"missing \['Dense_1'\]"):
    oxr.prune_linen_params(module, variables, layers[:-1], x[:2])


def _two_linears(middle, zero_rows=(1,)):
  rngs = nnx.Rngs(0)
  model = nnx.Sequential(
    nnx.Linear(4, 6, rngs=rngs), middle, nnx.Linear(6, 2, rngs=rngs)
  )
  _zero_rows(model.layers[2], list(zero_rows))
  return model


def test_all_zero_layer_keeps_one_channel():
  model = _two_linears(nnx.relu, zero_rows=range(6))
  x = jax.random.normal(jax.random.key(0), (8, 4))
  pruned, report = oxr.prune_input_channels(model, x)
  assert report.widths_after == (1, 2)
  np.testing.assert_allclose(pruned(x), model(x), rtol=1e-6)


def test_flattened_input_is_kept_whole():
  rngs = nnx.Rngs(0)
  model = [_flatten, nnx.Linear(8, 3, rngs=rngs), nnx.relu, nnx.Linear(3, 2, rngs=rngs)]
  _zero_rows(model[1], [0, 5])  # Input rows: not pruned without prune_inputs.
  _zero_rows(model[3], [1])
  x = jax.random.normal(jax.random.key(0), (8, 2, 4))
  pruned, report = oxr.prune_input_channels(model, x)
  assert isinstance(pruned, list) and report.widths_after == (2, 2)
  np.testing.assert_array_equal(report.kept_inputs, np.arange(4))
  assert pruned[1].kernel.shape == (8, 2)
  np.testing.assert_allclose(
    pruned[3](pruned[2](pruned[1](_flatten(x)))),
    model[3](model[2](model[1](_flatten(x)))),
    rtol=1e-6,
  )


def test_unsupported_chains_raise():
  x = jnp.ones((3, 4))
  # A norm over features: dropping a channel changes its statistics.
  layer_norm = nnx.LayerNorm(6, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="mixes features"):
    oxr.prune_input_channels(_two_linears(layer_norm), x)
  oxr.prune_input_channels(
    _two_linears(layer_norm, zero_rows=()), x
  )  # Nothing to drop.
  # A parameter-free callable that is not channelwise: caught by the check.
  with pytest.raises(ValueError, match="differs from the original"):
    oxr.prune_input_channels(_two_linears(jax.nn.softmax), x)
  # Modules outside the supported set.
  general = nnx.LinearGeneral(6, 6, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"LinearGeneral.*not supported"):
    oxr.prune_input_channels(_two_linears(general), x)
  grouped = [nnx.Conv(4, 4, (3,), feature_group_count=2, rngs=nnx.Rngs(0))]
  with pytest.raises(ValueError, match="grouped"):
    oxr.prune_input_channels(grouped, jnp.ones((1, 5, 4)))
  # Feature counts that match neither one to one nor as a flattened map.
  rngs = nnx.Rngs(0)
  split = [
    nnx.Linear(4, 6, rngs=rngs),
    lambda h: h.reshape(h.shape[0], 2, 3),
    nnx.Linear(3, 2, rngs=rngs),
  ]
  with pytest.raises(ValueError, match="Cannot match the 3 input features"):
    oxr.prune_input_channels(split, x)
  # prune_inputs needs the first layer to read the input's last axis.
  flat = [_flatten, nnx.Linear(8, 2, rngs=rngs)]
  with pytest.raises(ValueError, match="prune_inputs=True"):
    oxr.prune_input_channels(flat, jnp.ones((3, 2, 4)), prune_inputs=True)
  # Nothing to prune at all.
  with pytest.raises(ValueError, match="no Linear/Dense/Conv layer"):
    oxr.prune_input_channels([nnx.relu], x)
  # A BatchNorm over another axis than the last.
  across = nnx.BatchNorm(3, axis=0, rngs=rngs)
  with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm\).*last axis"):
    oxr.prune_input_channels(_two_linears(across), x)
  # A BatchNorm whose width matches neither the channels nor the rows after it.
  folded = [
    nnx.Linear(4, 6, rngs=rngs),
    lambda h: h.reshape(h.shape[0], 2, 3),
    nnx.BatchNorm(3, rngs=rngs),
    lambda h: h.reshape(h.shape[0], 6),
    nnx.Linear(6, 2, rngs=rngs),
  ]
  with pytest.raises(ValueError, match=r"has 3 features, matching neither the 6"):
    oxr.prune_input_channels(folded, x)
  # Something that is neither a module nor callable.
  with pytest.raises(ValueError, match=r"layer 1 \(int\) is not callable"):
    oxr.prune_input_channels(_two_linears(3), x)


class _CalledTwice(nn.Module):
  @nn.compact
  def __call__(self, x):
    dense = nn.Dense(4)
    return dense(dense(x))


def test_unsupported_linen_variables_raise():
  x = jnp.ones((2, 4))
  module = _CalledTwice()
  variables = module.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="Dense_0 is called 2 times; need once"):
    oxr.prune_linen_params(module, variables, ["Dense_0"], x)
  vector = {"params": {"Dense_0": {"kernel": jnp.ones(4)}}}
  with pytest.raises(ValueError, match="Dense_0: a kernel of rank 1"):
    oxr.prune_linen_params(module, vector, ["Dense_0"], x)
  embed = {"params": {"Embed_0": {"embedding": jnp.ones((5, 4))}}}
  with pytest.raises(
    ValueError, match=r"Embed_0: a layer with parameters \['embedding'\]"
  ):
    oxr.prune_linen_params(module, embed, ["Embed_0"], x)
