"""Early validation of hyperparameters, with messages that name the argument.

Only concrete Python numbers are checked: schedules are callables, and values
that `optax.inject_hyperparams` feeds in are arrays (possibly traced), on which a
Python comparison would either fail or force a host round trip.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from typing import Any


def _is_concrete_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
