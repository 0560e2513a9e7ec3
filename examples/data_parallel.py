"""Data-parallel RAMDA: an MLP on scikit-learn's digits over all devices.

Each step's global batch is split over every device (a 1-D ``data`` mesh);
the parameters and the RAMDA state are replicated, so the gradient of the
mean loss is all-reduced by XLA and every device takes the same step. The
result is the single-device run's, up to the order of floating-point sums.

  python examples/data_parallel.py                 # all local devices
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python examples/data_parallel.py               # eight CPU devices

Multi-process (one process per host, or several on one machine): start every
process with the same coordinator address and the process count, each with
its own id; each feeds its slice of every global batch.

  python examples/data_parallel.py --coordinator 127.0.0.1:12345 \\
    --num-processes 2 --process-id 0 &
  python examples/data_parallel.py --coordinator 127.0.0.1:12345 \\
    --num-processes 2 --process-id 1
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from sklearn.datasets import load_digits

import optax_ramda as oxr

N_TRAIN = 1400
HIDDEN = 32


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--batch-size", type=int, default=128, help="global batch")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--solver", default="pg", choices=("pg", "exact"), help="subproblem solver"
  )
  parser.add_argument("--save", help="write the final params to this .npz file")
  dist = parser.add_argument_group("multi-process (jax.distributed)")
  dist.add_argument(
    "--coordinator", help="host:port of process 0, e.g. 127.0.0.1:12345"
  )
  dist.add_argument("--num-processes", type=int, default=1)
  dist.add_argument("--process-id", type=int, default=0)
  return parser.parse_args(argv)


def init_params(seed: int) -> dict[str, np.ndarray]:
  """Glorot-uniform weights from NumPy, so every process builds the same."""
  rng = np.random.RandomState(seed)

  def glorot(n_in, n_out):
    limit = np.sqrt(6 / (n_in + n_out))
    return rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32)

  return {
    "w1": glorot(64, HIDDEN),
    "b1": np.zeros(HIDDEN, np.float32),
    "w2": glorot(HIDDEN, 10),
    "b2": np.zeros(10, np.float32),
  }


def logits_fn(params, x):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def loss_fn(params, x, y):
  logits = logits_fn(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def main(argv=None) -> dict[str, np.ndarray]:
  args = parse_args(argv)
  if args.coordinator is not None:
    # Must come before anything that touches the devices.
    jax.distributed.initialize(
      coordinator_address=args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )
  n_dev, n_proc, pid = jax.device_count(), jax.process_count(), jax.process_index()
  if args.batch_size % n_dev:
    raise ValueError(
      f"--batch-size {args.batch_size} must be a multiple of the {n_dev} devices."
    )
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  if pid == 0:
    print(f"{n_proc} process(es), {n_dev} devices, {jax.local_device_count()} local")

  x, y = load_digits(return_X_y=True)
  x, y = (x / 16.0).astype(np.float32), y.astype(np.int32)
  specs = {"w1": oxr.group_lasso(axes=(1,)), "w2": oxr.group_lasso(axes=(1,))}
  specs |= {"b1": None, "b2": None}  # one group per input pixel / hidden unit
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    oxr.ramda(
      learning_rate=1e-2,
      momentum=0.1,
      reg_strength=1e-3,
      regularizer=specs,
      solver=args.solver,
      milestones=(args.steps // 3, 2 * args.steps // 3),
    ),
  )

  # Every process holds the same NumPy params; each device gets a copy.
  params = {
    k: jax.make_array_from_callback(v.shape, replicated, lambda idx, v=v: v[idx])
    for k, v in init_params(args.seed).items()
  }
  state = jax.jit(tx.init, out_shardings=replicated)(params)

  @jax.jit
  def train_step(params, state, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  # All processes draw the same global batch; each feeds only its own rows.
  rng = np.random.RandomState(args.seed)
  rows = slice(pid * args.batch_size // n_proc, (pid + 1) * args.batch_size // n_proc)
  loss = None
  for step in range(args.steps):
    idx = rng.choice(N_TRAIN, args.batch_size, replace=False)[rows]
    xb = jax.make_array_from_process_local_data(batch_sharding, x[idx])
    yb = jax.make_array_from_process_local_data(batch_sharding, y[idx])
    previous = loss
    params, state, loss = train_step(params, state, xb, yb)
    if previous is not None:
      # At most two steps in flight: with many more queued, multi-process CPU
      # runs (Gloo collectives) were seen to hang. Accelerators lose nothing.
      previous.block_until_ready()
    if pid == 0 and (step % 100 == 0 or step == args.steps - 1):
      print(f"step {step:4d}  loss {float(loss):.4f}")

  # The params are replicated: any local copy is the whole model.
  final = {k: np.asarray(v.addressable_data(0)) for k, v in params.items()}
  accuracy = np.mean(np.argmax(logits_fn(final, x[N_TRAIN:]), -1) == y[N_TRAIN:])
  pixels_off = oxr.sparsity(final, specs)["leaves"]["['w1']"]["zero_groups"]
  if pid == 0:
    print(f"test accuracy           {accuracy:.3f}")
    print(f"pixels switched off     {int(pixels_off)} of 64")
    if args.save:
      np.savez(args.save, **final)
  if args.coordinator is not None:
    jax.distributed.shutdown()
  return final


if __name__ == "__main__":
  main()
