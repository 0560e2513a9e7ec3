"""Tables, plots and summaries of a comparison, in the paper's format.

The table follows the paper's Table 1 (validation accuracy and weighted group
sparsity per method, mean ± std over seeds) with the extra columns this
library can report; the figure follows its Figure 1 (group sparsity and
accuracy against epochs, one line per method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# (key in a run's `final`, column header, format) of the table.
COLUMNS = (
  ("accuracy", "val. accuracy (%)", "percent"),
  ("group_sparsity", "group sparsity (%)", "percent"),
  ("unstructured_sparsity", "unstructured sparsity (%)", "percent"),
  ("prox_group_sparsity", "Ŵ group sparsity (%)", "percent"),
  ("time_per_step_ms", "time/step (ms)", "ms"),
  ("params_after_pruning", "params after pruning", "count"),
)


def mean_std(values: Sequence[float]) -> dict[str, Any]:
  """Mean and (population) standard deviation of a metric over seeds.

  Examples:
    >>> from optax_ramda.experiments._report import mean_std
    >>> mean_std([1.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'values': [1.0, 3.0]}
  """
  array = np.asarray(values, np.float64)
  return {
    "mean": float(np.mean(array)),
    "std": float(np.std(array)),
    "values": [float(v) for v in values],
  }


def _cell(stat: dict[str, Any], kind: str, seeds: int) -> str:
  mean, std = stat["mean"], stat["std"]
  if math.isnan(mean):
    return "-"
  if kind == "percent":
    text, spread = f"{100 * mean:.2f}", f"{100 * std:.2f}"
  elif kind == "ms":
    text, spread = f"{mean:.3f}", f"{std:.3f}"
  else:
    text, spread = f"{mean:,.0f}", f"{std:,.0f}"
  return text if seeds == 1 else f"{text} ± {spread}"


def table(summary: dict[str, Any], seeds: int) -> str:
  """A Markdown table of one task's summary (rows: methods).

  Args:
    summary: ``{"title": str, "params": int, "methods": {label: {metric:
      mean_std}}}``.
    seeds: the number of seeds (a single seed prints no ± part).

  Returns:
    The table as Markdown text, headed by the task's title.
  """
  header = ["method", *(c[1] for c in COLUMNS)]
  rows = [header, ["---", *("---:" for _ in COLUMNS)]]
  for label, stats in summary["methods"].items():
    rows.append([label, *(_cell(stats[key], kind, seeds) for key, _, kind in COLUMNS)])
  lines = ["| " + " | ".join(row) + " |" for row in rows]
  title = f"**{summary['title']}** ({summary['params']:,} parameters; mean ± std over "
  title += f"{seeds} seed{'s' if seeds > 1 else ''})"
  return "\n".join([title, "", *lines])


def _band(ax, runs, label, style, color=None):
  """Draws the seed mean of `runs` (in %) with a ± one std band; returns the line."""
  values = 100 * np.asarray(runs, np.float64)
  mean, std = values.mean(0), values.std(0)
  epochs = np.arange(len(mean))
  (line,) = ax.plot(epochs, mean, style, label=label, linewidth=1.6, color=color)
  if values.shape[0] > 1:
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
  return line


def plot(curves: dict[str, Any], path: str) -> None:
  """Saves the paper-style figure: per task, group sparsity and accuracy vs epochs.

  Args:
    curves: ``{task title: {"stage_epochs": [epoch of each milestone],
      "methods": {method label: {"dense": bool, "group_sparsity": [[...] per
      seed], "accuracy": [[...] per seed], and for RAMDA/RMDA
      "prox_group_sparsity": [[...] per seed]}}}}``. The seed mean is drawn
      with a band of ± one standard deviation; dense references dashed, Ŵ's
      sparsity dotted, stage boundaries as thin vertical lines.
    path: the PNG file to write.
  """
  # The object-oriented API draws with Agg and leaves pyplot's global state alone.
  from matplotlib.figure import Figure

  tasks = list(curves)
  fig = Figure(figsize=(10, 3.2 * len(tasks) + 0.8), layout="constrained")
  axes = fig.subplots(len(tasks), 2, squeeze=False)
  panels = (
    ("group_sparsity", "weighted group sparsity (%)"),
    ("accuracy", "accuracy (%)"),
  )
  for row, title in enumerate(tasks):
    methods = curves[title]["methods"]
    for col, (key, name) in enumerate(panels):
      ax = axes[row][col]
      for epoch in curves[title]["stage_epochs"]:
        ax.axvline(epoch, color="0.6", linewidth=0.8, linestyle=(0, (1, 3)))
      for label, series in methods.items():
        line = _band(ax, series[key], label, "--" if series["dense"] else "-")
        if key == "group_sparsity" and "prox_group_sparsity" in series:
          color = line.get_color()
          _band(ax, series["prox_group_sparsity"], f"{label} (Ŵ)", ":", color)
      ax.set_title(f"{title}: {name.split(' (')[0]}", fontsize=10)
      ax.set_xlabel("epoch")
      ax.set_ylabel(name)
      ax.grid(alpha=0.3)
      if key == "accuracy":
        low = min(100 * np.min(np.mean(s[key], 0)[1:]) for s in methods.values())
        ax.set_ylim(max(0.0, low - 5), 100.5)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=6, fontsize=8)
  fig.savefig(path, dpi=110)
