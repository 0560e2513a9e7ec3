"""Full training step of every optimizer on models shaped like Flax's examples.

Models, in plain JAX with Flax parameter layouts (so that
`oxr.input_channel_groups` gives the paper's grouping: one group per input
feature/channel of every kernel; biases and embeddings free):

* vae: the Dense VAE of ``examples/vae`` (784→500→20/20, 20→500→784; 816k
  parameters), binary cross-entropy plus KL, on scikit-learn's digits resized
  to 28×28;
* mnist_cnn: the CNN of ``examples/mnist`` (Conv 3×3 32, avg pool, Conv 3×3 64,
  avg pool, Dense 256, Dense 10; 824k parameters), same images;
* lstm: an LSTM classifier (Embed 1000×64, Flax ``LSTMCell`` gates with 128
  hidden units, Dense 128→2) on 32-token synthetic sequences (label: more
  tokens below 500 than above);
* transformer: the 2-layer pre-norm decoder of ``benchmarks/train_step.py``
  (d = 128, 4 heads, copy task, sequences of 64; batch/8 sequences);
* paper_cnn: the CNN of ``benchmarks/train_step.py`` on 8×8 digits.

Every optimizer of the library (at its defaults unless a name says otherwise)
and ``optax.adamw``, ``optax.contrib.madgrad`` get their own copy of the model,
train ``--warmup`` real steps (so that screening and the solvers' iteration
counts are those of training), and are then timed round-robin in one process
(the starting candidate rotates): a ratio is the median over rounds of
time/time(adamw) within a round, with its interquartile range.

Columns: "solver share" is 1 − t(λ = 0)/t(λ) for RAMDA and ProxGen (the same
step with the solver skipped: λ = 0 takes the closed form), i.e. the part of
the step spent in screening and the solver; "loop trips" is what a GPU pays a
host round trip for: the sequential ``while_loop`` trips per step (from the
state's per-leaf ``iterations``: all of them for "pg" and "exact", those beyond
the unrolled Newton steps for "exact_unrolled"), summed over the regularized
leaves (one loop per leaf) and for the largest leaf (what one loop fused over
all leaves would cost), medians over rounds, plus the ``lax.cond`` per
regularized leaf (τ > 0; "exact_unrolled" adds its fallback test).

  python benchmarks/models.py --quick      # the Done-when table, a few minutes
  python benchmarks/models.py              # every model × batch 64, 256 × 2 λ
  python benchmarks/models.py --models vae --batches 64 --reg light
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
import train_step
from jax import lax

import optax_ramda as oxr
from optax_ramda._solvers import UNROLLED_STEPS

# ----------------------------------------------------------------------------
# Models: init(seed) -> params; loss(params, batch) -> scalar.


def _dense(x, p):
  y = x @ p["kernel"]
  return y + p["bias"] if "bias" in p else y


def vae_init(seed: int = 0) -> dict:
  s = _common._sds
  shapes = {
    "encoder": {
      "fc1": {"kernel": s(784, 500), "bias": s(500)},
      "fc2_mean": {"kernel": s(500, 20), "bias": s(20)},
      "fc2_logvar": {"kernel": s(500, 20), "bias": s(20)},
    },
    "decoder": {
      "fc1": {"kernel": s(20, 500), "bias": s(500)},
      "fc2": {"kernel": s(500, 784), "bias": s(784)},
    },
  }
  return _common.materialize(shapes, seed)


def vae_loss(p: dict, batch: tuple) -> jax.Array:
  x, noise = batch
  h = jax.nn.relu(_dense(x, p["encoder"]["fc1"]))
  mean = _dense(h, p["encoder"]["fc2_mean"])
  logvar = _dense(h, p["encoder"]["fc2_logvar"])
  z = mean + jnp.exp(0.5 * logvar) * noise
  logits = _dense(jax.nn.relu(_dense(z, p["decoder"]["fc1"])), p["decoder"]["fc2"])
  bce = optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
  kld = -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar), -1)
  return jnp.mean(bce + kld)


def mnist_cnn_init(seed: int = 0) -> dict:
  s = _common._sds
  shapes = {
    "Conv_0": {"kernel": s(3, 3, 1, 32), "bias": s(32)},
    "Conv_1": {"kernel": s(3, 3, 32, 64), "bias": s(64)},
    "Dense_0": {"kernel": s(7 * 7 * 64, 256), "bias": s(256)},
    "Dense_1": {"kernel": s(256, 10), "bias": s(10)},
  }
  return _common.materialize(shapes, seed)


def _avg_pool(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def mnist_cnn_loss(p: dict, batch: tuple) -> jax.Array:
  x, y = batch
  x = _avg_pool(jax.nn.relu(train_step._conv(x, p["Conv_0"])))
  x = _avg_pool(jax.nn.relu(train_step._conv(x, p["Conv_1"])))
  x = jax.nn.relu(_dense(x.reshape(x.shape[0], -1), p["Dense_0"]))
  logits = _dense(x, p["Dense_1"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


_LSTM_VOCAB, _LSTM_EMBED, _LSTM_HIDDEN, _LSTM_LEN = 1000, 64, 128, 32


def lstm_init(seed: int = 0) -> dict:
  s, e, h = _common._sds, _LSTM_EMBED, _LSTM_HIDDEN
  # Flax's LSTMCell: input gates ii/if/ig/io without bias, hidden gates with.
  cell: dict[str, Any] = {f"i{g}": {"kernel": s(e, h)} for g in "ifgo"}
  cell |= {f"h{g}": {"kernel": s(h, h), "bias": s(h)} for g in "ifgo"}
  shapes = {
    "Embed_0": {"embedding": s(_LSTM_VOCAB, e)},
    "LSTMCell_0": cell,
    "Dense_0": {"kernel": s(h, 2), "bias": s(2)},
  }
  return _common.materialize(shapes, seed)


def lstm_loss(p: dict, batch: tuple) -> jax.Array:
  tokens, y = batch
  x = p["Embed_0"]["embedding"][tokens]  # (batch, length, embed)
  cell = p["LSTMCell_0"]

  def step(carry, xt):
    c, h = carry
    gate = {g: _dense(xt, cell[f"i{g}"]) + _dense(h, cell[f"h{g}"]) for g in "ifgo"}
    c = jax.nn.sigmoid(gate["f"]) * c + jax.nn.sigmoid(gate["i"]) * jnp.tanh(gate["g"])
    h = jax.nn.sigmoid(gate["o"]) * jnp.tanh(c)
    return (c, h), None

  zeros = jnp.zeros((tokens.shape[0], _LSTM_HIDDEN), x.dtype)
  (_, h), _ = lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
  logits = _dense(h, p["Dense_0"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _classifier_loss(apply: Callable) -> Callable:
  def loss(p, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

  return loss


# ----------------------------------------------------------------------------
# Data: fixed device-resident batches, cycled.

_N_BATCHES = 8


def _digits_28(batch: int) -> list[tuple[jax.Array, jax.Array]]:
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  x = jax.image.resize(
    jnp.asarray(x / 16.0, jnp.float32).reshape(-1, 8, 8, 1),
    (len(x), 28, 28, 1),
    "linear",
  )
  rng = np.random.default_rng(0)
  out = []
  for _ in range(_N_BATCHES):
    idx = rng.choice(len(y), batch, replace=False)
    out.append((x[idx], jnp.asarray(y[idx])))
  return out


def vae_batches(batch: int) -> list[tuple]:
  rng = np.random.default_rng(1)
  return [
    (x.reshape(batch, -1), jnp.asarray(rng.normal(size=(batch, 20)), jnp.float32))
    for x, _ in _digits_28(batch)
  ]


def lstm_batches(batch: int) -> list[tuple]:
  rng = np.random.default_rng(0)
  out = []
  for _ in range(_N_BATCHES):
    tokens = rng.integers(0, _LSTM_VOCAB, (batch, _LSTM_LEN))
    label = (tokens < _LSTM_VOCAB // 2).sum(1) > _LSTM_LEN // 2
    out.append((jnp.asarray(tokens), jnp.asarray(label.astype(np.int32))))
  return out


# λ: "light" leaves most groups, "strong" zeroes a large share of them within
# the warm-up (the zero-group column reports what each reached).
MODELS: dict[str, dict[str, Any]] = {
  "vae": dict(
    init=vae_init, loss=vae_loss, batches=vae_batches, reg=dict(light=5e-5, strong=1e-3)
  ),
  "mnist_cnn": dict(
    init=mnist_cnn_init,
    loss=mnist_cnn_loss,
    batches=_digits_28,
    reg=dict(light=5e-5, strong=5e-4),
  ),
  "lstm": dict(
    init=lstm_init,
    loss=lstm_loss,
    batches=lstm_batches,
    reg=dict(light=1e-5, strong=1e-3),
  ),
  "transformer": dict(
    init=train_step.MODELS["transformer"]["init"],
    loss=_classifier_loss(train_step.transformer_apply),
    batches=lambda b: train_step.copy_task_batches(b // 8, 64, 64, _N_BATCHES),
    reg=dict(light=1e-4, strong=1e-3),
  ),
  "paper_cnn": dict(
    init=train_step.cnn_init,
    loss=_classifier_loss(train_step.cnn_apply),
    batches=lambda b: train_step.digits_batches(b, _N_BATCHES),
    reg=dict(light=1e-4, strong=1e-3),
  ),
}

# The Done-when cases of `--quick`: (model, batch, λ level).
QUICK = (
  ("vae", 64, "light"),
  ("mnist_cnn", 64, "strong"),
  ("paper_cnn", 64, "light"),
  ("transformer", 64, "light"),
)


# ----------------------------------------------------------------------------
# The line-up.


def lineup(
  specs: Any, reg: float, quick: bool
) -> dict[str, optax.GradientTransformation]:
  """The optimizers timed; "ramda" and "proxgen" are the library's defaults."""

  def ramda(**kw):
    return oxr.ramda(1e-2, reg_strength=kw.pop("reg", reg), regularizer=specs, **kw)

  def proxgen(**kw):
    return oxr.proxgen(1e-3, reg_strength=kw.pop("reg", reg), regularizer=specs, **kw)

  c = {
    "adamw": optax.adamw(1e-3),
    "madgrad": optax.contrib.madgrad(1e-2),
    "ramda": ramda(),
    "ramda λ=0": ramda(reg=0.0),
    "ramda pg": ramda(solver="pg"),
    "ramda exact": ramda(solver="exact"),
    "ramda exact_unrolled": ramda(solver="exact_unrolled"),
  }
  if quick:
    return c
  c |= {
    "ramda pg, warm_start=prox": ramda(solver="pg", warm_start="prox"),
    "rmda": oxr.rmda(0.1, reg_strength=reg, regularizer=specs),
    "proxgen": proxgen(),
    "proxgen λ=0": proxgen(reg=0.0),
    "proxgen pg": proxgen(solver="pg"),
    "proxgen exact_unrolled": proxgen(solver="exact_unrolled"),
    "prox_sgd": oxr.prox_sgd(0.1, reg_strength=reg, regularizer=specs),
    "proxssi": oxr.proxssi(1e-3, reg_strength=reg, regularizer=specs),
  }
  return c


# Candidates whose solver share is measured against a λ = 0 twin.
TWINS = {"ramda": "ramda λ=0", "ramda pg": "ramda λ=0", "proxgen": "proxgen λ=0"}
TWINS |= {"ramda pg, warm_start=prox": "ramda λ=0", "proxgen pg": "proxgen λ=0"}
TWINS |= {"ramda exact": "ramda λ=0", "ramda exact_unrolled": "ramda λ=0"}
TWINS |= {"proxgen exact_unrolled": "proxgen λ=0"}


# "exact_unrolled" first: the names are tried in this order.
SOLVERS = ("exact_unrolled", "exact", "pg")


def solver_of(name: str) -> str:
  """What the subproblem solver of a candidate of `lineup` runs as.

  Its default if unnamed (ProxSSI's prox is "exact"); "exact" runs as
  "exact_unrolled" when JAX's default backend is not the CPU.
  """
  solver = next((x for x in SOLVERS if f" {x}" in name), None)
  if solver is None and name.startswith(("ramda", "proxgen")):
    solver = inspect.signature(oxr.ramda).parameters["solver"].default
  solver = solver or "exact"
  if solver == "exact" and jax.default_backend() != "cpu":
    return "exact_unrolled"
  return solver


def loop_trips(name: str, counts: np.ndarray) -> np.ndarray:
  """Sequential while_loop trips per leaf from the state's `iterations`.

  "pg" and "exact" record their loop's trips; "exact_unrolled" records its
  unrolled Newton steps plus the trips of its fallback loop.
  """
  if solver_of(name) == "exact_unrolled":
    return np.maximum(counts - UNROLLED_STEPS, 0)
  return counts


def make_step(loss: Callable, tx: optax.GradientTransformation) -> Callable:
  """The jitted training step (gradient and update), params and state donated."""

  def step(p, s, batch):
    value, g = jax.value_and_grad(loss)(p, batch)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, value

  return jax.jit(step, donate_argnums=(0, 1))


def _iqr(xs: list[float]) -> tuple[float, float]:
  q = statistics.quantiles(xs, n=4)
  return q[0], q[2]


def bench(model: str, batch: int, level: str, args: argparse.Namespace) -> list[dict]:
  """Times every candidate on one (model, batch, λ); prints and returns its rows."""
  cfg = MODELS[model]
  reg = cfg["reg"][level]
  params0 = cfg["init"]()
  specs = oxr.resolve_specs(oxr.input_channel_groups, params0)
  reg_mask = _common.regularized_mask(specs)
  batches = cfg["batches"](batch)
  n = _common.count_params(params0)
  print(
    f"\n### {model}, batch {batch}: {n / 1e3:.0f}k parameters "
    f"({int(reg_mask.sum())} regularized leaves of {len(reg_mask)}); "
    f"λ = {reg:g} ({level}); {args.warmup} warm-up steps; "
    f"load avg {os.getloadavg()[0]:.1f}",
    flush=True,
  )
  cands = lineup(specs, reg, args.quick)
  holders: dict[str, list] = {}
  steps: dict[str, Callable[[], None]] = {}
  losses: dict[str, float] = {}
  for name, tx in cands.items():
    step = make_step(cfg["loss"], tx)
    p = jax.tree.map(jnp.copy, params0)
    s = jax.tree.map(jnp.copy, tx.init(p))  # madgrad's state aliases params.
    for i in range(args.warmup):
      p, s, value = step(p, s, batches[i % len(batches)])
    jax.block_until_ready((p, s))
    losses[name] = float(value)
    holder = [p, s, 0]
    holders[name] = holder

    def run(holder=holder, step=step):
      holder[2] = (holder[2] + 1) % len(batches)
      holder[0], holder[1], _ = step(holder[0], holder[1], batches[holder[2]])
      jax.block_until_ready(holder[:2])

    steps[name] = run

  iters: dict[str, list[np.ndarray]] = {name: [] for name in cands}

  def after_round(_):
    for name, (_, s, _) in holders.items():
      counts = _common.iteration_counts(s)
      if counts is not None:
        iters[name].append(counts[reg_mask])

  timing = _common.interleaved(steps, args.rounds, args.inner, after_round)

  def ratios(name, base, clock="wall"):
    t = getattr(timing, clock)
    return [a / b for a, b in zip(t[name], t[base], strict=True)]

  n_reg = int(reg_mask.sum())
  rows = []
  for name in cands:
    r = ratios(name, "adamw")
    r_cpu = ratios(name, "adamw", "cpu")
    row = dict(
      model=model,
      batch=batch,
      level=level,
      reg=reg,
      name=name,
      ms=1e3 * timing.median(name),
      x_adamw=statistics.median(r),
      x_adamw_iqr=_iqr(r),
      x_adamw_cpu=statistics.median(r_cpu),
      x_madgrad=timing.ratio(name, "madgrad"),
      loss=losses[name],
    )
    if name in TWINS:
      row["share"] = statistics.median(1 - x for x in ratios(TWINS[name], name))
    it = [x for x in iters[name] if name not in ("adamw", "madgrad")]
    if it and n_reg and not name.endswith("λ=0"):
      trips = [loop_trips(name, x) for x in it]
      row["iters_sum"] = statistics.median(int(x.sum()) for x in trips)
      row["iters_max"] = statistics.median(int(x.max()) for x in trips)
      p, s, _ = holders[name]
      rep = oxr.sparsity(_common.structured_iterate(s, p), specs)
      row["zero"] = float(rep["zero_groups"]) / float(rep["groups"])
      # One lax.cond (τ > 0) per regularized leaf for the optimizers that
      # solve, and one more (the fallback's test) for "exact_unrolled".
      solving = name.startswith(("ramda", "proxgen", "proxssi"))
      per_leaf = 2 if solver_of(name) == "exact_unrolled" else 1
      row["conds"] = per_leaf * n_reg if solving else 0
    rows.append(row)
  print(format_rows(rows), flush=True)
  return rows


def _fmt(x: float | None, spec: str) -> str:
  return "–" if x is None else format(x, spec)


def format_rows(rows: list[dict]) -> str:
  out = []
  for r in rows:
    lo, hi = r["x_adamw_iqr"]
    trips = "–"
    if "iters_sum" in r:
      trips = f"{r['iters_sum']:g} / {r['iters_max']:g}"
      trips += f" (+{r['conds']})" if r["conds"] else ""
    out.append(
      [
        r["name"],
        f"{r['ms']:.2f}",
        f"**{r['x_adamw']:.2f}** ({lo:.2f}–{hi:.2f})",
        f"{r['x_adamw_cpu']:.2f}",
        f"{r['x_madgrad']:.2f}",
        _fmt(r.get("share"), ".0%"),
        trips,
        _fmt(r.get("zero"), ".0%"),
        f"{r['loss']:.3f}",
      ]
    )
  return _common.table(
    [
      "optimizer",
      "wall ms/step",
      "× adamw wall (IQR)",
      "× adamw CPU",
      "× madgrad wall",
      "solver share",
      "loop trips Σ leaves / max leaf (+ conds)",
      "zero groups",
      "loss after warm-up",
    ],
    out,
  )


def summary(rows: list[dict]) -> str:
  """The library's defaults per case: RAMDA and ProxGen × AdamW, and the trips."""
  cases: dict[tuple, dict[str, dict]] = {}
  for r in rows:
    cases.setdefault((r["model"], r["batch"], r["level"], r["reg"]), {})[r["name"]] = r
  out = []
  for (model, batch, level, reg), by in cases.items():
    ram = by["ramda"]

    def trips(r):
      return f"{r.get('iters_sum', 0):g} / {r.get('iters_max', 0):g} (+{r['conds']})"

    out.append(
      [
        f"{model}, {batch}, λ = {reg:g} ({level})",
        f"**{ram['x_adamw']:.2f}** ({ram['x_adamw_iqr'][0]:.2f}–"
        f"{ram['x_adamw_iqr'][1]:.2f})",
        *(f"{by[f'ramda {x}']['x_adamw']:.2f}" for x in SOLVERS),
        f"{by['ramda λ=0']['x_adamw']:.2f}",
        f"{by['madgrad']['x_adamw']:.2f}",
        _fmt(by.get("proxgen", {}).get("x_adamw"), ".2f"),
        *(trips(by[f"ramda {x}"]) for x in SOLVERS),
        _fmt(ram.get("zero"), ".0%"),
      ]
    )
  return _common.table(
    [
      "model, batch, λ",
      "ramda (default) × adamw (IQR)",
      *(f'ramda solver="{x}"' for x in SOLVERS),
      "ramda λ = 0",
      "madgrad",
      "proxgen (default)",
      *(f"{x}: loop trips Σ / fused (+ conds)" for x in SOLVERS),
      "zero groups (default)",
    ],
    out,
  )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="the Done-when cases only")
  ap.add_argument("--models", default=",".join(MODELS), help="comma list")
  ap.add_argument("--batches", default="64,256", help="comma list of batch sizes")
  ap.add_argument("--reg", default="light,strong", help="λ levels: light, strong")
  ap.add_argument("--rounds", type=int, default=None)
  ap.add_argument("--inner", type=int, default=None, help="steps per round")
  ap.add_argument("--warmup", type=int, default=None, help="training steps first")
  args = ap.parse_args()
  if args.quick:
    cases = [c for c in QUICK if c[0] in args.models.split(",")]
    args.rounds = args.rounds or 10
    args.inner = args.inner or 2
    args.warmup = args.warmup if args.warmup is not None else 100
  else:
    cases = [
      (m, int(b), level)
      for m in args.models.split(",")
      for b in args.batches.split(",")
      for level in args.reg.split(",")
    ]
    args.rounds = args.rounds or 20
    args.inner = args.inner or 3
    args.warmup = args.warmup if args.warmup is not None else 150
  print(f"machine: {_common.machine()}")
  print(f"rounds {args.rounds} × {args.inner} steps per candidate, round-robin")
  t0 = time.perf_counter()
  rows = []
  for model, batch, level in cases:
    rows += bench(model, batch, level, args)
  print(f"\n### Summary (× adamw, wall; load avg now {os.getloadavg()[0]:.1f})")
  print(summary(rows))
  print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  main()
