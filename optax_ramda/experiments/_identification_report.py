"""The identification experiment's report: per-run records, the table, the figure.

Re-exported by :mod:`optax_ramda.experiments.identification`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optax_ramda.experiments._convex import Optimum
from optax_ramda.experiments._identification_runs import (
  Trace,
  identification_epoch,
  support_errors,
)


def summarize(trace: Trace, opt: Optimum, config: dict[str, Any]) -> dict[str, Any]:
  """The JSON record of one run against the optimum."""
  fz, fnz = support_errors(trace.weight_zeros, opt.zeros)
  out: dict[str, Any] = {
    "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    "seconds": trace.seconds,
    "identified_weights": identification_epoch(trace.weight_zeros, opt.zeros),
    "false_zeros": int(fz[-1]),
    "false_nonzeros": int(fnz[-1]),
    "objective_gap": float(trace.objective[-1] - opt.objective),
    "zero_groups": int(trace.weight_zeros[-1].sum()),
    "per_epoch": {
      "false_zeros": fz.tolist(),
      "false_nonzeros": fnz.tolist(),
      "objective_gap": (trace.objective - opt.objective).tolist(),
    },
    "identified_prox": None,
  }
  if trace.prox_zeros is not None and trace.prox_objective is not None:
    pfz, pfnz = support_errors(trace.prox_zeros, opt.zeros)
    out["identified_prox"] = identification_epoch(trace.prox_zeros, opt.zeros)
    out["prox_false_zeros"] = int(pfz[-1])
    out["prox_false_nonzeros"] = int(pfnz[-1])
    out["prox_objective_gap"] = float(trace.prox_objective[-1] - opt.objective)
    out["per_epoch"]["prox_false_zeros"] = pfz.tolist()
    out["per_epoch"]["prox_false_nonzeros"] = pfnz.tolist()
  return out


def _fmt_epoch(epoch: int | None) -> str:
  return "never" if epoch is None else str(epoch)


def markdown_table(report: dict[str, Any]) -> str:
  """One markdown table per problem from :func:`run_problem` records."""
  lines = []
  for rec in report["problems"]:
    prob, opt = rec["problem"], rec["optimum"]
    lines += [
      f"**{prob['name']}** ({prob['loss']}, n = {prob['samples']}, "
      f"{prob['groups']} groups of {prob['group_size']}, "
      f"λ = {prob['lam_fraction']:g}·λ_max = {prob['reg_strength']:.4g}): "
      f"W* has {opt['zero_groups']} zero groups, KKT residual "
      f"{opt['kkt_residual']:.1e}, zero-group margin {opt['zero_margin']:.3f}, "
      f"smallest nonzero ‖W*_g‖ {opt['min_group_norm']:.3f}"
      + (
        ""
        if opt["planted_support_recovered"] is None
        else f", planted support recovered: {opt['planted_support_recovered']}"
      )
      + f"; {rec['training']['epochs']} epochs of {rec['training']['steps_per_epoch']} steps.",
      "",
      "| optimizer | learning rate | support of w identified at epoch "
      "| support of Ŵ identified at epoch | false zeros | false nonzeros "
      "| F(w) − F(w*) |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rec["optimizers"].items():
      has_prox = "prox_false_zeros" in r
      prox = _fmt_epoch(r["identified_prox"]) if has_prox else "—"
      lines.append(
        f"| {name} | {r['config']['learning_rate']:g} "
        f"| {_fmt_epoch(r['identified_weights'])} | {prox} | "
        f"{r['false_zeros']} | {r['false_nonzeros']} | {r['objective_gap']:.2e} |"
      )
    lines.append("")
  return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
  """Support error (false zeros + false nonzeros) and objective gap vs epochs.

  One column per problem; solid lines are the model weights w, dashed ones Ŵ
  (:func:`prox_iterate`) where the method has one; dotted verticals mark the
  milestones.
  """
  # Imported here: matplotlib is optional (the experiments extra).
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  recs = report["problems"]
  fig, axes = plt.subplots(2, len(recs), figsize=(6.5 * len(recs), 7.5), squeeze=False)
  for col, rec in enumerate(recs):
    top, bottom = axes[0, col], axes[1, col]
    methods = list(rec["optimizers"].items())
    for i, (name, r) in enumerate(methods):
      style = dict(color=f"C{i}", zorder=2 + len(methods) - i)  # RAMDA on top.
      per = r["per_epoch"]
      epochs = np.arange(len(per["false_zeros"]))
      err = np.add(per["false_zeros"], per["false_nonzeros"])
      top.plot(epochs, err, lw=1.5, label=f"{name} (w)", **style)
      if "prox_false_zeros" in per:
        perr = np.add(per["prox_false_zeros"], per["prox_false_nonzeros"])
        top.plot(epochs, perr, ls="--", lw=1, label=f"{name} (Ŵ)", **style)
      gap = np.maximum(np.asarray(per["objective_gap"], float), 1e-16)
      bottom.semilogy(epochs, gap, lw=1.2, **style)
    for epoch in rec["training"]["milestone_epochs"]:
      for ax in (top, bottom):
        ax.axvline(epoch, color="0.5", ls=":", lw=1)
    prob, opt = rec["problem"], rec["optimum"]
    top.set_title(
      f"{prob['name']}: {opt['zero_groups']} of {prob['groups']} groups zero at W*, "
      f"margin {opt['zero_margin']:.3f}",
      fontsize=10,
    )
    top.set_ylabel("support error (false zeros + false nonzeros)")
    top.set_yscale("symlog", linthresh=1)
    top.set_ylim(bottom=0)
    bottom.set_ylabel("objective gap F(w) − F(w*)")
    bottom.set_xlabel("epoch")
    for ax in (top, bottom):
      ax.grid(True, alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)
