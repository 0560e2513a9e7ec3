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
or accuracy at most ``tol`` below it), else its best-quality point. A search
without the dense reference (``--optimizer ramda``) has no bar: it says so and
prints each method's best-quality point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from optax_ramda.experiments import _data, _grid_rule, _lm, _optimizers
from optax_ramda.experiments._classifiers import ClassifierTask
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._selection import choose as choose
from optax_ramda.experiments._selection import has_bar, short_of_bar
from optax_ramda.experiments._tasks import TASKS
from optax_ramda.experiments._train import Trainer

# The grids: λ per regularized method, η as factors of the paper's (the same
# for every method). The grid-extension rule (:mod:`~._grid_rule`) applies as
# in the main job's sweep: while a choice sits at an end, the value beyond it
# runs too, by a further call (``--lr-factors 30``, ``--reg 3e-3``); every
# search prints what the rule still asks for, and the committed records leave
# nothing (tests/test_calibrate.py).
LM_REG_GRID = (3e-5, 1e-4, 3e-4, 1e-3)
LM_LR_FACTORS = (1.0, 3.0, 10.0)
NUCLEAR_REG_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
NUCLEAR_LR_FACTORS = (1 / 3, 1.0, 3.0, 10.0)


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


@dataclasses.dataclass(frozen=True)
class Search:
  """One calibration search: its task, regularizer, grids and selection rule.

  Attributes:
    task: the task's name.
    regularizer: the regularizer's name.
    key: the structure the rule maximizes.
    tol: the rule's tolerance (relative perplexity, or accuracy units).
    reg_grid: the λ grid of the regularized methods.
    lr_factors: the η grid, as factors of each method's paper η.
    optimizers: the methods searched.
  """

  task: str
  regularizer: str
  key: str
  tol: float
  reg_grid: tuple[float, ...]
  lr_factors: tuple[float, ...]
  optimizers: tuple[str, ...]


SEARCHES = {
  "lm": Search(
    "lm",
    "group_lasso",
    "group_sparsity",
    0.02,
    LM_REG_GRID,
    LM_LR_FACTORS,
    ("adamw", "ramda", "rmda", "proxgen", "prox_sgd"),
  ),
  "nuclear": Search(
    "mlp",
    "nuclear",
    "low_rank_level",
    0.01,
    NUCLEAR_REG_GRID,
    NUCLEAR_LR_FACTORS,
    ("sgd", "adamw", "ramda", "rmda", "proxgen", "prox_sgd"),
  ),
}


def search_data(search: Search) -> tuple[_data.Dataset, Any]:
  """The data a search trains and scores on: never the task's test split.

  Returns:
    The data set, whose "test" arrays (what every run is scored on) are the
    validation split, and the split evaluated after training (for lm, the
    validation split again; None for a classifier).
  """
  if search.task == "lm":
    splits = _lm.load(_lm.Config().chars, _lm.Config().seq_len)
    return splits.data, (splits.data.x_test, splits.data.y_test)
  task = TASKS[search.task]
  assert isinstance(task, ClassifierTask)
  return _data.validation_split(
    task.prepared(_data.load(task.dataset)), seed=None
  ), None


def main(argv: list[str] | None = None) -> int:
  """Runs the search (see the module doc)."""
  parser = argparse.ArgumentParser(prog="python -m optax_ramda.experiments._calibrate")
  parser.add_argument("setting", choices=tuple(SEARCHES))
  parser.add_argument("--optimizer", nargs="+", default=None)
  parser.add_argument("--reg", type=float, nargs="+", default=None, help="λ grid")
  parser.add_argument("--lr-factors", type=float, nargs="+", default=None)
  parser.add_argument("--tol", type=float, default=None)
  parser.add_argument("--out", default="calibrate.jsonl")
  parser.add_argument(
    "--solver",
    choices=("exact", "exact_unrolled", "pg"),
    default="exact",
    help="RAMDA's and ProxGen's subproblem solver (default: the library's)",
  )
  parser.add_argument(
    "--select", action="store_true", help="train nothing: choose from --out's records"
  )
  args = parser.parse_args(argv)
  search = SEARCHES[args.setting]
  key = search.key
  # `--tol 0` is a tolerance of zero, not the default.
  tol = search.tol if args.tol is None else args.tol
  lm = search.task == "lm"
  if args.select:
    with open(args.out) as f:
      records = [json.loads(line) for line in f if line.strip()]
    print(markdown_table(records, key, tol))
    _print_pending(records, key, tol)
    for name, r in choose(records, key, tol).items():
      print(
        f'  ("{search.task}", "{name}"): ({r["reg_strength"]:g}, '
        f"{r['learning_rate']:g}),  # {key} {r[key]:.3f}, "
        + (
          f"val ppl {r['val_perplexity']:.3f}" if lm else f"val acc {r['accuracy']:.4f}"
        )
      )
    return 0
  task = TASKS[search.task]
  data, test = search_data(search)
  names = args.optimizer or search.optimizers
  regs = args.reg or search.reg_grid
  factors = args.lr_factors or search.lr_factors
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
            solver=args.solver,
            learning_rate=method.learning_rate * factor,
          )
          trainer = Trainer(
            task,
            data,
            method,
            settings,
            task.batch_size,
            regularizer=search.regularizer,
            test=test,
          )
          start = time.perf_counter()
          result = trainer.run(0, task.epochs)
          record = {
            "setting": args.setting,
            "optimizer": name,
            "reg_strength": settings.reg_strength,
            "learning_rate": settings.learning_rate,
            **({"solver": args.solver} if name in ("ramda", "proxgen") else {}),
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
  _print_pending(records, key, tol)
  for name, r in choose(records, key, tol).items():
    print(
      f'  ("{task.name}", "{name}"): ({r["reg_strength"]:g}, {r["learning_rate"]:g}),'
    )
  return 0


def _print_pending(records: list[dict[str, Any]], key: str, tol: float) -> None:
  """What the grid-extension rule still asks for, as the calls that run it.

  Without a dense reference among the records (one that did not diverge)
  there is no bar: one line says so, and the rule, which extends the choices
  made against the bar, asks for nothing.
  """
  if not has_bar(records, key):
    print(
      "no dense reference among the runs (or only diverged ones): no bar, so no"
      " selection against it and no grid rule; the points below are each"
      " method's best validation quality"
    )
    return
  chosen, short = choose(records, key, tol), short_of_bar(records, key, tol)
  for name, axis, value in _grid_rule.pending(chosen, records, short):
    flag = (
      f"--lr-factors {value / METHODS[name].learning_rate:.3g}"
      if axis == "learning_rate"
      else f"--reg {value:g}"
    )
    print(f"grid rule: {name}'s choice sits at an end: run --optimizer {name} {flag}")


if __name__ == "__main__":
  raise SystemExit(main())
