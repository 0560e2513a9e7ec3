"""Target sparsity: λ chosen each step so that a given fraction of the groups is zero.

Every optimizer of the package zeroes a group g exactly when a screening
statistic is at most its threshold: ‖b_g‖ ≤ τω_g, with τ = scale·λ and b the
vector the step thresholds (RAMDA: b = D∘W⁰ − V and scale α; the prox steps:
the prox argument, in its metric, and scale η or α/√k). The fraction of zero
groups is therefore a step function of λ, with a jump at each
λ_g = ‖b_g‖ / (scale·ω_g), and the smallest λ that zeroes a given weighted
fraction of the groups is a weighted quantile of the λ_g: one sort of the group
scores per step, and no extra solve.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_ramda import _solvers, _stages, _ties
from optax_ramda._regularizers import Nuclear, Regularizer, is_spec
from optax_ramda._sharding import resharded

# The quantile is rounded up by this many ulps of λ's dtype, so that the group
# at the quantile is zeroed whatever the rounding of the solver's own
# comparison ‖b_g‖ ≤ (scale·λ)·ω_g, which forms the same numbers in another
# order (λ = τ/scale, then scale·λ; ℓ1's |W⁰ − V/D| ≤ τ/D).
_MARGIN_ULPS = 16


@dataclasses.dataclass(frozen=True)
class TargetSparsity:
  """A target weighted group sparsity in place of λ; build one with :func:`target_sparsity`.

  Attributes:
    target: s ∈ [0, 1), the weighted fraction of the regularized groups to
      zero, or a schedule of the step count giving it.
    until: the number of updates during which λ follows the target; from then
      on it is held. ``None``: the optimizer's default (see
      :func:`target_sparsity`).
    window: the number of last updates before `until` whose λ is the running
      mean of their quantiles (1: each its own).
  """

  target: float | optax.Schedule
  until: Any = None  # int, or an int32 array from inject_hyperparams; None: default.
  window: int = 1

  def resolve(
    self, milestones: Sequence[int], optimizer: str, full_weight: Any = None
  ) -> TargetSparsity:
    """This target with `until` set: its own, else `full_weight` (the update
    after a dual-averaging method's averaging weight first reaches one), else
    the last of `milestones`.

    Raises:
      ValueError: when none gives a step count, or `window` exceeds it.
    """
    default = (
      full_weight
      if full_weight is not None
      else (int(milestones[-1]) if milestones else None)
    )
    if self.until is None and default is not None:
      return dataclasses.replace(self, until=default).resolve(milestones, optimizer)
    if self.until is not None:
      if not isinstance(self.until, jax.core.Tracer) and self.window > self.until:
        raise ValueError(
          f"target_sparsity: `window`={self.window} is longer than the "
          f"{self.until} updates that follow the target (`until`); give "
          f"window <= {self.until}."
        )
      return self
    raise ValueError(
      f"target_sparsity({self.target}) given to {optimizer} without `until` and "
      f"without milestones to default to: pass target_sparsity({self.target}, "
      "until=N), the number of updates after which λ is held fixed."
    )


def target_sparsity(
  target: float | optax.Schedule, *, until: int | None = None, window: int = 1
) -> TargetSparsity:
  r"""A target sparsity, to pass as `reg_strength` instead of λ.

  Each optimizer then chooses λ itself, from one global weighted quantile over
  all the regularized groups of all leaves. On each of the first `until`
  updates, λ is set to the smallest value at which the step's own subproblem
  (RAMDA) or prox step (the baselines) zeroes at least the fraction `target`
  of the regularized groups, each group weighted by its size, as
  :func:`sparsity` weights them. A group :math:`g` is zero exactly when
  :math:`‖b_g‖ ≤ τ ω_g` with :math:`τ = \text{scale}·λ`, so with
  :math:`λ_g = ‖b_g‖ / (\text{scale}·ω_g)` and group sizes :math:`n_g`,

  .. math::

    λ = \min \Big\{ λ_g : \sum_{h:\, λ_h ≤ λ_g} n_h ≥ s \sum_h n_h \Big\},

  (:math:`λ = 0` for :math:`s = 0`). The scores, per optimizer:

  * :func:`ramda`: :math:`b = D∘W^0 - V`, scale :math:`α`;
  * :func:`rmda`: :math:`b = W^0 - V/\sqrt k`, scale :math:`α/\sqrt k`;
  * :func:`proxgen`: :math:`b = P∘w - a m`, scale :math:`η`;
  * :func:`prox_sgd`: :math:`b = w - η b_{\text{mom}}`, scale :math:`η`;
  * :func:`proxssi`: :math:`b = p∘x`, scale :math:`η`.

  For :func:`l1` each entry is a group. For :func:`nuclear` each singular value
  is a group of weight :math:`\max(m, n)` (so a whole m×n leaf weighs
  :math:`mn`, as a grouped leaf of that shape does, and its zero fraction is
  its rank reduction), scored on the argument of the solver's *first*
  singular-value soft-thresholding, from its warm start: exact for a constant
  metric (RMDA, ProxSGD, where that step is the solution), an approximation
  under a diagonal one (RAMDA, ProxGen, ProxSSI), whose later iterations can
  change the rank.

  The weighted sparsity reached is the smallest achievable value at or above
  `target`: with unequal group sizes the target itself may fall between two
  achievable values. From update `until` on, λ is held at its last value,
  since the identification theory needs a fixed λ in the final stage. With
  ``window=K``, the last K updates before `until` each use the running mean of
  their quantiles so far, and the mean over all K is held: one step's quantile
  carries that step's gradient noise (on digits, one epoch of averaging kept
  every method within 3 points of the target where the last value left
  ProxSSI 6 points under it; see docs/target_sparsity.md).

  The λ that will be held (on the window's updates) is at least the smallest
  :math:`λ_g` among the groups that have had a gradient (nonzero dual average,
  second moment or momentum). A group without one (the inputs of a dead unit)
  is zero at every λ, and when such groups alone meet the target the quantile
  is 0 or ε-small: a λ that regularizes nothing and, held, lets the zeroed
  structure grow back. There the sparsity is that of the gradient-less groups
  and one more.
  :func:`reg_strength` reads λ from the state, to rerun with a fixed λ.

  A step whose λ would not be finite (non-finite gradients in more than the
  fraction 1 − `target` of the weights) keeps the previous λ; the non-finite
  groups themselves count as never zero, as the solvers keep them.

  .. tip::
    A constant target asks for the whole sparsity from the first update, on an
    untrained model; on networks, raise it gradually, for example along Zhu &
    Gupta's cubic ``optax.polynomial_schedule(0.0, s, 3, until)`` (on digits
    mlp at s = 0.5, ProxGen, ProxSGD and ProxSSI tested 96.94 % with a
    constant target, seed 0, and 97.78 to 97.87 % with a ramp to the first
    milestone, 3 seeds; RMDA 98.06 % and 97.59 %). See
    docs/target_sparsity.md.

  Args:
    target: s ∈ [0, 1), the weighted fraction of the regularized groups to
      zero; or a schedule of the step count (for example
      ``optax.linear_schedule(0.0, 0.5, N)``), to raise it gradually.
    until: N ≥ 1, the number of updates during which λ follows the target.
      ``None`` (default), for :func:`ramda` and :func:`rmda`: the update after
      the first whose averaging weight c = min(c₀√r, 1) is one, ramp start +
      ⌈1/c₀²⌉ (their last milestone restarts the dual averages, and a λ held
      there zeroes more as they settle: on digits RAMDA ended 2 to 7 points over
      the target); the last milestone when the ramp is off or c₀ is a
      schedule. A shorter run never holds λ: pass `until`. :func:`proxgen`,
      :func:`prox_sgd` and :func:`proxssi` need it.
    window: K in [1, N], the number of last updates before `until` over which
      λ is averaged before it is held (default 1: the last value).

  Returns:
    A :class:`TargetSparsity`, for the `reg_strength` argument of any optimizer
    of the package.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> x = jax.random.normal(jax.random.key(0), (32, 8))
    >>> y = x[:, :3] @ jnp.array([[1.0], [-2.0], [0.5]])  # 5 inputs unused
    >>> loss = lambda p: jnp.mean((x @ p["w"] - y) ** 2)
    >>> groups = {"w": oxr.group_lasso(axes=(1,))}  # a group per input
    >>> tx = oxr.ramda(0.1, reg_strength=oxr.target_sparsity(0.5, until=50),
    ...                regularizer=groups)
    >>> params = {"w": jnp.zeros((8, 1))}
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> def train(params, state, steps):
    ...   for _ in range(steps):
    ...     updates, state = update(jax.grad(loss)(params), state, params)
    ...     params = optax.apply_updates(params, updates)
    ...   return params, state
    >>> params, state = train(params, state, 50)
    >>> float(oxr.sparsity(oxr.prox_iterate(state), groups)["group_sparsity"])
    0.5

    From update 50 on λ is held; the fifth unused input then reaches zero too:

    >>> params, state = train(params, state, 50)
    >>> float(oxr.sparsity(oxr.prox_iterate(state), groups)["group_sparsity"])
    0.625
    >>> lam = float(oxr.reg_strength(state))  # rerun with reg_strength=lam

  References:
    Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning
    for model compression <https://arxiv.org/abs/1710.01878>`_, 2017 (the
    cubic sparsity schedule).
  """
  if callable(target):  # A schedule of the step count, checked where it runs.
    pass
  elif isinstance(target, bool) or not isinstance(target, numbers.Real):
    raise ValueError(
      f"target_sparsity: `target` must be a float in [0, 1), got {target!r}."
    )
  elif not 0 <= float(target) < 1:
    raise ValueError(
      f"target_sparsity: `target` must lie in [0, 1), got {target!r} (1 would "
      "zero every regularized group)."
    )
  if until is not None and (
    isinstance(until, bool) or not isinstance(until, numbers.Integral) or until < 1
  ):
    raise ValueError(
      f"target_sparsity: `until` must be an integer >= 1 (a number of updates) "
      f"or None, got {until!r}."
    )
  if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
    raise ValueError(
      f"target_sparsity: `window` must be an integer >= 1 (a number of updates), "
      f"got {window!r}."
    )
  if until is not None and window > until:
    raise ValueError(
      f"target_sparsity: `window`={window} is longer than `until`={until}, the "
      "updates that follow the target."
    )
  target = target if callable(target) else float(target)
  return TargetSparsity(target, None if until is None else int(until), int(window))


def resolve(
  reg_strength: Any,
  milestones: Sequence[int],
  optimizer: str,
  full_weight: Any = None,
) -> TargetSparsity | None:
  """The optimizer's target with `until` resolved, or None for a plain λ."""
  if isinstance(reg_strength, TargetSparsity):
    return reg_strength.resolve(milestones, optimizer, full_weight)
  return None


class _Layout(NamedTuple):
  groups: int  # Scores per leaf.
  size: int  # The weight n_g of each.


def _layout(spec: Regularizer, shape: tuple[int, ...]) -> _Layout:
  if isinstance(spec, Nuclear):
    m, n = shape
    return _Layout(min(m, n), max(m, n))
  size = math.prod(shape[a] for a in spec.group_axes(len(shape)))
  return _Layout(math.prod(shape) // max(size, 1), size)


def check_groups(target: TargetSparsity | None, specs: Any, params: Any) -> None:
  """At init: a target needs regularized groups, fewer than 2³¹ entries of them.

  Raises:
    ValueError: when the params have leaves but no regularized group.
  """
  if target is None:
    return
  flat_specs = jax.tree.leaves(specs, is_leaf=is_spec)
  shapes = [tuple(p.shape) for p in jax.tree.leaves(params)]
  if not shapes:  # A leafless placeholder (optax.tree_map_params): nothing to do.
    return
  layouts = [
    _layout(spec, shape)
    for spec, shape in zip(flat_specs, shapes, strict=True)
    if spec is not None and math.prod(shape) > 0
  ]
  total = sum(layout.groups * layout.size for layout in layouts)
  if not total:
    raise ValueError(
      f"target_sparsity({target.target}) was given with a spec tree that "
      "regularizes no parameter: there is no group to zero. Give some leaves "
      "group_lasso(...), l1() or nuclear() specs."
    )
  if total >= 2**31:
    raise ValueError(
      f"target_sparsity counts the regularized entries in int32; this model has "
      f"{total} of them (at most 2**31 - 1)."
    )


def leaf_scores(
  spec: Regularizer,
  v: jax.typing.ArrayLike,
  d: jax.typing.ArrayLike,
  anchor: jax.Array,
  init: jax.Array,
) -> jax.Array:
  """τ_g = ‖b_g‖/ω_g, the τ at which each group of the subproblem turns zero.

  For the subproblem ``min ⟨v, z − W⁰⟩ + ½‖z − W⁰‖²_d + τψ̄(z)`` of one leaf
  (the prox steps pass v = 0, d = their metric or 1, W⁰ = the prox argument):
  ‖b_g‖/ω_g with b = d∘W⁰ − v, its entries for ℓ1, and for a nuclear norm the
  singular values of the first SVT argument from `init`, over its step. NaN
  scores become +inf: the solvers never zero a non-finite group.

  Returns:
    The scores as a flat vector, in the leaf's compute dtype (float32 at least).
  """
  dtype = jnp.promote_types(anchor.dtype, jnp.float32)
  anchor = anchor.astype(dtype)
  if isinstance(spec, Nuclear):
    # solve_nuclear's first step, in its own arithmetic: y = z − h(v + d(z − W⁰)).
    d = jnp.broadcast_to(jnp.asarray(d, dtype), anchor.shape)
    step = 1 / jnp.max(d)
    z = init.astype(dtype)
    y = z - step * (v + d * (z - anchor))
    scores = jnp.linalg.svd(y, compute_uv=False) / step
  else:
    weight = spec.group_weight(anchor.shape)
    b = cast(jax.Array, d * anchor - v)
    norms = _solvers.group_norm(b, spec.group_axes(anchor.ndim))
    scores = norms / weight if weight > 0 else jnp.full(norms.shape, jnp.inf, dtype)
  scores = jnp.where(jnp.isnan(scores), jnp.inf, scores).astype(dtype)
  return resharded(scores.ravel())


def leaf_signal(spec: Regularizer, signal: jax.typing.ArrayLike) -> jax.Array:
  """Whether each group of a leaf has a gradient signal: `signal` nonzero in it.

  `signal` is the step's gradient statistic (a dual average, a first moment or
  a momentum buffer). A nuclear norm's singular values all count as signalled.

  Returns:
    A flat boolean vector, one entry per group of :func:`leaf_scores`.
  """
  signal = jnp.asarray(signal)
  if isinstance(spec, Nuclear):
    return resharded(jnp.ones(min(signal.shape), bool))
  axes = spec.group_axes(signal.ndim)
  return resharded(jnp.any(signal != 0, axis=axes).ravel())


def _quantile(scores: jax.Array, sizes: np.ndarray, need: Any) -> jax.Array:
  """The smallest score s with Σ sizes[scores ≤ s] ≥ need (need ≥ 1)."""
  keys, weights = lax.sort((scores, jnp.asarray(sizes)), num_keys=1)
  first = jnp.searchsorted(jnp.cumsum(weights), need, side="left")
  return keys[jnp.minimum(first, keys.size - 1)]


Mode = Literal["fixed", "follow", "held"]


def dispatch(
  target: TargetSparsity | None,
  count: jax.Array,
  step: Callable[..., tuple[Any, Any]],
  updates: Any,
  state: Any,
  params: Any,
) -> tuple[Any, Any]:
  """``step(updates, state, params, mode)``: the whole update in one of its modes.

  ``"fixed"`` without a target; with one, ``"follow"`` (λ from the quantile)
  before `until` and ``"held"`` (λ from the state) from then on. The branch is
  taken around the whole step, so that the held stage compiles, and rounds, as
  the fixed-λ step does: bit for bit the step of ``reg_strength=λ``.
  """
  if target is None:
    return step(updates, state, params, "fixed")
  assert target.until is not None  # Resolved at construction.
  return lax.cond(
    count < target.until,
    functools.partial(step, mode="follow"),
    functools.partial(step, mode="held"),
    updates,
    state,
    params,
  )


def reg_strength_for(
  mode: Mode,
  reg_strength: Any,
  target: Any,
  count: jax.Array,
  previous: jax.Array,
  scale: jax.Array,
  specs: Any,
  scores: Callable[..., jax.Array],
  *trees: Any,
) -> jax.Array:
  """λ of this step: the constant or schedule, the held λ, or the target's.

  In mode ``"fixed"``, `reg_strength` (a constant or a schedule of `count`);
  ``"held"``, `previous`; else :func:`chosen_reg_strength` of the other
  arguments, which are traced only in that mode.
  """
  if mode == "fixed":
    return _stages.value_at(reg_strength, count)
  if mode == "held":
    return previous
  return chosen_reg_strength(target, count, previous, scale, specs, scores, *trees)


def chosen_reg_strength(
  target: Any,
  count: jax.Array,
  previous: jax.Array,
  scale: jax.Array,
  specs: Any,
  scores: Callable[..., jax.Array],
  *trees: Any,
) -> jax.Array:
  """λ from the target: the weighted quantile of the groups' thresholds.

  Args:
    target: the resolved :class:`TargetSparsity`.
    count: the updates applied so far (for a scheduled target).
    previous: λ of the last update, kept when the quantile is not finite.
    scale: τ = scale·λ in this optimizer's step.
    specs: the resolved spec tree.
    scores: ``scores(spec, *leaves)`` → (:func:`leaf_scores`,
      :func:`leaf_signal`) of a regularized leaf.
    *trees: params-shaped trees whose leaves `scores` takes after the spec.

  Returns:
    λ, a scalar of the dtype of `previous`.
  """
  # Tied leaves count as one (virtual) leaf whose groups are the joint ones.
  flat_specs, flat_trees = _ties.virtual(
    jax.tree.leaves(specs, is_leaf=is_spec), *(jax.tree.leaves(t) for t in trees)
  )
  leaves = [
    (spec, [t[i] for t in flat_trees])
    for i, spec in enumerate(flat_specs)
    if spec is not None and flat_trees[0][i].size > 0
  ]
  layouts = [_layout(spec, tuple(args[0].shape)) for spec, args in leaves]
  sizes = np.concatenate([np.full(lay.groups, lay.size, np.int32) for lay in layouts])
  total = int(sizes.sum())
  # The fraction as the float it is (0.1 is a hair above 1/10): a tolerance far
  # below one group, so that s·N landing on an integer asks for that integer.
  if callable(target.target):
    fraction = jnp.asarray(target.target(count), jnp.float32)
    need: Any = jnp.ceil(fraction * total - 1e-6 * max(total, 1)).astype(jnp.int32)
  else:
    need = math.ceil(target.target * total - 1e-6)
    if need <= 0:
      return jnp.zeros_like(previous)
  parts, signals = zip(*(scores(spec, *args) for spec, args in leaves), strict=True)
  dtype = jnp.result_type(*parts)
  values = jnp.concatenate([p.astype(dtype) for p in parts])
  # The λ to be held (the window's) is at least the smallest threshold among
  # the groups with a gradient signal. A group without one (a dead unit's
  # inputs since the last restart) is zero at any λ ≥ 0, and under an adaptive
  # metric (RAMDA's D, Adam's √v + ε) its threshold is ε-small: when such
  # groups alone make the target, the quantile is ~0, no group with a signal is
  # regularized, and a λ held there lets the zeroed structure grow back.
  floor = jnp.min(jnp.where(jnp.concatenate(signals), values, jnp.inf))
  held_next = count >= target.until - target.window
  tau = jnp.maximum(
    _quantile(values, sizes, need),
    jnp.where(held_next & jnp.isfinite(floor), floor, 0),
  )
  tau = tau * (1 + _MARGIN_ULPS * jnp.finfo(dtype).eps)
  lam = (tau / scale).astype(previous.dtype)
  lam = jnp.where(need > 0, lam, 0)  # A target of 0: no zero groups asked for.
  lam = jnp.where(jnp.isfinite(lam), lam, previous)
  if target.window == 1:
    return lam
  # The j-th update of the window: the running mean of its j quantiles.
  j = (count - (target.until - target.window) + 1).astype(lam.dtype)
  return jnp.where(j >= 2, previous + (lam - previous) / jnp.maximum(j, 1), lam)


def reg_strength(state: optax.OptState) -> jax.Array:
  """λ of the last update, from the state of any optimizer of the package.

  With :func:`target_sparsity` this is the λ the optimizer chose (held from
  `until` on); with a fixed λ or a schedule, the value it used. Rerunning with
  ``reg_strength=float(oxr.reg_strength(state))`` reproduces the held stage.

  Args:
    state: the state of :func:`ramda`, :func:`rmda`, :func:`proxgen`,
      :func:`prox_sgd` or :func:`proxssi`, or of a chain or wrapper
      (``optax.inject_hyperparams``, ``optax.MultiSteps``, ...) holding
      exactly one of them.

  Returns:
    A scalar; 0 before the first update.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> tx = optax.chain(optax.clip(1.0), oxr.proxgen(
    ...     1e-2, reg_strength=oxr.target_sparsity(0.5, until=10),
    ...     regularizer=oxr.l1()))
    >>> w = jnp.array([1.0, -2.0, 3.0, -4.0])
    >>> _, state = tx.update(jnp.ones(4), tx.init(w), w)
    >>> oxr.reg_strength(state)  # zeroes 2 of 4: |w − ηm̂| = 2.01 over η = 0.01
    Array(201.0..., dtype=float32)
  """
  found = [
    value
    for path, value in optax.tree.get_all_with_path(state, "reg_strength")
    # A NamedTuple field of an optimizer's state, not the `hyperparams` entry
    # that optax.inject_hyperparams keeps for a numeric λ.
    if path and not isinstance(path[-1], jax.tree_util.DictKey)
  ]
  if len(found) != 1:
    raise ValueError(
      "reg_strength needs a state holding exactly one state of an optax_ramda "
      f"optimizer, found {len(found)}."
    )
  return found[0]
