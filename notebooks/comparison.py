# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # RAMDA against its baselines, paper style
#
# The analogue, on data that ships offline, of the paper's comparison tables
# (validation accuracy and weighted group sparsity per method, mean ± std over
# seeds) and of its Figure 1 (group sparsity and accuracy against epochs).
#
# Every method trains the same models from the same initializations under the
# paper's stage schedule: training is split into three equal stages and the
# learning rate drops ×0.1 at each boundary; RAMDA and RMDA also restart their
# dual average there and ramp their averaging weight in the final stage. The
# structured methods share one group-lasso regularizer with the paper's
# grouping (one group per input feature or channel of every layer); the dense
# references (MADGRAD, AdamW, SGD with momentum) show the accuracy to aim for.
#
# A fair comparison runs every method at its best. The paper tunes λ per method,
# so does this notebook: each method runs at its *calibrated* λ and η, the
# sparsest point within one accuracy point of the best dense reference in a
# λ × η sweep scored on a validation split carved from the training data (the
# test split never chooses anything). The sweep's accuracy–sparsity fronts are
# at the end.
#
# The runs use the experiment package's entry point,
# `optax_ramda.experiments.main`, the same code as
# `python -m optax_ramda.experiments`, and read back the JSON it writes.
#
# The full run (the default) trains for 30 epochs over 3 seeds and takes
# several minutes on a CPU; `OXR_NOTEBOOK_SMALL=1` shrinks it to a smoke run of a
# few epochs on a subset, which is what the test suite executes.

# %%
import contextlib
import io
import json
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

from optax_ramda import experiments

SMALL = os.environ.get("OXR_NOTEBOOK_SMALL", "0") not in ("", "0")
if SMALL:
  RUNS = {"digits": ["logreg"]}
  OPTIONS = ["--epochs", "3", "--seeds", "2", "--train-subset", "384"]
  OPTIONS += ["--test-subset", "256"]
  # A tiny sweep: two methods, three λ, one η each.
  SWEEP = ["--task", "logreg", "--optimizer", "ramda", "prox_sgd", "sgd"]
  SWEEP += ["--sweep-reg-strengths", "1e-4,3e-3,3e-2", "--sweep-lrs", "ramda=0.01"]
  SWEEP += ["--sweep-lrs", "prox_sgd=0.1", "--sweep-lrs", "sgd=0.1", *OPTIONS]
else:
  RUNS = {"digits": ["logreg", "mlp", "cnn"]}
  OPTIONS = ["--seeds", "3"]
  # The logistic-regression part of the shipped sweep (its default grids).
  SWEEP = ["--task", "logreg", "--seeds", "2"]
OUT = tempfile.mkdtemp(prefix="oxr-comparison-")
print(f"{'small' if SMALL else 'full'} run; results go to {OUT}")

# %% [markdown]
# ## The contestants
#
# `experiments.METHODS` holds each optimizer with the paper's learning rate η
# and averaging weight c₀ (β for the dense momentum methods);
# `experiments.CALIBRATED` the (λ, η) each runs at here, per task, from the
# sweep (its command is `experiments.CALIBRATION_COMMAND`). In runs this short,
# RAMDA's and RMDA's c₀ is raised (never lowered) so that the final-stage ramp
# c = min(c₀√r, 1) reaches one by the middle of the final stage: only then are
# their model weights exactly structured.

# %%
tasks = [t for names in RUNS.values() for t in names]
rows = [
  "| method | paper η | c₀ / β | " + " | ".join(f"{t}: λ, η" for t in tasks) + " |",
  "| --- | ---: | ---: | " + " | ".join("---:" for _ in tasks) + " |",
]
for m in experiments.METHODS.values():
  momentum = "–" if m.momentum is None else f"{m.momentum:g}"
  cells = []
  for t in tasks:
    reg, lr = experiments.CALIBRATED[(t, m.name)]
    cells.append(f"{reg:g}, {lr:g}" if m.regularized else f"–, {lr:g}")
  rows.append(f"| {m.label} | {m.learning_rate:g} | {momentum} | {' | '.join(cells)} |")
display(Markdown("\n".join(rows)))
print(experiments.CALIBRATION_COMMAND)

# %% [markdown]
# ## Training
#
# One call per data set; each writes `results.json`, `table.md`, `curves.png`
# and every run's weights under its output folder.

# %%
results = {}
for dataset, tasks in RUNS.items():
  out = os.path.join(OUT, dataset)
  argv = ["--task", *tasks, "--dataset", dataset, "--out", out, "--quiet", *OPTIONS]
  with contextlib.redirect_stdout(io.StringIO()):  # The tables are shown below.
    experiments.main(argv)
  with open(os.path.join(out, "results.json")) as f:
    results[dataset] = json.load(f)
  seconds = results[dataset]["environment"]["wall_seconds"]
  print(f"{dataset}: {len(results[dataset]['runs'])} runs in {seconds:.0f} s")

# %% [markdown]
# The hyperparameters as run, from `results.json` (seed 0 of each task): the
# calibrated η and λ (zero for the dense references), c₀ after the short-run
# adjustment and the milestone steps.

# %%
lines = [
  "| task | method | η | c₀ / β | λ | milestones |",
  "| --- | --- | ---: | ---: | ---: | --- |",
]
for dataset, report in results.items():
  for run in report["runs"]:
    if run["seed"] == 0:
      s = run["settings"]
      momentum = "–" if s["momentum"] is None else f"{s['momentum']:.3g}"
      lines.append(
        f"| {run['task']} on {dataset} | {experiments.METHODS[run['optimizer']].label} "
        f"| {s['learning_rate']:g} | {momentum} | {s['reg_strength']:g} "
        f"| {', '.join(map(str, s['milestones']))} |"
      )
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Tables
#
# Per task: λ and η, test accuracy, the weighted group sparsity of the model
# weights (the share of regularized weights in all-zero groups), the
# unstructured sparsity, the group sparsity of RAMDA's and RMDA's Ŵ (for the
# other methods, of the weights), the time per training step, the parameter
# count of the network that structured pruning exports, and the stability of
# the structure: how many groups switched between zero and nonzero from one
# epoch to the next during the final stage, summed, for the weights and for Ŵ.
# Mean ± std over seeds.

# %%
for dataset in RUNS:
  with open(os.path.join(OUT, dataset, "table.md")) as f:
    display(Markdown(f.read()))

# %% [markdown]
# ## Curves (the paper's Figure 1)
#
# Group sparsity of the structured methods and accuracy of all methods after
# every epoch, the mean over seeds with a band of ± one standard deviation.
# Dashed: Ŵ of RAMDA and RMDA (`oxr.prox_iterate`), the exactly structured
# subproblem solution their weights converge to. Dotted: the stage boundaries.
# Right: the groups that switched between zero and nonzero since the previous
# epoch, over the final stage (the paper's Figures 1–2: a stable structure
# stops switching).

# %%
LABELS = {m.name: m.label for m in experiments.METHODS.values()}
COLORS = {name: f"C{i}" for i, name in enumerate(experiments.METHODS)}


def curves(report):
  """{task: {optimizer: {metric: (seeds, epochs + 1) array}}} from results.json."""
  out = {}
  for run in report["runs"]:
    per_method = out.setdefault(run["task"], {}).setdefault(run["optimizer"], {})
    for key, values in run["history"].items():
      per_method.setdefault(key, []).append(values)
  return {
    task: {opt: {k: np.array(v) for k, v in m.items()} for opt, m in methods.items()}
    for task, methods in out.items()
  }


def band(ax, values, **kwargs):
  mean, std = 100 * values.mean(0), 100 * values.std(0)
  epochs = np.arange(len(mean))
  (line,) = ax.plot(epochs, mean, **kwargs)
  ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)


panels = [(d, t) for d, tasks in RUNS.items() for t in tasks]
fig, axes = plt.subplots(len(panels), 3, figsize=(16, 3.3 * len(panels)), squeeze=False)
for row, (dataset, task) in enumerate(panels):
  report = results[dataset]
  ax_sp, ax_acc, ax_flip = axes[row]
  run = next(r for r in report["runs"] if r["task"] == task)
  marks = run["settings"]["milestones"]
  # Transitions into the epochs that start in the final stage.
  start = -(-marks[-1] // run["steps_per_epoch"]) + 1 if marks else 1
  for name, series in curves(report)[task].items():
    color, label = COLORS[name], LABELS[name]
    if experiments.METHODS[name].regularized:
      band(ax_sp, series["group_sparsity"], color=color, label=label)
      flips = series["group_flips"][:, start:]
      epochs = np.arange(start, start + flips.shape[1])
      ax_flip.plot(epochs, flips.mean(0), color=color, label=label)
      if experiments.METHODS[name].dual_averaging:
        band(ax_sp, series["prox_group_sparsity"], color=color, ls="--", lw=1)
        prox = series["prox_group_flips"][:, start:].mean(0)
        ax_flip.plot(epochs, prox, color=color, ls="--", lw=1)
    band(ax_acc, series["accuracy"], color=color, label=label)
  for ax in (ax_sp, ax_acc):
    for step in run["settings"]["milestones"]:
      ax.axvline(step / run["steps_per_epoch"], color="0.6", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  ax_sp.set_ylim(-2, max(10, ax_sp.get_ylim()[1]))
  ax_sp.set(title=f"{task} on {dataset}: group sparsity", ylabel="%")
  ax_acc.set(title=f"{task} on {dataset}: test accuracy", ylabel="%")
  # Zoom on the trained range: the first epoch's accuracy is the seeds' mean.
  trained = [
    100 * v["accuracy"].mean(0)[1:].min() for v in curves(report)[task].values()
  ]
  ax_acc.set_ylim(max(0, min(trained) - 5), 100.5)
  ax_flip.set(title=f"{task} on {dataset}: group switches, final stage")
  ax_flip.set(xlabel="epoch", ylabel="groups switching zero ↔ nonzero")
  ax_flip.grid(alpha=0.3)
  ax_sp.legend(fontsize=8)
  ax_acc.legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Accuracy against structure
#
# The final trade-off: each point is one method, with error bars of one
# standard deviation over seeds in both directions. Up and to the right is
# better; the dense references sit at zero sparsity by construction.

# %%
columns = min(3, len(panels))
rows = -(-len(panels) // columns)
fig, axes = plt.subplots(
  rows, columns, figsize=(4.4 * columns, 3.8 * rows), squeeze=False
)
for ax in axes.flat[len(panels) :]:
  ax.set_visible(False)
for ax, (dataset, task) in zip(axes.flat, panels, strict=False):
  summary = next(s for s in results[dataset]["summary"] if s["task"] == task)
  for name, label in LABELS.items():
    stats = summary["methods"][label]
    sp, acc = stats["group_sparsity"], stats["accuracy"]
    ax.errorbar(
      100 * sp["mean"],
      100 * acc["mean"],
      xerr=100 * sp["std"],
      yerr=100 * acc["std"],
      fmt="o",
      color=COLORS[name],
      label=label,
      capsize=3,
    )
  ax.set_xlim(-2, max(10, ax.get_xlim()[1]))
  ax.set(title=f"{task} on {dataset}", xlabel="group sparsity (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
axes[0][0].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Every method at its best: the accuracy–sparsity fronts
#
# `python -m optax_ramda.experiments --sweep` trains every regularized method
# over a log-spaced λ grid (from no zero group to most of them) times a small
# η grid around the paper's, and every dense reference over the η grid, on a
# validation split of the training examples. For each λ the front keeps the η
# with the best validation accuracy; the table gives the sparsest point within
# 0.5 and 1 point of the best dense reference. Here it runs on logistic
# regression (tiny in the small run); the shipped sweep over all three models
# is `docs/fronts_digits.png`:
#
# ![accuracy–sparsity fronts on digits](../docs/fronts_digits.png)

# %%
sweep_out = os.path.join(OUT, "sweep")
with contextlib.redirect_stdout(io.StringIO()):
  experiments.main(["--sweep", "--out", sweep_out, "--quiet", *SWEEP])
with open(os.path.join(sweep_out, "sweep.md")) as f:
  display(Markdown(f.read()))
display(Image(filename=os.path.join(sweep_out, "fronts.png")))

# %% [markdown]
# ## In one line per task
#
# The most accurate structured method against the most accurate dense
# reference, by mean over seeds.

# %%
for dataset, task in panels:
  summary = next(s for s in results[dataset]["summary"] if s["task"] == task)
  stats = summary["methods"]
  structured = [m.label for m in experiments.METHODS.values() if m.regularized]
  dense = [m.label for m in experiments.METHODS.values() if not m.regularized]
  best = max(structured, key=lambda label: stats[label]["accuracy"]["mean"])
  best_dense = max(dense, key=lambda label: stats[label]["accuracy"]["mean"])
  s = stats[best]
  print(
    f"{task} on {dataset}: {best} {s['accuracy']['mean']:.2%} accuracy at "
    f"{s['group_sparsity']['mean']:.2%} group sparsity, "
    f"{s['params_after_pruning']['mean']:,.0f} of {summary['params']:,} parameters "
    f"after pruning; {best_dense} {stats[best_dense]['accuracy']['mean']:.2%} dense"
  )
