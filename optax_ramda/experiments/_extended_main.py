"""The main job's ``--task lm`` and ``--regularizer nuclear`` comparisons.

``python -m optax_ramda.experiments --task lm`` trains the byte-level
Transformer of :mod:`optax_ramda.experiments._lm` with RAMDA, RMDA, ProxGen,
ProxSGD and AdamW (the paper's Table 4 line-up) at the λ and η calibrated on
the validation split (:data:`optax_ramda.experiments._lm.CALIBRATED`), and
``--regularizer nuclear`` (default task ``mlp``) trains with the nuclear norm
instead of the group lasso (the paper's Table 8 setting) against SGD with
momentum and AdamW. Both write the same outputs as the classification
comparison into ``--out`` (``results.json``, ``table.md``, ``curves.png``,
``params/``), with their own columns: test/validation perplexity for lm, the
low-rank level for nuclear, and the exported model's size and FLOPs
(:mod:`optax_ramda.experiments._export`).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import time
from typing import Any

import jax
import numpy as np

from optax_ramda.experiments import _data, _lm, _optimizers, _report
from optax_ramda.experiments._extended import REGULARIZERS, ExtendedTrainer
from optax_ramda.experiments._optimizers import METHODS
from optax_ramda.experiments._tasks import TASKS

LM_OPTIMIZERS = ("ramda", "rmda", "proxgen", "prox_sgd", "adamw")
NUCLEAR_OPTIMIZERS = ("ramda", "rmda", "proxgen", "prox_sgd", "sgd", "adamw")
NUCLEAR_TASKS = ("logreg", "mlp", "lm")

# (key in a run's `final`, column header, format) of the tables.
LM_COLUMNS = (
  ("perplexity", "test perplexity", "float"),
  ("val_perplexity", "val. perplexity", "float"),
  ("group_sparsity", "group sparsity (%)", "percent"),
  ("prox_group_sparsity", "Ŵ group sparsity (%)", "percent"),
  ("time_per_step_ms", "time/step (ms)", "ms"),
  ("params_after_pruning", "params after export", "count"),
  ("flops_after_export", "MFLOPs/sequence after export", "mega"),
)
NUCLEAR_COLUMNS = (
  ("accuracy", "test accuracy (%)", "percent"),
  ("low_rank_level", "low-rank level (%)", "percent"),
  ("prox_low_rank_level", "Ŵ low-rank level (%)", "percent"),
  ("time_per_step_ms", "time/step (ms)", "ms"),
  ("params_after_pruning", "params after low-rank export", "count"),
)
LM_NUCLEAR_COLUMNS = (
  *LM_COLUMNS[:2],
  *NUCLEAR_COLUMNS[1:4],
  ("params_after_pruning", "params after low-rank export", "count"),
)
SUMMARY_KEYS = (
  "accuracy",
  "perplexity",
  "val_perplexity",
  "test_loss",
  "val_loss",
  "group_sparsity",
  "prox_group_sparsity",
  "low_rank_level",
  "prox_low_rank_level",
  "final_stage_flips",
  "prox_final_stage_flips",
  "time_per_step_ms",
  "params",
  "params_after_pruning",
  "flops",
  "flops_after_export",
)


def _positive_int(text: str) -> int:
  from optax_ramda.experiments._cli import _positive_int as check

  return check(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds ``--regularizer`` and the lm task's size flags to the main parser."""
  group = parser.add_argument_group(
    "language model (--task lm) and low rank (--regularizer nuclear)"
  )
  group.add_argument(
    "--regularizer",
    choices=REGULARIZERS,
    default="group_lasso",
    help="group_lasso (default: the paper's input groups) or nuclear (low rank: "
    "tasks logreg, mlp, lm; default task mlp, optimizers "
    f"{' '.join(NUCLEAR_OPTIMIZERS)}). Runs with --task lm or nuclear take one "
    "seed unless --seeds is given; lm's default optimizers are "
    f"{' '.join(LM_OPTIMIZERS)}",
  )
  c = _lm.Config()
  for flag, default, text in (
    ("--lm-width", c.width, "residual width"),
    ("--lm-depth", c.depth, "Transformer blocks"),
    ("--lm-heads", c.heads, "attention heads (must divide the width)"),
    ("--lm-hidden", c.hidden, "MLP hidden units per block"),
    ("--lm-seq-len", c.seq_len, "context length in bytes"),
    ("--lm-chars", c.chars, "corpus bytes used, split 90/5/5 by position"),
  ):
    group.add_argument(
      flag, type=_positive_int, default=default, help=f"lm: {text} (default: {default})"
    )


def wanted(args: argparse.Namespace) -> bool:
  """Whether the command is one this module runs."""
  return "lm" in (args.task or ()) or args.regularizer != "group_lasso"


def _cell(stat: dict[str, Any], kind: str, seeds: int) -> str:
  mean, std = stat["mean"], stat["std"]
  if not np.isfinite(mean):
    return "-"
  if kind == "float":
    text, spread = f"{mean:.2f}", f"{std:.2f}"
  elif kind == "mega":
    text, spread = f"{mean / 1e6:.1f}", f"{std / 1e6:.1f}"
  else:
    return _report._cell(stat, kind, seeds)
  return text if seeds == 1 else f"{text} ± {spread}"


def table(summary: dict[str, Any], seeds: int, columns) -> str:
  """A Markdown table of one task's summary with the given columns."""
  rows = [["method", *(c[1] for c in columns)], ["---", *("---:" for _ in columns)]]
  for label, stats in summary["methods"].items():
    rows.append([label, *(_cell(stats[k], kind, seeds) for k, _, kind in columns)])
  title = f"**{summary['title']}** ({summary['params']:,} parameters; "
  title += f"{'mean ± std over ' if seeds > 1 else ''}{seeds} seed"
  title += f"{'s' if seeds > 1 else ''}; {summary['note']})"
  return "\n".join([title, "", *("| " + " | ".join(r) + " |" for r in rows)])


def plot(curves: dict[str, Any], path: str) -> None:
  """Per task: the structure (sparsity or low-rank level) and the quality curve."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(10, 3.2 * len(curves) + 0.8), layout="constrained")
  axes = fig.subplots(len(curves), 2, squeeze=False)
  for row, (title, entry) in enumerate(curves.items()):
    for col, (key, prox_key, name, percent) in enumerate(entry["panels"]):
      ax = axes[row][col]
      for epoch in entry["stage_epochs"]:
        ax.axvline(epoch, color="0.6", linewidth=0.8, linestyle=(0, (1, 3)))
      for label, series in entry["methods"].items():
        values = np.asarray(series[key], np.float64)
        scale = 100.0 if percent else 1.0
        line = _report._band(
          ax, values * scale / 100, label, "--" if series["dense"] else "-"
        )
        if prox_key and prox_key in series and not series["dense"]:
          prox = np.asarray(series[prox_key], np.float64) * scale / 100
          _report._band(ax, prox, f"{label} (Ŵ)", ":", line.get_color())
      if not percent:
        ax.set_yscale("log")
      ax.set_title(f"{title}: {name}", fontsize=10)
      ax.set_xlabel("epoch")
      ax.set_ylabel(name + (" (%)" if percent else ""))
      ax.grid(alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=6, fontsize=8)
  fig.savefig(path, dpi=110)


def _lm_task(args: argparse.Namespace):
  config = _lm.Config(
    seq_len=args.lm_seq_len,
    width=args.lm_width,
    depth=args.lm_depth,
    heads=args.lm_heads,
    hidden=args.lm_hidden,
    chars=args.lm_chars,
  )
  return dataclasses.replace(TASKS["lm"], build=config.build), config


def main(parser: argparse.ArgumentParser, args: argparse.Namespace, argv) -> int:
  """Runs the lm and/or nuclear comparison for parsed `args` (see module doc)."""
  from optax_ramda.experiments import _cli

  is_main = jax.process_index() == 0
  nuclear = args.regularizer == "nuclear"
  for flag, value in (
    ("--sweep", getattr(args, "sweep", False)),
    ("--protocol paper", getattr(args, "protocol", None) == "paper"),
  ):
    if value:
      parser.error(f"{flag} does not apply to --task lm or --regularizer nuclear")
  tasks = list(dict.fromkeys(args.task or (["mlp"] if nuclear else ["lm"])))
  if nuclear:
    bad = [t for t in tasks if t not in NUCLEAR_TASKS]
    if bad:
      parser.error(
        f"--regularizer nuclear needs matrix kernels: task {bad[0]} has "
        f"convolutions (choose from {', '.join(NUCLEAR_TASKS)})"
      )
  if "lm" in tasks and (args.data or args.dataset):
    parser.error("task lm reads its own corpus; --data and --dataset do not apply")
  if args.lm_width % args.lm_heads:
    parser.error(
      f"--lm-heads {args.lm_heads} does not divide --lm-width {args.lm_width}"
    )
  default = NUCLEAR_OPTIMIZERS if nuclear else LM_OPTIMIZERS
  selected = list(dict.fromkeys(args.optimizer or default))
  stages = args.stages or 3
  # One seed unless --seeds is given (argparse takes any unique prefix).
  if not any(a.startswith("--se") for a in argv):
    args.seeds = 1
  args.task, args.optimizer, args.stages = tasks, selected, stages
  lrs, momenta = _cli.lr_and_momentum_overrides(parser, args, selected)

  plans = []
  for name in tasks:
    test = None
    if name == "lm":
      task, config = _lm_task(args)
      try:
        splits = _lm.load(config.chars, config.seq_len)
      except ValueError as e:
        parser.error(f"task lm: {e}")
      data, test = splits.data, (splits.x_test, splits.y_test)
      if args.train_subset:
        data = _data.subset(data, args.train_subset, args.test_subset)
    else:
      task = TASKS[name]
      data = _cli._load_data(parser, args, task)
    batch_size = args.batch_size or task.batch_size
    epochs = args.epochs or task.epochs
    total_steps = _cli._training_steps(parser, name, data, batch_size, epochs, stages)
    plans.append((task, data, test, epochs, batch_size, total_steps))
  _cli.make_output_folder(parser, args.out, is_main)

  command = shlex.join(["python", "-m", "optax_ramda.experiments", *argv])
  started = time.perf_counter()
  runs: list[dict[str, Any]] = []
  summaries: list[dict[str, Any]] = []
  tables: list[str] = []
  curves: dict[str, Any] = {}
  for task, data, test, epochs, batch_size, total_steps in plans:
    lm = task.name == "lm"
    title = f"{task.name} on {data.name}" + (", nuclear norm" if nuclear else "")
    summary: dict[str, Any] = {"task": task.name, "title": title, "methods": {}}
    summary["regularizer"] = args.regularizer
    summary["settings"] = {}
    steps_per_epoch = len(data.y_train) // batch_size
    marks = _optimizers.milestones(total_steps, stages)
    panels: list[tuple[str, str | None, str, bool]]
    if nuclear:
      panels = [("low_rank_level", "prox_low_rank_level", "low-rank level", True)]
    else:
      panels = [("group_sparsity", "prox_group_sparsity", "group sparsity", True)]
    panels.append(
      ("val_perplexity", None, "val. perplexity", False)
      if lm
      else ("accuracy", None, "accuracy", True)
    )
    curves[title] = {
      "stage_epochs": [m / steps_per_epoch for m in marks],
      "panels": panels,
      "methods": {},
    }
    for name in selected:
      method = METHODS[name]
      reg, lr, source = _point(task.name, name, nuclear, args.reg_strength)
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
      if name in lrs:
        source = "flags"
      summary["settings"][method.label] = {
        "reg_strength": settings.reg_strength,
        "learning_rate": settings.learning_rate,
        "source": source,
      }
      trainer = ExtendedTrainer(
        task,
        data,
        method,
        settings,
        batch_size,
        regularizer=args.regularizer,
        test=test,
      )
      per_seed = _cli.train_seeds(trainer, epochs, args, is_main, runs, source=source)
      summary["params"] = int(per_seed[0].final["params"])
      summary["methods"][method.label] = {
        key: _report.mean_std([r.final.get(key, float("nan")) for r in per_seed])
        for key in SUMMARY_KEYS
      }
      keys = {k for p in panels for k in p[:2] if k}
      if not method.dual_averaging:  # Ŵ is the weights themselves.
        keys -= {p[1] for p in panels}
      curves[title]["methods"][method.label] = {
        "dense": not method.regularized,
        **{
          k: [r.history[k] for r in per_seed] for k in keys if k in per_seed[0].history
        },
      }
    if lm:
      summary["note"] = (
        f"{len(data.y_train):,} training windows of {data.x_train.shape[1]} bytes, "
        f"{epochs} epochs"
      )
    else:
      summary["note"] = f"{epochs} epochs"
    summaries.append(summary)
    columns = (LM_NUCLEAR_COLUMNS if nuclear else LM_COLUMNS) if lm else NUCLEAR_COLUMNS
    tables.append(table(summary, args.seeds, columns))

  if not is_main:
    jax.distributed.shutdown()
    return 0
  _cli.write_outputs(
    args.out,
    command,
    args,
    "\n\n".join(tables),
    lambda path: plot(curves, path),
    started,
    summaries,
    runs=runs,
  )
  return 0


def _point(
  task: str, name: str, nuclear: bool, reg_flag: float | None
) -> tuple[float, float | None, str]:
  """(λ, η or None for the paper's, source) of one method on one task."""
  table = _lm.NUCLEAR_CALIBRATED if nuclear else _lm.CALIBRATED
  point = table.get((task, name))
  if point is None:
    reg, lr, source = TASKS[task].reg_strength, None, "paper-style"
  else:
    (reg, lr), source = point, "calibrated"
  if reg_flag is not None:
    reg, source = reg_flag, "flags"
  return reg, lr, source
