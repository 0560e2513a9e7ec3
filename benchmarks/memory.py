"""Optimizer state memory per parameter: RAMDA and the baselines vs Optax's.

State bytes come from `jax.eval_shape(tx.init, params)` (nothing is allocated,
so any size works); "step temporaries" are XLA's `temp_size_in_bytes` for the
jitted, donated step (`compile().memory_analysis()`): the scratch memory a
step needs on top of params, gradients and state.

  python benchmarks/memory.py                     # 1M and 50M, both models
  python benchmarks/memory.py --sizes 10M --no-temp
"""

from __future__ import annotations

import argparse

import _common
import jax
import jax.numpy as jnp
import optax

import optax_ramda as oxr


def temp_bytes(tx: optax.GradientTransformation, shapes) -> int | None:
  state = jax.eval_shape(tx.init, shapes)
  compiled = _common.make_step(tx).lower(shapes, state, shapes).compile()
  analysis = compiled.memory_analysis()
  return None if analysis is None else int(analysis.temp_size_in_bytes)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sizes", default="1M,50M")
  ap.add_argument("--models", default="cnn,transformer")
  ap.add_argument("--no-temp", action="store_true", help="skip compiling steps")
  ap.add_argument("--quick", action="store_true", help="the 1M CNN only")
  args = ap.parse_args()
  if args.quick:
    args.sizes = "1M"
    args.models = "cnn"
  print(f"machine: {_common.machine()}")
  for size in args.sizes.split(","):
    for model in args.models.split(","):
      shapes = _common.model_shapes(model, _common.parse_size(size))
      n = _common.count_params(shapes)
      specs = oxr.resolve_specs(oxr.input_channel_groups, shapes)
      cands = _common.lineup(specs, 1e-3)
      cands.append(
        _common.Candidate(
          "ramda_pg, state_dtype=bfloat16",
          oxr.ramda(
            1e-2,
            reg_strength=1e-3,
            regularizer=specs,
            solver="pg",
            state_dtype=jnp.bfloat16,
          ),
          "structured",
        )
      )
      sizes = {c.name: _common.state_bytes(c.tx, shapes) for c in cands}
      rows = []
      for c in cands:
        b = sizes[c.name]
        row = [
          c.name,
          f"{b / n:.2f}",
          f"{b / sizes['adamw']:.2f}",
          f"{b / sizes['madgrad']:.2f}",
        ]
        if not args.no_temp:
          t = temp_bytes(c.tx, shapes)
          row.append("n/a" if t is None else f"{t / n:.2f}")
        rows.append(row)
      header = ["optimizer", "state B/param", "× adamw", "× madgrad"]
      if not args.no_temp:
        header.append("step temporaries B/param")
      print(f"\n### {model}, {n / 1e6:.1f}M float32 parameters")
      print(_common.table(header, rows), flush=True)


if __name__ == "__main__":
  main()
