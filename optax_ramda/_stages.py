"""The stage-wise schedule shared by the dual-averaging methods (DESIGN §2).

Milestones are step counts. Reaching one restarts the dual average and decays
the learning rate (and ε); in the final stage the averaging weight ramps up to
one, which is what makes the model weights themselves structured.
"""

from __future__ import annotations

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


def averaging_weight(
  momentum: jax.Array,
  stage_count: jax.Array,
  stage: jax.Array,
  num_milestones: int,
  ramp: Any,
) -> jax.Array:
  """c for this step: c₀, ramped to min(c₀√(r+1), 1) in the final stage.

  Args:
    momentum: c₀ at this step.
    stage_count: r, this step's index within its stage (1 on the first step).
    stage: the stage index (number of milestones reached).
    num_milestones: the number of milestones; the final stage is that index.
    ramp: whether to ramp (a bool, possibly traced).

  Returns:
    The averaging weight c ∈ (0, 1].
  """
  ramped = jnp.minimum(momentum * jnp.sqrt(stage_count.astype(momentum.dtype) + 1), 1)
  return jnp.where(jnp.logical_and(ramp, stage == num_milestones), ramped, momentum)
