"""Cost of one optimizer step: RAMDA and the baselines vs Optax's optimizers.

Times `tx.update` + `optax.apply_updates`, jitted with params and state donated,
on parameter trees shaped like a VGG-style CNN and a Transformer (Flax layouts;
the paper's grouping: one group per input channel/feature of every kernel via
`oxr.input_channel_groups`, biases/norms/embeddings unregularized). Gradients
are fixed random arrays (entries ~1e-3, a log-uniform per-group factor so that
some groups are screened and others are not). All candidates' repeats are
interleaved round-robin in one process and every ratio is the median over
rounds of time/time(baseline) within the same round.

With random gradients the inner solver's iteration counts are not those of
training; the table reports the counts observed (per round: the largest count
over leaves) and the fraction of groups that the iterate has at zero.

  python benchmarks/step.py --quick               # the 1M CNN, < 1 min
  python benchmarks/step.py --sizes 1M,10M,50M    # the full table
  python benchmarks/step.py --sizes 10M --models cnn --variants   # profiling
"""

from __future__ import annotations

import argparse
import time

import _common
import jax
import jax.numpy as jnp
import numpy as np

import optax_ramda as oxr


def bench(model: str, n_params: int, args: argparse.Namespace) -> str:
  shapes = _common.model_shapes(model, n_params)
  params0 = _common.materialize(shapes)
  specs = oxr.resolve_specs(oxr.input_channel_groups, params0)
  grads = _common.random_grads(params0, specs)
  reg_mask = _common.regularized_mask(specs)
  n = _common.count_params(shapes)
  n_groups = int(oxr.sparsity(params0, specs)["groups"])
  print(
    f"\n### {model}, {n / 1e6:.1f}M parameters ({len(reg_mask)} leaves, "
    f"{reg_mask.sum()} regularized, {n_groups} groups; λ = {args.reg:g})",
    flush=True,
  )
  cands = _common.lineup(specs, args.reg, variants=args.variants, only=args.only)
  holders: dict[str, list] = {}
  steps = {}
  compile_s = {}
  for c in cands:
    step = _common.make_step(c.tx)
    p = jax.tree.map(jnp.copy, params0)
    # optax.contrib.madgrad's state holds the params buffers themselves (its
    # x0); copy every state leaf so that params and state can both be donated.
    s = jax.tree.map(jnp.copy, c.tx.init(p))
    t0 = time.perf_counter()
    p, s = jax.block_until_ready(step(p, s, grads))
    compile_s[c.name] = time.perf_counter() - t0
    for _ in range(args.warmup):
      p, s = step(p, s, grads)
    jax.block_until_ready((p, s))
    holder = [p, s]
    holders[c.name] = holder

    def run(holder=holder, step=step):
      holder[0], holder[1] = step(holder[0], holder[1], grads)
      jax.block_until_ready(holder)

    steps[c.name] = run

  iters: dict[str, list[np.ndarray]] = {c.name: [] for c in cands}

  def after_round(_):
    for name, (_, s) in holders.items():
      counts = _common.iteration_counts(s)
      if counts is not None:
        iters[name].append(counts[reg_mask])

  timing = _common.interleaved(steps, args.rounds, args.inner, after_round)

  rows = []
  for c in cands:
    lo, hi = timing.spread(c.name)
    it = iters[c.name]
    if it:
      per_round_max = [int(x.max()) for x in it]
      per_round_mean = [float(x.mean()) for x in it]
      it_str = (
        f"{int(np.median(per_round_max))} ({min(per_round_max)}–{max(per_round_max)})"
        f" / {np.median(per_round_mean):.1f}"
      )
      p, s = holders[c.name]
      rep = oxr.sparsity(_common.structured_iterate(s, p), specs)
      zero = f"{100 * float(rep['zero_groups']) / float(rep['groups']):.0f}%"
    else:
      it_str, zero = "–", "–"

    def ratios(base, name=c.name):
      if base not in timing.wall:
        return "–"
      return f"{timing.ratio(name, base):.2f} / {timing.ratio(name, base, 'cpu'):.2f}"

    rows.append(
      [
        c.name,
        f"{1e3 * timing.median(c.name):.2f} ({1e3 * lo:.2f}–{1e3 * hi:.2f})",
        f"{1e3 * timing.median(c.name, 'cpu'):.2f}",
        ratios("sgd_m0.9"),
        ratios("adamw"),
        ratios("madgrad"),
        ratios("ramda_l0"),
        it_str,
        zero,
        f"{compile_s[c.name]:.1f}",
      ]
    )
  out = _common.table(
    [
      "optimizer",
      "wall ms/step median (IQR)",
      "CPU ms/step",
      "× sgd wall / CPU",
      "× adamw wall / CPU",
      "× madgrad wall / CPU",
      "× ramda λ=0 wall / CPU",
      "inner iters: max over leaves, median (range) / mean",
      "zero groups",
      "1st call s",
    ],
    rows,
  )
  print(out, flush=True)
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument(
    "--quick", action="store_true", help="the 1M CNN only, few rounds (< 1 min)"
  )
  ap.add_argument("--sizes", default="1M,10M,50M")
  ap.add_argument("--models", default=None, help="default: cnn,transformer")
  ap.add_argument("--rounds", type=int, default=None)
  ap.add_argument("--inner", type=int, default=None, help="steps per round")
  ap.add_argument("--warmup", type=int, default=5, help="steps after compiling")
  ap.add_argument("--reg", type=float, default=1e-3, help="λ of the structured runs")
  ap.add_argument("--variants", action="store_true", help="add profiling variants")
  ap.add_argument("--only", default=None, help="comma list of structured candidates")
  args = ap.parse_args()
  if args.only:
    args.only = args.only.split(",")
  if args.quick:
    args.sizes = "1M"
    args.models = args.models or "cnn"
    args.rounds = args.rounds or 15
    args.inner = args.inner or 1
    args.warmup = min(args.warmup, 2)
  args.models = args.models or "cnn,transformer"
  args.rounds = args.rounds or 30
  args.inner = args.inner or 1
  print(f"machine: {_common.machine()}")
  print(
    f"rounds {args.rounds} × {args.inner} steps per candidate, round-robin; "
    f"warm-up {args.warmup} steps"
  )
  for size in args.sizes.split(","):
    for model in args.models.split(","):
      bench(model, _common.parse_size(size), args)


if __name__ == "__main__":
  main()
