"""The validation search behind the calibrated λ, η of ``--task lm`` and nuclear runs.

``python -m optax_ramda.experiments._calibrate lm`` trains every (λ, η) of a
small grid per method at the task's default size, evaluates each run on the
*validation* split only (the lm task's middle span of the corpus; for a
classification task the last 20 % of its training examples, never its test
split), appends one JSON line per run to ``--out`` and prints the chosen
points. The rule: the dense reference's (AdamW's) best validation quality
sets the bar; each regularized method gets the (λ, η) with the most structure
(group sparsity, or low-rank level for ``nuclear``) whose validation quality
is within the tolerance of that bar (perplexity at most ``1 + tol`` times it,
or accuracy at most ``tol`` below it), else its best-quality point.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np

from optax_ramda.experiments import _data, _lm, _optimizers
from optax_ramda.experiments._extended import ExtendedTrainer
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._tasks import TASKS

# The grids: λ per regularized method, η as factors of the paper's (the same
# for every method; a method whose choice sits at the largest factor gets the
# next one too, by a second call with ``--lr-factors 30``).
LM_REG_GRID = (3e-5, 1e-4, 3e-4, 1e-3)
LM_LR_FACTORS = (1.0, 3.0, 10.0)
NUCLEAR_REG_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
NUCLEAR_LR_FACTORS = (1 / 3, 1.0, 3.0, 10.0)


def _validation_split(data: _data.Dataset, fraction: float = 0.2) -> _data.Dataset:
  """The training examples split by position: the last `fraction` validates."""
  n_val = math.ceil(fraction * len(data.y_train))
  return data._replace(
    x_train=data.x_train[:-n_val],
    y_train=data.y_train[:-n_val],
    x_test=data.x_train[-n_val:],
    y_test=data.y_train[-n_val:],
  )


def choose(records: list[dict[str, Any]], key: str, tol: float) -> dict[str, Any]:
  """The chosen (λ, η) per method from the search's records (see module doc)."""
  lm = key == "group_sparsity" and "val_perplexity" in records[0]

  def quality(r):  # Larger is better.
    return -r["val_perplexity"] if lm else r["accuracy"]

  dense = [r for r in records if not METHODS[r["optimizer"]].regularized]
  bar = max(quality(r) for r in dense) if dense else None
  chosen = {}
  for name in dict.fromkeys(r["optimizer"] for r in records):
    mine = [r for r in records if r["optimizer"] == name and np.isfinite(quality(r))]
    if not mine:
      continue
    if bar is None or not METHODS[name].regularized:
      best = max(mine, key=quality)
    else:
      ok = [
        r
        for r in mine
        if (
          r["val_perplexity"] <= (1 + tol) * -bar if lm else r["accuracy"] >= bar - tol
        )
      ]
      best = (
        max(ok, key=lambda r: (r[key], quality(r))) if ok else max(mine, key=quality)
      )
    chosen[name] = best
  return chosen


def markdown_table(records: list[dict[str, Any]], key: str, tol: float) -> str:
  """Every record as a row of a Markdown table, the chosen points in bold.

  Rows go by method (in the records' order), then η, then λ; η is shown with
  the paper's in parentheses.
  """
  lm = "val_perplexity" in records[0]
  chosen = {id(r) for r in choose(records, key, tol).values()}
  quality = "val. perplexity" if lm else "val. accuracy (%)"
  structure = "group sparsity (%)" if lm else "low-rank level (%)"
  lines = [
    f"| method | λ | η (paper's) | {quality} | {structure} | run wall time (s) |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  order = list(dict.fromkeys(r["optimizer"] for r in records))
  for r in sorted(
    records,
    key=lambda r: (order.index(r["optimizer"]), r["learning_rate"], r["reg_strength"]),
  ):
    method = METHODS[r["optimizer"]]
    value = f"{r['val_perplexity']:.2f}" if lm else f"{100 * r['accuracy']:.2f}"
    cells = [value, f"{100 * r[key]:.1f}"] if method.regularized else [value, "–"]
    if id(r) in chosen:
      cells = [f"**{c}**" for c in cells]
    lines.append(
      f"| {method.label} | {r['reg_strength']:g} | {r['learning_rate']:.3g} "
      f"({method.learning_rate:g}) | {' | '.join(cells)} | {r['seconds']:.0f} |"
    )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Runs the search (see the module doc)."""
  parser = argparse.ArgumentParser(prog="python -m optax_ramda.experiments._calibrate")
  parser.add_argument("setting", choices=("lm", "nuclear"))
  parser.add_argument("--optimizer", nargs="+", default=None)
  parser.add_argument("--reg", type=float, nargs="+", default=None, help="λ grid")
  parser.add_argument("--lr-factors", type=float, nargs="+", default=None)
  parser.add_argument("--tol", type=float, default=None)
  parser.add_argument("--out", default="calibrate.jsonl")
  parser.add_argument(
    "--select", action="store_true", help="train nothing: choose from --out's records"
  )
  args = parser.parse_args(argv)
  if args.select:
    with open(args.out) as f:
      records = [json.loads(line) for line in f if line.strip()]
    lm = args.setting == "lm"
    key, tol = ("group_sparsity", 0.02) if lm else ("low_rank_level", 0.01)
    print(markdown_table(records, key, args.tol or tol))
    task_name = "lm" if lm else "mlp"
    for name, r in choose(records, key, args.tol or tol).items():
      print(
        f'  ("{task_name}", "{name}"): ({r["reg_strength"]:g}, '
        f"{r['learning_rate']:g}),  # {key} {r[key]:.3f}, "
        + (
          f"val ppl {r['val_perplexity']:.3f}" if lm else f"val acc {r['accuracy']:.4f}"
        )
      )
    return 0
  lm = args.setting == "lm"
  if lm:
    task = TASKS["lm"]
    splits = _lm.load(_lm.Config().chars, _lm.Config().seq_len)
    # The test split is never read: the "test" slot holds the validation split.
    data, test = splits.data, (splits.data.x_test, splits.data.y_test)
    names = args.optimizer or ["adamw", "ramda", "rmda", "proxgen", "prox_sgd"]
    regs, key, tol = args.reg or LM_REG_GRID, "group_sparsity", args.tol or 0.02
    factors = args.lr_factors or LM_LR_FACTORS
    regularizer = "group_lasso"
  else:
    task = TASKS["mlp"]
    data = _validation_split(task.prepared(_data.load(task.dataset)))
    test = None
    names = args.optimizer or ["sgd", "adamw", "ramda", "rmda", "proxgen", "prox_sgd"]
    regs, key, tol = args.reg or NUCLEAR_REG_GRID, "low_rank_level", args.tol or 0.01
    factors = args.lr_factors or NUCLEAR_LR_FACTORS
    regularizer = "nuclear"
  steps = task.epochs * (len(data.y_train) // task.batch_size)
  records = []
  with open(args.out, "a") as f:
    for name in names:
      method = METHODS[name]
      for factor in factors:
        for reg in regs if method.regularized else (0.0,):
          settings = _optimizers.settings(
            method,
            total_steps=steps,
            stages=3,
            decay=0.1,
            reg_strength=reg,
            solver="pg",
            learning_rate=method.learning_rate * factor,
          )
          trainer = ExtendedTrainer(
            task,
            data,
            method,
            settings,
            task.batch_size,
            regularizer=regularizer,
            test=test,
          )
          start = time.perf_counter()
          result = trainer.run(0, task.epochs, progress=False)
          record = {
            "setting": args.setting,
            "optimizer": name,
            "reg_strength": settings.reg_strength,
            "learning_rate": settings.learning_rate,
            "seconds": time.perf_counter() - start,
            **{
              k: float(v)
              for k, v in result.final.items()
              if k not in ("perplexity", "test_loss")  # The validation split's.
            },
          }
          records.append(record)
          f.write(json.dumps(record) + "\n")
          f.flush()
          print(
            name,
            f"λ={reg:g} η={settings.learning_rate:g}",
            {
              k: round(record.get(k, float("nan")), 4)
              for k in ("val_perplexity", "accuracy", key, "seconds")
            },
            flush=True,
          )
  for name, r in choose(records, key, tol).items():
    print(
      f'  ("{task.name}", "{name}"): ({r["reg_strength"]:g}, {r["learning_rate"]:g}),'
    )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
