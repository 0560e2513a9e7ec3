"""Flax's two sharding recipes with every optimizer, on a 2 × 2 mesh and one device.

Run with 4 CPU devices (``launch.single(..., devices=4)``); writes a JSON report
to the path given as the only argument. For each optimizer of the library :

* **Linen, lm1b's ``setup_initial_state``**: params created with
  ``nn.with_logical_partitioning``; ``jax.eval_shape(TrainState.create)`` →
  ``nn.get_partition_spec`` → ``nn.logical_to_mesh_sharding`` →
  ``jax.jit(init, out_shardings=...)``; the boxes unboxed; a train step jitted
  with the state's shardings in and out.
* **NNX, gemma's ``fsdp_tp_sharding``**: ``nnx.Linear`` kernels created with
  ``kernel_metadata={"out_sharding": P("fsdp", "tp")}`` under
  ``jax.set_mesh`` (Explicit axes), ``nnx.Optimizer``, an ``nnx.jit`` step.

Each recipe runs on the 2 × 2 mesh and on a 1 × 1 mesh of one device, in
float64; the report holds the largest difference of the params (and of the
optimizer states) between the two, and the sharding of the state's per-kernel
and per-leaf-scalar entries.
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.training import train_state
from jax.sharding import AxisType, Mesh
from jax.sharding import PartitionSpec as P

import optax_ramda as oxr

STEPS = 4
RULES = (("batch", "fsdp"), ("embed", "fsdp"), ("mlp", "tp"))
PRESET = oxr.input_channel_groups
OPTIMIZERS = {
  "ramda": lambda: oxr.ramda(
    0.3, momentum=0.3, reg_strength=0.05, regularizer=PRESET, milestones=(2,)
  ),
  "rmda": lambda: oxr.rmda(0.3, reg_strength=0.05, regularizer=PRESET),
  "proxgen": lambda: oxr.proxgen(1e-2, reg_strength=0.05, regularizer=PRESET),
  "proxssi": lambda: oxr.proxssi(1e-2, reg_strength=0.05, regularizer=PRESET),
  "prox_sgd": lambda: oxr.prox_sgd(0.3, reg_strength=0.05, regularizer=PRESET),
}
X = np.random.default_rng(0).normal(size=(8, 8))
Y = np.random.default_rng(1).normal(size=(8, 4))


def _meshes(axis_type):
  devices = np.array(jax.devices())
  return {
    "mesh": Mesh(
      devices[:4].reshape(2, 2), ("fsdp", "tp"), axis_types=(axis_type,) * 2
    ),
    "one": Mesh(devices[:1].reshape(1, 1), ("fsdp", "tp"), axis_types=(axis_type,) * 2),
  }


def _logical(init, names):
  return nn.with_logical_partitioning(init, names)


class LinenMLP(nn.Module):
  """lm1b's MlpBlock pattern: logically partitioned kernels."""

  @nn.compact
  def __call__(self, x):
    dense = dict(param_dtype=jnp.float64, dtype=jnp.float64)
    x = nn.Dense(
      16,
      kernel_init=_logical(nn.initializers.lecun_normal(), ("embed", "mlp")),
      bias_init=_logical(nn.initializers.zeros, ("mlp",)),
      **dense,
    )(x)
    return nn.Dense(
      4,
      kernel_init=_logical(nn.initializers.lecun_normal(), ("mlp", "embed")),
      bias_init=_logical(nn.initializers.zeros, ("embed",)),
      **dense,
    )(nn.relu(x))


def _specs(tree):
  return jax.tree.map(lambda x: str(x.sharding.spec), tree)


def linen(make_tx, mesh):
  model = LinenMLP()
  tx = make_tx()

  def init(rng):
    variables = model.init(rng, jnp.ones((1, 8)))
    return train_state.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx
    )

  abstract = jax.eval_shape(init, jax.random.key(0))
  logical = nn.get_partition_spec(abstract)
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    shardings = nn.logical_to_mesh_sharding(logical, mesh, RULES)
    state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
    state = nn.meta.unbox(state)

    def step(state, x, y):
      def loss(params):
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

      return state.apply_gradients(grads=jax.grad(loss)(state.params))

    step = jax.jit(step, in_shardings=(shardings, None, None), out_shardings=shardings)
    for _ in range(STEPS):
      state = step(state, X, Y)
  return state.params, state.opt_state


class NnxMLP(nnx.Module):
  """gemma's fsdp_tp_sharding pattern: out_sharding metadata on the kernels."""

  def __init__(self, rngs):
    kw = dict(param_dtype=jnp.float64, dtype=jnp.float64, rngs=rngs)
    self.l1 = nnx.Linear(8, 16, kernel_metadata={"out_sharding": P("fsdp", "tp")}, **kw)
    self.l2 = nnx.Linear(16, 4, kernel_metadata={"out_sharding": P("tp", "fsdp")}, **kw)

  def __call__(self, x):
    # Explicit axes: a matmul over a sharded contracting axis names its output.
    h = jax.nn.relu(self.l1(x, out_sharding=P(None, "tp")))
    return self.l2(h, out_sharding=P())


@nnx.jit
def nnx_step(model, optimizer, x, y):
  def loss(model):
    return jnp.mean((model(x) - y) ** 2)

  optimizer.update(model, nnx.grad(loss)(model))


def nnx_recipe(make_tx, mesh):
  with jax.set_mesh(mesh):
    model = NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
    x = jax.device_put(X, P())
    y = jax.device_put(Y, P())
    for _ in range(STEPS):
      nnx_step(model, optimizer, x, y)
    return nnx.state(model, nnx.Param), optimizer.opt_state


def _max_diff(a, b):
  diffs = jax.tree.map(
    lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b
  )
  return max(jax.tree.leaves(diffs), default=0.0)


def _state_report(state):
  """The state's sharding specs, flattened as {path: spec}."""
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(p): str(x.sharding.spec) for p, x in flat}


def _structured(params, state):
  found = jax.tree_util.tree_flatten_with_path(state)[0]
  if not any(".prox" in jax.tree_util.keystr(p) for p, _ in found):
    return params
  prox = oxr.prox_iterate(state)
  return nnx.as_pure(prox) if isinstance(prox, nnx.State) else prox


def main(out_path):
  # Here, not at import: pytest imports this module to collect its doctests, and
  # a module-level switch would turn float64 on in every test process.
  jax.config.update("jax_enable_x64", True)
  report = {}
  for recipe, run, axis_type in (
    ("linen", linen, AxisType.Auto),
    ("nnx", nnx_recipe, AxisType.Explicit),
  ):
    meshes = _meshes(axis_type)
    for name, make_tx in OPTIMIZERS.items():
      try:
        params, state = run(make_tx, meshes["mesh"])
        params_1, state_1 = run(make_tx, meshes["one"])
      except Exception as e:  # Reported, so that every case shows.
        report[f"{recipe}/{name}"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        continue
      report[f"{recipe}/{name}"] = {
        "params_diff": _max_diff(params, params_1),
        "state_diff": _max_diff(state, state_1),
        "shardings": _state_report(state),
        # Ŵ for the dual-averaging methods (their averaged w is structured
        # only once the ramp ends), the params for the others.
        "zero_groups": int(
          oxr.sparsity(_structured(params, state), PRESET)["zero_groups"]
        ),
      }
  with open(out_path, "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
