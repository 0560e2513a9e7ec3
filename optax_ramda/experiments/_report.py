"""Tables, plots and summaries of a comparison, in the paper's format.

The table follows the paper's Table 1 (accuracy and weighted group sparsity
per method, mean ± std over seeds) with the columns the task declares
(:meth:`~._task.Task.columns`); the figure follows its Figure 1 (the structure,
group sparsity or low-rank level, and the task's quality against epochs, one
line per method), with a third panel, under the group lasso, counting the
groups that switch between zero and nonzero from one epoch to the next (the
stability of the structure, the paper's Figures 1–2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from optax_ramda.experiments._task import Column


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
  if not np.isfinite(mean):
    return "-"
  if kind == "percent":
    text, spread = f"{100 * mean:.2f}", f"{100 * std:.2f}"
  elif kind == "ms":
    text, spread = f"{mean:.3f}", f"{std:.3f}"
  elif kind == "number":
    text, spread = f"{mean:.1f}", f"{std:.1f}"
  elif kind == "float":
    text, spread = f"{mean:.2f}", f"{std:.2f}"
  elif kind == "mega":
    text, spread = f"{mean / 1e6:.1f}", f"{std / 1e6:.1f}"
  else:
    text, spread = f"{mean:,.0f}", f"{std:,.0f}"
  return text if seeds == 1 else f"{text} ± {spread}"


def table(summary: dict[str, Any], seeds: int, columns: Sequence[Column]) -> str:
  """A Markdown table of one task's summary (rows: methods).

  Args:
    summary: ``{"title": str, "params": int, "methods": {label: {metric:
      mean_std}}}``, optionally ``"settings": {label: {"reg_strength",
      "learning_rate"}}`` (printed as the λ and η columns; with ``"pruning"``,
      λ is magnitude pruning's target sparsity) and ``"note"``
      (added to the title).
    seeds: the number of seeds (a single seed prints no ± part).
    columns: (key in ``methods[label]``, header, format) of each column.

  Returns:
    The table as Markdown text, headed by the task's title.

  Examples:
    >>> from optax_ramda.experiments._report import mean_std, table
    >>> summary = {"title": "t", "params": 1000, "methods": {
    ...   "RAMDA": {"accuracy": mean_std([0.9, 0.8])}}}
    >>> print(table(summary, 2, [("accuracy", "test accuracy (%)", "percent")]))
    **t** (1,000 parameters; mean ± std over 2 seeds)
    <BLANKLINE>
    | method | test accuracy (%) |
    | --- | ---: |
    | RAMDA | 85.00 ± 5.00 |
  """
  settings = summary.get("settings", {})
  hyper = ["λ", "η"] if settings else []
  header = ["method", *hyper, *(c[1] for c in columns)]
  rows = [header, ["---", *("---:" for _ in (*hyper, *columns))]]
  for label, stats in summary["methods"].items():
    values = []
    if settings:
      s = settings[label]
      values = [f"{s['reg_strength']:g}" if s["reg_strength"] else "–"]
      if "pruning" in s:  # Magnitude pruning's λ slot is its target sparsity.
        values = [f"target {s['reg_strength']:g}"]
      values.append(f"{s['learning_rate']:g}")
    cells = (_cell(stats[key], kind, seeds) for key, _, kind in columns)
    rows.append([label, *values, *cells])
  lines = ["| " + " | ".join(row) + " |" for row in rows]
  title = f"**{summary['title']}** ({summary['params']:,} parameters; mean ± std over "
  title += f"{seeds} seed{'s' if seeds > 1 else ''}"
  title += f"; {summary['note']})" if "note" in summary else ")"
  return "\n".join([title, "", *lines])


def _band(ax, runs, label, style, color=None, scale=100.0, start=0):
  """Draws the seed mean of `runs` (× `scale`) from epoch `start` with a ± one
  std band; returns the line."""
  values = scale * np.asarray(runs, np.float64)[:, start:]
  mean, std = values.mean(0), values.std(0)
  epochs = np.arange(start, start + len(mean))
  (line,) = ax.plot(epochs, mean, style, label=label, linewidth=1.6, color=color)
  if values.shape[0] > 1:
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
  return line


def plot(curves: dict[str, Any], path: str) -> None:
  """Saves the paper-style figure: per task, the structure and quality vs epochs.

  Args:
    curves: ``{task title: {"stage_epochs": [epoch of each milestone],
      "panels": [(key, Ŵ's key or None, name, whether a percentage)],
      "methods": {method label: {"dense": bool, key: [[...] per seed] for
      each panel's keys, and optionally "group_flips" and
      "prox_group_flips"}}}}``. The seed mean is drawn with a band of ± one
      standard deviation; dense references dashed, Ŵ's dotted, stage
      boundaries as thin vertical lines; a panel that is not a percentage
      (perplexity) on a log scale. With flips, a last panel shows the
      regularized methods' group switches per epoch over the final stage.
    path: the PNG file to write.
  """
  # The object-oriented API draws with Agg and leaves pyplot's global state alone.
  from matplotlib.figure import Figure

  tasks = list(curves)
  flips = any(
    "group_flips" in series
    for title in tasks
    for series in curves[title]["methods"].values()
  )
  columns = max(len(curves[t]["panels"]) for t in tasks) + flips
  fig = Figure(figsize=(5 * columns, 3.2 * len(tasks) + 0.8), layout="constrained")
  axes = fig.subplots(len(tasks), columns, squeeze=False)
  for row, title in enumerate(tasks):
    methods = curves[title]["methods"]
    marks = curves[title]["stage_epochs"]
    for col, (key, prox_key, name, percent) in enumerate(curves[title]["panels"]):
      ax = axes[row][col]
      for epoch in marks:
        ax.axvline(epoch, color="0.6", linewidth=0.8, linestyle=(0, (1, 3)))
      scale = 100.0 if percent else 1.0
      for label, series in methods.items():
        style = "--" if series["dense"] else "-"
        line = _band(ax, series[key], label, style, scale=scale)
        if prox_key in series and not series["dense"]:
          color = line.get_color()
          _band(ax, series[prox_key], f"{label} (Ŵ)", ":", color, scale=scale)
      if key == "accuracy":
        low = min(100 * np.min(np.mean(s[key], 0)[1:]) for s in methods.values())
        ax.set_ylim(max(0.0, low - 5), 100.5)
      if not percent:
        ax.set_yscale("log")
      ax.set_title(f"{title}: {name}", fontsize=10)
      ax.set_xlabel("epoch")
      ax.set_ylabel(name + (" (%)" if percent else ""))
      ax.grid(alpha=0.3)
    if flips:
      ax = axes[row][columns - 1]
      # Transitions into epochs that start in the final stage.
      start = int(np.ceil(marks[-1])) + 1 if marks else 1
      for label, series in methods.items():
        if series["dense"] or "group_flips" not in series:
          continue
        line = _band(ax, series["group_flips"], label, "-", scale=1.0, start=start)
        if "prox_group_flips" in series:
          color = line.get_color()
          _band(ax, series["prox_group_flips"], None, ":", color, 1.0, start)
      ax.set_title(f"{title}: group switches per epoch, final stage", fontsize=10)
      ax.set_xlabel("epoch")
      ax.set_ylabel("groups switching zero ↔ nonzero")
      ax.grid(alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=6, fontsize=8)
  fig.savefig(path, dpi=110)
