"""Explicit-sharding helper shared by the transforms that regroup leaves."""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P


def resharded(x: jax.Array, like: jax.Array | None = None) -> jax.Array:
  """`x` with the sharding in the type of `like` (unsharded if ``None``).

  Only Explicit mesh axes put a sharding in an array's type; there a sort must
  see its whole axis, a reshape that merges sharded axes needs its output's
  sharding, and both branches of a ``cond`` must agree. Under Auto axes, or
  without a mesh, the compiler places the data itself and `x` is returned.
  """
  source = jax.typeof(x).sharding
  target = None if like is None else jax.typeof(like).sharding
  spec = (*source.spec, *(() if target is None else target.spec))
  if all(axis is None for axis in spec):
    return x
  return jax.sharding.reshard(x, source.update(spec=P()) if target is None else target)
