"""Trains every optimizer on one device, sharded under jit and under pmap.

Run by ``tests/test_multidevice.py`` in a subprocess with eight CPU devices::

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python -m tests.multidevice.sharded_worker OUT_PREFIX

It writes ``OUT_PREFIX.npz`` (final params, Ŵ and per-step inner iteration
counts of every run, keyed ``optimizer/dtype/run/field/leaf``) and
``OUT_PREFIX.json`` (per run, a list of the problems found with shardings and
per-device loop counts; empty when all is well). The test process compares
the runs with each other; this script only records them.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np
from jax.sharding import AxisType

from tests.multidevice import problem

DEVICES = 8


def record(arrays: dict, key: str, params, state, iters) -> None:
  for leaf, value in params.items():
    arrays[f"{key}/params/{leaf}"] = np.asarray(value)
  for leaf, value in (problem.prox(state) or {}).items():
    arrays[f"{key}/prox/{leaf}"] = np.asarray(value)
  for leaf, value in iters.items():
    arrays[f"{key}/iters/{leaf}"] = np.asarray(value)


def _paired(tree, other):
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return [
    (jax.tree_util.keystr(path), a, b)
    for (path, a), b in zip(leaves, jax.tree.leaves(other), strict=True)
  ]


def sharding_problems(tree, expected, what: str, arrays_only=False) -> list[str]:
  """Leaves of `tree` whose sharding is not equivalent to `expected`'s.

  With `arrays_only`, scalars are skipped: eagerly built counters are
  uncommitted single-device arrays (as in optax) that jit places anywhere.
  """
  return [
    f"{what}{path}: {leaf.sharding} is not {want}"
    for path, leaf, want in _paired(tree, expected)
    if (leaf.ndim or not arrays_only)
    and not leaf.sharding.is_equivalent_to(want, leaf.ndim)
  ]


def replica_problems(tree, what: str) -> list[str]:
  """Replicated leaves whose per-device copies differ (e.g. loop counts)."""
  problems = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = what + jax.tree_util.keystr(path)
    copies = [np.asarray(s.data) for s in leaf.addressable_shards]
    if not leaf.sharding.is_fully_replicated or len(copies) != DEVICES:
      problems.append(f"{name} is not replicated on {DEVICES} devices")
    elif any((c != copies[0]).any() for c in copies):
      problems.append(f"{name} differs between devices: {copies}")
  return problems


def run_single(txs, dtype, arrays, tag):
  device = jax.devices()[0]
  params = jax.device_put(problem.init_params(dtype), device)
  xs, ys = jax.device_put(problem.batches(dtype), device)
  states = {name: tx.init(params) for name, tx in txs.items()}
  out = jax.jit(problem.make_train(txs))(params, states, xs, ys)
  for name, result in out.items():
    record(arrays, f"{name}/{tag}/single", *result)


def init_all(txs):
  return lambda params: {name: tx.init(params) for name, tx in txs.items()}


def run_sharded(txs, dtype, layout, arrays, checks, tag):
  mesh = problem.mesh_for(layout)
  params_sh = problem.param_shardings(layout, mesh)
  params0 = problem.init_params(dtype)
  params = jax.device_put(params0, params_sh)
  structs = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=params_sh[k])
    for k, v in params0.items()
  }
  states_sh = {
    name: problem.state_shardings(tx, params_sh, structs, mesh)
    for name, tx in txs.items()
  }
  states = jax.jit(init_all(txs), out_shardings=states_sh)(params)
  # Eager init on sharded params gives the derived shardings by itself.
  eager = init_all(txs)(params) if layout == "both" else states
  xs, ys = problem.batches(dtype)
  xs = jax.device_put(xs, problem.batch_sharding(mesh, xs.ndim))
  ys = jax.device_put(ys, problem.batch_sharding(mesh, ys.ndim))
  out = jax.jit(problem.make_train(txs))(params, states, xs, ys)
  for name, (params_t, state_t, iters) in out.items():
    record(arrays, f"{name}/{tag}/sharded_{layout}", params_t, state_t, iters)
    checks[f"{name}/{tag}/sharded_{layout}"] = (
      sharding_problems(eager[name], states_sh[name], "eager init", arrays_only=True)
      # eval_shape on ShapeDtypeStructs gives the state's shapes and dtypes.
      + [
        f"eval_shape{path}: {want} vs {leaf.shape} {leaf.dtype}"
        for path, want, leaf in _paired(
          jax.eval_shape(txs[name].init, structs), states[name]
        )
        if (want.shape, want.dtype) != (leaf.shape, leaf.dtype)
      ]
      # Training keeps the params' layout, and the state follows the params.
      + sharding_problems(params_t, params_sh, "params")
      + sharding_problems(state_t, states_sh[name], "state")
      # Every device ran each inner loop for the same number of iterations.
      + replica_problems(state_t.iterations, "iterations")
    )


def run_pmap(txs, dtype, arrays, tag):
  params0 = problem.init_params(dtype)
  xs, ys = problem.batches(dtype)

  def split(a):  # (STEPS, BATCH, ...) -> (DEVICES, STEPS, BATCH / DEVICES, ...)
    return np.moveaxis(a.reshape(a.shape[0], DEVICES, -1, *a.shape[2:]), 1, 0)

  params = {k: np.broadcast_to(v, (DEVICES, *v.shape)) for k, v in params0.items()}
  states = {name: jax.pmap(tx.init)(params) for name, tx in txs.items()}
  train = jax.pmap(problem.make_train(txs, axis_name="i"), axis_name="i")
  out = train(params, states, split(xs), split(ys))
  for name, (params_t, state_t, iters) in out.items():
    key = f"{name}/{tag}/pmap"
    record(arrays, key, *jax.tree.map(lambda a: a[0], (params_t, state_t, iters)))
    # The replicated params must stay identical on every device, and every
    # device's inner loops must stop at the same iteration.
    for leaf, value in params_t.items():
      value = np.asarray(value)
      arrays[f"{key}/device_spread/{leaf}"] = np.max(np.abs(value - value[:1]))
    for leaf, value in iters.items():
      arrays[f"{key}/device_iters/{leaf}"] = np.asarray(value)


def run_explicit(txs, arrays, checks):
  """One float32 update under an Explicit-axes mesh (sharding in types)."""
  mesh = problem.mesh_for("both", AxisType.Explicit)
  params_sh = problem.param_shardings("both", mesh)
  params0 = problem.init_params(np.float32)
  grads0 = {k: 0.1 * v + 0.01 for k, v in params0.items()}
  structs = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=params_sh[k])
    for k, v in params0.items()
  }

  def update(grads, states, params):
    return {name: tx.update(grads, states[name], params) for name, tx in txs.items()}

  single = jax.jit(update)(grads0, init_all(txs)(params0), params0)
  with jax.set_mesh(mesh):
    params = jax.device_put(params0, params_sh)
    grads = jax.device_put(grads0, params_sh)
    eager = init_all(txs)(params)
    jitted = jax.jit(init_all(txs))(params)
    abstract = {name: jax.eval_shape(tx.init, structs) for name, tx in txs.items()}
    out = jax.jit(update)(grads, jitted, params)
  for name in txs:
    types = [jax.tree.map(jax.typeof, s) for s in (eager[name], jitted[name])]
    types.append(jax.tree.map(jax.typeof, out[name][1]))
    problems = []
    if types[0] != types[1]:
      problems.append(f"eager init {types[0]} != jit init {types[1]}")
    if types[1] != types[2]:
      problems.append(f"init {types[1]} != updated {types[2]}")
    # Sharding is part of the type: eval_shape of sharded structs knows the
    # state's layout (counters are scalars and carry none).
    problems += [
      f"eval_shape{path}: {want.sharding} vs {leaf.sharding}"
      for path, want, leaf in _paired(abstract[name], jitted[name])
      if want.ndim and want.sharding.spec != leaf.sharding.spec
    ]
    problems += sharding_problems(out[name][0], params_sh, "updates")
    checks[f"{name}/float32/explicit"] = problems
    for leaf in params0:
      arrays[f"{name}/float32/explicit/update/{leaf}"] = np.asarray(out[name][0][leaf])
      arrays[f"{name}/float32/explicit_single/update/{leaf}"] = np.asarray(
        single[name][0][leaf]
      )


def main(out_prefix: str) -> None:
  jax.config.update("jax_enable_x64", True)
  if jax.device_count() != DEVICES:
    raise SystemExit(
      f"Need {DEVICES} devices, found {jax.device_count()}; set "
      f"XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES}."
    )
  txs = {name: make() for name, make in problem.OPTIMIZERS.items()}
  arrays: dict[str, np.ndarray] = {}
  checks: dict[str, list[str]] = {}
  runs = {
    "float64 one device": lambda: run_single(txs, np.float64, arrays, "float64"),
    "float64 pmap": lambda: run_pmap(txs, np.float64, arrays, "float64"),
    "float32 one device": lambda: run_single(txs, np.float32, arrays, "float32"),
    "float32 pmap": lambda: run_pmap(txs, np.float32, arrays, "float32"),
    "float32 explicit axes": lambda: run_explicit(txs, arrays, checks),
  }
  for dtype, layouts in problem.SHARDED_RUNS.items():
    for layout in layouts:
      runs[f"{dtype} sharded {layout}"] = lambda d=dtype, lay=layout: run_sharded(
        txs, d, lay, arrays, checks, d
      )
  for label, run in runs.items():
    start = time.perf_counter()
    run()
    print(f"{label:24s} {time.perf_counter() - start:6.2f} s", flush=True)
  np.savez(out_prefix + ".npz", **arrays)
  with open(out_prefix + ".json", "w") as f:
    json.dump(checks, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
