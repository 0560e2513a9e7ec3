"""Command line of the main job: ``python -m optax_ramda.experiments``.

Trains every selected task with every selected optimizer over several seeds,
prints the paper-style tables and writes into ``--out``:

* ``results.json``: the settings, every run's per-epoch history and final
  numbers, and the mean ± std summary behind the tables;
* ``table.md``: the tables;
* ``curves.png``: group sparsity and accuracy against epochs (paper Fig. 1);
* ``params/<task>-<optimizer>-seed<k>.npz``: each run's final weights (and
  Ŵ for RAMDA/RMDA), so every number can be recomputed from them.

Protocols: by default every method runs at its *calibrated* point, the λ and
η that a validation sweep chose (``_optimizers.CALIBRATED``, with the command
that produced it); ``--protocol paper`` runs the paper's logistic-regression
protocol (:mod:`optax_ramda.experiments._paper`). ``--sweep`` runs the λ × η
sweep itself (:mod:`optax_ramda.experiments._sweep`) and writes
``results.json``, ``sweep.md`` and ``fronts.png`` instead.

Every run is data-parallel over all devices (see
:class:`~optax_ramda.experiments.Trainer`). With ``--coordinator``,
``--num-processes`` and ``--process-id`` the devices of several processes
join through :func:`jax.distributed.initialize`; every process runs the same
command (its own ``--process-id``), and only process 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

import optax_ramda.experiments._extended_main as _extended_main
from optax_ramda.experiments import _data, _optimizers, _paper, _report, _sweep
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._tasks import TASKS
from optax_ramda.experiments._train import METRICS, RunResult, Trainer

DEFAULT_TASKS = ("logreg", "mlp", "cnn")
DEFAULT_SEEDS = 3
# A run's final numbers summarized besides METRICS.
FINAL_EXTRA = (
  "params_after_pruning",
  "time_per_step_ms",
  "final_stage_flips",
  "prox_final_stage_flips",
)


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


def build_parser() -> argparse.ArgumentParser:
  """The argument parser of the main job."""
  tasks = "\n".join(
    f"  {t.name:7s} {t.description} [data: {t.dataset}, paper-style λ="
    f"{t.reg_strength:g}]"
    for t in TASKS.values()
  )
  methods = "\n".join(
    f"  {m.name:9s} η={m.learning_rate:g}"
    + (f", c₀/β={m.momentum:g}" if m.momentum is not None else "")
    + ("" if m.regularized else "  (dense reference)")
    for m in METHODS.values()
  )
  parser = argparse.ArgumentParser(
    prog="python -m optax_ramda.experiments",
    description=(
      "Train and compare structured-sparsity optimizers (RAMDA and its baselines) "
      "on offline data; write tables, curves, params and a JSON of every number."
    ),
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog=f"tasks:\n{tasks}\n\noptimizers (paper hyperparameters):\n{methods}"
    "\n\nBy default each method runs at its calibrated λ and η (from a "
    "validation sweep, see --sweep) where the task's own data set has one.",
  )
  parser.add_argument(
    "--task",
    nargs="+",
    choices=list(TASKS),
    metavar="TASK",
    help=f"tasks to run (default: {' '.join(DEFAULT_TASKS)}; see below)",
  )
  parser.add_argument(
    "--optimizer",
    nargs="+",
    choices=list(METHODS),
    metavar="OPT",
    help="optimizers to compare (default: all; with --protocol paper: "
    f"{' '.join(_paper.OPTIMIZERS)}; see below)",
  )
  parser.add_argument(
    "--protocol",
    choices=("calibrated", "paper"),
    default="calibrated",
    help="calibrated (default): each method at the λ, η its validation sweep "
    "chose; paper: logreg with the paper's protocol (batch 128, 5 stages, "
    f"λ = 1e-3, the paper's η, {_paper.STEPS:,} steps), next to its Table 7",
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
    "--epochs", type=_positive_int, help="epochs per run (default: the task's, 30)"
  )
  parser.add_argument(
    "--batch-size", type=_positive_int, help="minibatch size (default: the task's, 64)"
  )
  parser.add_argument(
    "--seeds",
    type=_positive_int,
    default=DEFAULT_SEEDS,
    help=f"runs per (task, optimizer), seeds 0..N-1 (default: {DEFAULT_SEEDS})",
  )
  parser.add_argument(
    "--reg-strength",
    type=_nonnegative,
    metavar="LAMBDA",
    help="group-lasso strength λ ≥ 0 (default: the task's)",
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
    help="equal training stages; the learning rate decays between them (default: 3)",
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
    default="pg",
    help="subproblem solver of ramda and proxgen (default: pg, the paper's)",
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
    "--out", default="runs", help="output folder (default: runs/)", metavar="DIR"
  )
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  sweep = parser.add_argument_group(
    "λ × η sweep",
    "--sweep trains every (λ, η) of each method's grids on a validation split "
    "carved from the training data (the test split only reported), and writes "
    "the accuracy–sparsity fronts (fronts.png), the table (sweep.md) and "
    "results.json to --out.",
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
  _extended_main.add_arguments(parser)
  dist = parser.add_argument_group(
    "multi-process (jax.distributed)",
    "Every run splits each batch over all devices. To join the devices of "
    "several processes (hosts), start the same command in each, all three "
    "flags given, each with its own --process-id; only process 0 writes.",
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


_DISTRIBUTED_FLAGS = ("--coordinator", "--num-processes", "--process-id")


def _initialize_distributed(parser: argparse.ArgumentParser, args) -> bool:
  """Joins the processes if the flags ask for it; returns whether they did."""
  values = (args.coordinator, args.num_processes, args.process_id)
  given = [
    flag for flag, v in zip(_DISTRIBUTED_FLAGS, values, strict=True) if v is not None
  ]
  if not given:
    return False
  if len(given) < len(_DISTRIBUTED_FLAGS):
    missing = [flag for flag in _DISTRIBUTED_FLAGS if flag not in given]
    parser.error(
      f"{', '.join(given)} also needs {', '.join(missing)} "
      f"(multi-process runs take all of {', '.join(_DISTRIBUTED_FLAGS)})"
    )
  host, sep, port = args.coordinator.rpartition(":")
  if not (sep and host and port.isdigit()):
    parser.error(f"--coordinator {args.coordinator!r}: expected HOST:PORT")
  if not 0 <= args.process_id < args.num_processes:
    parser.error(
      f"--process-id {args.process_id} is not in 0..{args.num_processes - 1} "
      f"(--num-processes {args.num_processes})"
    )
  # Before anything touches the devices: the backend starts with all of them.
  jax.distributed.initialize(
    coordinator_address=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
  )
  return True


def _overrides(
  parser: argparse.ArgumentParser,
  flag: str,
  items: list[tuple[str | None, Any]],
  selected: list[str],
  applies=lambda name: True,
) -> dict[str, Any]:
  """``--lr``/``--momentum``/grid values per selected optimizer that has the
  parameter."""
  values: dict[str, Any] = {}
  for name, value in items:
    if name is None:
      values.update({n: value for n in selected if applies(n)})
    elif name not in selected:
      parser.error(f"{flag} {name}=...: optimizer {name!r} is not selected")
    elif not applies(name):
      parser.error(f"{flag} {name}=...: optimizer {name!r} has no such parameter")
    else:
      values[name] = value
  return values


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """A nested dict of arrays as ``{"a/b/c": array}``."""
  flat: dict[str, np.ndarray] = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, name + "/"))
    else:
      flat[name] = np.asarray(value)
  return flat


def load_params(path: str, template: Any, prefix: str = "params/") -> Any:
  """Reads weights saved by the main job back into `template`'s structure.

  Args:
    path: a ``params/*.npz`` file of an output folder.
    template: a nested dict with the model's structure (e.g. a freshly
      initialized ``nnx.to_pure_dict(nnx.state(model))``).
    prefix: ``"params/"`` for the weights, ``"prox/"`` for Ŵ.

  Returns:
    `template` with the saved arrays in place of its leaves.
  """
  with np.load(path) as archive:
    stored = {
      k[len(prefix) :]: archive[k] for k in archive.files if k.startswith(prefix)
    }

  def fill(node: Any, name: str) -> Any:
    if isinstance(node, dict):
      return {k: fill(v, f"{name}{k}/") for k, v in node.items()}
    return stored[name[:-1]]

  return fill(template, "")


def _finite_or_none(tree: Any) -> Any:
  """NaN/inf floats as None (JSON has no NaN), in nested dicts and lists."""
  if isinstance(tree, dict):
    return {k: _finite_or_none(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_finite_or_none(v) for v in tree]
  if isinstance(tree, float) and not np.isfinite(tree):
    return None
  return tree


def _training_steps(
  parser: argparse.ArgumentParser,
  name: str,
  data: _data.Dataset,
  batch_size: int,
  epochs: int,
  stages: int,
) -> int:
  """The run's step count, after checking the batch and stages fit the data."""
  if batch_size > len(data.y_train):
    parser.error(
      f"--batch-size {batch_size} exceeds the {len(data.y_train)} training "
      f"examples of task {name}"
    )
  if batch_size % jax.device_count():
    parser.error(
      f"--batch-size {batch_size} of task {name} is not a multiple of the "
      f"{jax.device_count()} devices the batch is split over"
    )
  total_steps = epochs * (len(data.y_train) // batch_size)
  if stages > total_steps:
    parser.error(
      f"--stages {stages} exceeds the {total_steps} training steps of task {name}"
    )
  return total_steps


def _load_data(parser: argparse.ArgumentParser, args, task) -> _data.Dataset:
  source = args.data or args.dataset or task.dataset
  try:
    data = _data.load(source)
    data = task.prepared(_data.subset(data, args.train_subset, args.test_subset))
  except ValueError as e:
    parser.error(f"task {task.name}: {e}")
  return data


def _hyperparameters(args, task, name: str, paper: bool) -> tuple[float, Any, str]:
  """(λ, η or None for the paper's, source) of one method on one task.

  The calibrated point applies on the data set it was calibrated on (the
  task's own); ``--reg-strength`` replaces its λ (``--lr`` its η, later).
  """
  if paper:
    return _paper.REG_STRENGTH, None, "paper"
  calibrated = None
  if args.data is None and args.dataset in (None, task.dataset):
    calibrated = _optimizers.CALIBRATED.get((task.name, name))
  if calibrated is None:
    reg, lr, source = task.reg_strength, None, "paper-style"
  else:
    (reg, lr), source = calibrated, "calibrated"
  if args.reg_strength is not None:
    reg, source = args.reg_strength, "flags"
  return reg, lr, source


def _run_sweep(args, plans, grids, command: str, is_main: bool, distributed) -> int:
  """The ``--sweep`` mode: every grid point of every task; writes the outputs."""
  started = time.perf_counter()
  total = sum(
    args.seeds
    * len(lrs)
    * (len(regs or _sweep.reg_grid(p[0].name, n)) if METHODS[n].regularized else 1)
    for n, (regs, lrs) in grids.items()
    for p in plans
  )
  bar = _sweep.progress_bar(total, disable=args.quiet or not is_main)
  summaries, sweeps, texts, fronts = [], [], [], {}
  for task, data, epochs, batch_size, _ in plans:
    title = f"{task.name} on {data.name}"
    runs = _sweep.sweep(
      task,
      data,
      grids,
      seeds=args.seeds,
      epochs=epochs,
      batch_size=batch_size,
      stages=args.stages,
      decay=args.decay,
      solver=args.solver,
      val_fraction=args.val_fraction,
      bar=bar,
    )
    result = _sweep.summarize(runs, list(grids))
    fronts[title] = result
    texts.append(_sweep.table(title, result))
    texts.append(
      "Calibrated points (`_optimizers.CALIBRATED`, λ, η):\n\n```python\n"
      + "\n".join(_sweep.calibrated_lines(task.name, result))
      + "\n```"
    )
    methods = {}
    for name, point in result["calibrated"].items():
      methods[METHODS[name].label] = {
        "accuracy": point["test_accuracy"],
        "val_accuracy": point["val_accuracy"],
        "group_sparsity": point["group_sparsity"],
        "prox_group_sparsity": point["prox_group_sparsity"],
      }
    summaries.append({"task": task.name, "title": title, "methods": methods})
    sweeps.append(
      {
        "task": task.name,
        "title": title,
        "epochs": epochs,
        "batch_size": batch_size,
        "grids": {
          n: {
            "reg_strength": list(
              (regs or _sweep.reg_grid(task.name, n)) if METHODS[n].regularized else ()
            ),
            "learning_rate": list(lrs),
          }
          for n, (regs, lrs) in grids.items()
        },
        **result,
        "runs": runs,
      }
    )
  bar.close()
  if not is_main:
    jax.distributed.shutdown()
    return 0
  write_outputs(
    args.out,
    command,
    args,
    "\n\n".join(texts),
    lambda path: _sweep.plot(fronts, path),
    started,
    summaries,
    table_file="sweep.md",
    figure_file="fronts.png",
    params=False,
    sweep=sweeps,
  )
  if distributed:
    jax.distributed.shutdown()
  return 0


def lr_and_momentum_overrides(
  parser: argparse.ArgumentParser, args: argparse.Namespace, selected: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
  """The ``--lr`` and ``--momentum`` values per selected optimizer (see `_overrides`)."""
  lrs = _overrides(parser, "--lr", args.lr, selected)
  momenta = _overrides(
    parser,
    "--momentum",
    args.momentum,
    selected,
    applies=lambda name: METHODS[name].momentum is not None,
  )
  return lrs, momenta


def make_output_folder(
  parser: argparse.ArgumentParser, out: str, is_main: bool
) -> None:
  """Creates ``out/params`` (on process 0), or exits with a message naming ``--out``."""
  try:
    if is_main:
      os.makedirs(os.path.join(out, "params"), exist_ok=True)
  except OSError as e:
    parser.error(f"--out {out!r}: cannot create the output folder: {e}")


def train_seeds(
  trainer: Trainer,
  epochs: int,
  args: argparse.Namespace,
  is_main: bool,
  runs: list[dict[str, Any]],
  **settings: Any,
) -> list[RunResult]:
  """Trains `trainer` for each of ``--seeds``; saves params, appends run records.

  Each seed's weights (and Ŵ) go to ``params/{task}-{optimizer}-seed{s}.npz``
  under ``--out`` (by process 0), and its record (settings, per-epoch
  history, final metrics, timings) to `runs`, the ``runs`` list of
  ``results.json``.

  Args:
    trainer: a :class:`Trainer` (or subclass) of one (task, method, settings).
    epochs: the epochs of each run.
    args: the parsed flags (``seeds``, ``quiet``, ``out``).
    is_main: whether this is process 0 (writes files, shows bars).
    runs: the records so far; one per seed is appended.
    **settings: more entries of each record's ``settings`` (e.g. ``solver``).

  Returns:
    The per-seed results.
  """
  task, method, config = trainer.task, trainer.method, trainer.settings
  regularizer = getattr(trainer, "regularizer", None)
  per_seed = []
  for seed in range(args.seeds):
    compile_seconds = trainer.compile(*trainer.init(seed))
    result = trainer.run(
      seed,
      epochs,
      progress=is_main and not args.quiet,
      desc=f"{task.name}/{method.name} seed {seed}",
    )
    file = os.path.join("params", f"{task.name}-{method.name}-seed{seed}.npz")
    arrays = {f"params/{k}": v for k, v in flatten(result.params).items()}
    if result.prox is not None:
      arrays.update({f"prox/{k}": v for k, v in flatten(result.prox).items()})
    if is_main:
      np.savez(os.path.join(args.out, file), **arrays)  # type: ignore[arg-type]
    export = getattr(trainer, "export_report", None)
    runs.append(
      {
        "task": task.name,
        "dataset": trainer.data.name,
        **({} if regularizer is None else {"regularizer": regularizer}),
        "optimizer": method.name,
        "seed": seed,
        "epochs": epochs,
        "batch_size": trainer.batch_size,
        "steps_per_epoch": trainer.steps_per_epoch,
        "settings": {
          "learning_rate": config.learning_rate,
          "momentum": config.momentum,
          "reg_strength": config.reg_strength,
          "milestones": list(config.milestones),
          "decay": config.decay,
          **settings,
        },
        "compile_seconds": compile_seconds,
        "epoch_seconds": result.epoch_seconds,
        "history": result.history,
        "final": result.final,
        "export": None if export is None else list(export.detail),
        "params_file": file,
      }
    )
    per_seed.append(result)
  return per_seed


def write_outputs(
  out: str,
  command: str,
  args: argparse.Namespace,
  tables: str,
  plot: Callable[[str], None],
  started: float,
  summaries: list[dict[str, Any]],
  *,
  table_file: str = "table.md",
  figure_file: str = "curves.png",
  params: bool = True,
  **entries: Any,
) -> None:
  """Writes the tables, the figure and ``results.json`` into `out`, and says so.

  Args:
    out: the output folder.
    command: the command line, written above the tables.
    args: the parsed flags (recorded as ``arguments``).
    tables: the Markdown tables (also printed).
    plot: draws the figure into the path it is given.
    started: the ``time.perf_counter()`` at the start of the runs.
    summaries: the per-task summaries (``summary``).
    table_file: the tables' file name in `out`.
    figure_file: the figure's file name in `out`.
    params: whether the runs also saved ``params/`` (named in the message).
    **entries: the other top-level entries of ``results.json`` (``runs``, or
      ``sweep``, ...), in this order after ``summary``.
  """
  with open(os.path.join(out, table_file), "w") as f:
    f.write(f"`{command}`\n\n{tables}\n")
  plot(os.path.join(out, figure_file))
  wall_seconds = time.perf_counter() - started
  results = {
    "command": command,
    "arguments": vars(args),
    "environment": _environment(wall_seconds),
    "summary": summaries,
    **entries,
  }
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(_finite_or_none(results), f, indent=1, default=str, allow_nan=False)
  print(tables)
  files = ["results.json", table_file, figure_file] + (["params/"] if params else [])
  print(
    f"\nwrote {out}/{', '.join(files[:-1])} and {files[-1]} in {wall_seconds:.0f} s"
  )


def _environment(wall_seconds: float) -> dict[str, Any]:
  return {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "processes": jax.process_count(),
    "cpu_count": os.cpu_count(),
    "wall_seconds": wall_seconds,
  }


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the comparison; returns the exit status (argparse exits on bad input).

  Args:
    argv: the arguments (default: ``sys.argv[1:]``).

  Returns:
    0 on success.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  distributed = _initialize_distributed(parser, args)
  is_main = jax.process_index() == 0
  argv = list(sys.argv[1:] if argv is None else argv)
  if _extended_main.wanted(args):  # --task lm, --regularizer nuclear.
    return _extended_main.main(parser, args, argv)
  paper = args.protocol == "paper"
  if paper:
    fixed = {
      "--batch-size": args.batch_size,
      "--stages": args.stages,
      "--reg-strength": args.reg_strength,
      "--lr": args.lr or None,
      "--sweep": args.sweep or None,
    }
    if args.task not in (None, ["logreg"]):
      fixed["--task"] = args.task
    for flag, value in fixed.items():
      if value is not None:
        parser.error(
          f"--protocol paper fixes {flag} (logreg, batch {_paper.BATCH_SIZE}, "
          f"{_paper.STAGES} stages, λ = {_paper.REG_STRENGTH:g}, each method's "
          "paper η); drop it, or use the default protocol"
        )
  for flag, value in (
    ("--sweep-reg-strengths", args.sweep_reg_strengths),
    ("--sweep-lrs", args.sweep_lrs),
  ):
    if value and not args.sweep:
      parser.error(f"{flag} sets a grid of --sweep; add --sweep")
  tasks = list(dict.fromkeys(args.task or (["logreg"] if paper else DEFAULT_TASKS)))
  default_optimizers = _paper.OPTIMIZERS if paper else tuple(METHODS)
  selected = list(dict.fromkeys(args.optimizer or default_optimizers))
  stages = args.stages or (_paper.STAGES if paper else 3)
  args.task, args.optimizer, args.stages = tasks, selected, stages
  lrs, momenta = lr_and_momentum_overrides(parser, args, selected)

  # Validate everything before the first (long) run starts.
  plans = []
  for name in tasks:
    task = TASKS[name]
    data = _load_data(parser, args, task)
    batch_size = args.batch_size or (_paper.BATCH_SIZE if paper else task.batch_size)
    default_epochs = task.epochs
    if paper:
      default_epochs = _paper.epochs(max(1, len(data.y_train) // batch_size))
    epochs = args.epochs or default_epochs
    total_steps = _training_steps(parser, name, data, batch_size, epochs, stages)
    if args.sweep:
      held = math.ceil(args.val_fraction * len(data.y_train))
      if batch_size > len(data.y_train) - held:
        parser.error(
          f"--batch-size {batch_size} exceeds the {len(data.y_train) - held} "
          f"training examples left to task {name} beside its validation split "
          f"(--val-fraction {args.val_fraction:g})"
        )
    plans.append((task, data, epochs, batch_size, total_steps))
  make_output_folder(parser, args.out, is_main)
  command = shlex.join(["python", "-m", "optax_ramda.experiments", *argv])
  if args.sweep:
    regularized = [n for n in selected if METHODS[n].regularized]
    reg_grids = _overrides(
      parser,
      "--sweep-reg-strengths",
      args.sweep_reg_strengths,
      selected,
      applies=lambda name: METHODS[name].regularized,
    )
    lr_grids = _overrides(parser, "--sweep-lrs", args.sweep_lrs, selected)
    grids = {
      n: (
        reg_grids.get(n, None if n in regularized else ()),
        lr_grids.get(n, _sweep.lr_grid(METHODS[n])),
      )
      for n in selected
    }
    return _run_sweep(args, plans, grids, command, is_main, distributed)

  started = time.perf_counter()
  runs: list[dict[str, Any]] = []
  summaries: list[dict[str, Any]] = []
  curves: dict[str, dict[str, Any]] = {}
  for task, data, epochs, batch_size, total_steps in plans:
    title = f"{task.name} on {data.name}"
    summary: dict[str, Any] = {"task": task.name, "title": title, "methods": {}}
    summary["settings"] = {}
    steps_per_epoch = len(data.y_train) // batch_size
    stage_epochs = [
      m / steps_per_epoch for m in _optimizers.milestones(total_steps, args.stages)
    ]
    curves[title] = {"stage_epochs": stage_epochs, "methods": {}}
    uncalibrated = [
      METHODS[n].label
      for n in selected
      if _hyperparameters(args, task, n, paper)[2] == "paper-style"
    ]
    if is_main and uncalibrated:
      print(
        f"note: no calibrated λ, η for {', '.join(uncalibrated)} on {title}; "
        f"they run at the paper's η and λ = {task.reg_strength:g}",
        file=sys.stderr,
      )
    for name in selected:
      method = METHODS[name]
      reg, lr, source = _hyperparameters(args, task, name, paper)
      settings = _optimizers.settings(
        method,
        total_steps=total_steps,
        stages=stages,
        decay=args.decay,
        reg_strength=reg,
        solver=args.solver,
        learning_rate=lrs.get(name, lr),
        momentum=momenta.get(name),
      )
      summary["settings"][method.label] = {
        "reg_strength": settings.reg_strength,
        "learning_rate": settings.learning_rate,
        "momentum": settings.momentum,
        "source": "flags" if name in lrs else source,
      }
      trainer = Trainer(task, data, method, settings, batch_size)
      per_seed = train_seeds(
        trainer,
        epochs,
        args,
        is_main,
        runs,
        solver=settings.solver if name in ("ramda", "proxgen") else None,
      )
      summary["params"] = int(per_seed[0].final["params"])
      summary["methods"][method.label] = {
        key: _report.mean_std([r.final[key] for r in per_seed])
        for key in (*METRICS, *FINAL_EXTRA)
      }
      keys = ["group_sparsity", "accuracy", "group_flips"]
      if method.dual_averaging:
        keys += ["prox_group_sparsity", "prox_group_flips"]
      curves[title]["methods"][method.label] = {
        "dense": not method.regularized,
        **{key: [r.history[key] for r in per_seed] for key in keys},
      }
    summaries.append(summary)

  if not is_main:
    jax.distributed.shutdown()
    return 0
  tables = "\n\n".join(_report.table(s, args.seeds) for s in summaries)
  if paper:
    steps = {p[0].name: p[4] for p in plans}
    tables += "\n\n" + "\n\n".join(_paper.table(s, steps[s["task"]]) for s in summaries)
  extra: dict[str, Any] = {}
  if paper:
    extra["paper_table7_mnist"] = {
      n: {"accuracy": a, "group_sparsity": g} for n, (a, g) in _paper.TABLE7.items()
    }
  write_outputs(
    args.out,
    command,
    args,
    tables,
    lambda path: _report.plot(curves, path),
    started,
    summaries,
    runs=runs,
    **extra,
  )
  if distributed:
    jax.distributed.shutdown()
  return 0
