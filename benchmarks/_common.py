"""Shared pieces of the benchmarks: model-shaped parameter trees, the optimizer
line-up, interleaved timing, state-memory accounting and the machine summary.

Not a test module: the scripts in this folder print timings and ratios measured
in one run; see BENCHMARKS.md for the numbers and how to read them.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_ramda as oxr

is_spec = oxr.is_spec

# ----------------------------------------------------------------------------
# Parameter trees shaped like real models (Flax layouts, so that
# `oxr.input_channel_groups` gives the paper's grouping: one group per input
# channel of every Conv/Dense kernel and per input feature of every attention
# projection; biases, norm scales and embeddings unregularized).


def _count(shapes: Any) -> int:
  return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))


def _sds(*shape: int) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def cnn_shapes(width: int, in_channels: int = 3, classes: int = 1000) -> dict:
  """A VGG-style CNN: 4 stages × 2 Conv(3×3) + BatchNorm, then a Dense head.

  Stage widths are width·(1, 2, 4, 8); kernels are Flax's (3, 3, cin, cout).
  """
  tree: dict[str, Any] = {}
  cin, i = in_channels, 0
  for mult in (1, 2, 4, 8):
    for _ in range(2):
      cout = width * mult
      tree[f"Conv_{i}"] = {"kernel": _sds(3, 3, cin, cout), "bias": _sds(cout)}
      tree[f"BatchNorm_{i}"] = {"scale": _sds(cout), "bias": _sds(cout)}
      cin, i = cout, i + 1
  tree["Dense_0"] = {"kernel": _sds(cin, 4 * cin), "bias": _sds(4 * cin)}
  tree["Dense_1"] = {"kernel": _sds(4 * cin, classes), "bias": _sds(classes)}
  return tree


def transformer_shapes(
  d_model: int, layers: int = 6, head_dim: int = 32, vocab: int = 4096
) -> dict:
  """A pre-norm decoder: Embed, `layers` × (attention q/k/v/o + MLP (d, 4d)).

  Attention kernels use Flax's MultiHeadAttention layout: q/k/v
  (d, heads, head_dim), out (heads, head_dim, d).
  """
  heads = d_model // head_dim
  tree: dict[str, Any] = {"embed": {"embedding": _sds(vocab, d_model)}}
  for i in range(layers):
    attn = {
      name: {"kernel": _sds(d_model, heads, head_dim), "bias": _sds(heads, head_dim)}
      for name in ("query", "key", "value")
    }
    attn["out"] = {"kernel": _sds(heads, head_dim, d_model), "bias": _sds(d_model)}
    tree[f"block_{i}"] = {
      "LayerNorm_0": {"scale": _sds(d_model), "bias": _sds(d_model)},
      "attention": attn,
      "LayerNorm_1": {"scale": _sds(d_model), "bias": _sds(d_model)},
      "mlp": {
        "Dense_0": {"kernel": _sds(d_model, 4 * d_model), "bias": _sds(4 * d_model)},
        "Dense_1": {"kernel": _sds(4 * d_model, d_model), "bias": _sds(d_model)},
      },
    }
  tree["final_norm"] = {"scale": _sds(d_model), "bias": _sds(d_model)}
  tree["head"] = {"kernel": _sds(d_model, vocab), "bias": _sds(vocab)}
  return tree


def _closest(build: Callable[[int], dict], target: int, unit: int) -> dict:
  """The tree of `build(unit·m)` whose parameter count is closest to `target`."""
  best, m = None, 1
  while True:
    tree = build(unit * m)
    if best is None or abs(_count(tree) - target) < abs(_count(best) - target):
      best = tree
    if _count(tree) > target:
      return best
    m += 1


def model_shapes(model: str, n_params: int) -> dict:
  """A `model` ("cnn" or "transformer") tree with about `n_params` parameters."""
  if model == "cnn":
    return _closest(cnn_shapes, n_params, 4)
  if model == "transformer":
    return _closest(transformer_shapes, n_params, 32)
  raise ValueError(f"unknown model {model!r}")


def count_params(tree: Any) -> int:
  return _count(tree)


def materialize(shapes: Any, seed: int = 0) -> Any:
  """Params for a shape tree: fan-in-scaled normal kernels and embeddings, unit
  norm scales, zero biases."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  out = []
  for key, (path, s) in zip(keys, leaves, strict=True):
    names = [str(getattr(k, "key", k)) for k in path]
    if names[-1] == "scale":
      out.append(jnp.ones(s.shape, s.dtype))
    elif len(s.shape) <= 1 or names[-1] == "bias":
      out.append(jnp.zeros(s.shape, s.dtype))
    else:
      if names[-1] == "embedding":
        fan_in = 1
      elif len(s.shape) == 3 and names[-2] in ("query", "key", "value"):
        fan_in = s.shape[0]  # (in, heads, head_dim)
      else:
        fan_in = math.prod(s.shape[:-1])  # Conv (kh, kw, in), Dense, attention out
      std = 1 / math.sqrt(fan_in)
      out.append(std * jax.random.normal(key, s.shape, s.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def regularized_mask(specs: Any) -> np.ndarray:
  """Per param leaf (in tree order): whether its spec regularizes it."""
  leaves = jax.tree.leaves(specs, is_leaf=is_spec)
  return np.array([s is not None for s in leaves])


def random_grads(
  params: Any, specs: Any, scale: float = 1e-3, spread: float = 10.0, seed: int = 1
) -> Any:
  """Fixed random gradients of a realistic size (entries ~ `scale`).

  In training, some input channels get much larger gradients than others; so
  that the group-lasso subproblem has both screened (zero) and active groups,
  each group's gradients are scaled by a log-uniform factor in
  [1/spread, spread] (unregularized leaves: plain normal · `scale`).
  """
  leaves, treedef = jax.tree.flatten(params)
  spec_leaves = jax.tree.leaves(specs, is_leaf=is_spec)
  keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(leaves))
  out = []
  for i, (p, spec) in enumerate(zip(leaves, spec_leaves, strict=True)):
    g = scale * jax.random.normal(keys[2 * i], p.shape, p.dtype)
    if spec is not None:
      axes = spec.group_axes(p.ndim)
      gshape = tuple(1 if a in axes else n for a, n in enumerate(p.shape))
      u = jax.random.uniform(keys[2 * i + 1], gshape, p.dtype, -1.0, 1.0)
      g = g * spread**u
    out.append(g)
  return jax.tree.unflatten(treedef, out)


def parse_size(s: str) -> int:
  """'1M' -> 1_000_000, '500K' -> 500_000."""
  s = s.strip().upper()
  mult = {"K": 10**3, "M": 10**6}.get(s[-1], 1)
  return int(float(s.rstrip("KM")) * mult)


# ----------------------------------------------------------------------------
# The optimizer line-up.


class Candidate(NamedTuple):
  name: str
  tx: optax.GradientTransformation
  kind: str  # "dense" (Optax reference) or "structured"


def lineup(
  specs: Any,
  reg: float,
  *,
  variants: bool = False,
  only: Sequence[str] | None = None,
) -> list[Candidate]:
  """The optimizers compared, with the paper's learning rates (docs/algorithm.md#experiments-data-and-hyperparameters).

  `reg` is λ for the structured optimizers; RAMDA is also run with λ = 0
  (where it is MADGRAD without weight decay: the solver is skipped).
  `variants` adds profiling variants of RAMDA (no regularizer at all; PG capped
  at one iteration). (The `*_jnpcbrt` variants of earlier BENCHMARKS.md tables,
  which swapped the library's cube root for `jnp.cbrt`, are gone: the library
  is called, never patched.)
  """
  c: list[Candidate] = [
    Candidate("sgd_m0.9", optax.sgd(0.1, momentum=0.9), "dense"),
    Candidate("adamw", optax.adamw(1e-3), "dense"),
    Candidate("madgrad", optax.contrib.madgrad(1e-2), "dense"),
    Candidate(
      "ramda_l0", oxr.ramda(1e-2, reg_strength=0.0, regularizer=specs), "structured"
    ),
    Candidate(
      "ramda_pg",
      oxr.ramda(1e-2, reg_strength=reg, regularizer=specs, solver="pg"),
      "structured",
    ),
  ]
  c += [
    Candidate(
      "ramda_pg_prox",
      oxr.ramda(
        1e-2, reg_strength=reg, regularizer=specs, solver="pg", warm_start="prox"
      ),
      "structured",
    ),
    Candidate(
      "ramda_exact",
      oxr.ramda(1e-2, reg_strength=reg, regularizer=specs, solver="exact"),
      "structured",
    ),
    Candidate(
      "ramda_pg_subgrad",
      oxr.ramda(
        1e-2,
        reg_strength=reg,
        regularizer=specs,
        solver="pg",
        stopping="subgradient",
      ),
      "structured",
    ),
  ]
  if variants:
    c += [
      Candidate("ramda_noreg", oxr.ramda(1e-2), "structured"),
      Candidate(
        "ramda_pg_it1",
        oxr.ramda(1e-2, reg_strength=reg, regularizer=specs, solver="pg", max_iters=1),
        "structured",
      ),
    ]
  c += [
    Candidate("rmda", oxr.rmda(0.1, reg_strength=reg, regularizer=specs), "structured"),
    Candidate(
      "proxgen_pg",
      oxr.proxgen(1e-3, reg_strength=reg, regularizer=specs, solver="pg"),
      "structured",
    ),
    Candidate(
      "proxgen_exact",
      oxr.proxgen(1e-3, reg_strength=reg, regularizer=specs, solver="exact"),
      "structured",
    ),
    Candidate(
      "prox_sgd", oxr.prox_sgd(0.1, reg_strength=reg, regularizer=specs), "structured"
    ),
    Candidate(
      "proxssi", oxr.proxssi(1e-3, reg_strength=reg, regularizer=specs), "structured"
    ),
  ]
  if only:
    c = [x for x in c if x.name in only or x.kind == "dense"]
  return c


def iteration_counts(state: Any) -> np.ndarray | None:
  """The per-leaf inner iteration counts recorded in a state, or None."""
  found = optax.tree.get_all_with_path(state, "iterations")
  if not found:
    return None
  return np.array([int(x) for x in jax.tree.leaves(found[0][1])])


def structured_iterate(state: Any, params: Any) -> Any:
  """Ŵ for the dual-averaging methods, the params for the others."""
  try:
    return oxr.prox_iterate(state)
  except ValueError:
    return params


def make_step(tx: optax.GradientTransformation) -> Callable:
  """The jitted optimizer step, params and state donated."""

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------
# Timing: every candidate's repeats are interleaved round-robin, so that load
# from other processes on a shared machine hits all of them alike.


class Timing(NamedTuple):
  """Per-step times, one entry per round: wall clock and process CPU time.

  CPU time (all threads of this process) is the work done; on a machine shared
  with other jobs it is far less noisy than wall time, which also counts the
  time this process waited for a core.
  """

  wall: dict[str, list[float]]
  cpu: dict[str, list[float]]

  def median(self, name: str, clock: str = "wall") -> float:
    return statistics.median(getattr(self, clock)[name])

  def ratio(self, name: str, base: str, clock: str = "wall") -> float:
    """Median over rounds of the paired ratio time[name] / time[base]."""
    t = getattr(self, clock)
    return statistics.median(a / b for a, b in zip(t[name], t[base], strict=True))

  def spread(self, name: str, clock: str = "wall") -> tuple[float, float]:
    """The interquartile range of the per-step time, in seconds."""
    q = statistics.quantiles(getattr(self, clock)[name], n=4)
    return q[0], q[2]


def interleaved(
  steps: dict[str, Callable[[], None]],
  rounds: int,
  inner: int,
  after_round: Callable[[int], None] | None = None,
) -> Timing:
  """Times `steps` (each runs one blocking step) in `rounds` round-robin rounds.

  Each round runs every step `inner` times back to back and records the mean;
  the starting candidate rotates from round to round, so that a burst of load
  from other processes falls on different candidates.
  """
  names = list(steps)
  wall: dict[str, list[float]] = {n: [] for n in names}
  cpu: dict[str, list[float]] = {n: [] for n in names}
  for r in range(rounds):
    order = names[r % len(names) :] + names[: r % len(names)]
    for n in order:
      fn = steps[n]
      c0, t0 = time.process_time(), time.perf_counter()
      for _ in range(inner):
        fn()
      wall[n].append((time.perf_counter() - t0) / inner)
      cpu[n].append((time.process_time() - c0) / inner)
    if after_round is not None:
      after_round(r)
  return Timing(wall, cpu)


# ----------------------------------------------------------------------------
# Memory.


def state_bytes(tx: optax.GradientTransformation, params: Any) -> int:
  """Bytes of the optimizer state's array leaves (from `jax.eval_shape`)."""
  shapes = jax.eval_shape(tx.init, params)
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))


# ----------------------------------------------------------------------------
# Reporting.


def machine() -> str:
  """One line: CPU model and cores, devices, jax/optax versions, date."""
  model = platform.processor() or platform.machine()
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        model = line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return (
    f"{model}, {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()}: "
    f"{devices}), optax {optax.__version__}; "
    f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; load avg {load:.1f}"
  )


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)
