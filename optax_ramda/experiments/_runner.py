"""The one runner: resolves a job from its flags and drives it.

A job is a comparison (:mod:`~._compare`), its paper protocol
(``--protocol paper``, :mod:`~._paper`) or a λ × η sweep (``--sweep``,
:mod:`~._sweep`), over any tasks (:mod:`~._tasks`) under one regularizer
(:mod:`~._regularizers`). Everything is checked before the first run: each
task's data, batch and stages, and the output folder (:mod:`~._outputs`,
which never overwrites results without ``--overwrite``). Only process 0 of a
multi-process job prints and writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import time
from collections.abc import Sequence
from typing import Any

import jax

from optax_ramda.experiments import _outputs, _paper, _report, _sweep, _sweep_report
from optax_ramda.experiments._compare import Plan, compare
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._regularizers import REGULARIZERS
from optax_ramda.experiments._task import Error, Task
from optax_ramda.experiments._tasks import TASKS

DEFAULT_TASKS = ("logreg", "mlp", "cnn")
DISTRIBUTED_FLAGS = ("--coordinator", "--num-processes", "--process-id")


def initialize_distributed(args: argparse.Namespace, error: Error) -> bool:
  """Joins the processes if the flags ask for it; returns whether they did."""
  values = (args.coordinator, args.num_processes, args.process_id)
  given = [
    flag for flag, v in zip(DISTRIBUTED_FLAGS, values, strict=True) if v is not None
  ]
  if not given:
    return False
  if len(given) < len(DISTRIBUTED_FLAGS):
    missing = [flag for flag in DISTRIBUTED_FLAGS if flag not in given]
    error(
      f"{', '.join(given)} also needs {', '.join(missing)} "
      f"(multi-process runs take all of {', '.join(DISTRIBUTED_FLAGS)})"
    )
  host, sep, port = args.coordinator.rpartition(":")
  if not (sep and host and port.isdigit()):
    error(f"--coordinator {args.coordinator!r}: expected HOST:PORT")
  if not 0 <= args.process_id < args.num_processes:
    error(
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


def overrides(
  error: Error,
  flag: str,
  items: list[tuple[str | None, Any]],
  selected: Sequence[str],
  applies=lambda name: True,
) -> dict[str, Any]:
  """``--lr``/``--momentum``/grid values per selected optimizer that has the
  parameter."""
  values: dict[str, Any] = {}
  for name, value in items:
    if name is None:
      values.update({n: value for n in selected if applies(n)})
    elif name not in selected:
      error(f"{flag} {name}=...: optimizer {name!r} is not selected")
    elif not applies(name):
      error(f"{flag} {name}=...: optimizer {name!r} has no such parameter")
    else:
      values[name] = value
  return values


def _check_protocol(args: argparse.Namespace, error: Error) -> None:
  """Refuses flags that the chosen job does not take."""
  special = "lm" in (args.task or ()) or args.regularizer != "group_lasso"
  paper = args.protocol == "paper"
  for flag, value in (("--sweep", args.sweep), ("--protocol paper", paper)):
    if value and special:
      error(
        f"{flag} does not apply to --task lm or --regularizer {args.regularizer}"
        if args.regularizer != "group_lasso"
        else f"{flag} does not apply to --task lm"
      )
  if paper:
    fixed = {
      "--batch-size": args.batch_size,
      "--stages": args.stages,
      "--reg-strength": args.reg_strength,
      "--target-sparsity": args.target_sparsity,
      "--lr": args.lr or None,
      "--sweep": args.sweep or None,
    }
    if args.task not in (None, ["logreg"]):
      fixed["--task"] = args.task
    for flag, value in fixed.items():
      if value is not None:
        error(
          f"--protocol paper fixes {flag} (logreg, batch {_paper.BATCH_SIZE}, "
          f"{_paper.STAGES} stages, λ = {_paper.REG_STRENGTH:g}, each method's "
          "paper η); drop it, or use the default protocol"
        )
  if args.target_sparsity is not None:
    for flag, value in (("--reg-strength", args.reg_strength), ("--sweep", args.sweep)):
      if value:
        error(f"--target-sparsity chooses λ itself; drop {flag}")
  for flag, value in (
    ("--sweep-reg-strengths", args.sweep_reg_strengths),
    ("--sweep-lrs", args.sweep_lrs),
  ):
    if value and not args.sweep:
      error(f"{flag} sets a grid of --sweep; add --sweep")


def _training_steps(
  error: Error, name: str, n_train: int, batch_size: int, epochs: int, stages: int
) -> int:
  """The run's step count, after checking the batch and stages fit the data."""
  if batch_size > n_train:
    error(
      f"--batch-size {batch_size} exceeds the {n_train} training examples of "
      f"task {name}"
    )
  if batch_size % jax.device_count():
    error(
      f"--batch-size {batch_size} of task {name} is not a multiple of the "
      f"{jax.device_count()} devices the batch is split over"
    )
  total_steps = epochs * (n_train // batch_size)
  if stages > total_steps:
    error(f"--stages {stages} exceeds the {total_steps} training steps of task {name}")
  return total_steps


def _plan(args: argparse.Namespace, task: Task, error: Error) -> Plan:
  """One task's data and budget, checked."""
  task = task.configure(args, error)
  try:
    data, test = task.load(args)
  except ValueError as e:
    error(f"task {task.name}: {e}")
  regularizer = REGULARIZERS[args.regularizer]
  if args.protocol == "paper":
    batch_size = args.batch_size or _paper.BATCH_SIZE
    epochs = args.epochs or _paper.epochs(max(1, len(data.y_train) // batch_size))
    optimizers: tuple[str, ...] = _paper.OPTIMIZERS
  else:
    batch_size = args.batch_size or task.batch_size
    epochs = args.epochs or task.epochs
    optimizers = regularizer.optimizers or task.optimizers or tuple(METHODS)
  n_train = len(data.y_train)
  total_steps = _training_steps(
    error, task.name, n_train, batch_size, epochs, args.stages
  )
  if args.sweep:
    held = math.ceil(args.val_fraction * n_train)
    if batch_size > n_train - held:
      error(
        f"--batch-size {batch_size} exceeds the {n_train - held} training "
        f"examples left to task {task.name} beside its validation split "
        f"(--val-fraction {args.val_fraction:g})"
      )
  optimizers = tuple(dict.fromkeys(args.optimizer or optimizers))
  return Plan(task, data, test, epochs, batch_size, total_steps, optimizers)


def run(args: argparse.Namespace, argv: Sequence[str], error: Error) -> int:
  """Runs the job that the parsed flags `args` describe; returns 0.

  Args:
    args: the flags parsed by :func:`~._cli.build_parser`.
    argv: the command line's arguments (recorded).
    error: reports bad input and exits (``parser.error``).
  """
  distributed = initialize_distributed(args, error)
  is_main = jax.process_index() == 0
  paper = args.protocol == "paper"
  _check_protocol(args, error)
  regularizer = REGULARIZERS[args.regularizer]
  nuclear = regularizer.name == "nuclear"
  default_tasks = ["mlp"] if nuclear else ["logreg"] if paper else DEFAULT_TASKS
  tasks = list(dict.fromkeys(args.task or default_tasks))
  if nuclear:
    bad = [t for t in tasks if not TASKS[t].low_rank]
    if bad:
      error(
        f"--regularizer nuclear needs matrix kernels: task {bad[0]} has "
        "convolutions (choose from "
        f"{', '.join(t for t in TASKS if TASKS[t].low_rank)})"
      )
  if args.seeds is None:
    args.seeds = min(regularizer.seeds or TASKS[t].seeds for t in tasks)
  args.stages = args.stages or (_paper.STAGES if paper else 3)
  plans = [_plan(args, TASKS[name], error) for name in tasks]
  selected = list(dict.fromkeys(n for p in plans for n in p.optimizers))
  args.task, args.optimizer = tasks, selected
  lrs = overrides(error, "--lr", args.lr, selected)
  momenta = overrides(
    error,
    "--momentum",
    args.momentum,
    selected,
    applies=lambda name: METHODS[name].momentum is not None,
  )
  grids = _grids(args, selected, error) if args.sweep else {}
  arguments = dict(vars(args))
  args.out = _outputs.prepare(
    args.out,
    tasks,
    overwrite=args.overwrite,
    is_main=is_main,
    params=not args.sweep,
    error=error,
  )
  arguments["out"] = args.out
  if is_main:
    print(f"writing to {args.out}/", flush=True)
  command = shlex.join(["python", "-m", "optax_ramda.experiments", *argv])
  started = time.perf_counter()
  if args.sweep:
    summaries, text, fronts, sweeps = _sweep.run_sweep(args, plans, grids, is_main)
    if is_main:
      _outputs.write_outputs(
        args.out,
        command,
        arguments,
        text,
        lambda path: _sweep_report.plot(fronts, path),
        started,
        summaries,
        table_file="sweep.md",
        figure_file="fronts.png",
        params=False,
        sweep=sweeps,
      )
      # One record per run, named by its task (docs/calibration/digits.jsonl).
      with open(os.path.join(args.out, "records.jsonl"), "w") as f:
        for entry in sweeps:
          for record in entry["runs"]:
            line = {"setting": record["task"]} | record
            line.pop("task")
            f.write(json.dumps(line) + "\n")
  else:
    runs, summaries, tables, curves = compare(args, plans, lrs, momenta, is_main)
    extra: dict[str, Any] = {}
    if paper:
      extra["paper_table7_mnist"] = {
        n: {"accuracy": a, "group_sparsity": g} for n, (a, g) in _paper.TABLE7.items()
      }
    if is_main:
      _outputs.write_outputs(
        args.out,
        command,
        arguments,
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


def _grids(
  args: argparse.Namespace, selected: Sequence[str], error: Error
) -> dict[str, tuple[tuple[float, ...] | None, tuple[float, ...]]]:
  """Per selected optimizer, its sweep grids (λ None: the task's default)."""
  reg_grids = overrides(
    error,
    "--sweep-reg-strengths",
    args.sweep_reg_strengths,
    selected,
    applies=lambda name: METHODS[name].regularized,
  )
  lr_grids = overrides(error, "--sweep-lrs", args.sweep_lrs, selected)
  return {
    n: (
      reg_grids.get(n, None if METHODS[n].regularized else ()),
      lr_grids.get(n, _sweep.lr_grid(METHODS[n])),
    )
    for n in selected
  }
