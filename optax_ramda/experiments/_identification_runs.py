"""The stochastic runs of the identification experiment, in JAX (float64).

One optimizer from one start on one sequence of minibatches: each epoch
records the objective and the zero-group pattern of the weights and of Ŵ
(:func:`optax_ramda.prox_iterate`) where the optimizer has one; and the
measures of identification against the optimum's pattern. Re-exported by
:mod:`optax_ramda.experiments.identification`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import optax_ramda as oxr
from optax_ramda.experiments._convex import (
  Params,
  Problem,
  objective,
  single_threaded_blas,
  zero_groups,
)


def jax_loss(problem: Problem) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """The minibatch loss ``(params, x, y) -> f`` in JAX (the mean over the batch)."""
  if problem.has_bias:

    def loss(params, xb, yb):
      logits = xb @ params["w"] + params["b"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  else:

    def loss(params, xb, yb):
      return 0.5 * jnp.mean(jnp.sum(jnp.square(xb @ params["w"] - yb), axis=-1))

  return loss


def initial_params(problem: Problem, seed: int = 0, scale: float = 0.1) -> Params:
  """The common start: W ~ scale·N(0, 1) (every group nonzero), b = 0."""
  rng = np.random.default_rng(seed)
  params = {"w": scale * rng.standard_normal((problem.num_groups, problem.num_outputs))}
  if problem.has_bias:
    params["b"] = np.zeros(problem.num_outputs)
  return params


def minibatches(n: int, batch_size: int, epochs: int, seed: int = 0) -> np.ndarray:
  """(epochs, steps, batch_size) sample indices: one reshuffle per epoch.

  The last incomplete batch of each epoch is dropped so every step has the
  same shape (one compilation).
  """
  rng = np.random.default_rng(seed)
  steps = n // batch_size
  return np.stack(
    [
      rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size)
      for _ in range(epochs)
    ]
  )


@dataclasses.dataclass(frozen=True)
class Trace:
  """Per-epoch record of one run; index 0 is the start, index e after epoch e.

  Attributes:
    weight_zeros: (epochs + 1, groups) zero-group patterns of the model weights.
    prox_zeros: the same for Ŵ, or None if the optimizer has no Ŵ.
    objective: (epochs + 1,) F of the model weights, float64 on the full data.
    prox_objective: F(Ŵ) per epoch, or None.
    final_params: the model weights after the last epoch.
    seconds: wall time of the run, compilation included.
  """

  weight_zeros: np.ndarray
  prox_zeros: np.ndarray | None
  objective: np.ndarray
  prox_objective: np.ndarray | None
  final_params: Params
  seconds: float


def _prox_of(state: Any) -> Any | None:
  try:
    return oxr.prox_iterate(state)
  except ValueError:  # The optimizer keeps no Ŵ; its iterate is a prox output.
    return None


def run(
  problem: Problem,
  tx: optax.GradientTransformation,
  init: Params,
  batches: np.ndarray,
) -> Trace:
  """Trains from `init` on `batches`, recording the support after each epoch.

  Call under ``jax.enable_x64(True)`` for float64 runs: parameters take the
  default float dtype. Each epoch is one jitted ``lax.scan`` over its steps;
  the host reads the weights (and Ŵ) once per epoch.

  Args:
    problem: the problem (data and loss).
    tx: the optimizer; Ŵ is recorded when :func:`prox_iterate` finds one in
      its state.
    init: the starting params.
    batches: (epochs, steps, batch_size) sample indices, see :func:`minibatches`.

  Returns:
    The :class:`Trace`.

  Examples:
    >>> import optax_ramda as oxr
    >>> from optax_ramda.experiments import identification as ident
    >>> problem = ident.planted_problem(n=40, p=4, k=2, s=2, seed=0)
    >>> tx = oxr.ramda(1e-2, reg_strength=problem.reg_strength,
    ...                regularizer=problem.specs())
    >>> trace = ident.run(problem, tx, ident.initial_params(problem),
    ...                   ident.minibatches(40, 10, epochs=3))
    >>> trace.weight_zeros.shape, trace.prox_zeros.shape  # start + 3 epochs
    ((4, 4), (4, 4))
  """
  start = time.perf_counter()
  loss = jax_loss(problem)
  x = jnp.asarray(problem.x, float)
  y = jnp.asarray(problem.y) if problem.has_bias else jnp.asarray(problem.y, float)
  params = {k: jnp.asarray(v, float) for k, v in init.items()}
  state = tx.init(params)
  has_prox = _prox_of(state) is not None

  @jax.jit
  def epoch(params, state, idx):
    def step(carry, i):
      params, state = carry
      grads = jax.grad(loss)(params, x[i], y[i])
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    return lax.scan(step, (params, state), idx)[0]

  weights, proxes = [init], [init] if has_prox else []
  for idx in batches:
    params, state = epoch(params, state, jnp.asarray(idx))
    weights.append(jax.device_get(params))
    if has_prox:
      proxes.append(jax.device_get(_prox_of(state)))
  seconds = time.perf_counter() - start

  def record(points):
    zeros = np.stack([zero_groups(p["w"]) for p in points])
    return zeros, np.array([objective(problem, p) for p in points])

  with single_threaded_blas():
    weight_zeros, values = record(weights)
    prox_zeros, prox_values = record(proxes) if has_prox else (None, None)
  return Trace(
    weight_zeros=weight_zeros,
    prox_zeros=prox_zeros,
    objective=values,
    prox_objective=prox_values,
    final_params={k: np.asarray(v) for k, v in weights[-1].items()},
    seconds=seconds,
  )


def support_errors(
  zeros: np.ndarray, optimal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """(false zeros, false nonzeros) of zero patterns `zeros` (..., groups).

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments import identification as ident
    >>> fz, fnz = ident.support_errors(np.array([True, True, False]),
    ...                                np.array([True, False, True]))
    >>> int(fz), int(fnz)
    (1, 1)
  """
  false_zeros = np.sum(zeros & ~optimal, axis=-1)
  false_nonzeros = np.sum(~zeros & optimal, axis=-1)
  return false_zeros, false_nonzeros


def identification_epoch(zeros: np.ndarray, optimal: np.ndarray) -> int | None:
  """The first epoch from which every recorded pattern equals `optimal`.

  Args:
    zeros: (epochs + 1, groups) patterns, row e recorded after epoch e.
    optimal: (groups,) the optimal pattern.

  Returns:
    The epoch e such that rows e, e + 1, ..., last all equal `optimal` and row
    e − 1 does not, or None ("never") when the last row differs.

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments import identification as ident
    >>> opt = np.array([True, False])
    >>> rows = np.array([[False, False], [True, False], [False, False],
    ...                  [True, False], [True, False]])
    >>> ident.identification_epoch(rows, opt)
    3
    >>> ident.identification_epoch(rows[:3], opt) is None
    True
  """
  matches = np.all(zeros == optimal, axis=-1)
  if not matches[-1]:
    return None
  mismatches = np.flatnonzero(~matches)
  return int(mismatches[-1] + 1) if mismatches.size else 0
