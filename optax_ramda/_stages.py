"""The stage-wise schedule shared by the dual-averaging methods.

Milestones are step counts. Reaching one restarts the dual average and decays
the learning rate (and ε); in the final stage the averaging weight ramps up to
one, which is what makes the model weights themselves structured (see
docs/algorithm.md, "Stages and the ramp").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def value_at(hyperparam: Any, count: jax.Array) -> jax.Array:
  """A hyperparameter given as a constant or a schedule, at step `count`."""
  value = jnp.asarray(hyperparam(count) if callable(hyperparam) else hyperparam)
  # An integer hyperparameter (momentum=1, say) must not make the maths integer.
  return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(float)


def stage_of(count: jax.Array, milestones: tuple[int, ...]) -> jax.Array:
  """How many milestones `count` has reached (int32)."""
  if not milestones:
    return jnp.zeros([], jnp.int32)
  return jnp.sum(count >= jnp.asarray(milestones, count.dtype), dtype=jnp.int32)


def restart_at_milestones(
  state: Any,
  count: jax.Array,
  milestones: tuple[int, ...],
  restart: Callable[[Any], Any],
) -> Any:
  """``restart(state)`` when `count` is a milestone, else `state` (jittable)."""
  if not milestones:
    return state
  at_milestone = jnp.any(count == jnp.asarray(milestones, count.dtype))
  # lax.cond, not a select: the restart rewrites parameter-sized buffers, and
  # this way the common step neither reads nor writes them twice.
  return lax.cond(at_milestone, restart, lambda s: s, state)


def ramp_start_of(
  momentum_ramp: bool, ramp_start: Any, milestones: tuple[int, ...]
) -> Any:
  """The step count at which the averaging-weight ramp begins, or None.

  By default the ramp runs through the final stage, which begins at the last
  milestone; without milestones there is no final stage and no ramp, unless
  `ramp_start` asks for one.
  """
  if not momentum_ramp:
    return None
  if ramp_start is not None:
    return ramp_start
  return milestones[-1] if milestones else None


# 1/c₀² lands a rounding error above an integer (1/0.1² is 100.00000000000001
# in float64, 99.99999 in float32) where c₀√r rounds to one: one relative
# tolerance, coarser than float32's, for the Python and the traced count alike.
_RAMP_RTOL = 1e-6


def full_weight_steps(momentum: float) -> int:
  """R = ⌈1/c₀²⌉: the ramp's step r from which c = min(c₀√r, 1) is one.

  Examples:
    >>> from optax_ramda._stages import full_weight_steps
    >>> full_weight_steps(0.1), full_weight_steps(0.3), full_weight_steps(1.0)
    (100, 12, 1)
  """
  return max(math.ceil(1 / momentum**2 * (1 - _RAMP_RTOL)), 1)


def full_weight_count(ramp_start: Any, momentum: Any) -> Any:
  """The update count after the first update at c = 1: ``ramp_start + R``.

  A Python int for Python numbers; an int32 array where ``optax.inject_hyperparams``
  feeds in `ramp_start` or c₀ (traced inside its update). None without a ramp or
  for c₀ given as a schedule, whose R is not known before training.
  """
  if ramp_start is None or callable(momentum):
    return None
  if isinstance(momentum, numbers.Real) and isinstance(ramp_start, numbers.Integral):
    return int(ramp_start) + full_weight_steps(float(momentum))
  c0 = jnp.asarray(momentum, jnp.float32)
  steps = jnp.maximum(jnp.ceil(1 / jnp.square(c0) * (1 - _RAMP_RTOL)), 1)
  return jnp.asarray(ramp_start, jnp.int32) + steps.astype(jnp.int32)


def averaging_weight(
  momentum: jax.Array, count: jax.Array, ramp_start: Any
) -> jax.Array:
  """c for the step taken at `count`: c₀, ramped to min(c₀√r, 1) from `ramp_start`.

  On the r-th step of the ramp (r = 1 at ``count == ramp_start``, i.e. on the
  (ramp_start + 1)-th update), as in the
  paper's App. A.1 and the authors' scheduler (which raises c *after* each
  optimizer step), c = min(c₀√r, 1): the first step of the ramp still uses
  c₀, and c first reaches 1 at r = ⌈1/c₀²⌉.

  Args:
    momentum: c₀ at this step.
    count: the step count before this update (0 on the first update).
    ramp_start: the step count at which the ramp begins (an int, or an int
      array under ``optax.inject_hyperparams``); None: no ramp.

  Returns:
    The averaging weight c ∈ (0, 1].
  """
  if ramp_start is None:
    return momentum
  r = (count - ramp_start + 1).astype(momentum.dtype)
  ramped = jnp.minimum(momentum * jnp.sqrt(jnp.maximum(r, 1)), 1)
  return jnp.where(count >= ramp_start, ramped, momentum)
