"""Gradual magnitude pruning of whole groups (Zhu & Gupta 2017), around any optimizer.

The baseline a practitioner reaches for instead of a structured regularizer: a
dense optimizer, plus a cubic sparsity schedule that zeroes the groups of
smallest norm. The groups are those of the regularizers' spec trees, so the
result is measured by :func:`sparsity` exactly like the regularized methods.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ramda import _checks, _solvers, _ties
from optax_ramda._regularizers import (
  Nuclear,
  RegularizerArg,
  is_spec,
  resolve_specs,
  specs_at_init,
)
from optax_ramda._sharding import resharded

Allocation = Literal["uniform", "erk", "global"]
_ALLOCATIONS = ("uniform", "erk", "global")

_NO_PARAMS_MSG = (
  "magnitude_pruning zeroes the pruned weights, which it reads from the "
  "parameters: call `update(updates, state, params)` with the current params."
)


class MagnitudePruningState(NamedTuple):
  """State of :func:`magnitude_pruning`.

  Attributes:
    count: updates applied so far; drives the sparsity schedule.
    masks: a boolean tree shaped like the params, ``True`` where a weight is
      kept. Every entry of a group holds the group's flag; leaves without a
      spec are all ``True``.
    inner_state: the state of the wrapped optimizer.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
  masks: optax.Params
  inner_state: optax.OptState


class _Leaf(NamedTuple):
  """The static group layout of one pruned leaf."""

  axes: tuple[int, ...]  # The axes one group spans (() for l1: entries).
  groups: int
  size: int  # Entries per group.
  erk: float  # r = Σ_i n_i / Π_i n_i over the leaf's dimensions n_i.


def _check_int(name: str, value: Any, minimum: int) -> int:
  if (
    isinstance(value, bool)
    or not isinstance(value, numbers.Integral)
    or value < minimum
  ):
    raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def _check_fraction(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"`{name}` must be a float in [0, 1), got {value!r}.")
  if not 0 <= float(value) < 1:
    raise ValueError(f"`{name}` must lie in [0, 1), got {value!r}.")
  return float(value)


def _layouts(specs: Any, params: Any) -> list[_Leaf | None]:
  """One :class:`_Leaf` per params leaf (``None`` where it has no spec)."""
  layouts: list[_Leaf | None] = []
  flat_specs = jax.tree.leaves(specs, is_leaf=is_spec)
  flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
  for spec, (path, w) in zip(flat_specs, flat_params, strict=True):
    shape = tuple(w.shape)
    if spec is None or math.prod(shape) == 0:  # Nothing to prune.
      layouts.append(None)
      continue
    if isinstance(spec, Nuclear):
      raise ValueError(
        f"magnitude_pruning was given nuclear() for the leaf "
        f"{jax.tree_util.keystr(path) or '<root>'}; it prunes groups, and a "
        "nuclear-norm leaf has none. Use group_lasso(...) or l1() specs."
      )
    layouts.append(_layout(spec, shape))
  return layouts


def _layout(spec: Any, shape: tuple[int, ...]) -> _Leaf:
  axes = spec.group_axes(len(shape))
  size = math.prod(shape[a] for a in axes)
  dims = shape or (1,)  # A scalar counts as one entry of a vector.
  return _Leaf(axes, math.prod(shape) // size, size, sum(dims) / math.prod(dims))


def _tied_masks(
  tie_plan: _ties.Plan,
  params: list[jax.Array],
  masks: list[jax.Array],
  sparsity: jax.Array,
  allocation: str,
) -> list[jax.Array]:
  """:func:`_new_masks` over the virtual leaves of tied groups, split back."""
  virtual_params = tie_plan.gather(params)
  layouts = [
    None if spec is None or x.size == 0 else _layout(spec, tuple(x.shape))
    for spec, x in zip(tie_plan.specs, virtual_params, strict=True)
  ]
  new = _new_masks(
    layouts, virtual_params, tie_plan.gather(masks), sparsity, allocation
  )
  return tie_plan.scatter(new, params)


def _erk_densities(density: jax.Array, leaves: list[_Leaf]) -> jax.Array:
  """Per-leaf densities d_l = min(1, ε r_l) with Σ_l d_l N_l = density · Σ_l N_l.

  RigL's ERK rule, r_l = Σ_i n_i / Π_i n_i over the leaf's dimensions n_i, and
  N_l its entries. Leaves whose ε r_l would exceed 1 are made dense, largest
  r_l first, and ε is solved again on the rest. With the leaves sorted by r_l
  and the first m dense, ε_m = (D − Σ_{i≤m} N_i) / Σ_{i>m} r_i N_i with
  D = density · Σ_l N_l; the answer is the first m whose next leaf fits
  (ε_m r_{m+1} ≤ 1), as in RigL's loop. Every m is evaluated at once, so the
  traced `density` needs no loop.
  """
  raw = np.array([leaf.erk for leaf in leaves])
  entries = np.array([leaf.groups * leaf.size for leaf in leaves], float)
  order = np.argsort(-raw, kind="stable")
  r, n = raw[order], entries[order]
  dense = np.concatenate([[0.0], np.cumsum(n)])  # Σ_{i≤m} N_i for m = 0..L.
  rest = np.concatenate([np.cumsum((r * n)[::-1])[::-1], [0.0]])  # Σ_{i>m} r_i N_i.
  budget = density * entries.sum()
  eps = (budget - dense) / np.where(rest > 0, rest, 1.0)
  fits = jnp.concatenate([eps[:-1] * r <= 1, jnp.ones([1], bool)])
  m = jnp.argmax(fits)  # The first m that fits; m = L (all dense) always does.
  ranked = jnp.where(np.arange(len(r)) < m, 1.0, jnp.clip(eps[m] * r, 0.0, 1.0))
  return ranked[np.argsort(order)]


def _prune_lowest(scores: jax.Array, sizes: jax.Array, budget: jax.Array) -> jax.Array:
  """Keep flags: the lowest-scored groups whose sizes sum to ≤ `budget` are pruned.

  A stable sort breaks ties by position, so the result is deterministic.
  """
  order = jnp.argsort(scores, stable=True)
  pruned = jnp.cumsum(sizes[order]) <= budget
  return jnp.ones(scores.shape, bool).at[order].set(~pruned)


def _group_scores(w: jax.Array, keep: jax.Array, leaf: _Leaf) -> jax.Array:
  """‖w_g‖₂ / √|g| per group (flat, row-major); pruned groups score −1."""
  x = w.astype(jnp.promote_types(w.dtype, jnp.float32))
  score = _solvers.group_norm(x, leaf.axes) / math.sqrt(leaf.size)
  # Pruned groups rank first, so the pruned set only grows and they stay zero.
  kept = jnp.all(keep, axis=leaf.axes, keepdims=True)
  return resharded(jnp.where(kept, score, -1).ravel())


def _new_masks(
  layouts: list[_Leaf | None],
  params: list[jax.Array],
  masks: list[jax.Array],
  sparsity: jax.Array,
  allocation: str,
) -> list[jax.Array]:
  """The masks at target `sparsity`, from the weights and the current masks."""
  pruned = [(i, leaf) for i, leaf in enumerate(layouts) if leaf is not None]
  if not pruned:
    return masks
  leaves = [leaf for _, leaf in pruned]
  scores = [_group_scores(params[i], masks[i], leaf) for i, leaf in pruned]
  if allocation == "global":
    dtype = jnp.result_type(*scores)
    sizes = jnp.concatenate(
      [jnp.full([leaf.groups], leaf.size, jnp.int32) for leaf in leaves]
    )
    total = sum(leaf.groups * leaf.size for leaf in leaves)
    budget = jnp.round(sparsity * total).astype(jnp.int32)
    keep = _prune_lowest(
      jnp.concatenate([s.astype(dtype) for s in scores]), sizes, budget
    )
    keeps = jnp.split(keep, np.cumsum([leaf.groups for leaf in leaves])[:-1])
  else:
    if allocation == "erk":
      per_leaf = 1 - _erk_densities(1 - sparsity, leaves)
    else:
      per_leaf = jnp.full([len(leaves)], sparsity)
    keeps = [
      _prune_lowest(
        s,
        jnp.ones(s.shape, jnp.int32),
        jnp.round(per_leaf[j] * leaf.groups).astype(jnp.int32),
      )
      for j, (s, leaf) in enumerate(zip(scores, leaves, strict=True))
    ]
  out = list(masks)
  for (i, leaf), keep in zip(pruned, keeps, strict=True):
    shape = params[i].shape
    grouped = tuple(1 if a in leaf.axes else d for a, d in enumerate(shape))
    out[i] = resharded(jnp.broadcast_to(keep.reshape(grouped), shape), masks[i])
  return out


def magnitude_pruning(
  inner: optax.GradientTransformation,
  target_sparsity: float,
  *,
  regularizer: RegularizerArg,
  end_step: int,
  begin_step: int = 0,
  frequency: int = 100,
  initial_sparsity: float = 0.0,
  allocation: Allocation = "uniform",
) -> optax.GradientTransformationExtraArgs:
  r"""Gradual magnitude pruning of whole groups, wrapping a dense optimizer.

  Zhu & Gupta's schedule raises the sparsity from :math:`s_i` to :math:`s_f`
  along a cubic, updating the masks every :math:`Δt` steps from :math:`t_0`
  to :math:`t_0 + nΔt`; at the mask updates :math:`t = t_0 + jΔt`
  (:math:`j = 0, …, n`):

  .. math::

    s_t = s_f + (s_i - s_f) \left(1 - \frac{t - t_0}{n Δt}\right)^3,

  and the masks are held in between (all groups are kept before :math:`t_0`;
  :math:`n = 0` prunes once, to :math:`s_f`, at :math:`t_0`). The groups are
  those of the spec tree (a group lasso's groups, each entry for ℓ1), ranked
  by :math:`\|w_g\|_2 / \sqrt{|g|}` on the current weights; groups pruned
  earlier stay pruned. Where :math:`m` is the mask and :math:`u` the inner
  optimizer's update, the emitted update is

  .. math::

    m ⊙ u - (1 - m) ⊙ w,

  so pruned groups of :math:`w + \text{update}` are exactly zero, and stay so.
  The masks of step :math:`t` are ranked on the weights :math:`w` handed to
  that step's ``update``; the wrapped optimizer sees the gradients as they
  are, and its update of a pruned group is discarded. The state adds one
  boolean per parameter to the wrapped optimizer's.
  A leaf with :math:`G_l` groups of :math:`|g_l|` entries
  (:math:`N_l = G_l |g_l|`) prunes, for each `allocation`:

  * ``"uniform"``: :math:`\operatorname{round}(s_t G_l)` groups;
  * ``"erk"``: :math:`\operatorname{round}((1 - d_l) G_l)` groups, with the
    Erdős-Rényi-Kernel density of RigL,
    :math:`d_l = \min(1, ε \sum_i n_i / \prod_i n_i)` over the leaf's
    dimensions :math:`n_i`, and :math:`ε` such that
    :math:`\sum_l d_l N_l = (1 - s_t) \sum_l N_l` (leaves that would exceed
    :math:`d_l = 1` are dense, and :math:`ε` is solved on the rest). Small
    layers keep more of their groups;
  * ``"global"``: the groups of all leaves are ranked together, and the
    longest run of lowest-ranked groups whose entries sum to at most
    :math:`\operatorname{round}(s_t \sum_l N_l)` is pruned.

  Rounding is to the nearest integer, ties to even (as ``numpy.round``). Ties
  between scores go to the group that comes first (leaves in tree order, groups
  in row-major order). A leaf can be emptied when the count rounds to all its
  groups. The weighted group sparsity that :func:`sparsity` reports is then
  :math:`s_t` up to that rounding.

  Args:
    inner: the dense optimizer to wrap (for example :func:`optax.adamw`).
    target_sparsity: :math:`s_f` ∈ [0, 1), the final fraction of the
      regularized entries in pruned groups. 0 leaves `inner` unchanged.
    regularizer: the spec tree (or callable ``params -> spec tree``) whose
      groups are pruned, as for :func:`ramda` (for example
      :func:`input_channel_groups`); leaves with ``None`` are never pruned.
    end_step: :math:`t_0 + nΔt`, the step of the last mask update, at which
      :math:`s_f` is reached; `end_step` − `begin_step` must be a multiple of
      `frequency`.
    begin_step: :math:`t_0`, the step of the first mask update (steps count
      from 0, the first call to ``update``).
    frequency: :math:`Δt`, the steps between mask updates.
    initial_sparsity: :math:`s_i` ∈ [0, `target_sparsity`], the sparsity set at
      `begin_step`.
    allocation: ``"uniform"``, ``"erk"`` or ``"global"``, as above.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`MagnitudePruningState`.

  .. warning::
    ``update`` needs ``params``, and its update zeroes the pruned weights:
    it must be the **last** transform of a chain (a transform after it would
    rescale the :math:`-w` that zeroes them).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> x = jax.random.normal(jax.random.key(0), (32, 4))
    >>> y = x[:, :2] @ jnp.array([[1.0], [-2.0]])  # inputs 2 and 3 are unused
    >>> def loss(p):
    ...   return jnp.mean((x @ p["w"] - y) ** 2)
    >>> params = {"w": jnp.ones((4, 1))}
    >>> groups = {"w": oxr.group_lasso(axes=(1,))}  # one group per input
    >>> tx = oxr.magnitude_pruning(optax.adamw(0.05), 0.5, regularizer=groups,
    ...                            begin_step=20, end_step=60, frequency=10)
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(100):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> float(oxr.sparsity(params, groups)["group_sparsity"])
    0.5
    >>> params["w"][2:, 0]  # the unused inputs are pruned: exactly zero
    Array([0., 0.], dtype=float32)

  References:
    Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning
    for model compression <https://arxiv.org/abs/1710.01878>`_, 2017.

    Evci, Gale, Menick, Castro & Elsen, `Rigging the Lottery: Making All
    Tickets Winners <https://arxiv.org/abs/1911.11134>`_, ICML 2020 (the ERK
    allocation).

    Lee et al., `JaxPruner: A concise library for sparsity research
    <https://arxiv.org/abs/2304.14082>`_, 2023 (``MagnitudePruning``).
  """
  if not isinstance(inner, optax.GradientTransformation):
    raise ValueError(f"`inner` must be an optax.GradientTransformation, got {inner!r}.")
  s_f = _check_fraction("target_sparsity", target_sparsity)
  s_i = _check_fraction("initial_sparsity", initial_sparsity)
  if s_i > s_f:
    raise ValueError(
      f"`initial_sparsity` ({s_i}) must not exceed `target_sparsity` ({s_f}): "
      "the schedule only prunes more."
    )
  t0 = _check_int("begin_step", begin_step, 0)
  t_end = _check_int("end_step", end_step, t0)
  dt = _check_int("frequency", frequency, 1)
  if (t_end - t0) % dt:
    raise ValueError(
      f"`end_step` − `begin_step` ({t_end} − {t0}) must be a multiple of "
      f"`frequency` ({dt}), so that the last mask update reaches "
      "`target_sparsity` at `end_step`."
    )
  if allocation not in _ALLOCATIONS:
    raise ValueError(f"`allocation` must be one of {_ALLOCATIONS}, got {allocation!r}.")
  n = (t_end - t0) // dt
  inner = optax.with_extra_args_support(inner)

  def schedule(count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Whether `count` is a mask update, and s_t there."""
    since = count - t0
    is_update = (since >= 0) & (count <= t_end) & (since % dt == 0)
    if n == 0:
      return is_update, jnp.asarray(s_f, jnp.result_type(float))
    j = jnp.clip(since // dt, 0, n).astype(jnp.result_type(float))
    return is_update, s_f + (s_i - s_f) * (1 - j / n) ** 3

  def init_fn(params):
    specs = specs_at_init(regularizer, params)  # Fail at init, naming the leaf.
    layouts = _layouts(specs, params)
    if s_f > 0 and layouts and all(leaf is None for leaf in layouts):
      raise ValueError(
        f"magnitude_pruning(target_sparsity={s_f}) was given a spec tree "
        "without any spec: there is no group to prune."
      )
    return MagnitudePruningState(
      count=jnp.zeros([], jnp.int32),
      # ones_like keeps the params' sharding, as optax's zeros_like does.
      masks=jax.tree.map(lambda p: jnp.ones_like(p, dtype=bool), params),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(_NO_PARAMS_MSG)
    _checks.check_same_structure(updates, params)
    specs = resolve_specs(regularizer, params)
    layouts = _layouts(specs, params)
    inner_updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    is_update, s_t = schedule(state.count)
    flat_params, treedef = jax.tree.flatten(params)
    flat_masks = treedef.flatten_up_to(state.masks)
    tie_plan = _ties.plan(
      jax.tree.leaves(specs, is_leaf=is_spec), [p.shape for p in flat_params]
    )

    def new_masks():
      if tie_plan is None:
        return _new_masks(layouts, flat_params, flat_masks, s_t, allocation)
      return _tied_masks(tie_plan, flat_params, flat_masks, s_t, allocation)

    # A sort per leaf (or one over all groups) only on the steps that update.
    flat_masks = jax.lax.cond(is_update, new_masks, lambda: flat_masks)
    flat_updates = treedef.flatten_up_to(inner_updates)
    new_updates = [
      u if leaf is None else jnp.where(m, u, -w.astype(u.dtype))
      for leaf, u, w, m in zip(
        layouts, flat_updates, flat_params, flat_masks, strict=True
      )
    ]
    new_state = MagnitudePruningState(
      count=optax.safe_increment(state.count),
      masks=treedef.unflatten(flat_masks),
      inner_state=inner_state,
    )
    return treedef.unflatten(new_updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
