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
# # Structure identification on convex problems
#
# The central result of the RAMDA paper: on a problem whose minimizer W* has
# some groups exactly zero, RAMDA's iterates **identify** that structure (the
# set of zero groups becomes exactly W*'s and stays so) after finitely many
# steps, even with an inexact subproblem solver. Proximal SGD- and Adam-type
# methods have no such guarantee: their zero patterns can keep changing.
#
# Here we check it where W* is known. The experiment code lives in
# `optax_ramda.experiments.identification` (also runnable as
# `python -m optax_ramda.experiments.identification`); this notebook calls its
# pieces and looks at the runs in more detail:
#
# * **digits**: group-lasso multinomial logistic regression on the 8×8 digits,
#   one group per input pixel (a row of the (64, 10) kernel), unregularized
#   bias;
# * **planted**: multi-output least squares on correlated Gaussian features
#   with a planted row support.
#
# λ is a fraction of λ_max (the smallest λ that makes W* = 0), so that some but
# not all groups are zero. W* is computed to a KKT residual of 10⁻¹⁰, then the
# five structured optimizers run from one random start on one sequence of
# minibatches in float64, with the learning rates the module tuned on the full
# problems and another seed (by final objective gap, not by support).
#
# `OXR_NOTEBOOK_SMALL=1` uses smaller problems and few epochs (what the test
# suite executes); the default is the module's full experiment, 300 epochs.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from optax_ramda.experiments import identification as ident

SMALL = os.environ.get("OXR_NOTEBOOK_SMALL", "0") not in ("", "0")
SEED = 0
if SMALL:  # The module's --small smoke run.
  EPOCHS = ident.SMALL_EPOCHS
  PROBLEMS = [
    (ident.digits_problem(num_samples=500), 32),
    (ident.planted_problem(n=200, p=20, k=3, s=5, noise=0.5, lam_fraction=0.15), 20),
  ]
else:
  EPOCHS = ident.EPOCHS
  PROBLEMS = [(ident.digits_problem(), 64), (ident.planted_problem(), 20)]
print(f"{'small' if SMALL else 'full'} run: {EPOCHS} epochs")

# %% [markdown]
# ## The exact optima
#
# `ident.solve_optimum` runs accelerated proximal gradient with restarts in
# NumPy float64 until the distance of 0 to the subdifferential (the KKT
# residual) is at most 10⁻¹⁰. The *zero margin* says how strictly the zero
# groups satisfy their optimality condition ‖∇_g f(W*)‖ ≤ λω: a small margin
# means a noisy gradient can push the group out of zero, so that support is
# harder to identify.

# %%
optima = {}
for problem, _ in PROBLEMS:
  opt = ident.solve_optimum(problem)
  optima[problem.name] = opt
  line = (
    f"{problem.name}: {problem.x.shape[0]} samples, {problem.num_groups} groups of "
    f"{problem.num_outputs}, λ = {problem.reg_strength / problem.lam_max:g} λ_max; "
    f"W* has {int(opt.zeros.sum())} zero groups (KKT residual {opt.kkt_residual:.1e}, "
    f"{opt.iterations} iterations), zero margin {opt.zero_margin:.3f}, smallest "
    f"nonzero ‖W*_g‖ {opt.min_group_norm:.3f}"
  )
  if problem.planted_zeros is not None:
    line += (
      f"; planted support recovered: {bool(np.all(opt.zeros == problem.planted_zeros))}"
    )
  print(line)
  assert opt.kkt_residual <= 1e-10

# %% [markdown]
# ## The runs
#
# `ident.optimizers` builds each method with the paper's schedule (three equal
# stages, learning rate ×0.1 at each boundary; RAMDA and RMDA restart their
# dual average there and ramp the averaging weight in the last stage).
# `ident.run` trains in float64, one jitted `lax.scan` per epoch, and records
# after every epoch which groups of the weights (and of Ŵ, for RAMDA and RMDA)
# are exactly zero, and the objective F on the full data.

# %%
traces, summaries = {}, {}
for problem, batch_size in PROBLEMS:
  opt = optima[problem.name]
  with jax.enable_x64(True):
    init = ident.initial_params(problem, SEED)
    batches = ident.minibatches(len(problem.x), batch_size, EPOCHS, SEED)
    methods = ident.optimizers(
      problem, EPOCHS, batches.shape[1], ident.TUNED_LEARNING_RATES[problem.name]
    )
    for name, (tx, config) in methods.items():
      trace = ident.run(problem, tx, init, batches)
      traces[problem.name, name] = trace
      summaries[problem.name, name] = ident.summarize(trace, opt, config)
  print(
    f"{problem.name}: {len(methods)} optimizers, {batches.shape[1]} steps per epoch"
  )


# %% [markdown]
# Per optimizer: the epoch from which the zero pattern of the weights w (and
# of Ŵ) equals W*'s and never changes again ("never" if it differs at the
# end), the false zeros and false nonzeros after the last epoch, and the final
# objective gap F(w) − F(w*).


# %%
def epoch_text(epoch):
  return "never" if epoch is None else str(epoch)


for problem, _ in PROBLEMS:
  opt = optima[problem.name]
  lines = [
    f"**{problem.name}**: W* has {int(opt.zeros.sum())} of {problem.num_groups} "
    f"groups zero; {EPOCHS} epochs.",
    "",
    "| optimizer | learning rate | w identified at epoch | Ŵ identified at epoch "
    "| false zeros | false nonzeros | F(w) − F(w*) |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for (name_p, name), s in summaries.items():
    if name_p != problem.name:
      continue
    prox = "—" if traces[name_p, name].prox_zeros is None else s["identified_prox"]
    lines.append(
      f"| {name} | {s['config']['learning_rate']:g} "
      f"| {epoch_text(s['identified_weights'])} "
      f"| {prox if prox == '—' else epoch_text(prox)} "
      f"| {s['false_zeros']} | {s['false_nonzeros']} | {s['objective_gap']:.2e} |"
    )
  display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Support error and objective gap against epochs
#
# Top: false zeros + false nonzeros of the weights (solid) and of Ŵ (dashed);
# zero means the support is exactly W*'s. Bottom: F(w) − F(w*). Dotted: the
# stage boundaries.

# %%
milestones = [round(EPOCHS * i / ident.STAGES) for i in range(1, ident.STAGES)]
fig, axes = plt.subplots(
  2, len(PROBLEMS), figsize=(6.5 * len(PROBLEMS), 7), squeeze=False
)
for col, (problem, _) in enumerate(PROBLEMS):
  top, bottom = axes[0, col], axes[1, col]
  for i, name in enumerate(ident.PAPER_LEARNING_RATES):
    per_epoch = summaries[problem.name, name]["per_epoch"]
    errors = np.add(per_epoch["false_zeros"], per_epoch["false_nonzeros"])
    top.plot(errors, color=f"C{i}", label=f"{name} (w)")
    if "prox_false_zeros" in per_epoch:
      prox_errors = np.add(
        per_epoch["prox_false_zeros"], per_epoch["prox_false_nonzeros"]
      )
      top.plot(prox_errors, color=f"C{i}", ls="--", lw=1, label=f"{name} (Ŵ)")
    gap = np.maximum(np.asarray(per_epoch["objective_gap"]), 1e-16)
    bottom.semilogy(gap, color=f"C{i}", label=name)
  for ax in (top, bottom):
    for m in milestones:
      ax.axvline(m, color="0.6", ls=":", lw=1)
    ax.grid(alpha=0.3)
    ax.set_xlabel("epoch")
  top.set_yscale("symlog", linthresh=1)
  top.set_ylim(bottom=0)
  top.set(title=f"{problem.name}: support error", ylabel="false zeros + false nonzeros")
  bottom.set(title=f"{problem.name}: objective gap", ylabel="F(w) − F(w*)")
  top.legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The zero pattern, epoch by epoch
#
# One panel per optimizer (and per Ŵ for RAMDA and RMDA), each column a group,
# time running down: white and black are groups whose zero/nonzero status
# agrees with W*'s (white: zero in both), red a *false zero*, blue a *false
# nonzero*. Identification is the point from which a panel has only black and
# white. RAMDA's and RMDA's weights are averages started from a dense point, so
# they can only be exactly sparse once the final-stage ramp brings the
# averaging weight to one; their Ŵ can identify the support long before.

# %%
cmap = ListedColormap(["white", "black", "tab:red", "tab:blue"])
legend = [
  Patch(facecolor=c, edgecolor="0.5", label=label)
  for c, label in zip(
    cmap.colors,
    ("zero, as in W*", "nonzero, as in W*", "false zero", "false nonzero"),
    strict=True,
  )
]


def agreement(zeros, optimal):
  """0: both zero, 1: both nonzero, 2: false zero, 3: false nonzero."""
  return np.where(
    zeros == optimal, np.where(optimal, 0, 1), np.where(zeros, 2, 3)
  ).astype(float)


panels = []  # (title, optimizer, attribute of the Trace)
for name in ident.PAPER_LEARNING_RATES:
  panels.append((f"{name} w", name, "weight_zeros"))
  if traces[PROBLEMS[0][0].name, name].prox_zeros is not None:
    panels.append((f"{name} Ŵ", name, "prox_zeros"))
fig, axes = plt.subplots(
  len(PROBLEMS),
  len(panels),
  figsize=(2.1 * len(panels), 3.4 * len(PROBLEMS)),
  squeeze=False,
)
for row, (problem, _) in enumerate(PROBLEMS):
  optimal = optima[problem.name].zeros
  for col, (title, name, attribute) in enumerate(panels):
    ax = axes[row, col]
    image = agreement(getattr(traces[problem.name, name], attribute), optimal)
    ax.imshow(
      image, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto", interpolation="none"
    )
    ax.set_title(f"{problem.name}: {title}", fontsize=9)
    ax.set_xlabel("group")
    if col == 0:
      ax.set_ylabel("epoch")
fig.legend(handles=legend, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.03))
fig.tight_layout(rect=(0, 0.03, 1, 1))
plt.show()

# %% [markdown]
# ## Which pixels W* uses, and which RAMDA found
#
# For the digits problem each group is a pixel. Left: the row norms of W* on
# the 8×8 grid (grey: exactly zero). Middle and right: RAMDA's weights w and
# its Ŵ after the last epoch, coloured as above.

# %%
opt = optima["digits"]
trace = traces["digits", "RAMDA"]
norms = np.linalg.norm(opt.params["w"], axis=1)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
image = axes[0].imshow(
  np.ma.masked_where(opt.zeros, norms).reshape(8, 8), cmap="viridis"
)
axes[0].set_facecolor("0.85")
fig.colorbar(image, ax=axes[0], shrink=0.8, label="‖W*_g‖₂")
axes[0].set_title(f"W*: {int((~opt.zeros).sum())} of 64 pixels used")
for ax, label, zeros in (
  (axes[1], "w", trace.weight_zeros),
  (axes[2], "Ŵ", trace.prox_zeros),
):
  final = zeros[-1]
  ax.imshow(agreement(final, opt.zeros).reshape(8, 8), cmap=cmap, vmin=-0.5, vmax=3.5)
  ax.set_title(f"RAMDA {label}: {int(np.sum(final != opt.zeros))} groups differ")
for ax in axes:
  ax.set_xticks([])
  ax.set_yticks([])
fig.legend(handles=legend, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.05))
fig.tight_layout(rect=(0, 0.05, 1, 1))
plt.show()
