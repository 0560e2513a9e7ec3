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
# # Inside the subproblem solver: early stopping, condition (7) and exact Newton
#
# Every RAMDA step solves, per regularized parameter leaf, the proximal
# subproblem (docs/algorithm.md#the-subproblem)
#
# $$\hat W = \arg\min_z\ ⟨V, z − W^0⟩ + \tfrac12 \textstyle\sum_i D_i (z_i − W^0_i)^2
#   + α λ \sum_g ω_g ‖z_g‖_2,$$
#
# which has no closed form because the preconditioner D varies inside a group.
# The paper solves it *inexactly* by proximal gradient (PG), warm-started at the
# current weights, and its Table 1 compares training with PG stopped early
# against PG run without early stopping. This notebook measures the analogue,
# with four solvers of `oxr.ramda`:
#
# | name | what it runs |
# | --- | --- |
# | `pg` | PG with the authors' rule: stop once the relative decrease of the objective is below 10⁻⁸, at most 100 iterations (the default) |
# | `pg, cond. (7)` | PG stopped by the paper's condition (7): a small subgradient and no increase over the warm start |
# | `pg, no early stop` | PG for the full 100 iterations (it stops earlier only at an exact floating-point fixed point, after which more iterations change nothing) |
# | `exact` | per-group safeguarded Newton on the secular equation, to machine precision |
#
# Part 1 trains the same network with each solver (the Table 1 analogue: time
# per step, inner iterations, accuracy, sparsity). Part 2 takes subproblems
# captured from the `pg` run, early and late in training, and solves each one
# with all four through the public `oxr.solve_group_lasso`, against a float64
# exact optimum.
#
# `OXR_NOTEBOOK_SMALL=1` runs a few epochs of the MLP only (what the test suite
# executes); the default runs 30 epochs of the MLP and the CNN. The solver
# benchmark `benchmarks/solver.py` measures more (percentiles over many steps,
# Newton warm-started from the previous step's multiplier).

# %%
import functools
import inspect
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from IPython.display import Markdown, display

import optax_ramda as oxr
from optax_ramda import experiments

SMALL = os.environ.get("OXR_NOTEBOOK_SMALL", "0") not in ("", "0")
TASKS = ["mlp"] if SMALL else ["mlp", "cnn"]
EPOCHS = 2 if SMALL else 30
BATCH_SIZE = 64
REPEATS = 3 if SMALL else 20  # timing repeats per captured subproblem
LEARNING_RATE, MOMENTUM, EPS, REG_STRENGTH, DECAY = 1e-2, 0.1, 1e-6, 1e-3, 0.1

# ε₀ of condition (7): the library's default.
COND7_EPS0 = inspect.signature(oxr.ramda).parameters["subgradient_tol"].default
SOLVERS = {
  "pg": dict(solver="pg"),
  "pg, cond. (7)": dict(
    solver="pg", stopping="subgradient", subgradient_tol=COND7_EPS0
  ),
  "pg, no early stop": dict(solver="pg", stopping="subgradient", subgradient_tol=0.0),
  "exact": dict(solver="exact"),
}
data = experiments.digits()
STEPS_PER_EPOCH = len(data.y_train) // BATCH_SIZE
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
MILESTONES = (TOTAL_STEPS // 3, 2 * TOTAL_STEPS // 3)
# The steps whose subproblems Part 2 studies: early and late in a stage.
CAPTURE = {
  "stage 1, step 5": 5,
  "end of stage 1": MILESTONES[0],
  "stage 2, step 5": MILESTONES[0] + 5,
  "end of stage 3": TOTAL_STEPS,
}
print(f"{'small' if SMALL else 'full'} run: {TASKS}, {EPOCHS} epochs; {jax.devices()}")

# %% [markdown]
# ## Part 1: training with each solver (Table 1 analogue)
#
# The models and data come from the experiment package (`experiments.TASKS`,
# `experiments.digits`): an MLP 64-128-128-10 and a small CNN on the 8×8
# digits, one group per input feature or channel of every layer. RAMDA runs
# with the paper's settings (η = 10⁻², ε = 10⁻⁶, λ = 10⁻³, three equal stages)
# and c₀ = 0.1, so that in the full run the averaging weight reaches one early
# in the final stage. Every solver sees the same initialization and minibatches.
#
# The train step is a pure function of the parameter dict, jitted once per
# solver. It also returns the inner iteration count of every regularized leaf,
# which RAMDA keeps in its state. For `pg` it also keeps
# the weights before chosen steps and the state after them: the subproblems
# of Part 2.


# %%
def build(task_name, seed=0):
  """The task's data layout, model structure, parameter dict and spec tree."""
  task = experiments.TASKS[task_name]
  prepared = task.prepared(data)
  graphdef, state = nnx.split(task.model(prepared, seed))
  params = state.to_pure_dict()
  return prepared, graphdef, params, oxr.input_channel_groups(params)


def regularized_paths(specs):
  """Key paths of the regularized leaves, in tree order."""
  flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda s: s is None)[0]
  return [path for path, spec in flat if spec is not None]


def leaf(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def train(task_name, solver_kwargs, capture_steps=()):
  prepared, graphdef, params, specs = build(task_name)
  tx = oxr.ramda(
    LEARNING_RATE,
    MOMENTUM,
    EPS,
    reg_strength=REG_STRENGTH,
    regularizer=specs,
    milestones=MILESTONES,
    decay=DECAY,
    **solver_kwargs,
  )
  paths = regularized_paths(specs)

  def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    iters = jnp.stack([leaf(opt_state.iterations, p) for p in paths])
    return optax.apply_updates(params, updates), opt_state, iters

  @jax.jit
  def accuracy(params):
    logits = nnx.merge(graphdef, params)(prepared.x_test)
    return jnp.mean(logits.argmax(-1) == prepared.y_test)

  opt_state = tx.init(params)
  x_train, y_train = jnp.asarray(prepared.x_train), jnp.asarray(prepared.y_train)
  rng = np.random.default_rng(0)
  iterations, captured, seconds, timed_steps = [], {}, 0.0, 0
  step_count = 0
  for _ in range(EPOCHS):
    order = rng.permutation(len(y_train))[: STEPS_PER_EPOCH * BATCH_SIZE]
    start = time.perf_counter()
    for idx in order.reshape(STEPS_PER_EPOCH, BATCH_SIZE):
      step_count += 1
      before = jax.device_get(params) if step_count in capture_steps else None
      params, opt_state, iters = step(params, opt_state, x_train[idx], y_train[idx])
      iterations.append(iters)
      if before is not None:
        captured[step_count] = (before, jax.device_get(opt_state))
      if step_count == 1:  # The first step compiles: leave it out of the timing.
        jax.block_until_ready(params)
        start = time.perf_counter()
    jax.block_until_ready(params)
    seconds += time.perf_counter() - start
    timed_steps += STEPS_PER_EPOCH - (step_count == STEPS_PER_EPOCH)
  prox = oxr.prox_iterate(opt_state)
  return {
    "ms_per_step": 1e3 * seconds / timed_steps,
    "iterations": np.asarray(jnp.stack(iterations)),  # (steps, regularized leaves)
    "accuracy": float(accuracy(params)),
    "prox_accuracy": float(accuracy(prox)),
    "group_sparsity": float(oxr.sparsity(params, specs)["group_sparsity"]),
    "prox_group_sparsity": float(oxr.sparsity(prox, specs)["group_sparsity"]),
    "captured": captured,
    "specs": specs,
    "paths": paths,
  }


# %%
runs = {}
for task_name in TASKS:
  for name, kwargs in SOLVERS.items():
    capture = tuple(CAPTURE.values()) if name == "pg" else ()
    runs[task_name, name] = train(task_name, kwargs, capture)
    r = runs[task_name, name]
    print(
      f"{task_name:4s} {name:18s} {r['ms_per_step']:7.2f} ms/step, "
      f"mean inner iterations {r['iterations'].mean():6.1f}, "
      f"accuracy {r['accuracy']:.3f}"
    )

# %% [markdown]
# The table: milliseconds per training step (forward, backward, update;
# compilation excluded), inner iterations per step and regularized leaf (mean,
# and the largest over the run), and final test accuracy and weighted group
# sparsity of the model weights w and of Ŵ. Exact Newton counts Newton
# evaluations of its slowest group, each one pass over the leaf, like a PG
# iteration.

# %%
lines = [
  "| task | solver | ms / step | inner iterations (mean / max) | accuracy w / Ŵ (%) "
  "| group sparsity w / Ŵ (%) |",
  "| --- | --- | ---: | ---: | ---: | ---: |",
]
for (task_name, name), r in runs.items():
  lines.append(
    f"| {task_name} | {name} | {r['ms_per_step']:.2f} "
    f"| {r['iterations'].mean():.1f} / {r['iterations'].max()} "
    f"| {100 * r['accuracy']:.2f} / {100 * r['prox_accuracy']:.2f} "
    f"| {100 * r['group_sparsity']:.2f} / {100 * r['prox_group_sparsity']:.2f} |"
  )
display(Markdown("\n".join(lines)))

# %% [markdown]
# Inner iterations over training, averaged over the regularized leaves (a
# moving average over 10 steps). Dotted: the milestones, where the dual
# average restarts.

# %%
fig, axes = plt.subplots(1, len(TASKS), figsize=(6 * len(TASKS), 3.6), squeeze=False)
for ax, task_name in zip(axes[0], TASKS, strict=True):
  for name in SOLVERS:
    r = runs[task_name, name]
    per_step = r["iterations"].mean(axis=1)
    window = min(10, len(per_step))
    smooth = np.convolve(per_step, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, len(per_step) + 1), smooth, label=name)
  for m in MILESTONES:
    ax.axvline(m, color="0.6", ls=":", lw=1)
  ax.set(title=task_name, xlabel="step", ylabel="inner iterations", yscale="log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Part 2: the captured subproblems, one at a time
#
# At each captured step, `oxr.subproblem` returns the subproblem of RAMDA's
# state after it, as RAMDA formed it: V (the state's `grad_sum`), W⁰ (its
# `anchor`), D = ∛U + ε (RAMDA's cube root of `grad_sq_sum`, ε decayed by γ
# per finished stage) and the threshold τ = αλ; the warm start is the weights
# w before the step. Solving it again with `pg` gives back Ŵ, the state's
# `prox`, up to rounding: in float32 the authors' stopping rule (a relative
# decrease below 10⁻⁸, under float32's resolution) stops where rounding makes
# the objective stall, which the solver's summation order can move by a few
# iterations (docs/algorithm.md#numerics).


# %%
def subproblems(run, step):
  params, state = run["captured"][step]
  sub = oxr.subproblem(
    state, EPS, reg_strength=REG_STRENGTH, milestones=MILESTONES, decay=DECAY
  )
  out = []
  for path in run["paths"]:
    spec, v = leaf(run["specs"], path), leaf(sub.v, path)
    out.append(
      {
        "name": jax.tree_util.keystr(path),
        "axes": spec.axes,
        "v": v,
        "d": leaf(sub.d, path),
        "anchor": leaf(sub.anchor, path),
        "init": leaf(params, path),
        "threshold": sub.threshold,
        "prox": leaf(state.prox, path),
        "iterations": int(leaf(state.iterations, path)),
        # Condition (7)'s bound on the subgradient, as RAMDA computed it.
        "tol": oxr.subgradient_tolerance(
          COND7_EPS0, state.alpha, state.stage_count, v.size
        ),
      }
    )
  return out


@functools.partial(jax.jit, static_argnames=("axes", "name"))
def solve_with(v, d, anchor, threshold, init, tol, *, axes, name):
  """One solver of SOLVERS on one subproblem; `tol` is condition (7)'s bound."""
  kwargs = dict(SOLVERS[name])
  if name == "pg, cond. (7)":  # RAMDA's bound at this step, from ε₀.
    kwargs["subgradient_tol"] = tol
  return oxr.solve_group_lasso(v, d, anchor, threshold, axes, init=init, **kwargs)


def solve(problem, name):
  keys = ("v", "d", "anchor", "threshold", "init", "tol")
  args = tuple(problem[k] for k in keys)
  return functools.partial(solve_with, axes=problem["axes"], name=name), args


task_name = TASKS[0]
for label, step in CAPTURE.items():
  for p in subproblems(runs[task_name, "pg"], step):
    fn, args = solve(p, "pg")
    z, iters = fn(*args)
    error = np.abs(np.asarray(z) - p["prox"]).max() / np.abs(p["prox"]).max()
    print(
      f"{label:16s} {p['name']:24s} iterations: in training {p['iterations']:3d}, "
      f"now {int(iters):3d}; max |z − Ŵ| / max |Ŵ| = {error:.1e}"
    )
    assert error <= 2e-2, (label, p["name"], error)

# %% [markdown]
# Now every solver on every captured subproblem. Condition (7) uses the bound
# RAMDA used at that step (`oxr.subgradient_tolerance`, from ε₀, α, the stage
# step k and the leaf's size). Each solver runs jitted; the time is the median of
# `REPEATS` calls on one subproblem. The error is measured against the exact
# optimum z* computed in float64: the relative objective gap
# (q(z) − q(z*)) / |q(z*)| in float64, the relative distance ‖z − z*‖ / ‖z*‖,
# and the number of groups whose zero/nonzero status differs from z*'s.


# %%
def objective64(problem, z):
  """q(z) in float64 (NumPy), with ω_g = √|g|."""
  v, d, a = (np.asarray(problem[k], np.float64) for k in ("v", "d", "anchor"))
  z = np.asarray(z, np.float64)
  axes = problem["axes"]
  size = np.prod([z.shape[i] for i in axes])
  norms = np.sqrt(np.sum(z**2, axis=axes))
  reg = float(problem["threshold"]) * np.sqrt(size) * norms.sum()
  return float(np.sum(v * (z - a) + 0.5 * d * (z - a) ** 2) + reg)


def zero_groups(z, axes):
  return np.all(np.asarray(z) == 0, axis=axes)


def timed(fn, args, repeats):
  jax.block_until_ready(fn(*args))  # Compile.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


@functools.partial(jax.jit, static_argnames="axes")
def exact_optimum(v, d, anchor, threshold, *, axes):
  return oxr.solve_group_lasso(v, d, anchor, threshold, axes, solver="exact")[0]


rows = []
for task_name in TASKS:
  for label, step in CAPTURE.items():
    for p in subproblems(runs[task_name, "pg"], step):
      axes = p["axes"]
      with jax.enable_x64(True):
        z_star = np.asarray(
          exact_optimum(
            *(np.asarray(p[k], np.float64) for k in ("v", "d", "anchor")),
            np.float64(p["threshold"]),
            axes=axes,
          )
        )
      q_star = objective64(p, z_star)
      zeros_star = zero_groups(z_star, axes)
      for name in SOLVERS:
        fn, args = solve(p, name)
        z, iters = fn(*args)
        rows.append(
          {
            "task": task_name,
            "when": label,
            "leaf": p["name"],
            "solver": name,
            "iterations": int(iters),
            "us": 1e6 * timed(fn, args, REPEATS),
            "gap": (objective64(p, z) - q_star) / abs(q_star),
            "distance": np.linalg.norm(np.asarray(z, np.float64) - z_star)
            / max(np.linalg.norm(z_star), 1e-30),
            "support": int(np.sum(zero_groups(z, axes) != zeros_star)),
            "zero_groups": (int(zeros_star.sum()), zeros_star.size),
          }
        )
print(f"{len(rows)} solves")

# %% [markdown]
# Per capture and solver, summed over the leaves: PG iterations (or Newton
# evaluations), the solver time, the worst relative objective gap and
# distance, and the wrongly zeroed or kept groups. z* counts the zero groups
# of the exact optimum over all groups.

# %%
summary = {}
for r in rows:
  key = (r["task"], r["when"], r["solver"])
  s = summary.setdefault(
    key, {"iterations": 0, "us": 0.0, "gap": 0.0, "distance": 0.0, "support": 0}
  )
  s["iterations"] += r["iterations"]
  s["us"] += r["us"]
  s["gap"] = max(s["gap"], r["gap"])
  s["distance"] = max(s["distance"], r["distance"])
  s["support"] += r["support"]
zeros_at = {}
for r in rows:
  if r["solver"] == "exact":
    z, n = r["zero_groups"]
    old = zeros_at.get((r["task"], r["when"]), (0, 0))
    zeros_at[r["task"], r["when"]] = (old[0] + z, old[1] + n)

lines = [
  "| task | captured at | z* zero groups | solver | iterations | time (µs) "
  "| max rel. gap | max rel. distance | support errors |",
  "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
]
for (task_name, when, name), s in summary.items():
  z, n = zeros_at[task_name, when]
  lines.append(
    f"| {task_name} | {when} | {z}/{n} | {name} | {s['iterations']} | {s['us']:.0f} "
    f"| {s['gap']:.1e} | {s['distance']:.1e} | {s['support']} |"
  )
display(Markdown("\n".join(lines)))

# %% [markdown]
# The objective gap each solver leaves against its iterations, one point per
# captured subproblem and leaf (gaps at or below float32 rounding are drawn at
# 10⁻¹⁰).

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for i, name in enumerate(SOLVERS):
  pts = [(r["iterations"], max(r["gap"], 1e-10)) for r in rows if r["solver"] == name]
  its, gaps = np.array(pts).T
  ax.scatter(its + 1, gaps, label=name, color=f"C{i}", alpha=0.7)
ax.set(
  xscale="log",
  yscale="log",
  xlabel="iterations + 1",
  ylabel="(q(z) − q(z*)) / |q(z*)|",
  title="accuracy of the subproblem solution",
)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
