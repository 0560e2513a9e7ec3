"""One rank of a multi-process run of the shared training problem.

Run by ``tests/test_multidevice.py`` as two processes with four CPU devices
each (``XLA_FLAGS=--xla_force_host_platform_device_count=4``)::

  python -m tests.multidevice.distributed_worker --coordinator 127.0.0.1:PORT \\
    --num-processes 2 --process-id I OUT_PREFIX

The eight global devices form a 4 × 2 mesh ('g', 'w') whose 'w' axis spans
the two processes, so the kernels' within-group axis is split across
processes: group norms, the loss and every inner solver's stopping test need
cross-process reductions. Each rank writes ``OUT_PREFIX.I.npz`` with the
gathered final params, Ŵ and per-step iteration counts, as the sharded
worker records them, plus the per-device copies of the final loop counts.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh

from tests.multidevice import problem


def global_array(value: np.ndarray, sharding) -> jax.Array:
  """A global array from a value every process holds in full."""
  return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--coordinator", required=True)
  parser.add_argument("--num-processes", type=int, required=True)
  parser.add_argument("--process-id", type=int, required=True)
  parser.add_argument("--local-devices", type=int, default=4)
  parser.add_argument("out_prefix")
  args = parser.parse_args()

  jax.config.update("jax_enable_x64", True)
  # Before anything that touches the backend (even jax.devices()).
  jax.distributed.initialize(
    coordinator_address=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
    local_device_ids=list(range(args.local_devices)),
    initialization_timeout=60,
  )
  if jax.device_count() != 8 or jax.process_count() != args.num_processes:
    raise SystemExit(
      f"expected 8 devices over {args.num_processes} processes, found "
      f"{jax.device_count()} over {jax.process_count()}"
    )
  # jax.devices() lists each process's devices together: rows of this grid are
  # processes, so after the transpose the 'w' axis runs across them.
  grid = np.asarray(jax.devices()).reshape(args.num_processes, -1).T
  mesh = Mesh(grid, ("g", "w"), axis_types=(AxisType.Auto,) * 2)
  params_sh = problem.param_shardings("both", mesh)
  params0 = problem.init_params(np.float64)
  params = {k: global_array(v, params_sh[k]) for k, v in params0.items()}
  structs = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=params_sh[k])
    for k, v in params0.items()
  }
  txs = {name: make() for name, make in problem.OPTIMIZERS.items()}
  states_sh = {
    name: problem.state_shardings(tx, params_sh, structs, mesh)
    for name, tx in txs.items()
  }
  states = jax.jit(
    lambda p: {name: tx.init(p) for name, tx in txs.items()}, out_shardings=states_sh
  )(params)
  xs, ys = problem.batches(np.float64)
  xs = global_array(xs, problem.batch_sharding(mesh, xs.ndim))
  ys = global_array(ys, problem.batch_sharding(mesh, ys.ndim))
  out = jax.jit(problem.make_train(txs))(params, states, xs, ys)

  arrays = {}
  for name, (params_t, state_t, iters) in out.items():
    key = f"{name}/float64/distributed"
    gathered = multihost_utils.process_allgather(
      (params_t, problem.prox(state_t) or {}, iters), tiled=True
    )
    for field, tree in zip(("params", "prox", "iters"), gathered, strict=True):
      for leaf, value in tree.items():
        arrays[f"{key}/{field}/{leaf}"] = np.asarray(value)
    for leaf, count in state_t.iterations.items():
      arrays[f"{key}/local_iters/{leaf}"] = np.stack(
        [np.asarray(s.data) for s in count.addressable_shards]
      )
  np.savez(f"{args.out_prefix}.{args.process_id}.npz", **arrays)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
