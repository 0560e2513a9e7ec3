"""The training problem shared by the multi-device tests and their workers.

A tiny conv net (a ``Conv`` kernel (3, 3, 8, 8) and a ``Dense`` kernel
(8, 16), both with one group-lasso group per input channel) trained for a few
steps on fixed random data. The same step runs on one device, under jit with
the params, state and batch sharded over a mesh, under ``pmap`` with
``lax.pmean``'d gradients, and over several processes; the results must agree.

Importing this module has no side effects (pytest imports it for doctests):
the device count is set by whoever launches the worker.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_ramda as oxr

STEPS = 6
BATCH = 16  # 2 examples per device on 8 devices
CLASSES = 16
SPECS = {
  "conv": oxr.group_lasso(axes=(0, 1, 3)),  # (kh, kw, in, out): group = input channel
  "dense": oxr.group_lasso(axes=(1,)),  # (in, out): group = input feature
  "bias": None,
}

TIED_SPECS = {
  "conv": oxr.group_lasso(axes=(0, 1, 3), tie="in"),
  "dense": oxr.group_lasso(axes=(1,), tie="in"),
  "bias": None,
}


def _ramda(regularizer, **kwargs) -> optax.GradientTransformation:
  """RAMDA as every RAMDA case here runs it, on `regularizer`."""
  return oxr.ramda(
    0.5,
    momentum=0.3,
    reg_strength=0.012,
    regularizer=regularizer,
    milestones=(3,),
    **kwargs,
  )


# Optimizer factories. The strengths are chosen so that after STEPS steps some
# groups of each kernel are exactly zero and others are not, and the iterative
# solvers take several inner iterations per step.
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
  # In float32 "pg" stops once q stops decreasing, so its iterate is fixed only
  # to the solver's inexactness; "exact" (the default) is fixed to rounding.
  "ramda": lambda: _ramda(SPECS, solver="pg"),
  "ramda_exact": lambda: _ramda(SPECS, solver="exact"),
  # Both kernels have 8 input groups: tied, group i is channel i of the conv
  # and row i of the dense kernel together (one virtual leaf across two
  # differently laid-out, differently sharded leaves).
  "ramda_tied": lambda: _ramda(TIED_SPECS),
  "proxgen": lambda: oxr.proxgen(0.05, reg_strength=0.01, regularizer=SPECS),
  "rmda": lambda: oxr.rmda(
    0.5, momentum=0.3, reg_strength=0.8, regularizer=SPECS, milestones=(3,)
  ),
  "prox_sgd": lambda: oxr.prox_sgd(0.5, reg_strength=0.1, regularizer=SPECS),
  # ProxSSI thresholds its first steps 1/√(1 − β₂ᵗ) (here 13-32×) harder than
  # ProxGen: at ProxGen's 0.01 every group would be zero.
  "proxssi": lambda: oxr.proxssi(0.05, reg_strength=5e-4, regularizer=SPECS),
}

# How each layout splits the leaves over a mesh: the group axis (a kernel's
# input axis), the within-group axis (its output axis), or both at once.
LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[str, ...], dict[str, P]]] = {
  "group": (
    (8,),
    ("x",),
    {"conv": P(None, None, "x", None), "dense": P("x", None), "bias": P()},
  ),
  "within": (
    (8,),
    ("x",),
    {"conv": P(None, None, None, "x"), "dense": P(None, "x"), "bias": P("x")},
  ),
  "both": (
    (2, 4),
    ("g", "w"),
    {"conv": P(None, None, "g", "w"), "dense": P("g", "w"), "bias": P("w")},
  ),
}

# The sharded-jit runs: float64 splits each axis alone over all eight devices;
# float32 splits both at once over a 2 × 4 mesh.
SHARDED_RUNS = {"float64": ("group", "within"), "float32": ("both",)}


def init_params(dtype) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  return {
    "conv": (rng.randn(3, 3, 8, 8) * 0.3).astype(dtype),
    "dense": (rng.randn(8, CLASSES) * 0.5).astype(dtype),
    "bias": np.zeros(CLASSES, dtype),
  }


def batches(dtype) -> tuple[np.ndarray, np.ndarray]:
  """STEPS batches: images (STEPS, BATCH, 5, 5, 8) and labels (STEPS, BATCH)."""
  rng = np.random.RandomState(1)
  x = rng.randn(STEPS, BATCH, 5, 5, 8).astype(dtype)
  # Channels 6 and 7 carry only small noise, so their groups die first.
  x[..., 6:] *= 0.05
  y = rng.randint(0, CLASSES, (STEPS, BATCH)).astype(np.int32)
  return x, y


def loss_fn(params, x, y):
  h = lax.conv_general_dilated(
    x, params["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  h = jnp.mean(jnp.tanh(h), axis=(1, 2))
  logits = h @ params["dense"] + params["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_train(txs: dict[str, optax.GradientTransformation], axis_name=None):
  """``train(params, states, xs, ys)``: STEPS steps of every optimizer.

  All optimizers start from the same `params`; `states` maps each name to its
  state. One ``lax.scan`` (so one compilation for all of them) returns, per
  name, the final params and state and every leaf's inner iteration count at
  each step. With `axis_name` the gradients are ``lax.pmean``'d over it
  (data-parallel ``pmap``).
  """

  def step(carry, batch):
    new_carry, iters = {}, {}
    for name, tx in txs.items():
      params, state = carry[name]
      grads = jax.grad(loss_fn)(params, *batch)
      if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
      updates, state = tx.update(grads, state, params)
      new_carry[name] = (optax.apply_updates(params, updates), state)
      iters[name] = dict(state.iterations)
    return new_carry, iters

  def train(params, states, xs, ys):
    carry = {name: (params, states[name]) for name in txs}
    carry, iters = lax.scan(step, carry, (xs, ys))
    return {name: (*carry[name], iters[name]) for name in txs}

  return train


def prox(state):
  """Ŵ for the dual-averaging methods, else None."""
  return state.prox if hasattr(state, "prox") else None


def mesh_for(layout: str, axis_type: AxisType = AxisType.Auto) -> Mesh:
  """The layout's mesh over all (global) devices."""
  shape, names, _ = LAYOUTS[layout]
  devices = np.asarray(jax.devices()).reshape(shape)
  return Mesh(devices, names, axis_types=(axis_type,) * len(names))


def param_shardings(layout: str, mesh: Mesh) -> dict[str, NamedSharding]:
  return {k: NamedSharding(mesh, spec) for k, spec in LAYOUTS[layout][2].items()}


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Examples split over every device: axis 1 of (STEPS, BATCH, ...)."""
  return NamedSharding(mesh, P(None, mesh.axis_names, *([None] * (ndim - 2))))


def state_shardings(tx, params_shardings, abstract_params, mesh: Mesh):
  """The state's shardings derived from the params' by optax.tree_map_params.

  Params-shaped fields take their leaf's sharding; the per-leaf iteration
  counts (a params-structured tree of scalars) and the counters are
  replicated.
  """
  replicated = NamedSharding(mesh, P())
  return optax.tree_map_params(
    tx,
    lambda leaf, sharding: sharding if leaf.ndim else replicated,
    jax.eval_shape(tx.init, abstract_params),
    params_shardings,
    transform_non_params=lambda _: replicated,
  )
