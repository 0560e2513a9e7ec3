"""Early validation of hyperparameters and trees, naming the argument or leaf.

Only concrete Python numbers are checked: schedules are callables, and values
that `optax.inject_hyperparams` feeds in are arrays (possibly traced), on which a
Python comparison would either fail or force a host round trip.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_floating_params(params: Any) -> None:
  """Raises, naming the leaf, if a parameter leaf is not floating point."""
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not jnp.issubdtype(p.dtype, jnp.floating):
      raise ValueError(
        f"The parameter {jax.tree_util.keystr(path) or '<root>'} has dtype "
        f"{p.dtype}; optimizers of optax_ramda need real floating-point "
        "parameters (complex parameters are not supported)."
      )


def check_positive(name: str, value: Any) -> None:
  """Raises if a concrete `value` is not > 0."""
  if _is_concrete_number(value) and not value > 0:
    raise ValueError(f"`{name}` must be > 0, got {value!r}.")


def check_nonnegative(name: str, value: Any) -> None:
  """Raises if a concrete `value` is not >= 0."""
  if _is_concrete_number(value) and not value >= 0:
    raise ValueError(f"`{name}` must be >= 0, got {value!r}.")


def check_unit_interval(name: str, value: Any) -> None:
  """Raises if a concrete `value` is outside (0, 1]."""
  if _is_concrete_number(value) and not 0 < value <= 1:
    raise ValueError(f"`{name}` must lie in (0, 1], got {value!r}.")


def check_decay_rate(name: str, value: Any) -> None:
  """Raises if a concrete EMA decay rate is outside [0, 1) (1 divides by 0)."""
  if isinstance(value, numbers.Real) and not 0 <= float(value) < 1:
    raise ValueError(f"`{name}` must lie in [0, 1), got {value!r}.")


def check_max_iters(value: Any) -> None:
  """Raises if a concrete `max_iters` is not an integer >= 1."""
  if _is_concrete_number(value) and (int(value) != value or value < 1):
    raise ValueError(f"`max_iters` must be an integer >= 1, got {value!r}.")


def check_milestones(milestones: Sequence[int]) -> tuple[int, ...]:
  """Returns milestones as a tuple after checking they increase strictly."""
  try:
    out = tuple(int(m) for m in milestones)
  except TypeError as e:
    raise ValueError(
      f"`milestones` must be a sequence of step counts, got {milestones!r}."
    ) from e
  if any(int(m) != m for m in milestones):
    raise ValueError(f"`milestones` must be integers, got {milestones!r}.")
  if any(m <= 0 for m in out):
    raise ValueError(f"`milestones` must be positive step counts, got {out}.")
  if any(b <= a for a, b in itertools.pairwise(out)):
    raise ValueError(f"`milestones` must increase strictly, got {out}.")
  return out


def check_ramp(momentum_ramp: Any, ramp_start: Any) -> Any:
  """Checks `momentum_ramp` and `ramp_start`; returns `ramp_start`.

  `ramp_start` must be a scalar integer >= 0: a Python or NumPy integer, or an
  integer array (what ``optax.inject_hyperparams`` feeds in). A traced array
  is checked for its dtype and shape only: its value is unknown while tracing.
  """
  if not isinstance(momentum_ramp, bool):
    raise ValueError(f"`momentum_ramp` must be a bool, got {momentum_ramp!r}.")
  if ramp_start is None:
    return None
  if (
    isinstance(ramp_start, bool)
    or np.ndim(ramp_start) != 0
    or not (
      isinstance(ramp_start, numbers.Integral)
      or jnp.issubdtype(getattr(ramp_start, "dtype", float), jnp.integer)
    )
  ):
    raise ValueError(
      f"`ramp_start` must be a step count (an integer >= 0) or None, got "
      f"{ramp_start!r}."
    )
  if not isinstance(ramp_start, jax.core.Tracer) and int(ramp_start) < 0:
    raise ValueError(f"`ramp_start` must be >= 0, got {ramp_start!r}.")
  if not momentum_ramp:
    raise ValueError(
      f"`ramp_start={ramp_start!r}` asks for a ramp that `momentum_ramp=False` "
      "turns off; pass one or the other."
    )
  return ramp_start


def check_same_structure(updates: Any, params: Any) -> None:
  """Raises, naming the first mismatching leaf, unless `updates` fit `params`.

  The optimizers map over the gradients and the params together; without this
  check a missing leaf surfaces as an opaque pytree error, and a gradient whose
  shape merely broadcasts against its parameter would corrupt the state without
  any error. Only static information (key paths, shapes) is compared, so the
  check costs nothing under jit.

  Args:
    updates: the gradients (or updates) handed to ``update``.
    params: the parameters handed to ``update``.

  Raises:
    ValueError: naming the leaf path, and both shapes where they differ.
  """
  update_leaves, update_def = jax.tree_util.tree_flatten_with_path(updates)
  param_leaves, param_def = jax.tree_util.tree_flatten_with_path(params)
  grads = {jax.tree_util.keystr(k): np.shape(g) for k, g in update_leaves}
  shapes = {jax.tree_util.keystr(k): np.shape(p) for k, p in param_leaves}
  for path, shape in shapes.items():
    name = path or "<root>"
    if path not in grads:
      raise ValueError(
        f"The gradients have no leaf at {name}, where the params have one; "
        "gradients and params must have the same tree structure."
      )
    if grads[path] != shape:
      raise ValueError(
        f"The gradient at {name} has shape {grads[path]}, but the parameter has "
        f"shape {shape}."
      )
  extra = [path for path in grads if path not in shapes]
  if extra:
    raise ValueError(
      f"The gradients have a leaf at {extra[0] or '<root>'}, where the params "
      "have none; gradients and params must have the same tree structure."
    )
  if cast(Any, update_def) != param_def:  # PyTreeDef's type stub lacks __eq__.
    raise ValueError(
      "The gradients and params have the same leaves but different pytree node "
      f"types: {update_def} vs {param_def}."
    )
