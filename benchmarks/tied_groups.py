"""Tied against untied input groups on an LSTM: what the structured export removes.

An NNX ``LSTMCell`` (8 → 32, its four gates as separate kernels, as Flax builds
it) reads the 8 × 8 digits one row per step and a ``Linear`` classifies its last
hidden state. RAMDA trains it with ``oxr.input_channel_groups(model)`` (every
gate kernel has its own groups) and with ``tie=True`` (the four input kernels'
rows of a feature form one group, and so do the four recurrent kernels' rows of
a hidden unit), over a grid of λ, at the main job's schedule (30 epochs, three
stages, RAMDA's ramp).

The export is the one an LSTM allows: its gates share one input (cuDNN and
``OptimizedLSTMCell`` compute them as one matrix product), so an input feature
leaves the cell only when its row is zero in all four input kernels, and a
hidden unit leaves when nothing reads it: its rows in all four recurrent
kernels and in the classifier are zero. The script builds the smaller model,
checks that it computes the same logits, and counts its parameters. It also
counts the zero rows per kernel and the parameters left by a per-kernel gather
instead (Flax's ``LSTMCell`` computes each gate as its own product, which can
read only the inputs whose rows in that gate are nonzero), which uses them all.

η is chosen on a validation split (20 % of the training images) at the
smallest λ, for each grouping; the table reports validation and test accuracy.

  python benchmarks/tied_groups.py --seeds 3
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import _data, _optimizers

GATES = ("i", "f", "g", "o")
HIDDEN = 32
EPOCHS = 30
BATCH = 64


def _kernel(cell: nnx.LSTMCell, kind: str, gate: str) -> nnx.Param:
  name = (
    {"i": "ii", "f": "if_", "g": "ig", "o": "io"}[gate] if kind == "i" else "h" + gate
  )
  return getattr(cell, name).kernel


class LSTMClassifier(nnx.Module):
  """An LSTM over the rows of an image, then a linear layer on its last state."""

  def __init__(
    self, features: int, hidden: int, classes: int, rngs: nnx.Rngs, zeros=False
  ):
    init = {}
    if zeros:  # Export targets: weights are copied in; sizes may be zero.
      zero = nnx.initializers.zeros
      init = {"kernel_init": zero, "recurrent_kernel_init": zero}
    self.cell = nnx.LSTMCell(features, hidden, rngs=rngs, **init)
    head_init = {"kernel_init": nnx.initializers.zeros} if zeros else {}
    self.head = nnx.Linear(hidden, classes, rngs=rngs, **head_init)

  def __call__(self, x: jax.Array) -> jax.Array:  # (batch, time, features)
    hidden = self.cell.hidden_features
    carry = (jnp.zeros((x.shape[0], hidden)), jnp.zeros((x.shape[0], hidden)))
    for t in range(x.shape[1]):
      carry, _ = self.cell(carry, x[:, t])
    return self.head(carry[1])


def export(model: LSTMClassifier) -> tuple[LSTMClassifier, dict[str, int]]:
  """The smaller LSTM without the inputs and hidden units that nothing uses."""
  cell = model.cell
  rows_i = np.stack([np.asarray(_kernel(cell, "i", g)[...]) for g in GATES])
  rows_h = np.stack([np.asarray(_kernel(cell, "h", g)[...]) for g in GATES])
  head = np.asarray(model.head.kernel[...])
  inputs = np.flatnonzero((rows_i != 0).any(axis=(0, 2)))
  units = np.flatnonzero((rows_h != 0).any(axis=(0, 2)) | (head != 0).any(axis=1))
  small = LSTMClassifier(len(inputs), len(units), head.shape[1], nnx.Rngs(0), True)
  for g in GATES:
    _kernel(small.cell, "i", g)[...] = _kernel(cell, "i", g)[...][inputs][:, units]
    _kernel(small.cell, "h", g)[...] = _kernel(cell, "h", g)[...][units][:, units]
    source = getattr(cell, "h" + g).bias[...]
    getattr(small.cell, "h" + g).bias[...] = source[units]
  small.head.kernel[...] = model.head.kernel[...][units]
  small.head.bias[...] = model.head.bias[...]
  zero_rows = int((rows_i == 0).all(axis=2).sum() + (rows_h == 0).all(axis=2).sum())
  # A per-kernel gather (each gate's product reads only its own nonzero rows)
  # drops every zero row of every kernel instead.
  total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  head_rows = int((head == 0).all(axis=1).sum())
  counts = {
    "inputs": len(inputs),
    "units": len(units),
    "params": sum(x.size for x in jax.tree.leaves(nnx.state(small, nnx.Param))),
    "zero_rows": zero_rows,
    "gather_params": total - zero_rows * rows_i.shape[2] - head_rows * head.shape[1],
    "kept_inputs": inputs,
  }
  return small, counts


Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def train(
  tie: bool, reg_strength: float, learning_rate: float, seed: int, splits: Splits
) -> dict[str, Any]:
  """One RAMDA run on ``splits["train"]``; accuracies and the export's counts."""
  x_train = jnp.asarray(splits["train"][0].reshape(-1, 8, 8))
  y_train = jnp.asarray(splits["train"][1])
  model = LSTMClassifier(8, HIDDEN, 10, nnx.Rngs(seed))
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  specs = nnx.to_pure_dict(oxr.input_channel_groups(model, tie=tie))
  steps_per_epoch = len(y_train) // BATCH
  total = EPOCHS * steps_per_epoch
  s = _optimizers.settings(
    _optimizers.METHODS["ramda"],
    total_steps=total,
    stages=3,
    decay=0.1,
    reg_strength=reg_strength,
    solver="exact",
    learning_rate=learning_rate,
  )
  tx = _optimizers.METHODS["ramda"].make(s, specs)

  def logits(p, x):
    return nnx.merge(graphdef, p)(x)

  @jax.jit
  def step(p, state, idx):
    def loss(p):
      out = logits(p, x_train[idx])
      return optax.softmax_cross_entropy_with_integer_labels(out, y_train[idx]).mean()

    updates, state = tx.update(jax.grad(loss)(p), state, p)
    return optax.apply_updates(p, updates), state

  state, rng = tx.init(params), np.random.default_rng(seed)
  for _ in range(EPOCHS):
    order = rng.permutation(len(y_train))
    for b in range(steps_per_epoch):
      params, state = step(params, state, order[b * BATCH : (b + 1) * BATCH])
  # The final stage's ramp ends at c = 1: the weights are Ŵ, exactly structured.
  model = nnx.merge(graphdef, params)
  small, counts = export(model)
  out = {}
  for split in ("val", "test"):
    x, y = splits[split]
    x = jnp.asarray(x.reshape(-1, 8, 8))
    full = model(x)
    np.testing.assert_allclose(  # The export computes the same function.
      small(x[..., counts["kept_inputs"]]), full, atol=1e-4
    )
    out[split] = float(jnp.mean(jnp.argmax(full, -1) == jnp.asarray(y)))
  report = oxr.sparsity(params, specs)
  return {**counts, **out, "group_sparsity": float(report["group_sparsity"])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument(
    "--reg-strengths", default="1e-4,3e-4,6e-4,1e-3,2e-3,3e-3", help="the λ grid"
  )
  parser.add_argument(
    "--learning-rates", default="0.01,0.03,0.1,0.3,1", help="the η grid"
  )
  args = parser.parse_args()
  lams = [float(v) for v in args.reg_strengths.split(",")]
  etas = [float(v) for v in args.learning_rates.split(",")]
  seeds = range(args.seeds)
  digits = _data.digits()
  val = _data.validation_split(digits)
  splits = {
    "train": (val.x_train, val.y_train),
    "val": (val.x_test, val.y_test),
    "test": (digits.x_test, digits.y_test),
  }
  dense = LSTMClassifier(8, HIDDEN, 10, nnx.Rngs(0))
  print("params:", sum(x.size for x in jax.tree.leaves(nnx.state(dense, nnx.Param))))
  start = time.perf_counter()
  chosen = {}
  for tie in (False, True):
    scores = {
      eta: np.mean([train(tie, lams[0], eta, s, splits)["val"] for s in seeds])
      for eta in etas
    }
    chosen[tie] = max(scores, key=scores.get)
    print(
      f"η on validation at λ = {lams[0]:g}, {'tied' if tie else 'untied'}: "
      + ", ".join(f"{e:g}: {100 * v:.1f} %" for e, v in scores.items())
    )
  print(
    "\n| grouping | η | λ | val acc (%) | test acc (%) | Ŵ group sparsity (%) "
    "| inputs kept | units kept | params after export | zero gate rows "
    "| params, per-kernel gather |"
  )
  print("| --- |" + " ---: |" * 10)
  for tie, eta in chosen.items():
    for lam in lams:
      runs = [train(tie, lam, eta, s, splits) for s in seeds]

      def cell(key, scale=1.0, runs=runs):
        values = scale * np.asarray([r[key] for r in runs], float)
        return f"{values.mean():.1f} ± {values.std():.1f}"

      print(
        f"| {'tied' if tie else 'untied'} | {eta:g} | {lam:g} | {cell('val', 100)} "
        f"| {cell('test', 100)} | {cell('group_sparsity', 100)} | {cell('inputs')} "
        f"| {cell('units')} | {cell('params')} | {cell('zero_rows')} "
        f"| {cell('gather_params')} |",
        flush=True,
      )
  print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
