"""The sweep's report: its table, the calibrated points as code, the fronts figure."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optax_ramda.experiments._optimizers import METHODS


def _pct(stat: dict[str, Any] | None) -> str:
  if stat is None or not math.isfinite(stat["mean"]):
    return "-"
  return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def table(title: str, summary: dict[str, Any]) -> str:
  """The Markdown table of one task's sweep: per tolerance and method, the
  sparsest point within it, with λ (magnitude pruning: its target sparsity), η
  (and its schedule), validation and test accuracy."""
  reference = summary["best_dense"]
  lines = [f"**{title}: λ × η sweep**", ""]
  if reference is None:
    lines.append("(no dense reference in the sweep: no tolerance table)")
  else:
    label = METHODS[reference["optimizer"]].label
    lines.append(
      f"Best dense reference: {label} at η = {reference['learning_rate']:g}, "
      f"validation accuracy {_pct(reference['val_accuracy'])} % "
      f"(test {_pct(reference['test_accuracy'])} %)."
    )
    lines += [
      "",
      "| method | within | λ | η | group sparsity (%) | val. accuracy (%) "
      "| test accuracy (%) |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, by_tolerance in summary["table"].items():
      for tolerance, point in by_tolerance.items():
        label = METHODS[name].label
        if point is None:
          best = max(
            (p for p in summary["points"] if p["optimizer"] == name),
            key=lambda p: p["val_accuracy"]["mean"],
          )
          lines.append(
            f"| {label} | {tolerance} pt | none | | (most accurate point: λ = "
            f"{best['reg_strength']:g}, η = {best['learning_rate']:g}, "
            f"{_pct(best['group_sparsity'])}) | {_pct(best['val_accuracy'])} "
            f"| {_pct(best['test_accuracy'])} |"
          )
          continue
        schedule = f" ({point['schedule']})" if point.get("schedule") else ""
        lines.append(
          f"| {label} | {tolerance} pt | {point['reg_strength']:g} "
          f"| {point['learning_rate']:g}{schedule} | {_pct(point['group_sparsity'])} "
          f"| {_pct(point['val_accuracy'])} | {_pct(point['test_accuracy'])} |"
        )
  return "\n".join(lines)


def calibrated_lines(task: str, summary: dict[str, Any]) -> list[str]:
  """The calibrated points as entries of ``_optimizers.CALIBRATED``."""
  lines = []
  for name, point in summary["calibrated"].items():
    reg = point["reg_strength"] if METHODS[name].regularized else 0.0
    lines.append(
      f"  # paper η {METHODS[name].learning_rate:g}; validation accuracy "
      f"{100 * point['val_accuracy']['mean']:.2f} %, group sparsity "
      f"{100 * point['group_sparsity']['mean']:.2f} %"
    )
    lines.append(f'  ("{task}", "{name}"): ({reg:g}, {point["learning_rate"]:g}),')
    if point.get("schedule"):
      lines.append(
        f'  # _pruning.CALIBRATED_SCHEDULES["{task}"] = "{point["schedule"]}"'
      )
  return lines


def plot(summaries: dict[str, dict[str, Any]], path: str) -> None:
  """Saves the fronts: per task, validation accuracy against group sparsity.

  Args:
    summaries: ``{task title: summarize(...)}``.
    path: the PNG file to write.

  One line per regularized method through its front in λ order (mean over seeds, with a
  ± one std band of accuracy and horizontal error bars of sparsity), every
  other (λ, η) point of the method as a faint dot; the dense references as
  horizontal dashed lines, and the best one's −0.5 and −1 point levels dotted.
  """
  from matplotlib.figure import Figure

  titles = list(summaries)
  fig = Figure(figsize=(5.2 * len(titles), 4.4), layout="constrained")
  axes = fig.subplots(1, len(titles), squeeze=False)[0]
  colors = {name: f"C{i}" for i, name in enumerate(METHODS)}
  for ax, title in zip(axes, titles, strict=True):
    summary = summaries[title]
    tops = []
    for p in summary["points"]:
      if METHODS[p["optimizer"]].regularized:
        ax.plot(
          100 * p["group_sparsity"]["mean"], 100 * p["val_accuracy"]["mean"],
          ".", color=colors[p["optimizer"]], alpha=0.3, ms=4,
        )  # fmt: skip
    for name, points in summary["fronts"].items():
      order = points  # In λ order: the path the method takes as λ grows.
      x = np.array([100 * p["group_sparsity"]["mean"] for p in order])
      xerr = np.array([100 * p["group_sparsity"]["std"] for p in order])
      y = np.array([100 * p["val_accuracy"]["mean"] for p in order])
      yerr = np.array([100 * p["val_accuracy"]["std"] for p in order])
      tops.append(np.max(y + yerr))
      color = colors[name]
      ax.errorbar(
        x, y, xerr=xerr, fmt="o-", ms=3.5, lw=1.4, capsize=2, color=color,
        label=METHODS[name].label,
      )  # fmt: skip
      ax.fill_between(x, y - yerr, y + yerr, color=color, alpha=0.15)
    for name, point in summary["dense"].items():
      value = 100 * point["val_accuracy"]["mean"]
      tops.append(value)
      ax.axhline(
        value, color=colors[name], ls="--", lw=1.1,
        label=f"{METHODS[name].label} (dense)",
      )  # fmt: skip
    reference = summary["best_dense"]
    if reference is not None:
      best = 100 * reference["val_accuracy"]["mean"]
      for drop in (0.5, 1.0):
        ax.axhline(best - drop, color="0.4", ls=":", lw=0.9)
      ax.set_ylim(max(0.0, best - 12), min(100.5, max(tops) + 1.5))
    ax.set(title=title, xlabel="group sparsity (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xlim(-3, 103)
    ax.grid(alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=8, fontsize=8)
  fig.savefig(path, dpi=110)
