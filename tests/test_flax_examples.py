"""Flax's own example patterns, small, trained with the library's optimizers.

Each pattern is a tiny version of a model from Flax's examples, trained for a
few steps the way the example trains it; each test checks the grouping that
the presets give (against hand-derived axes) and what the example needs of
the optimizer state:

* scan-over-layers (``examples/nnx_toy_examples/06_scan_over_layers.py``):
  ``nnx.vmap``-stacked blocks, one group per (layer, input feature);
* Einsum attention with explicit specs (gemma's ``nnx.Einsum`` projections);
* a bidirectional LSTM (sst2), in Linen, with a ``TrainState``;
* a BatchNorm CNN trained through RAMDA's ramp, whose eval-mode accuracy
  :func:`recompute_batch_stats` restores;
* lm1b's logical partitioning (Linen) and gemma's ``out_sharding`` metadata
  (NNX) on a 2 × 2 CPU mesh, for every optimizer, equal to one device
  (``tests/multidevice/flax_worker.py``, one subprocess).
"""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import optax_ramda as oxr
from tests.multidevice import launch


def _zero_rows(w, axes):
  """Per group (the entries along `axes`), whether it is exactly zero."""
  return np.all(np.asarray(w) == 0, axis=axes)


# ---------------------------------------------------------------------------
# Scan over layers: Block = Linear + BatchNorm + Dropout, stacked by nnx.vmap,
# applied by nnx.scan (the toy example, with its dimensions shrunk).

LAYERS, DIM = 3, 8


class _Block(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(DIM, DIM, rngs=rngs)
    self.bn = nnx.BatchNorm(DIM, rngs=rngs)
    self.dropout = nnx.Dropout(0.1, rngs=rngs)

  def __call__(self, x):
    return jax.nn.gelu(self.dropout(self.bn(self.linear(x))))


class _ScanMLP(nnx.Module):
  def __init__(self, rngs):
    @nnx.split_rngs(splits=LAYERS)
    @nnx.vmap(axis_size=LAYERS)
    def create_block(rngs):
      return _Block(rngs)

    self.layers = create_block(rngs)

  def __call__(self, x):
    @nnx.scan
    def scan_fn(x, block):
      return block(x), None

    return scan_fn(x, self.layers)[0]


def test_scan_over_layers_groups_per_layer_and_input():
  model = _ScanMLP(nnx.Rngs(0))
  kernel = ("layers", "linear", "kernel")
  assert model.layers.linear.kernel.shape == (LAYERS, DIM, DIM)
  from_module = oxr.input_channel_groups(model)
  from_state = oxr.input_channel_groups(nnx.state(model, nnx.Param))
  # (L, in, out): a group is one layer's row of one input feature.
  assert from_module["layers"]["linear"]["kernel"].axes == (2,)
  assert from_state["layers"]["linear"]["kernel"].axes == (2,)
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    oxr.ramda(
      0.5, momentum=0.5, reg_strength=0.02, regularizer=oxr.input_channel_groups
    ),
  )
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, DIM)), jnp.float32)
  y = x[:, ::-1]  # A target that needs every layer.

  @nnx.jit
  def step(model, optimizer):
    def loss(model):
      return jnp.mean((model(x) - y) ** 2)

    optimizer.update(model, nnx.grad(loss)(model))

  for _ in range(4):
    step(model, optimizer)
  w = oxr.prox_iterate(optimizer.opt_state)
  for name in kernel:
    w = w[name]
  zero = _zero_rows(w[...], (2,))  # (L, in): per layer, per input
  assert zero.shape == (LAYERS, DIM)
  # Layers are grouped apart: some layer has an input zeroed that another
  # layer still uses (one group spanning all layers could not do that).
  assert zero.any() and not zero.all(axis=0).all()
  report = oxr.sparsity(w[...], oxr.group_lasso(axes=(2,)))
  assert int(report["groups"]) == LAYERS * DIM
  assert int(report["zero_groups"]) == int(zero.sum())


# ---------------------------------------------------------------------------
# Einsum attention (gemma): nnx.Einsum q/k/v/o projections, whose layout the
# presets refuse to guess; the user completes the spec tree.


class _EinsumAttention(nnx.Module):
  def __init__(self, rngs, features=8, heads=2, head_dim=4):
    self.q = nnx.Einsum("BTD,DNH->BTNH", (features, heads, head_dim), rngs=rngs)
    self.kv = nnx.Einsum("BSD,CDNH->CBSNH", (2, features, heads, head_dim), rngs=rngs)
    self.o = nnx.Einsum("BTNH,NHD->BTD", (heads, head_dim, features), rngs=rngs)

  def __call__(self, x):
    q = self.q(x)
    k, v = self.kv(x)
    logits = jnp.einsum("BTNH,BSNH->BNTS", q, k) / 2.0
    return self.o(jnp.einsum("BNTS,BSNH->BTNH", jax.nn.softmax(logits), v))


def test_einsum_attention_with_explicit_specs():
  model = _EinsumAttention(nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\['kv'\]\['kernel'\].*nnx\.Einsum"):
    oxr.input_channel_groups(model)
  specs = oxr.input_channel_groups(model, unknown="skip")
  # One group per input feature D: the q kernel (D, N, H) spans (1, 2); the
  # fused k/v kernel (2, D, N, H) spans the k and v rows of D: (0, 2, 3); the
  # output kernel (N, H, D) groups per (head, head feature): (2,).
  specs["q"]["kernel"] = oxr.group_lasso(axes=(1, 2))
  specs["kv"]["kernel"] = oxr.group_lasso(axes=(0, 2, 3))
  specs["o"]["kernel"] = oxr.group_lasso(axes=(2,))
  tx = oxr.ramda(0.5, momentum=1.0, reg_strength=0.5, regularizer=specs)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 8)), jnp.float32)

  @nnx.jit
  def step(model, optimizer):
    def loss(model):
      return jnp.mean((model(x) - x) ** 2)

    optimizer.update(model, nnx.grad(loss)(model))

  for _ in range(3):
    step(model, optimizer)
  report = oxr.sparsity(model, specs)["leaves"]
  assert int(report["['q']['kernel']"]["groups"]) == 8
  assert int(report["['kv']['kernel']"]["groups"]) == 8
  assert int(report["['o']['kernel']"]["groups"]) == 2 * 4
  kv = np.asarray(model.kv.kernel[...])
  zero = _zero_rows(kv, (0, 2, 3))
  assert zero.any()  # An input feature removed from k and v together.
  assert int(report["['kv']['kernel']"]["zero_groups"]) == int(zero.sum())


# ---------------------------------------------------------------------------
# sst2's bidirectional LSTM (Linen), trained with a TrainState.


class _BiLSTM(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Embed(10, 6)(x)
    x = nn.Bidirectional(
      nn.RNN(nn.OptimizedLSTMCell(5)), nn.RNN(nn.OptimizedLSTMCell(5))
    )(x)
    return nn.Dense(2)(x[:, -1])


def test_bilstm_linen_train_state():
  model = _BiLSTM()
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, 10, size=(8, 6)))
  labels = jnp.asarray(np.random.default_rng(3).integers(0, 2, size=8))
  params = model.init(jax.random.key(0), tokens)["params"]
  specs = oxr.input_channel_groups(params)
  flat = {
    jax.tree_util.keystr(p): s
    for p, s in jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda s: s is None or oxr.is_spec(s)
    )[0]
  }
  gates = {
    k: s for k, s in flat.items() if k.endswith("['kernel']") and "LSTMCell" in k
  }
  # Both directions: the four gates' input (i) and recurrent (h) kernels, each
  # (in, hidden) with a group per row; the embedding unregularized.
  assert len(gates) == 2 * 8
  assert all(s.axes == (1,) for s in gates.values())
  assert flat["['Embed_0']['embedding']"] is None
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=params,
    tx=optax.chain(
      optax.clip_by_global_norm(1.0),
      oxr.ramda(0.3, reg_strength=0.2, regularizer=oxr.input_channel_groups),
    ),
  )

  @jax.jit
  def step(state):
    def loss(params):
      logits = state.apply_fn({"params": params}, tokens)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return state.apply_gradients(grads=jax.grad(loss)(state.params))

  for _ in range(3):
    state = step(state)
  prox = oxr.prox_iterate(state.opt_state)
  assert int(oxr.sparsity(prox, oxr.input_channel_groups)["zero_groups"]) > 0
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


# ---------------------------------------------------------------------------
# A BatchNorm CNN (mnist's, on 8 × 8 digits) trained through RAMDA's ramp:
# the running statistics lag the weights, and re-estimating them restores
# the eval-mode accuracy to the training-mode one.


class _BatchNormCNN(nnx.Module):
  def __init__(self, rngs):
    self.c1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.b1 = nnx.BatchNorm(8, rngs=rngs)
    self.c2 = nnx.Conv(8, 16, (3, 3), rngs=rngs)
    self.b2 = nnx.BatchNorm(16, rngs=rngs)
    self.out = nnx.Linear(16, 10, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.b1(self.c1(x)))
    x = jax.nn.relu(self.b2(self.c2(x)))
    return self.out(x.mean((1, 2)))


def test_batchnorm_cnn_statistics_after_the_ramp():
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
  order = np.random.default_rng(0).permutation(len(x))
  x, y = x[order], y[order]
  train_x, train_y, test_x, test_y = x[:1400], y[:1400], x[1400:], y[1400:]
  model = _BatchNormCNN(nnx.Rngs(0))
  # Ramp from step 100: c = min(0.3·√r, 1) reaches 1 after 12 steps.
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    oxr.ramda(
      0.05,
      momentum=0.3,
      reg_strength=1e-3,
      regularizer=oxr.input_channel_groups,
      milestones=(100,),
    ),
  )
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, xb, yb):
    def loss(model):
      return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    optimizer.update(model, nnx.grad(loss)(model))

  @nnx.jit
  def accuracy(model):
    return jnp.mean(jnp.argmax(model(test_x), -1) == test_y)

  batch = 64
  starts = range(0, len(train_x) - batch + 1, batch)
  for i in range(150):
    j = starts[i % len(starts)]
    step(model, optimizer, train_x[j : j + batch], train_y[j : j + batch])
  model.eval()
  before = float(accuracy(model))
  oxr.recompute_batch_stats(model, [train_x[j : j + batch] for j in starts])
  after = float(accuracy(model))
  model.train()  # Batch statistics of the test set itself: the reference.
  reference = float(accuracy(model))
  assert after >= reference - 0.03
  assert after >= before + 0.1, (before, after)


# ---------------------------------------------------------------------------
# lm1b's and gemma's sharding recipes on a 2 × 2 mesh (one subprocess).

TIMEOUT = 300


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
  out = tmp_path_factory.mktemp("flax_recipes") / "report.json"
  group = launch.single(
    "flax_worker",
    [*launch.module("flax_worker"), str(out)],
    devices=4,
    timeout=TIMEOUT,
  ).start()
  while not group.step():
    time.sleep(0.1)
  assert group.error is None, group.report()
  return json.loads(out.read_text())


OPTIMIZERS = ["ramda", "rmda", "proxgen", "proxssi", "prox_sgd"]


@pytest.mark.parametrize("recipe", ["linen", "nnx"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sharding_recipes_equal_one_device(sharded, recipe, name):
  run = sharded[f"{recipe}/{name}"]
  assert "error" not in run, run.get("error")
  # float64 on a 2 × 2 mesh against one device: equal to rounding.
  assert run["params_diff"] < 1e-12
  assert run["state_diff"] < 1e-12
  # Per-kernel entries follow the kernel (lm1b's rules map embed→fsdp and
  # mlp→tp; gemma's metadata names the mesh axes), per-leaf scalars are
  # replicated.
  first, second = ("Dense_0", "Dense_1") if recipe == "linen" else ("l1", "l2")
  checked = 0
  for path, spec in run["shardings"].items():
    if "['kernel']" not in path:
      continue
    checked += 1
    if ".iterations" in path:
      assert spec == "P()", path
    elif f"['{first}']" in path:
      assert spec == "P('fsdp', 'tp')", path
    elif f"['{second}']" in path:
      assert spec == "P('tp', 'fsdp')", path
  assert checked >= 4
