"""Structure reports: how much of a model a regularizer has zeroed.

The measures are defined in docs/algorithm.md#the-problem-and-the-regularizers.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ramda import _ties
from optax_ramda._flax import module_params, path_names
from optax_ramda._regularizers import Nuclear, RegularizerArg, is_spec, resolve_specs


def _leaf_name(path: tuple[Any, ...]) -> str:
  """The key path of a leaf, without the ``.value`` of an NNX Variable."""
  names = path_names(path)
  return jax.tree_util.keystr(tuple(path[: len(names)]))


def _leaf_report(spec, w: jax.Array) -> dict[str, Any]:
  zero_entries = jnp.sum(w == 0)
  report: dict[str, Any] = {"zero_entries": zero_entries, "entries": w.size}
  if isinstance(spec, Nuclear):  # Low rank, not groups: numerical rank.
    report["rank"] = jnp.linalg.matrix_rank(w)
    report["max_rank"] = min(w.shape)
  elif spec is not None:
    axes = spec.group_axes(w.ndim)
    group_size = math.prod(w.shape[a] for a in axes)
    nonzero = jnp.any(w != 0, axis=axes) if axes else w != 0
    report["groups"] = w.size // max(group_size, 1)
    report["zero_groups"] = report["groups"] - jnp.sum(nonzero)
    report["group_size"] = group_size
  return report


def sparsity(params: optax.Params, regularizer: RegularizerArg) -> dict[str, Any]:
  """Reports the group and entry sparsity of `params` under a spec tree.

  *Weighted group sparsity* (the paper's measure) is taken over regularized
  leaves, each group weighted by its size n_g:
  :math:`1 − Σ_g n_g·[W_g ≠ 0] / Σ_g n_g`. *Unstructured sparsity* is the
  fraction of exactly-zero entries over all parameters. ℓ1 leaves count each
  entry as a group of size one. Works under ``jax.jit``.

  Args:
    params: the parameters (or Ŵ from :func:`prox_iterate`): any pytree,
      including Linen param dicts and ``nnx.State`` trees; an ``nnx.Module``
      stands for its ``nnx.Param`` state.
    regularizer: the spec tree (or callable, such as
      :func:`input_channel_groups`) used in training.

  Returns:
    A dict with ``group_sparsity``, ``zero_groups``, ``groups``,
    ``unstructured_sparsity``, ``zero_entries``, ``entries`` and ``leaves``: the
    same counts per leaf (plus ``group_size`` for regularized ones), keyed by
    the leaf's path (without the ``.value`` of NNX Variables). Leaves with a
    :func:`nuclear` spec report ``rank`` (numerical rank, singular values above
    max(m, n)·eps·σ_max) and ``max_rank`` instead of group counts, and are left
    out of the group sparsity. Under tied specs (``group_lasso(..., tie=key)``)
    a joint group counts as zero only where it is zero in every tied leaf
    (an input feature that all of them can drop), and ``ties`` maps each key
    to its ``groups``, ``zero_groups``, ``group_size`` and ``leaves``; the
    per-leaf entries still count each leaf's own zero rows.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> params = {"w": jnp.array([[1.0, 2.0], [0.0, 0.0], [0.0, 3.0]]),
    ...           "b": jnp.zeros(2)}
    >>> report = oxr.sparsity(params, {"w": oxr.group_lasso(axes=(1,)), "b": None})
    >>> float(report["group_sparsity"]), int(report["zero_groups"])
    (0.333..., 1)
    >>> float(report["unstructured_sparsity"])  # 5 zeros of 8 entries
    0.625
  """
  params = module_params(params)
  specs = resolve_specs(regularizer, params)
  flat_specs = jax.tree.leaves(specs, is_leaf=is_spec)
  flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
  leaves = {
    _leaf_name(path): _leaf_report(spec, w)
    for spec, (path, w) in zip(flat_specs, flat_params, strict=True)
  }
  names = list(leaves)
  regularized = [r for r in leaves.values() if "groups" in r]
  ties = {}
  tie_plan = _ties.plan(flat_specs, [jnp.shape(w) for _, w in flat_params])
  if tie_plan is not None:  # A joint group is zero only where all its leaves are.
    virtual = tie_plan.gather([w for _, w in flat_params])
    regularized = []
    for spec, key, sources, w in zip(
      tie_plan.specs, tie_plan.keys, tie_plan.sources, virtual, strict=True
    ):
      report = _leaf_report(spec, w)
      if key is not None:
        ties[key] = {k: report[k] for k in ("groups", "zero_groups", "group_size")}
        ties[key]["leaves"] = [names[i] for i in sources]
      if "groups" in report:
        regularized.append(report)
  total = sum(r["groups"] * r["group_size"] for r in regularized)
  zero_weight = sum(r["zero_groups"] * r["group_size"] for r in regularized)
  entries = sum(r["entries"] for r in leaves.values())
  zero_entries = sum(r["zero_entries"] for r in leaves.values())
  return {
    "group_sparsity": jnp.asarray(zero_weight / total if total else 0.0),
    "zero_groups": jnp.asarray(sum(r["zero_groups"] for r in regularized)),
    "groups": sum(r["groups"] for r in regularized),
    "unstructured_sparsity": jnp.asarray(zero_entries / entries if entries else 0.0),
    "zero_entries": jnp.asarray(zero_entries),
    "entries": entries,
    "leaves": leaves,
    "ties": ties,
  }


def _percent(x: Any) -> str:
  return f"{100 * float(x):.2f}%"


def sparsity_table(params: optax.Params, regularizer: RegularizerArg) -> str:
  """A per-layer table of :func:`sparsity`, one row per parameter leaf.

  Columns: the leaf path, its shape, zero groups / groups (``rank r/max`` for
  :func:`nuclear` leaves), the weighted group sparsity of the leaf (``-`` for
  unregularized and nuclear leaves) and its fraction of zero entries; a row
  per tie holds its joint groups (zero where all its leaves are zero); a last
  row holds the totals of :func:`sparsity` (its group sparsity weights each
  group by its size, and counts joint groups once). Runs on the
  host (it formats numbers), so call it outside ``jax.jit``.

  Args:
    params: the parameters, as for :func:`sparsity`.
    regularizer: the spec tree (or callable) used in training.

  Returns:
    The table, as a string ready to print.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> params = {"w": jnp.array([[1.0, 2.0], [0.0, 0.0], [0.0, 3.0]]),
    ...           "b": jnp.zeros(2)}
    >>> print(oxr.sparsity_table(params, {"w": oxr.group_lasso(axes=(1,)), "b": None}))
    layer  shape     zero groups  group sparsity  entry sparsity
    ['b']  (2,)                -               -         100.00%
    ['w']  (3, 2)            1/3          33.33%          50.00%
    total  8 params          1/3          33.33%          62.50%
  """
  params = module_params(params)
  report = sparsity(params, regularizer)
  shapes = [np.shape(w) for w in jax.tree.leaves(params)]
  rows = [["layer", "shape", "zero groups", "group sparsity", "entry sparsity"]]
  for (name, leaf), shape in zip(report["leaves"].items(), shapes, strict=True):
    if "groups" in leaf:
      groups = f"{int(leaf['zero_groups'])}/{leaf['groups']}"
      weighted = _percent(int(leaf["zero_groups"]) / max(leaf["groups"], 1))
    else:
      groups = weighted = "-"
    if "rank" in leaf:  # Nuclear-norm leaves: rank / full rank instead.
      groups = f"rank {int(leaf['rank'])}/{leaf.get('max_rank', '?')}"
    entries = _percent(int(leaf["zero_entries"]) / max(leaf["entries"], 1))
    rows.append([name, str(tuple(shape)), groups, weighted, entries])
  for key, tie in report["ties"].items():  # Joint groups: what all can drop.
    groups = f"{int(tie['zero_groups'])}/{tie['groups']}"
    weighted = _percent(int(tie["zero_groups"]) / max(tie["groups"], 1))
    rows.append([f"tie {key!r}", f"{len(tie['leaves'])} leaves", groups, weighted, "-"])
  rows.append(
    [
      "total",
      f"{report['entries']} params",
      f"{int(report['zero_groups'])}/{report['groups']}",
      _percent(report["group_sparsity"]),
      _percent(report["unstructured_sparsity"]),
    ]
  )
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = [
    "  ".join(
      cell.ljust(w) if i < 2 else cell.rjust(w)
      for i, (cell, w) in enumerate(zip(row, widths, strict=True))
    ).rstrip()
    for row in rows
  ]
  return "\n".join(lines)
