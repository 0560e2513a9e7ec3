"""Tied groups: one group lasso group spread over several leaves.

A spec ``group_lasso(axes, tie=key)`` on several leaves makes the group at
each group index the union of that index's entries in all of them: the rows
of an input feature in the query, key and value kernels that read it, or in
an LSTM's four gate kernels. Each leaf with such a spec is viewed as a matrix
(groups, entries per group) — its group-index axes first, then the axes a
group spans — and the tied leaves are concatenated along the entries into one
*virtual leaf* whose rows are the joint groups, with the spec
``group_lasso(axes=(1,))``. The per-leaf steps of the optimizers, the target
scores, the sparsity report and magnitude pruning then run on the virtual
leaf as on any other, and its results are split back into the leaves.
Untied leaves pass through unchanged, and a spec tree without ties takes the
plain per-leaf path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_ramda._sharding import resharded


@dataclasses.dataclass(frozen=True)
class _Member:
  """How one tied leaf enters its virtual leaf."""

  index: int  # The leaf's position in the flat list.
  perm: tuple[int, ...]  # Group-index axes first, then the spanned axes.
  shape: tuple[int, ...]  # The leaf's shape.
  width: int  # Entries per group in this leaf.


@dataclasses.dataclass(frozen=True)
class Plan:
  """The virtual leaves of a flat list of specs: a static description.

  Attributes:
    specs: the spec of each virtual leaf (a tied set's ``group_lasso(axes=(1,))``
      or an untied leaf's own spec).
    members: per virtual leaf, its tied leaves (empty for an untied leaf).
    sources: per virtual leaf, the flat indices of the leaves it stands for.
    keys: per virtual leaf, its tie key (``None`` for an untied leaf).
  """

  specs: tuple[Any, ...]
  members: tuple[tuple[_Member, ...], ...]
  sources: tuple[tuple[int, ...], ...]
  keys: tuple[str | None, ...]

  def gather(self, leaves: Sequence[Any]) -> list[Any]:
    """The virtual leaves of one flat list of params-shaped leaves."""
    out = []
    for members, sources in zip(self.members, self.sources, strict=True):
      if not members:
        out.append(leaves[sources[0]])
        continue
      # Under Explicit mesh axes a reshape that merges sharded axes needs its
      # output's sharding: a tied set is regrouped unsharded (and `scatter`
      # gives each leaf its own sharding back).
      rows = [
        jnp.transpose(resharded(leaves[m.index]), m.perm).reshape(-1, m.width)
        for m in members
      ]
      out.append(jnp.concatenate(rows, axis=1))
    return out

  def scatter(self, values: Sequence[Any], likes: Sequence[Any]) -> list[Any]:
    """Splits one value per virtual leaf back into per-leaf values.

    A scalar (an iteration count) is given to each tied leaf as it is; an
    array part takes the sharding of its leaf in `likes` (one per leaf).
    """
    out: list[Any] = [None] * len(likes)
    for members, sources, value in zip(self.members, self.sources, values, strict=True):
      if not members:
        out[sources[0]] = value
        continue
      if jnp.ndim(value) == 0:
        for m in members:
          out[m.index] = value
        continue
      parts = jnp.split(value, np.cumsum([m.width for m in members])[:-1], axis=1)
      for m, part in zip(members, parts, strict=True):
        permuted = tuple(m.shape[a] for a in m.perm)
        leaf = jnp.transpose(part.reshape(permuted), tuple(np.argsort(m.perm).tolist()))
        out[m.index] = resharded(leaf, likes[m.index])
    return out


def plan(specs: Sequence[Any], shapes: Sequence[Sequence[int]]) -> Plan | None:
  """The :class:`Plan` of a flat list of resolved specs, or None without ties.

  The specs are those :func:`~optax_ramda.resolve_specs` checked, which makes
  sure that the leaves of a tie agree in group count, dtype and weight.
  """
  keys = [getattr(s, "tie", None) for s in specs]  # Only group lasso ties.
  if all(k is None for k in keys):
    return None
  tied: dict[str, list[int]] = {}
  for i, key in enumerate(keys):
    if key is not None:
      tied.setdefault(key, []).append(i)
  out_specs: list[Any] = []
  members: list[tuple[_Member, ...]] = []
  sources: list[tuple[int, ...]] = []
  out_keys: list[str | None] = []
  done: set[str] = set()
  for i, (spec, key) in enumerate(zip(specs, keys, strict=True)):
    if key is None:
      out_specs.append(spec)
      members.append(())
      sources.append((i,))
      out_keys.append(None)
      continue
    if key in done:
      continue
    done.add(key)
    group = []
    for j in tied[key]:
      shape = tuple(shapes[j])
      span = specs[j].group_axes(len(shape))
      index = tuple(a for a in range(len(shape)) if a not in span)
      width = math.prod(shape[a] for a in span)
      group.append(_Member(j, index + span, shape, width))
    out_specs.append(dataclasses.replace(spec, axes=(1,), tie=None))
    members.append(tuple(group))
    sources.append(tuple(tied[key]))
    out_keys.append(key)
  return Plan(tuple(out_specs), tuple(members), tuple(sources), tuple(out_keys))


def virtual(
  specs: Sequence[Any], *flat_trees: Sequence[Any]
) -> tuple[Sequence[Any], list[Sequence[Any]]]:
  """The virtual leaves: (their specs, one flat list per tree).

  Without ties, the specs and the trees as they are.
  """
  tie_plan = plan(specs, [jnp.shape(x) for x in flat_trees[0]])
  if tie_plan is None:
    return specs, list(flat_trees)
  return tie_plan.specs, [tie_plan.gather(tree) for tree in flat_trees]


def map_virtual(
  fn: Callable[..., Any], specs: Sequence[Any], *flat_trees: Sequence[Any]
) -> list[Any]:
  """``fn(spec, *leaves)`` per leaf, or per virtual leaf where leaves are tied.

  Args:
    fn: returns a NamedTuple of arrays (or one array); array fields of a
      virtual leaf's result are split back into its leaves, scalar fields
      are given to each.
    specs: the flat list of resolved specs.
    *flat_trees: flat lists of params-shaped leaves, one entry per spec.

  Returns:
    The per-leaf results, one per spec.
  """
  shapes = [jnp.shape(x) for x in flat_trees[0]]
  tie_plan = plan(specs, shapes)
  if tie_plan is None:
    return [
      fn(s, *xs) for s, xs in zip(specs, zip(*flat_trees, strict=True), strict=True)
    ]
  virtual = [tie_plan.gather(tree) for tree in flat_trees]
  results = [
    fn(s, *xs) for s, xs in zip(tie_plan.specs, zip(*virtual, strict=True), strict=True)
  ]
  if not isinstance(results[0], tuple):
    return tie_plan.scatter(results, flat_trees[0])
  fields = [
    tie_plan.scatter([r[f] for r in results], flat_trees[0])
    for f in range(len(results[0]))
  ]
  kind = type(results[0])
  return [kind(*(field[i] for field in fields)) for i in range(len(specs))]
