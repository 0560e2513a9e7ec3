"""The comparison: every selected optimizer on every task, over seeds.

For each task (a :class:`Plan`: the task, its data, budget and test split)
and each optimizer, the runner resolves the run's hyperparameters
(:func:`hyperparameters`: the calibrated point of the task, regularizer and
optimizer, the paper's protocol, or the flags), trains every seed with the one
:class:`~optax_ramda.experiments.Trainer` (:func:`train_seeds`: weights to
``params/``, one record per run), and summarizes the seeds: the task's columns
as mean ± std, and the curves of the figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, NamedTuple

import numpy as np
import optax

import optax_ramda as oxr
from optax_ramda.experiments import _optimizers, _outputs, _paper, _pruning, _report
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._progress import Progress
from optax_ramda.experiments._regularizers import REGULARIZERS
from optax_ramda.experiments._task import Task, Test
from optax_ramda.experiments._train import RunResult, Trainer


class Plan(NamedTuple):
  """One task of a job, resolved and checked before the first run.

  Attributes:
    task: the task, configured by the flags.
    data: its data set (prepared; the test split is what epochs evaluate).
    test: the split evaluated once after training (lm), or None.
    epochs: epochs per run.
    batch_size: the minibatch size.
    total_steps: the steps of each run.
    optimizers: the optimizers it runs.
  """

  task: Task
  data: Dataset
  test: Test
  epochs: int
  batch_size: int
  total_steps: int
  optimizers: tuple[str, ...]


def hyperparameters(
  args: argparse.Namespace, task: Task, name: str, paper: bool
) -> tuple[float, float | None, str]:
  """(λ, η or None for the paper's, source) of one method on one task.

  The calibrated point of (task, optimizer) under ``--regularizer`` applies on
  the data set it was calibrated on (the task's own); ``--reg-strength``
  replaces its λ (not magnitude pruning's target sparsity; ``--lr`` its η,
  later). Without a calibrated point: the
  task's λ (magnitude pruning: :data:`~._pruning.DEFAULT_TARGET`) and the
  paper's η ("paper-style").
  """
  if paper:
    return _paper.REG_STRENGTH, None, "paper"
  calibrated = None
  if args.data is None and args.dataset in (None, task.dataset):
    calibrated = REGULARIZERS[args.regularizer].calibrated.get((task.name, name))
  if calibrated is None:
    reg = _pruning.DEFAULT_TARGET if name == "magnitude" else task.reg_strength
    lr, source = None, "paper-style"
  else:
    (reg, lr), source = calibrated, "calibrated"
  if args.reg_strength is not None and name != "magnitude":  # λ, not a target.
    reg, source = args.reg_strength, "flags"
  return reg, lr, source


def target_of(
  sparsity: float,
  marks: tuple[int, ...],
  total_steps: int,
  settle: int = 0,
  window: int = 1,
) -> oxr.TargetSparsity:
  """``--target-sparsity S``: S reached along a cubic at the first milestone,
  followed into the final stage for `settle` steps, from where λ is held at
  its mean over the last `window` steps (a run of one stage: reached at its
  end, never held). The runner passes one epoch as the window: a single step's
  quantile carries that batch's noise, and the last value left ProxSSI at
  63.7 ± 1.5 % for S = 0.7 on digits cnn, 3 seeds; the epoch's mean, at
  71.9 ± 2.6 % (docs/target_sparsity.md: over 30 cells of digits mlp and cnn, at
  most 2.8 points from S against 6.3).

  `settle` is 0 for the prox methods and, for RAMDA and RMDA, the steps until
  their averaging weight c reaches 1 (:func:`~._optimizers.averaging_steps`).
  Their last milestone restarts the dual average, so that a λ held there was
  chosen on the previous stage's averages and zeroes more groups as the new
  ones settle (the threshold grows like α, the anchor's pull like α^⅓): RAMDA
  ended at 52.3 ± 0.6 % for S = 0.5 on digits mlp, 3 seeds, and 56.8 ± 2.3 % on
  cnn. Following S until c reaches 1, where the model weights become Ŵ, gave
  50.3 ± 0.2 and 50.6 ± 0.1 % (docs/target_sparsity.md).

  Zhu & Gupta's ramp s_t = S(1 − (1 − t/T)³): asked from the first step, the
  whole target zeroes the fraction S of the groups of a barely trained model and
  shrinks the rest with them. The ramp's end was chosen on validation accuracy
  (docs/target_sparsity.md; digits mlp, 80/20 split of the training images, 3
  seeds, five methods): at S = 0.7 the ramp to the first milestone scored 0.53
  points above the ramp to the last on average over the methods (higher for
  four, equal for RAMDA); at S = 0.5 the two were level on average (−0.05).
  """
  until = min(marks[-1] + settle, total_steps) if marks else total_steps
  ramp = optax.polynomial_schedule(0.0, sparsity, 3, marks[0] if marks else until)
  return oxr.target_sparsity(ramp, until=until, window=min(window, until))


def train_seeds(
  trainer: Trainer,
  epochs: int,
  args: argparse.Namespace,
  is_main: bool,
  runs: list[dict[str, Any]],
  progress: Progress,
  **settings: Any,
) -> list[RunResult]:
  """Trains `trainer` for each of ``--seeds``; saves params, appends run records.

  Each seed's weights (and Ŵ) go to
  ``params/<task>-<regularizer>-<optimizer>-seed<k>.npz`` under ``--out`` (by
  process 0), and its record (settings, per-epoch history, final metrics,
  timings) to `runs`, the ``runs`` list of ``results.json``.

  Args:
    trainer: a :class:`Trainer` of one (task, method, settings).
    epochs: the epochs of each run.
    args: the parsed flags (``seeds``, ``out``).
    is_main: whether this is process 0 (writes files).
    runs: the records so far; one per seed is appended.
    progress: the job's bar, advanced once per seed.
    **settings: more entries of each record's ``settings`` (e.g. ``solver``).

  Returns:
    The per-seed results.
  """
  task, method, config = trainer.task, trainer.method, trainer.settings
  target = config.reg_strength
  if isinstance(target, oxr.TargetSparsity):
    settings = {
      "target_sparsity": args.target_sparsity,
      "until": target.until,
      "window": target.window,
      **settings,
    }
  labels = (*task.progress, *REGULARIZERS[trainer.regularizer].progress)
  per_seed = []
  for seed in range(args.seeds):
    progress.start(f"{task.name}/{method.name} seed {seed}", labels)
    compile_seconds = trainer.compile(*trainer.init(seed))
    result = trainer.run(
      seed, epochs, on_epoch=lambda e, v: progress.epoch(e, epochs, v)
    )
    progress.done()
    file = _outputs.params_file(task.name, trainer.regularizer, method.name, seed)
    if is_main:
      _outputs.save_params(os.path.join(args.out, file), result.params, result.prox)
    report = trainer.export_report
    runs.append(
      {
        "task": task.name,
        "dataset": trainer.data.name,
        "regularizer": trainer.regularizer,
        "optimizer": method.name,
        "seed": seed,
        "epochs": epochs,
        "batch_size": trainer.batch_size,
        "steps_per_epoch": trainer.steps_per_epoch,
        "settings": {
          "learning_rate": config.learning_rate,
          "momentum": config.momentum,
          # Under a target, the λ the run ended with.
          "reg_strength": result.final.get("reg_strength", config.reg_strength),
          "milestones": list(config.milestones),
          "decay": config.decay,
          **settings,
        },
        "compile_seconds": compile_seconds,
        "epoch_seconds": result.epoch_seconds,
        "history": result.history,
        "final": result.final,
        "export": None if report is None else list(report.detail),
        "params_file": file,
      }
    )
    per_seed.append(result)
  return per_seed


def compare(
  args: argparse.Namespace,
  plans: list[Plan],
  lrs: dict[str, float],
  momenta: dict[str, float],
  is_main: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, dict[str, Any]]:
  """Trains every plan's optimizers over the seeds (see the module doc).

  Returns:
    The run records, the per-task summaries, the Markdown tables and the
    curves of the figure (:func:`~._report.plot`).
  """
  paper = args.protocol == "paper"
  regularizer = REGULARIZERS[args.regularizer]
  runs: list[dict[str, Any]] = []
  summaries: list[dict[str, Any]] = []
  curves: dict[str, dict[str, Any]] = {}
  total = sum(len(p.optimizers) for p in plans) * args.seeds
  progress = Progress(total, disable=args.quiet or not is_main)
  for plan in plans:
    task, data = plan.task, plan.data
    title = f"{task.name} on {data.name}{regularizer.title}"
    if args.target_sparsity is not None:
      title += f", target group sparsity {args.target_sparsity:g}"
    summary: dict[str, Any] = {"task": task.name, "title": title, "methods": {}}
    summary["regularizer"] = regularizer.name
    summary["settings"] = {}
    steps_per_epoch = len(data.y_train) // plan.batch_size
    marks = _optimizers.milestones(plan.total_steps, args.stages)
    quality, quality_name, percent = task.quality_panel()
    panels = [
      (*regularizer.structure_panel, True),
      (quality, None, quality_name, percent),
    ]
    curves[title] = {
      "stage_epochs": [m / steps_per_epoch for m in marks],
      "panels": panels,
      "methods": {},
    }
    uncalibrated = [
      METHODS[n].label
      for n in plan.optimizers
      if hyperparameters(args, task, n, paper)[2] == "paper-style"
    ]
    if is_main and uncalibrated:
      print(
        f"note: no calibrated λ, η for {', '.join(uncalibrated)} on {title}; "
        f"they run at the paper's η and λ = {task.reg_strength:g}",
        file=sys.stderr,
      )
    for name in plan.optimizers:
      method = METHODS[name]
      reg: float | oxr.TargetSparsity
      reg, lr, source = hyperparameters(args, task, name, paper)
      if args.target_sparsity is not None and name == "magnitude":
        reg = args.target_sparsity  # Its own target, reached by its schedule.
      settings = _optimizers.settings(
        method,
        total_steps=plan.total_steps,
        stages=args.stages,
        decay=args.decay,
        reg_strength=reg,
        solver=args.solver,
        learning_rate=lrs.get(name, lr),
        momentum=momenta.get(name),
        schedule=_pruning.calibrated_schedule(task.name, source == "calibrated"),
      )
      if (
        args.target_sparsity is not None and method.regularized and name != "magnitude"
      ):
        # η calibrated, λ chosen by the target.
        settle = _optimizers.averaging_steps(method, settings.momentum)
        target = target_of(
          args.target_sparsity, marks, plan.total_steps, settle, steps_per_epoch
        )
        settings = dataclasses.replace(settings, reg_strength=target)
      source = "flags" if name in lrs else source
      summary["settings"][method.label] = {
        "reg_strength": settings.reg_strength,
        "learning_rate": settings.learning_rate,
        "momentum": settings.momentum,
        "source": source,
      }
      if settings.pruning is not None:
        summary["settings"][method.label]["pruning"] = settings.pruning._asdict()
      trainer = Trainer(
        task,
        data,
        method,
        settings,
        plan.batch_size,
        regularizer=regularizer.name,
        test=plan.test,
      )
      per_seed = train_seeds(
        trainer,
        plan.epochs,
        args,
        is_main,
        runs,
        progress,
        solver=settings.solver if name in ("ramda", "proxgen") else None,
        source=source,
        pruning=None if settings.pruning is None else settings.pruning._asdict(),
      )
      if isinstance(settings.reg_strength, oxr.TargetSparsity):  # The λ found.
        summary["settings"][method.label]["reg_strength"] = float(
          np.mean([r.final["reg_strength"] for r in per_seed])
        )
      summary["params"] = int(per_seed[0].final["params"])
      summary["methods"][method.label] = {
        key: _report.mean_std([r.final.get(key, float("nan")) for r in per_seed])
        for key in task.summary_keys(regularizer.name)
      }
      keys = [k for p in panels for k in p[:2] if k]
      if regularizer.name != "nuclear":
        keys += ["group_flips", "prox_group_flips"]
      if not method.dual_averaging:  # Ŵ is the weights themselves.
        keys = [k for k in keys if not k.startswith("prox_")]
      curves[title]["methods"][method.label] = {
        "dense": not method.regularized,
        **{
          k: [r.history[k] for r in per_seed] for k in keys if k in per_seed[0].history
        },
      }
    summary["note"] = task.note(data, plan.epochs)
    summaries.append(summary)
  progress.close()
  tables = "\n\n".join(
    _report.table(s, args.seeds, p.task.columns(regularizer.name))
    for s, p in zip(summaries, plans, strict=True)
  )
  if paper:
    tables += "\n\n" + "\n\n".join(
      _paper.table(s, p.total_steps) for s, p in zip(summaries, plans, strict=True)
    )
  return runs, summaries, tables, curves
