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
# # Quickstart: a structured MLP on digits with RAMDA
#
# RAMDA (Huang & Lee, NeurIPS 2024) trains a network whose weights come out
# *structured*: whole groups of weights are exactly zero. With the paper's
# grouping, one group per **input feature** of every layer, a zero group in the
# first layer means the network never reads that input, and a zero group in a
# later layer means the hidden unit feeding it can be deleted.
#
# This notebook
#
# 1. trains a Flax NNX MLP on scikit-learn's 8×8 digits with `oxr.ramda` inside
#    an `optax.chain`;
# 2. reports the structure it found with `oxr.sparsity_table`;
# 3. exports the smaller network with `oxr.prune_input_channels`;
# 4. plots which of the 64 input pixels survive.
#
# It runs offline on a CPU in seconds. Set the environment variable
# `OXR_NOTEBOOK_SMALL=1` for the shortened run the test suite executes.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optax_ramda as oxr

SMALL = os.environ.get("OXR_NOTEBOOK_SMALL", "0") not in ("", "0")
STEPS = 300 if SMALL else 1500  # minibatch steps in all
BATCH_SIZE = 64
print(f"{'small' if SMALL else 'full'} run: {STEPS} steps, jax {jax.__version__}")

# %% [markdown]
# ## Data
#
# 1,797 handwritten digits of 8×8 pixels with intensities 0–16, scaled to
# [0, 1] and flattened to 64 features. A quarter is held out.

# %%
x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(
  (x / 16.0).astype(np.float32), y.astype(np.int32), test_size=0.25, random_state=0
)
print("train", x_train.shape, "test", x_test.shape)

# %% [markdown]
# ## Model and groups
#
# A two-hidden-layer MLP. `oxr.input_channel_groups` gives every `Linear`
# kernel of shape `(in, out)` one group per input row (`axes=(1,)`, group
# weight ω = √out) and leaves the biases unregularized (`None`).

# %%
model = nnx.Sequential(
  nnx.Linear(64, 64, rngs=nnx.Rngs(0)),
  nnx.relu,
  nnx.Linear(64, 32, rngs=nnx.Rngs(1)),
  nnx.relu,
  nnx.Linear(32, 10, rngs=nnx.Rngs(2)),
)
specs = oxr.input_channel_groups(model)
for path, spec in jax.tree_util.tree_flatten_with_path(
  specs, is_leaf=lambda s: s is None or isinstance(s, oxr.Regularizer)
)[0]:
  print(f"{jax.tree_util.keystr(path):24s} {spec}")

# %% [markdown]
# ## Optimizer
#
# The paper's RAMDA settings (η = 10⁻², ε = 10⁻⁶, three equal stages with the
# learning rate ×0.1 at each milestone). At a milestone RAMDA restarts its dual
# average; in the final stage its averaging weight ramps as
# c = min(c₀√r, 1) on the r-th step of that stage (the first step still uses
# c₀). Once c = 1 the model weights *are* the exactly structured subproblem
# solution Ŵ. With c₀ = 0.1 that happens on the 100th step of the final stage,
# which here has `STEPS // 3` steps (500 in the full run, 100 in the small one).
#
# RAMDA computes the new weights itself, so it must be the **last** transform
# of a chain; gradient clipping goes before it. `nnx.Optimizer` passes the
# parameters to `update`, which RAMDA needs.

# %%
milestones = (STEPS // 3, 2 * STEPS // 3)
tx = optax.chain(
  optax.clip_by_global_norm(1.0),
  oxr.ramda(
    learning_rate=1e-2,
    momentum=0.1,
    eps=1e-6,
    reg_strength=1e-3,
    regularizer=oxr.input_channel_groups,
    milestones=milestones,
  ),
)
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model, x, y):
  return (model(x).argmax(-1) == y).mean()


# %% [markdown]
# ## Training
#
# Every `EVAL_EVERY` steps we record the test accuracy and the weighted group
# sparsity (the share of regularized weights in zero groups) of the model
# weights and of Ŵ, which `oxr.prox_iterate` reads from the optimizer state.

# %%
EVAL_EVERY = 25
rng = np.random.default_rng(0)
history = {"step": [], "loss": [], "accuracy": [], "sparsity": [], "prox_sparsity": []}
for step in range(1, STEPS + 1):
  batch = rng.integers(0, len(x_train), BATCH_SIZE)
  loss = train_step(model, optimizer, x_train[batch], y_train[batch])
  if step % EVAL_EVERY == 0:
    prox = oxr.prox_iterate(optimizer.opt_state)
    history["step"].append(step)
    history["loss"].append(float(loss))
    history["accuracy"].append(float(accuracy(model, x_test, y_test)))
    history["sparsity"].append(float(oxr.sparsity(model, specs)["group_sparsity"]))
    history["prox_sparsity"].append(float(oxr.sparsity(prox, specs)["group_sparsity"]))
print(
  f"test accuracy {history['accuracy'][-1]:.3f}, "
  f"group sparsity {history['sparsity'][-1]:.3f}"
)

# %%
fig, (ax_acc, ax_sp) = plt.subplots(1, 2, figsize=(10, 3.2))
ax_acc.plot(history["step"], history["accuracy"])
ax_acc.set(xlabel="step", ylabel="test accuracy", ylim=(0, 1))
ax_sp.plot(history["step"], history["sparsity"], label="model weights w")
ax_sp.plot(history["step"], history["prox_sparsity"], "--", label="Ŵ (prox_iterate)")
ax_sp.set(xlabel="step", ylabel="weighted group sparsity")
ax_sp.legend()
for ax in (ax_acc, ax_sp):
  for m in milestones:
    ax.axvline(m, color="0.6", ls=":", lw=1)
  ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Ŵ is exactly structured from early on; the averaged model weights become so
# in the final stage, once the averaging weight reaches one (dotted lines: the
# milestones).
#
# ## Sparsity report
#
# One row per parameter: zero groups out of all groups, group sparsity and
# entry sparsity; the last row totals them. `oxr.sparsity` returns the same
# numbers as a dict.

# %%
print(oxr.sparsity_table(model, oxr.input_channel_groups))
report = oxr.sparsity(model, specs)
print(
  f"{int(report['zero_groups'])} of {report['groups']} groups zero: group sparsity "
  f"{float(report['group_sparsity']):.4f}, entry sparsity "
  f"{float(report['unstructured_sparsity']):.4f}"
)

# %% [markdown]
# ## Pruning export
#
# `oxr.prune_input_channels` builds the smaller network those zeros imply. A
# zero input row of layer *j* means the hidden unit of layer *j − 1* that feeds
# it is never read: its kernel column and bias entry go, with the row. With
# `prune_inputs=True` the zero rows of the first layer go too, and the pruned
# model takes only the surviving pixels, `x[..., report.kept_inputs]`. The
# function checks on the sample batch that the pruned model reproduces the
# original's outputs.

# %%
pruned, prune_report = oxr.prune_input_channels(model, x_test, prune_inputs=True)
print(prune_report)
kept = prune_report.kept_inputs
pruned_accuracy = float(accuracy(pruned, x_test[:, kept], y_test))
print(
  f"accuracy: full model {float(accuracy(model, x_test, y_test)):.4f}, "
  f"pruned model {pruned_accuracy:.4f} on {kept.size} of 64 pixels"
)
np.testing.assert_allclose(pruned(x_test[:, kept]), model(x_test), rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## Which pixels survive
#
# A pixel is used by the network iff its row of the first kernel is nonzero.
# Left: the norm of each pixel's row, as an 8×8 image. Middle: the pruned
# pixels over the mean digit. Right: the share of training
# images in which each pixel is ever inked; the border pixels that are (almost)
# always blank are the first to go.

# %%
first_kernel = np.asarray(model.layers[0].kernel[...])
row_norms = np.linalg.norm(first_kernel, axis=1).reshape(8, 8)
used = row_norms > 0
mean_digit = x_train.mean(0).reshape(8, 8)
inked = (x_train > 0).mean(0).reshape(8, 8)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
image = axes[0].imshow(np.ma.masked_where(~used, row_norms), cmap="viridis")
axes[0].set_facecolor("0.85")
fig.colorbar(image, ax=axes[0], shrink=0.8, label="‖row‖₂")
axes[0].set_title(f"row norms, {used.sum()}/64 pixels kept\n(grey: exactly zero)")
axes[1].imshow(mean_digit, cmap="gray_r")
ys, xs = np.nonzero(~used)
axes[1].scatter(xs, ys, marker="x", s=60, color="tab:red")
axes[1].set_title("mean digit\n(×: pruned pixel)")
image = axes[2].imshow(inked, cmap="magma", vmin=0, vmax=1)
fig.colorbar(image, ax=axes[2], shrink=0.8, label="share of images")
axes[2].set_title("how often each pixel\nis inked")
for ax in axes:
  ax.set_xticks([])
  ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# Next: `comparison.ipynb` compares RAMDA with its baselines over seeds,
# `solver_study.ipynb` looks inside the subproblem solver, and
# `identification.ipynb` shows RAMDA finding the optimal structure of a convex
# problem.
