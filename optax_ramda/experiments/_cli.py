"""Command line of the experiments: ``python -m optax_ramda.experiments``.

This module only parses the flags and hands them to the runner
(:func:`optax_ramda.experiments._runner.run`), which trains every selected
task with every selected optimizer over several seeds (or runs the λ × η
sweep, or the paper's protocol), prints the tables and writes into the output
folder (a fresh ``runs/<tasks>-<UTC time>/`` unless ``--out`` is given):

* ``results.json``: the settings, every run's per-epoch history and final
  numbers, and the mean ± std summary behind the tables;
* ``table.md``: the tables (``sweep.md`` for a sweep);
* ``curves.png``: the structure and quality against epochs (paper Fig. 1;
  ``fronts.png`` for a sweep);
* ``params/<task>-<regularizer>-<optimizer>-seed<k>.npz``: each run's final
  weights (and Ŵ for RAMDA/RMDA), read back by
  :func:`~optax_ramda.experiments.load_params`.

Every run is data-parallel over all devices (see
:class:`~optax_ramda.experiments.Trainer`). With ``--coordinator``,
``--num-processes`` and ``--process-id`` the devices of several processes
join through :func:`jax.distributed.initialize`; every process runs the same
command (its own ``--process-id``), and only process 0 prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from optax_ramda.experiments import _data, _paper, _runner, _sweep
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._regularizers import REGULARIZERS
from optax_ramda.experiments._tasks import TASKS
from optax_ramda.experiments._transformer import Config


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expected a positive integer, got {text!r}"
    ) from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
  return value


def _float(text: str, low: float, low_open: bool, high: float | None) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  ok = np.isfinite(value) and (value > low if low_open else value >= low)
  ok = ok and (high is None or value <= high)
  if not ok:
    bound = f"{'>' if low_open else '≥'} {low:g}"
    if high is not None:
      bound += f" and ≤ {high:g}"
    raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
  return value


def _nonnegative(text: str) -> float:
  return _float(text, 0.0, False, None)


def _unit_interval(text: str) -> float:
  return _float(text, 0.0, True, 1.0)


def _sparsity(text: str) -> float:
  value = _float(text, 0.0, False, 1.0)
  if value == 1:
    raise argparse.ArgumentTypeError("expected a number in [0, 1), got 1")
  return value


def _grid(positive: bool):
  """Parses ``V1,V2,...`` or ``OPTIMIZER=V1,V2,...``: a sweep grid."""

  def parse(text: str) -> tuple[str | None, tuple[float, ...]]:
    name, sep, values = text.rpartition("=")
    if sep and name not in METHODS:
      raise argparse.ArgumentTypeError(
        f"unknown optimizer {name!r} in {text!r} (choose from {', '.join(METHODS)})"
      )
    items = [v.strip() for v in values.split(",")] if values.strip() else []
    try:
      numbers = [float(v) for v in items]
    except ValueError:
      raise argparse.ArgumentTypeError(
        f"expected comma-separated numbers, got {values!r}"
      ) from None
    try:
      grid = _sweep.check_grid(numbers, positive=positive)
    except ValueError as e:
      raise argparse.ArgumentTypeError(f"{e} (in {text!r})") from None
    return (name if sep else None), grid

  return parse


def _fraction(text: str) -> float:
  value = _float(text, 0.0, True, 1.0)
  if value == 1.0:
    raise argparse.ArgumentTypeError(f"expected a number > 0 and < 1, got {text!r}")
  return value


def _per_optimizer(check):
  """Parses ``VALUE`` (for every optimizer) or ``OPTIMIZER=VALUE``."""

  def parse(text: str) -> tuple[str | None, float]:
    name, sep, value = text.rpartition("=")
    if sep and name not in METHODS:
      raise argparse.ArgumentTypeError(
        f"unknown optimizer {name!r} in {text!r} (choose from {', '.join(METHODS)})"
      )
    return (name if sep else None), check(value)

  return parse


def _epilog() -> str:
  """The tasks with their own defaults, the optimizers, the output rules."""
  tasks = []
  for t in TASKS.values():
    line = f"  {t.name:7s} {t.description}"
    defaults = (
      f"data {t.dataset}, {t.epochs} epochs, batch {t.batch_size}, {t.seeds} "
      f"seed{'s' if t.seeds > 1 else ''}"
    )
    if t.optimizers:
      defaults += f", optimizers {' '.join(t.optimizers)}"
    tasks.append(f"{line}\n  {'':7s} [{defaults}]")
  nuclear = REGULARIZERS["nuclear"]
  methods = " ".join(m.name + ("" if m.regularized else "*") for m in METHODS.values())
  return (
    "tasks (default: "
    + " ".join(_runner.DEFAULT_TASKS)
    + "):\n"
    + "\n".join(tasks)
    + f"\n\noptimizers (* dense reference): {methods}\n"
    "Each runs at its calibrated λ and η (validation-selected) where the task "
    "and regularizer have one, else at the paper's η and the task's λ.\n\n"
    f"--regularizer nuclear: default task mlp, optimizers "
    f"{' '.join(nuclear.optimizers or ())}, 1 seed.\n"
    "--protocol paper: task logreg, batch "
    f"{_paper.BATCH_SIZE}, {_paper.STAGES} stages, λ = {_paper.REG_STRENGTH:g}, "
    f"each method's paper η, {_paper.STEPS:,} steps; optimizers "
    f"{' '.join(_paper.OPTIMIZERS)}.\n\n"
    "Without --out, each run writes to a fresh runs/<tasks>-<UTC time>/; an "
    "--out that holds results is refused unless --overwrite is given."
  )


def build_parser() -> argparse.ArgumentParser:
  """The argument parser of ``python -m optax_ramda.experiments``."""
  parser = argparse.ArgumentParser(
    prog="python -m optax_ramda.experiments",
    description=(
      "Train and compare structured-sparsity optimizers (RAMDA and its baselines) "
      "on offline data; write tables, curves, params and a JSON of every number."
    ),
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog=_epilog(),
  )
  parser.add_argument(
    "--task",
    nargs="+",
    choices=list(TASKS),
    metavar="TASK",
    help="tasks to run (see below)",
  )
  parser.add_argument(
    "--optimizer",
    nargs="+",
    choices=list(METHODS),
    metavar="OPT",
    help="optimizers to compare (default: the task's; see below)",
  )
  parser.add_argument(
    "--protocol",
    choices=("calibrated", "paper"),
    default="calibrated",
    help="calibrated (default), or paper: the paper's logreg protocol, next to "
    "its Table 7 (see below)",
  )
  source = parser.add_mutually_exclusive_group()
  source.add_argument(
    "--dataset",
    choices=_data.BUILTIN,
    help="built-in data set for every task (default: each task's own)",
  )
  source.add_argument(
    "--data",
    metavar="PATH",
    help="your own .npz file with arrays x_train, y_train, x_test, y_test",
  )
  parser.add_argument(
    "--epochs", type=_positive_int, help="epochs per run (default: the task's)"
  )
  parser.add_argument(
    "--batch-size", type=_positive_int, help="minibatch size (default: the task's)"
  )
  parser.add_argument(
    "--seeds",
    type=_positive_int,
    help="runs per (task, optimizer), seeds 0..N-1 (default: the task's; the "
    "fewest of the tasks run)",
  )
  parser.add_argument(
    "--reg-strength",
    type=_nonnegative,
    metavar="LAMBDA",
    help="regularization strength λ ≥ 0 (default: the calibrated one)",
  )
  parser.add_argument(
    "--target-sparsity",
    type=_sparsity,
    metavar="S",
    help="train every regularized method to weighted group sparsity S in [0, 1) "
    "instead of a λ: each chooses λ every step (S ramped in by the first "
    "milestone) and holds it from the last (RAMDA, RMDA: once c is 1); η stays "
    "calibrated; the table reports the final λ. Magnitude pruning takes S as "
    "its own target",
  )
  parser.add_argument(
    "--lr",
    action="append",
    default=[],
    type=_per_optimizer(lambda t: _float(t, 0.0, True, None)),
    metavar="[OPT=]VALUE",
    help="learning rate for every optimizer, or for one (repeatable)",
  )
  parser.add_argument(
    "--momentum",
    action="append",
    default=[],
    type=_per_optimizer(_unit_interval),
    metavar="[OPT=]VALUE",
    help="c₀ of ramda/rmda/prox_sgd, β of sgd/madgrad, in (0, 1] (repeatable; "
    "default: the paper's, c₀ raised for short runs so the ramp completes)",
  )
  parser.add_argument(
    "--stages",
    type=_positive_int,
    help="equal training stages, η decaying between them (default: 3)",
  )
  parser.add_argument(
    "--decay",
    type=_unit_interval,
    default=0.1,
    metavar="GAMMA",
    help="learning-rate factor γ ∈ (0, 1] at each stage boundary (default: 0.1)",
  )
  parser.add_argument(
    "--solver",
    choices=("pg", "exact"),
    default="exact",
    help="subproblem solver of ramda and proxgen (default: exact, the library's; "
    "pg is the paper's)",
  )
  parser.add_argument(
    "--train-subset",
    type=_positive_int,
    metavar="N",
    help="use only the first N training examples",
  )
  parser.add_argument(
    "--test-subset", type=_positive_int, metavar="N", help="use only N test examples"
  )
  parser.add_argument(
    "--regularizer",
    choices=tuple(REGULARIZERS),
    default="group_lasso",
    help="group_lasso (default: input groups), tied_group_lasso (q/k/v and "
    "gates tied) or nuclear (low rank)",
  )
  parser.add_argument(
    "--out",
    metavar="DIR",
    help="output folder (default: a fresh runs/<tasks>-<UTC time>/)",
  )
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="write into an --out that already holds results",
  )
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  sweep = parser.add_argument_group(
    "λ × η sweep",
    "--sweep trains every (λ, η) of each method's grids, selects on a "
    "validation split of the training data, and writes sweep.md, fronts.png "
    "and results.json.",
  )
  sweep.add_argument(
    "--sweep", action="store_true", help="run the sweep instead of the comparison"
  )
  sweep.add_argument(
    "--sweep-reg-strengths",
    action="append",
    default=[],
    type=_grid(positive=False),
    metavar="[OPT=]L1,L2,...",
    help="λ grid (increasing, ≥ 0) for every regularized optimizer or one "
    f"(repeatable; default: {_sweep.POINTS} log-spaced values per method)",
  )
  sweep.add_argument(
    "--sweep-lrs",
    action="append",
    default=[],
    type=_grid(positive=True),
    metavar="[OPT=]E1,E2,...",
    help="η grid (increasing, > 0) for every optimizer or one (repeatable; "
    "default: the paper's η × "
    f"{', '.join(f'{f:.3g}' for f in _sweep.LR_FACTORS)})",
  )
  sweep.add_argument(
    "--val-fraction",
    type=_fraction,
    default=_sweep.VAL_FRACTION,
    metavar="F",
    help="share of the training examples held out for validation "
    f"(default: {_sweep.VAL_FRACTION:g})",
  )
  lm = parser.add_argument_group("lm task size")
  c = Config()
  for flag, default, text in (
    ("--lm-width", c.width, "residual width"),
    ("--lm-depth", c.depth, "Transformer blocks"),
    ("--lm-heads", c.heads, "attention heads (must divide the width)"),
    ("--lm-hidden", c.hidden, "MLP hidden units per block"),
    ("--lm-seq-len", c.seq_len, "context length in bytes"),
    ("--lm-chars", c.chars, "corpus bytes used, split 90/5/5 by position"),
  ):
    lm.add_argument(
      flag, type=_positive_int, default=default, metavar="N", help=f"{text} ({default})"
    )
  dist = parser.add_argument_group(
    "multi-process (jax.distributed)",
    "Each batch is split over all devices; these join several processes (the "
    "same command in each); only process 0 writes.",
  )
  dist.add_argument(
    "--coordinator",
    metavar="HOST:PORT",
    help="address of process 0, e.g. 127.0.0.1:12345 on one machine",
  )
  dist.add_argument(
    "--num-processes", type=_positive_int, metavar="N", help="number of processes"
  )
  dist.add_argument(
    "--process-id", type=int, metavar="I", help="this process's index, 0..N-1"
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the experiments; returns the exit status (argparse exits on bad input).

  Args:
    argv: the arguments (default: ``sys.argv[1:]``).

  Returns:
    0 on success.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  argv = list(sys.argv[1:] if argv is None else argv)
  return _runner.run(args, argv, parser.error)
