"""Solver study: the subproblem solvers on subproblems captured from real training.

An MLP and a small CNN are trained on scikit-learn's `load_digits` (offline)
with RAMDA and a group lasso on every kernel (one group per input
feature / channel, the paper's grouping). At a few steps early in training and
late in training the subproblem of every regularized leaf is captured as RAMDA
solves it (V, D, W⁰, τ from `oxr.subproblem`, the warm starts w and the previous
Ŵ), and each solver is run on it:

* ``pg``: the paper's proximal gradient with the authors' stopping rule
  (relative decrease < 1e-8, at most 100 iterations), the default, started at
  the weights w (``warm_start="params"``, the authors' choice);
* ``pg, warm start Ŵ``: the same, started at the previous step's solution Ŵ
  (``warm_start="prox"``);
* ``pg, no early stopping``: the same iteration run for 100 iterations (it
  only stops earlier at an exact fixed point), as in the paper's Table 1;
* ``pg, condition (7)``: the paper's inexactness condition with
  ε_k = ε₀ k^(−0.51) (see `oxr.subgradient_tolerance`);
* ``exact``: per-group safeguarded Newton on the secular equation, started at
  the upper end of its bracket;
* ``exact, μ warm start``: the same, started at the previous step's μ.

For each: inner iterations per leaf (median, p90, max; for "exact" the
Newton evaluations of the slowest group), time per training step (all
regularized leaves of the step in one jitted call; wall-clock and process CPU
time, median over rounds that interleave the solvers), and the error against
the exact optimum computed independently in float64 NumPy (a vectorized
bisection on the secular equation): the relative objective gap
(q(z) − q*)/|q*| and the relative distance ‖z − z*‖/‖z*‖, per leaf.

A last table times one fused `while_loop` for all leaves of a step against
one loop per leaf (the library's way), on the captured steps and, with
``--fused-sizes``, on synthetic CNN-shaped trees.

  python benchmarks/solver.py                   # the default study, ~1 CPU-minute
  python benchmarks/solver.py --fused-sizes 1M,10M --rounds 9
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import optax_ramda as oxr
from optax_ramda import _solvers

# ----------------------------------------------------------------------------
# Models (plain JAX, Flax parameter layouts) and training.


def _dense(key, fan_in, fan_out):
  return {
    "kernel": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in),
    "bias": jnp.zeros(fan_out),
  }


def _conv(key, cin, cout):
  return {
    "kernel": jax.random.normal(key, (3, 3, cin, cout)) / math.sqrt(9 * cin),
    "bias": jnp.zeros(cout),
  }


def mlp_init(key):
  k = jax.random.split(key, 3)
  return {
    "Dense_0": _dense(k[0], 64, 128),
    "Dense_1": _dense(k[1], 128, 64),
    "Dense_2": _dense(k[2], 64, 10),
  }


def mlp_apply(p, x):
  h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  h = jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  return h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]


def cnn_init(key):
  k = jax.random.split(key, 3)
  return {
    "Conv_0": _conv(k[0], 1, 16),
    "Conv_1": _conv(k[1], 16, 32),
    "Dense_0": _dense(k[2], 2 * 2 * 32, 10),
  }


def _conv_apply(p, h):
  h = jax.lax.conv_general_dilated(
    h, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  h = jax.nn.relu(h + p["bias"])
  return (
    jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
  )


def cnn_apply(p, x):
  h = _conv_apply(p["Conv_0"], x.reshape(-1, 8, 8, 1))
  h = _conv_apply(p["Conv_1"], h)
  return h.reshape(h.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


def specs_for(params):
  """One group per input feature (Dense) or input channel (Conv); biases free."""
  return {
    name: {
      "kernel": oxr.group_lasso(axes=(1,) if layer["kernel"].ndim == 2 else (0, 1, 3)),
      "bias": None,
    }
    for name, layer in params.items()
  }


class Subproblem(NamedTuple):
  """One leaf's subproblem as RAMDA solved it at one step."""

  v: np.ndarray
  d: np.ndarray
  anchor: np.ndarray
  init: np.ndarray
  tau: float  # α·λ
  alpha: float
  k: int
  axes: tuple[int, ...]
  prox: np.ndarray  # RAMDA's Ŵ, to check the capture.
  prev_prox: np.ndarray  # Ŵ of the step before: the "prox" warm start.
  iterations: int


MODELS = {"mlp": (mlp_init, mlp_apply), "cnn": (cnn_init, cnn_apply)}


def train_and_capture(
  model: str,
  steps: int,
  capture_at: list[int],
  args: argparse.Namespace,
  stats: dict | None = None,
  **ramda_kw,
) -> tuple[dict[int, list[Subproblem]], float, float]:
  """Trains `model` with RAMDA; returns the subproblems at `capture_at` steps,
  the final test accuracy and the group sparsity of Ŵ.

  With `stats` (a dict), also records there per step the inner iterations
  (summed over the regularized leaves) and the wall time of the step, and
  at the end the distance of Ŵ to the exact optimum of the last subproblem."""
  init, apply = MODELS[model]
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target
  perm = np.random.default_rng(0).permutation(len(x))
  train, test = perm[:1500], perm[1500:]
  params = init(jax.random.PRNGKey(0))
  specs = specs_for(params)
  tx = oxr.ramda(
    args.lr,
    momentum=args.momentum,
    eps=args.eps,
    reg_strength=args.reg,
    regularizer=specs,
    **ramda_kw,
  )
  state = tx.init(params)
  sub_args = dict(eps=args.eps, reg_strength=args.reg)

  def loss_fn(p, xb, yb):
    return optax.softmax_cross_entropy_with_integer_labels(apply(p, xb), yb).mean()

  @jax.jit
  def step(p, s, xb, yb):
    g = jax.grad(loss_fn)(p, xb, yb)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  rng = np.random.default_rng(1)
  captured: dict[int, list[Subproblem]] = {}
  flat_specs = jax.tree.leaves(specs, is_leaf=oxr.is_spec)
  for t in range(1, steps + 1):
    idx = rng.choice(train, size=args.batch, replace=False)
    before, prox_before = params, state.prox
    t0 = time.perf_counter()
    params, state = jax.block_until_ready(step(params, state, x[idx], y[idx]))
    if stats is not None:
      stats.setdefault("seconds", []).append(time.perf_counter() - t0)
      stats.setdefault("iterations", []).append(
        sum(int(i) for i in jax.tree.leaves(state.iterations))
      )
    if t in capture_at:
      # The subproblem of step t, as RAMDA formed it (its cube root and ε).
      sub = oxr.subproblem(state, **sub_args)
      leaves = zip(
        flat_specs,
        jax.tree.leaves(sub.v),
        jax.tree.leaves(sub.d),
        jax.tree.leaves(sub.anchor),
        jax.tree.leaves(before),
        jax.tree.leaves(state.prox),
        jax.tree.leaves(prox_before),
        jax.tree.leaves(state.iterations),
        strict=True,
      )
      captured[t] = [
        Subproblem(
          v=np.asarray(v),
          d=np.asarray(d),
          anchor=np.asarray(a),
          init=np.asarray(w),
          tau=float(sub.threshold),
          alpha=float(state.alpha),
          k=int(state.stage_count),
          axes=spec.group_axes(v.ndim),
          prox=np.asarray(z),
          prev_prox=np.asarray(zp),
          iterations=int(it),
        )
        for spec, v, d, a, w, z, zp, it in leaves
        if spec is not None
      ]
  if stats is not None:
    sub = oxr.subproblem(state, **sub_args)
    dists = []
    for spec, v, d, a, z in zip(
      flat_specs,
      jax.tree.leaves(sub.v),
      jax.tree.leaves(sub.d),
      jax.tree.leaves(sub.anchor),
      jax.tree.leaves(state.prox),
      strict=True,
    ):
      if spec is not None:
        z_star = np.asarray(spec.solve(v, d, a, sub.threshold, z, solver="exact",
                                       max_iters=1, rtol=0.0)[0])  # fmt: skip
        norm = np.linalg.norm(z_star)
        dists.append(np.linalg.norm(np.asarray(z) - z_star) / norm if norm else 0.0)
    stats["final_distance"] = max(dists)
  logits = apply(oxr.prox_iterate(state), x[test])
  accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == y[test]))
  sparsity = float(oxr.sparsity(oxr.prox_iterate(state), specs)["group_sparsity"])
  return captured, accuracy, sparsity


# ----------------------------------------------------------------------------
# The independent float64 reference optimum.


def _groups(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
  rest = [a for a in range(x.ndim) if a not in axes]
  return np.transpose(x, rest + list(axes)).reshape(
    -1, math.prod(x.shape[a] for a in axes)
  )


def reference_optimum(sp: Subproblem) -> tuple[np.ndarray, float]:
  """(z*, q*) in float64: bisection on μ‖b/(d + μ)‖ = τω per group."""
  vg, dg, ag = (
    _groups(np.asarray(x, np.float64), sp.axes) for x in (sp.v, sp.d, sp.anchor)
  )
  t = sp.tau * math.sqrt(vg.shape[1])
  b = dg * ag - vg
  nb = np.linalg.norm(b, axis=1)
  active = nb > t

  def phi(mu):
    return mu * np.linalg.norm(b / (dg + mu[:, None]), axis=1)

  lo, hi = np.zeros(len(b)), np.ones(len(b))
  while np.any(grow := active & (phi(hi) < t)):
    hi = np.where(grow, 2 * hi, hi)
  for _ in range(200):
    mid = (lo + hi) / 2
    below = phi(mid) < t
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  zg = np.where(active[:, None], b / (dg + ((lo + hi) / 2)[:, None]), 0)
  return zg, objective(sp, zg)


def objective(sp: Subproblem, zg: np.ndarray) -> float:
  """q(z) in float64, z in the (groups, group size) layout."""
  vg, dg, ag = (
    _groups(np.asarray(x, np.float64), sp.axes) for x in (sp.v, sp.d, sp.anchor)
  )
  dz = zg - ag
  norms = np.linalg.norm(zg, axis=1)
  return float(
    np.sum(vg * dz + 0.5 * dg * dz**2) + sp.tau * math.sqrt(vg.shape[1]) * norms.sum()
  )


# ----------------------------------------------------------------------------
# Solvers on captured subproblems.


class Solver(NamedTuple):
  """A solver variant; hashable, so that its jitted step is compiled once."""

  name: str
  # (v, d, anchor, tau, init, alpha, k, mu_init) -> (z, iterations, mu)
  fn: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  warm: bool = False  # Needs the previous step's μ.
  from_prox: bool = False  # Starts at the previous Ŵ instead of w.


def _pg(**kw):
  def fn(v, d, anchor, tau, init, alpha, k, mu, *, axes):
    del mu
    extra = dict(kw)
    if "eps0" in extra:
      extra = {
        "stopping": "subgradient",
        "subgradient_tol": oxr.subgradient_tolerance(
          extra.pop("eps0"), alpha, k, v.size
        ),
        **extra,
      }
    z, iters = oxr.solve_group_lasso(v, d, anchor, tau, axes, init=init, **extra)
    return z, iters, jnp.zeros([])

  return fn


def _exact(warm: bool):
  def fn(v, d, anchor, tau, init, alpha, k, mu, *, axes):
    del init, alpha, k
    tau_w = tau * _solvers.group_weight(v.shape, axes, "sqrt")
    return _solvers.exact_group_lasso(v, d, anchor, tau_w, axes, mu if warm else None)

  return fn


SOLVERS = [
  Solver("pg (paper: rtol 1e-8, ≤ 100)", _pg()),
  Solver("pg, warm start Ŵ", _pg(), from_prox=True),
  Solver(
    "pg, no early stopping (100)", _pg(stopping="subgradient", subgradient_tol=0.0)
  ),
  Solver("pg, condition (7), ε₀ = 1e-3", _pg(eps0=1e-3)),
  Solver("pg, condition (7), ε₀ = 1e-4", _pg(eps0=1e-4)),
  Solver("pg, condition (7), ε₀ = 1e-5", _pg(eps0=1e-5)),
  Solver("exact", _exact(False)),
  Solver("exact, μ warm start", _exact(True), warm=True),
]


@functools.cache
def _solve_step(solver: Solver, axes: tuple[tuple[int, ...], ...]) -> Callable:
  """One jitted call solving all leaves of a step (compiled once per model)."""

  @jax.jit
  def solve_step(leaves, mus):
    out = [
      solver.fn(*leaf, mu, axes=ax)
      for leaf, mu, ax in zip(leaves, mus, axes, strict=True)
    ]
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]

  return solve_step


_REFERENCE: dict[int, tuple[np.ndarray, float]] = {}


def run_solver(solver: Solver, steps: list[list[Subproblem]], prev_mu):
  """Solves every captured step's leaves in one jitted call per step.

  Returns per-leaf iterations and errors, the μ found per step, and a
  function that solves all the steps again (for timing).
  """
  solve_step = _solve_step(solver, tuple(sp.axes for sp in steps[0]))

  iterations, gaps, dists, mus_out, calls = [], [], [], [], []
  for t, sps in enumerate(steps):
    leaves = [
      (
        sp.v,
        sp.d,
        sp.anchor,
        np.float32(sp.tau),
        sp.prev_prox if solver.from_prox else sp.init,
        np.float32(sp.alpha),
        sp.k,
      )
      for sp in sps
    ]
    mus = (
      prev_mu[t]
      if prev_mu is not None
      else [
        np.ones(
          [1 if a in sp.axes else n for a, n in enumerate(sp.v.shape)], np.float32
        )
        for sp in sps
      ]
    )
    zs, its, mu = jax.block_until_ready(solve_step(leaves, mus))
    mus_out.append(mu)
    calls.append((leaves, mus))
    for sp, z, it in zip(sps, zs, its, strict=True):
      iterations.append(int(it))
      if id(sp) not in _REFERENCE:
        _REFERENCE[id(sp)] = reference_optimum(sp)
      zg_ref, q_ref = _REFERENCE[id(sp)]
      zg = _groups(np.asarray(z, np.float64), sp.axes)
      gaps.append((objective(sp, zg) - q_ref) / abs(q_ref))
      ref_norm = np.linalg.norm(zg_ref)
      dists.append(np.linalg.norm(zg - zg_ref) / ref_norm if ref_norm > 0 else 0.0)

  def solve_all():
    for leaves, mus in calls:
      jax.block_until_ready(solve_step(leaves, mus))

  return iterations, gaps, dists, mus_out, solve_all


# ----------------------------------------------------------------------------
# One fused while_loop for all leaves of a step, against one loop per leaf.
# The fused loops run the library's iteration steps (`_solvers.newton_step`;
# `_solvers.pg_step` and `_solvers.pg_objective` for PG and its stopping rule)
# for every leaf in one `lax.while_loop`; a converged leaf is frozen by a
# `lax.cond` in the body.


def _exact_per_leaf(leaves):
  return [
    _solvers.exact_group_lasso(v, d, a, tw, axes)[0] for v, d, a, tw, _, axes in leaves
  ]


def _exact_fused(leaves):
  prep = []
  for v, d, a, tw, _, axes in leaves:
    screen = _solvers.screen_group_lasso(v, d, a, tw, axes)
    gap = jnp.where(screen.active, screen.norm_b - tw, 1)
    lo, hi = tw * screen.d_min / gap, tw * screen.d_max / gap
    prep.append(((screen, d, tw, axes), (hi, lo, hi, ~screen.active | (lo >= hi))))

  def body(carry):
    j, sts = carry
    return j + 1, [
      jax.lax.cond(
        jnp.all(st[3]),
        lambda st: st,
        lambda st, p=p: _solvers.newton_step(p[0].b, p[1], p[2], p[3], *st),
        st,
      )
      for (p, _), st in zip(prep, sts, strict=True)
    ]

  def cond(carry):
    j, sts = carry
    return (j < _solvers._EXACT_MAX_ITERS) & ~jnp.all(
      jnp.stack([jnp.all(st[3]) for st in sts])
    )

  _, sts = jax.lax.while_loop(
    cond, body, (jnp.zeros([], jnp.int32), [st for _, st in prep])
  )
  return [
    jnp.where(p[0].active, p[0].b / (p[1] + st[0]), 0)
    for (p, _), st in zip(prep, sts, strict=True)
  ]


def _pg_per_leaf(leaves):
  return [
    _solvers.pg_group_lasso(
      v,
      d,
      a,
      tw,
      _solvers.screen_group_lasso(v, d, a, tw, axes),
      init,
      axes,
      100,
      1e-8,
      "decrease",
      0.0,
    )[0]
    for v, d, a, tw, init, axes in leaves
  ]


def _pg_fused(leaves, max_iters=100, rtol=1e-8):
  prep = []
  for v, d, a, tw, _init, axes in leaves:
    screen = _solvers.screen_group_lasso(v, d, a, tw, axes)
    h = 1 / screen.d_max
    prep.append((v, d, a, tw, axes, screen.active, h))

  def leaf_step(p, st):
    (v, d, a, tw, axes, active, h), (j, z, _, q, _) = p, st
    z = _solvers.pg_step(z, v, d, a, h, h * tw, active, axes)
    q_new = jnp.sum(jnp.where(active, _solvers.pg_objective(z, v, d, a, tw, axes), 0))
    converged = (j + 1 >= 2) & ((q - q_new) / (jnp.abs(q_new) + 1) < rtol)
    return j + 1, z, q, q_new, converged | (j + 1 >= max_iters)

  def body(sts):
    return [
      jax.lax.cond(st[4], lambda st: st, lambda st, p=p: leaf_step(p, st), st)
      for p, st in zip(prep, sts, strict=True)
    ]

  def cond(sts):
    return ~jnp.all(jnp.stack([st[4] for st in sts]))

  zero = jnp.zeros([], jnp.float32)
  sts = [
    (jnp.zeros([], jnp.int32), jnp.where(p[5], leaf[4], 0), zero, zero, ~jnp.any(p[5]))
    for p, leaf in zip(prep, leaves, strict=True)
  ]
  return [st[1] for st in jax.lax.while_loop(cond, body, sts)]


def fused_vs_per_leaf(leaves, repeats: int, rounds: int) -> list[str]:
  """Median ms of the four variants on one step's `leaves` (v, d, W⁰, τω, w, axes)."""
  axes = [leaf[-1] for leaf in leaves]
  arrays = [leaf[:-1] for leaf in leaves]
  variants = {
    "exact, per leaf": _exact_per_leaf,
    "exact, fused": _exact_fused,
    "pg, per leaf": _pg_per_leaf,
    "pg, fused": _pg_fused,
  }
  jitted = {
    name: jax.jit(
      lambda arrays, fn=fn: fn([(*a, ax) for a, ax in zip(arrays, axes, strict=True)])
    )
    for name, fn in variants.items()
  }
  outs = {name: jax.block_until_ready(fn(arrays)) for name, fn in jitted.items()}
  for a, b in [("exact, per leaf", "exact, fused"), ("pg, per leaf", "pg, fused")]:
    for x, y in zip(outs[a], outs[b], strict=True):
      np.testing.assert_array_equal(x, y)  # Same iterations, same results.
  timing = _common.interleaved(
    {
      name: lambda fn=fn: jax.block_until_ready(fn(arrays))
      for name, fn in jitted.items()
    },
    rounds=rounds,
    inner=repeats,
  )
  return [
    f"{1e3 * statistics.median(timing.wall[n]):.3f} / "
    f"{1e3 * statistics.median(timing.cpu[n]):.3f}"
    for n in variants
  ]


def synthetic_leaves(n_params: int) -> list:
  """A VGG-style CNN tree (benchmarks/_common.py) with random subproblems:
  v ~ 1e-2·N(0, 1)·(per-group factor in [0.1, 10]), d log-uniform in [0.1, 10],
  τω at the 30% quantile of the group norms ‖b_g‖."""
  params = _common.materialize(_common.model_shapes("cnn", n_params))
  specs = oxr.resolve_specs(oxr.input_channel_groups(params), params)
  rng = np.random.default_rng(0)
  leaves = []
  for p, spec in zip(
    jax.tree.leaves(params),
    jax.tree.leaves(specs, is_leaf=oxr.is_spec),
    strict=True,
  ):
    if spec is None:
      continue
    axes = spec.group_axes(p.ndim)
    gshape = tuple(1 if a in axes else k for a, k in enumerate(p.shape))
    v = jnp.asarray(
      1e-2 * rng.normal(size=p.shape) * 10 ** rng.uniform(-1, 1, gshape), jnp.float32
    )
    d = jnp.asarray(10 ** rng.uniform(-1, 1, p.shape), jnp.float32)
    norms = np.asarray(_solvers.group_norm(d * p - v, axes)).ravel()
    leaves.append((v, d, p, jnp.float32(np.quantile(norms, 0.3)), p, axes))
  return leaves


def _fmt_err(xs):
  return f"{np.median(xs):.1e} / {np.max(xs):.1e}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300, help="training steps per model")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
  parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--lr", type=float, default=1e-2)
  parser.add_argument("--momentum", type=float, default=0.1)
  parser.add_argument("--eps", type=float, default=1e-6)
  parser.add_argument("--reg", type=float, default=1e-3)
  parser.add_argument("--models", default="mlp,cnn")
  parser.add_argument(
    "--fused-sizes",
    default="",
    help="also compare fused and per-leaf loops on synthetic CNN trees of these "
    "sizes, e.g. 1M,10M",
  )
  args = parser.parse_args()

  print(f"Machine: {_common.machine()}")
  print(
    f"RAMDA η={args.lr}, c={args.momentum}, ε={args.eps}, λ={args.reg}, batch "
    f"{args.batch}, {args.steps} steps; float32.\n"
  )
  phases = {
    "early": [2, 3, 4, 5, 6, 7],
    "late": list(range(args.steps - 5, args.steps + 1)),
  }
  t_start = time.perf_counter()
  fused_rows = []
  train_rows = []
  for model in args.models.split(","):
    # Training with each warm start (and the exact solver for reference).
    for label, kw in [
      ('pg, warm_start="params"', {"solver": "pg"}),
      ('pg, warm_start="prox"', {"solver": "pg", "warm_start": "prox"}),
      ("exact", {"solver": "exact"}),
    ]:
      stats: dict = {}
      _, acc, spars = train_and_capture(model, args.steps, [], args, stats, **kw)
      its, secs = np.asarray(stats["iterations"]), np.asarray(stats["seconds"])
      train_rows.append(
        [
          model,
          label,
          f"{its[1:11].mean():.1f}",
          f"{its[-50:].mean():.1f}",
          f"{its.sum()}",
          f"{1e3 * np.median(secs[10:]):.3f}",
          f"{stats['final_distance']:.1e}",
          f"{acc:.3f}",
          f"{spars:.3f}",
        ]
      )
    capture_at = sorted({t for ts in phases.values() for t in ts})
    captured, accuracy, sparsity = train_and_capture(
      model, args.steps, capture_at, args, solver="pg"
    )
    # The capture reproduces RAMDA's Ŵ wherever "pg" stops at the same iteration
    # (in float32 the stopping iteration is rounding-driven).
    same, diffs = 0, []
    for sp in (sp for sps in captured.values() for sp in sps):
      z, it = oxr.solve_group_lasso(
        sp.v, sp.d, sp.anchor, np.float32(sp.tau), sp.axes, init=sp.init
      )
      if int(it) == sp.iterations:
        same += 1
        diffs.append(float(np.max(np.abs(sp.prox - np.asarray(z)))))
    total = sum(len(sps) for sps in captured.values())
    print(
      f"## {model}: test accuracy of Ŵ {accuracy:.3f}, group sparsity {sparsity:.3f}; "
      f"capture check: pg on the captured subproblems stops at RAMDA's iteration on "
      f"{same}/{total} leaves, and there max|Ŵ − z| = {max(diffs):.1e}\n"
    )
    for phase, ts in phases.items():
      steps = [captured[t] for t in ts]
      print(
        f"### {model}, {phase} (steps {ts[1]}–{ts[-1]}; leaves: "
        f"{', '.join(str(sp.v.shape) for sp in steps[0])})\n"
      )
      rows, timers = [], {}
      # μ of step t−1 warm-starts step t: solve the first step cold, time the rest.
      exact = next(s for s in SOLVERS if s.name == "exact")
      cold_mu = run_solver(exact, steps, None)[3]
      for solver in SOLVERS:
        its, gaps, dists, _, timers[solver.name] = run_solver(
          solver, steps[1:], cold_mu[:-1] if solver.warm else None
        )
        rows.append(
          [
            solver.name,
            f"{np.median(its):.0f}",
            f"{np.percentile(its, 90):.0f}",
            f"{np.max(its)}",
            _fmt_err(np.maximum(gaps, 0)),
            _fmt_err(dists),
          ]
        )
      # Interleaved rounds, so that load from other processes hits all solvers.
      timing = _common.interleaved(timers, rounds=args.rounds, inner=args.repeats)
      for row, name in zip(rows, timers, strict=True):
        per_step = [
          1e3 * statistics.median(getattr(timing, c)[name]) / (len(steps) - 1)
          for c in ("wall", "cpu")
        ]
        row[4:4] = [f"{per_step[0]:.3f}", f"{per_step[1]:.3f}"]
      print(
        _common.table(
          [
            "solver",
            "iters median",
            "p90",
            "max",
            "ms / step (wall)",
            "(CPU)",
            "rel. objective gap (median / max)",
            "‖z − z*‖/‖z*‖ (median / max)",
          ],
          rows,
        )
      )
      print()
      sps = captured[ts[-1]]
      leaves = [
        (
          jnp.asarray(sp.v),
          jnp.asarray(sp.d),
          jnp.asarray(sp.anchor),
          jnp.float32(sp.tau * _solvers.group_weight(sp.v.shape, sp.axes, "sqrt")),
          jnp.asarray(sp.init),
          sp.axes,
        )
        for sp in sps
      ]
      fused_rows.append(
        [
          f"{model}, {phase} (step {ts[-1]})",
          len(leaves),
          *fused_vs_per_leaf(leaves, args.repeats, args.rounds),
        ]
      )
  for size in filter(None, args.fused_sizes.split(",")):
    leaves = synthetic_leaves(_common.parse_size(size))
    n = sum(leaf[0].size for leaf in leaves)
    fused_rows.append(
      [
        f"synthetic CNN, {n / 1000000.0:.1f}M regularized",
        len(leaves),
        *fused_vs_per_leaf(leaves, 1, args.rounds),
      ]
    )
  print(
    "### One fused while_loop for all leaves vs one loop per leaf "
    "(ms per step, wall / CPU)\n"
  )
  print(
    _common.table(
      [
        "subproblems",
        "leaves",
        "exact, per leaf",
        "exact, fused",
        "pg, per leaf",
        "pg, fused",
      ],
      fused_rows,
    )
  )
  print(
    "\n### Training with each warm start (iterations summed over the "
    "regularized leaves)\n"
  )
  print(
    _common.table(
      [
        "model",
        "solver",
        "iters/step, steps 2–11",
        "last 50 steps",
        "total",
        "ms/step (median)",
        "final ‖Ŵ − z*‖/‖z*‖ (max over leaves)",
        "test accuracy of Ŵ",
        "group sparsity",
      ],
      train_rows,
    )
  )
  print(f"\nTotal time {time.perf_counter() - t_start:.0f} s.")


if __name__ == "__main__":
  main()
