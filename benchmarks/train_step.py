"""Cost of a full training step (forward, backward, update) with each optimizer.

Two small models in plain JAX with Flax parameter layouts (so that
`oxr.input_channel_groups` gives the paper's grouping):

* cnn: Conv(3×3, 1→32) → Conv(3×3, 32→64) → 2×2 average pool → Dense(1024→128)
  → Dense(128→10), ReLU, on batches of scikit-learn's 8×8 digits;
* transformer: a 2-layer pre-norm causal decoder (d = 128, 4 heads, MLP 512,
  vocabulary 64, sequences of 64) on a synthetic copy task.

Each optimizer gets its own copy of the model, trains on real batches for a
warm-up (so that the structured optimizers' subproblems, screening and inner
iteration counts are those of training), then all are timed round-robin in
one process. "grad_only" is the forward and backward pass alone (gradients reduced
to a scalar: a rough floor, since XLA fuses it differently from a full step);
"× adamw" is the median over rounds of time/time(adamw) within a round.

  python benchmarks/train_step.py --quick       # the CNN only, about 1 min
  python benchmarks/train_step.py               # both models, more rounds
  python benchmarks/train_step.py --models cnn --breakdown   # where time goes
"""

from __future__ import annotations

import argparse
import time

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import optax_ramda as oxr

is_spec = oxr.is_spec

# ----------------------------------------------------------------------------
# Models.


def cnn_init(seed: int = 0) -> dict:
  s = _common._sds
  shapes = {
    "Conv_0": {"kernel": s(3, 3, 1, 32), "bias": s(32)},
    "Conv_1": {"kernel": s(3, 3, 32, 64), "bias": s(64)},
    "Dense_0": {"kernel": s(4 * 4 * 64, 128), "bias": s(128)},
    "Dense_1": {"kernel": s(128, 10), "bias": s(10)},
  }
  return _common.materialize(shapes, seed)


def _conv(x, p):
  y = lax.conv_general_dilated(
    x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return y + p["bias"]


def cnn_apply(p: dict, x: jax.Array) -> jax.Array:
  x = jax.nn.relu(_conv(x, p["Conv_0"]))
  x = jax.nn.relu(_conv(x, p["Conv_1"]))
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).reshape(b, -1)
  x = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  return x @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def _layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * lax.rsqrt(var + 1e-6) * p["scale"] + p["bias"]


def transformer_apply(p: dict, tokens: jax.Array) -> jax.Array:
  x = p["embed"]["embedding"][tokens]
  length = tokens.shape[1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  for name in sorted(k for k in p if k.startswith("block_")):
    blk = p[name]
    h = _layer_norm(x, blk["LayerNorm_0"])
    att = blk["attention"]
    q, k, v = (
      jnp.einsum("bld,dhk->blhk", h, att[n]["kernel"]) + att[n]["bias"]
      for n in ("query", "key", "value")
    )
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.sqrt(q.shape[-1])
    weights = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
    o = jnp.einsum("bhqs,bshk->bqhk", weights, v)
    x = x + jnp.einsum("blhk,hkd->bld", o, att["out"]["kernel"]) + att["out"]["bias"]
    h = _layer_norm(x, blk["LayerNorm_1"])
    mlp = blk["mlp"]
    h = jax.nn.gelu(h @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    x = x + h @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
  x = _layer_norm(x, p["final_norm"])
  return x @ p["head"]["kernel"] + p["head"]["bias"]


# ----------------------------------------------------------------------------
# Data: fixed device-resident batches, cycled.


def digits_batches(batch: int, count: int) -> list[tuple[jax.Array, jax.Array]]:
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
  rng = np.random.default_rng(0)
  out = []
  for _ in range(count):
    idx = rng.choice(len(x), batch, replace=False)
    out.append((jnp.asarray(x[idx]), jnp.asarray(y[idx])))
  return out


def copy_task_batches(
  batch: int, length: int, vocab: int, count: int
) -> list[tuple[jax.Array, jax.Array]]:
  """Sequences whose second half repeats the first: next-token targets."""
  rng = np.random.default_rng(0)
  out = []
  for _ in range(count):
    half = rng.integers(0, vocab, (batch, (length + 1) // 2 + 1))
    seq = np.concatenate([half, half], axis=1)[:, : length + 1]
    out.append((jnp.asarray(seq[:, :-1]), jnp.asarray(seq[:, 1:])))
  return out


MODELS = {
  "cnn": dict(
    init=cnn_init,
    apply=cnn_apply,
    batches=lambda args: digits_batches(args.batch, 16),
    reg=1e-4,
  ),
  "transformer": dict(
    init=lambda seed=0: _common.materialize(
      _common.transformer_shapes(128, layers=2, head_dim=32, vocab=64), seed
    ),
    apply=transformer_apply,
    batches=lambda args: copy_task_batches(args.batch // 8, 64, 64, 16),
    reg=1e-4,
  ),
}


def make_steps(apply, tx):
  def loss_fn(p, x, y):
    logits = apply(p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def train_step(p, s, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  return jax.jit(train_step, donate_argnums=(0, 1))


def make_grad_only(apply):
  def loss_fn(p, x, y):
    logits = apply(p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  # The gradients are summed into the loss output so that none is dead code.
  def grad_step(p, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    return loss + 0 * optax.tree.sum(jax.tree.map(jnp.sum, g))

  return jax.jit(grad_step)


def bench(model: str, args: argparse.Namespace) -> str:
  cfg = MODELS[model]
  params0 = cfg["init"]()
  specs = oxr.resolve_specs(oxr.input_channel_groups, params0)
  batches = cfg["batches"](args)
  reg = args.reg if args.reg is not None else cfg["reg"]
  n = _common.count_params(params0)
  print(
    f"\n### {model}: {n / 1e3:.0f}k parameters, batch {batches[0][0].shape}; "
    f"λ = {reg:g}, {args.warmup} warm-up steps",
    flush=True,
  )
  cands = _common.lineup(specs, reg, variants=args.variants, only=args.only)
  holders: dict[str, list] = {}
  steps = {}
  first_s = {}
  losses = {}
  for c in cands:
    step = make_steps(cfg["apply"], c.tx)
    p = jax.tree.map(jnp.copy, params0)
    s = jax.tree.map(jnp.copy, c.tx.init(p))  # madgrad's state aliases params.
    t0 = time.perf_counter()
    p, s, loss = jax.block_until_ready(step(p, s, *batches[0]))
    first_s[c.name] = time.perf_counter() - t0
    for i in range(args.warmup):
      p, s, loss = step(p, s, *batches[(i + 1) % len(batches)])
    jax.block_until_ready((p, s))
    losses[c.name] = float(loss)
    holder = [p, s, 0]
    holders[c.name] = holder

    def run(holder=holder, step=step):
      holder[2] = (holder[2] + 1) % len(batches)
      holder[0], holder[1], _ = step(holder[0], holder[1], *batches[holder[2]])
      jax.block_until_ready(holder[:2])

    steps[c.name] = run

  grad_only = make_grad_only(cfg["apply"])
  jax.block_until_ready(grad_only(params0, *batches[0]))
  g_idx = [0]

  def run_grad_only():
    g_idx[0] = (g_idx[0] + 1) % len(batches)
    jax.block_until_ready(grad_only(params0, *batches[g_idx[0]]))

  steps = {"grad_only": run_grad_only, **steps}
  reg_mask = _common.regularized_mask(specs)
  iters: dict[str, list[np.ndarray]] = {c.name: [] for c in cands}

  def after_round(_):
    for name, (_, s, _) in holders.items():
      counts = _common.iteration_counts(s)
      if counts is not None:
        iters[name].append(counts[reg_mask])

  timing = _common.interleaved(steps, args.rounds, args.inner, after_round)

  rows = []
  for name in steps:
    lo, hi = timing.spread(name)
    it = iters.get(name, [])
    if it:
      mx = [int(x.max()) for x in it]
      it_str = f"{int(np.median(mx))} ({min(mx)}–{max(mx)})"
      p, s, _ = holders[name]
      rep = oxr.sparsity(_common.structured_iterate(s, p), specs)
      zero = f"{100 * float(rep['zero_groups']) / float(rep['groups']):.0f}%"
    else:
      it_str, zero = "–", "–"

    def ratios(base, name=name):
      return f"{timing.ratio(name, base):.3f} / {timing.ratio(name, base, 'cpu'):.3f}"

    rows.append(
      [
        name,
        f"{1e3 * timing.median(name):.2f} ({1e3 * lo:.2f}–{1e3 * hi:.2f})",
        f"{1e3 * timing.median(name, 'cpu'):.2f}",
        ratios("adamw"),
        ratios("madgrad"),
        it_str,
        zero,
        f"{losses[name]:.3f}" if name in losses else "–",
      ]
    )
  out = _common.table(
    [
      "optimizer",
      "wall ms/step median (IQR)",
      "CPU ms/step",
      "× adamw wall / CPU",
      "× madgrad wall / CPU",
      "inner iters (max over leaves): median (range)",
      "zero groups",
      "loss after warm-up",
    ],
    rows,
  )
  print(out, flush=True)
  return out


def breakdown(model: str, args: argparse.Namespace) -> str:
  """Where RAMDA's optimizer time goes: the update alone, by variant and leaf.

  Trains the model with RAMDA (exact solver) for the warm-up, takes one real
  gradient, then times `update` + `apply_updates` from that same state
  (nothing is donated or advanced, so every variant solves the same
  subproblems) for RAMDA without any regularizer, with λ = 0, with each
  solver, and with only one leaf regularized at a time.
  """
  cfg = MODELS[model]
  reg = args.reg if args.reg is not None else cfg["reg"]
  params0 = cfg["init"]()
  specs = oxr.resolve_specs(oxr.input_channel_groups, params0)
  batches = cfg["batches"](args)
  lr = 1e-2

  def ramda(regularizer=specs, **kw):
    return oxr.ramda(lr, reg_strength=kw.pop("reg", reg), regularizer=regularizer, **kw)

  tx = ramda(solver="exact")
  step = make_steps(cfg["apply"], tx)
  p = jax.tree.map(jnp.copy, params0)
  s = tx.init(p)
  for i in range(args.warmup):
    p, s, _ = step(p, s, *batches[i % len(batches)])

  def loss_fn(p, x, y):
    logits = cfg["apply"](p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  g = jax.grad(loss_fn)(p, *batches[0])
  variants = {
    "adamw": optax.adamw(1e-3),
    "madgrad": optax.contrib.madgrad(lr),
    "ramda, no regularizer": oxr.ramda(lr),
    "ramda λ=0 (specs)": ramda(reg=0.0),
    "ramda exact": ramda(solver="exact"),
    "ramda pg": ramda(solver="pg"),
    "ramda pg max_iters=1": ramda(solver="pg", max_iters=1),
    "ramda pg warm_start=prox": ramda(solver="pg", warm_start="prox"),
    "ramda pg subgradient": ramda(solver="pg", stopping="subgradient"),
  }
  param_leaves = jax.tree_util.tree_leaves(params0)
  spec_leaves = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)[0]
  for leaf, (path, spec) in zip(param_leaves, spec_leaves, strict=True):
    if spec is None:
      continue
    name, size = jax.tree_util.keystr(path), leaf.size
    one = jax.tree_util.tree_map_with_path(
      lambda q, sp, path=path: sp if q == path else None, specs, is_leaf=is_spec
    )
    for solver in ("exact", "pg"):
      variants[f"ramda {solver}, only {name} ({size})"] = ramda(one, solver=solver)

  fns, iters = {}, {}
  for name, vtx in variants.items():
    vs = s if name.startswith("ramda") else vtx.init(p)
    update = jax.jit(
      lambda g, st, p, vtx=vtx: (
        optax.apply_updates(p, (r := vtx.update(g, st, p))[0]),
        r[1],
      )
    )
    _, new_state = jax.block_until_ready(update(g, vs, p))
    counts = _common.iteration_counts(new_state)
    iters[name] = "–" if counts is None else str(int(counts.max()))
    fns[name] = lambda update=update, vs=vs: jax.block_until_ready(update(g, vs, p))
  timing = _common.interleaved(fns, args.rounds, args.inner)
  base = "ramda, no regularizer"
  rows = [
    [
      name,
      f"{1e3 * timing.median(name):.3f}",
      f"{1e3 * (timing.median(name) - timing.median(base)):+.3f}",
      f"{1e3 * timing.median(name, 'cpu'):.3f}",
      f"{1e3 * (timing.median(name, 'cpu') - timing.median(base, 'cpu')):+.3f}",
      iters[name],
    ]
    for name in fns
  ]
  out = _common.table(
    [
      "update only",
      "wall ms",
      "wall ms vs no regularizer",
      "CPU ms",
      "CPU ms vs no regularizer",
      "inner iters (max over leaves)",
    ],
    rows,
  )
  print(
    f"\n### {model}: optimizer update alone after {args.warmup} RAMDA steps, "
    f"λ = {reg:g}\n{out}",
    flush=True,
  )
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="the CNN, fewer steps")
  ap.add_argument("--models", default=None, help="default: cnn,transformer")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--rounds", type=int, default=None)
  ap.add_argument("--inner", type=int, default=None, help="steps per round")
  ap.add_argument("--warmup", type=int, default=None, help="training steps first")
  ap.add_argument("--reg", type=float, default=None, help="λ (default per model)")
  ap.add_argument("--variants", action="store_true", help="add profiling variants")
  ap.add_argument("--only", default=None, help="comma list of structured candidates")
  ap.add_argument(
    "--breakdown",
    action="store_true",
    help="time RAMDA's update alone by variant and by leaf instead",
  )
  args = ap.parse_args()
  if args.only:
    args.only = args.only.split(",")
  if args.quick:
    args.models = args.models or "cnn"
    args.rounds = args.rounds or 10
    args.inner = args.inner or 1
    args.warmup = args.warmup if args.warmup is not None else 20
  args.models = args.models or "cnn,transformer"
  args.rounds = args.rounds or 60
  args.inner = args.inner or 1
  args.warmup = args.warmup if args.warmup is not None else 200
  print(f"machine: {_common.machine()}")
  print(f"rounds {args.rounds} × {args.inner} steps per candidate, round-robin")
  for model in args.models.split(","):
    if args.breakdown:
      breakdown(model, args)
    else:
      bench(model, args)


if __name__ == "__main__":
  main()
