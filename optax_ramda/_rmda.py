"""RMDA: Regularized Modernized Dual Averaging, RAMDA without U (docs/algorithm.md)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _checks, _common, _stages, _target
from optax_ramda._common import copy_as, map_leaf_steps, zero_iterations
from optax_ramda._regularizers import (
  RegularizerArg,
  specs_at_init,
  specs_at_update,
)


class ScaleByRmdaState(NamedTuple):
  """State of :func:`scale_by_rmda`; per-parameter fields mirror the params.

  Attributes:
    count: updates applied so far; drives schedules and milestones.
    stage_count: k, updates since the last (re)start of the dual average.
    alpha: α = Σ s_j over the current stage.
    grad_sum: V = Σ s_j g_j, the dual average.
    anchor: W⁰, the centre of the subproblem (a copy, never the params buffer).
    prox: Ŵ, the last subproblem solution: exactly structured.
    iterations: per leaf, the inner solver's iteration count at the last step
      (0 for the closed forms of group lasso and ℓ1).
    reg_strength: λ of the last update (chosen by the optimizer under
      :func:`target_sparsity`); 0 before the first.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
  stage_count: jax.Array
  alpha: jax.Array
  grad_sum: optax.Updates
  anchor: optax.Params
  prox: optax.Params
  iterations: Any
  reg_strength: jax.Array

  def restart(self, params: optax.Params) -> "ScaleByRmdaState":
    """Restarts the dual average at `params` (W⁰ ← params; V, α, k ← 0)."""
    return self._replace(
      stage_count=jnp.zeros_like(self.stage_count),
      alpha=jnp.zeros_like(self.alpha),
      grad_sum=optax.tree.zeros_like(self.grad_sum),
      anchor=jax.tree.map(lambda p, a: copy_as(p, a.dtype), params, self.anchor),
    )


class _LeafStep(NamedTuple):
  update: jax.Array
  grad_sum: jax.Array
  prox: jax.Array
  iterations: jax.Array


def scale_by_rmda(
  learning_rate: optax.ScalarOrSchedule,
  momentum: optax.ScalarOrSchedule = 0.1,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  milestones: tuple[int, ...] = (),
  decay: float = 0.1,
  momentum_ramp: bool = True,
  ramp_start: int | None = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The RMDA transform; see :func:`rmda` for the update rule and arguments.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose updates move the
    params to the new RMDA iterate; it must be the last transform of a chain.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_unit_interval("momentum", momentum)
  _common.warn_madgrad_momentum(momentum)
  _checks.check_nonnegative("reg_strength", reg_strength)
  _checks.check_unit_interval("decay", decay)
  milestones = _checks.check_milestones(milestones)
  ramp_start = _stages.ramp_start_of(
    momentum_ramp, _checks.check_ramp(momentum_ramp, ramp_start), milestones
  )
  target = _target.resolve(
    reg_strength, milestones, "rmda", _stages.full_weight_count(ramp_start, momentum)
  )
  state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)

  def init_fn(params):
    specs = specs_at_init(regularizer, params)  # Fail at init, naming the leaf.
    _target.check_groups(target, specs, params)
    return ScaleByRmdaState(
      count=jnp.zeros([], jnp.int32),
      stage_count=jnp.zeros([], jnp.int32),
      alpha=jnp.zeros([], float),
      grad_sum=optax.tree.zeros_like(params, dtype=state_dtype),
      anchor=jax.tree.map(lambda p: copy_as(p, state_dtype or p.dtype), params),
      prox=jax.tree.map(lambda p: copy_as(p, state_dtype or p.dtype), params),
      iterations=zero_iterations(params),
      reg_strength=jnp.zeros([], float),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    return _target.dispatch(target, state.count, step, updates, state, params)

  def step(updates, state, params, mode):
    specs = specs_at_update(regularizer, updates, params)
    count = state.count
    state = _stages.restart_at_milestones(
      state, count, milestones, lambda s: s.restart(params)
    )
    stage = _stages.stage_of(count, milestones)
    stage_decay = jnp.asarray(decay, state.alpha.dtype) ** stage
    lr = _stages.value_at(learning_rate, count) * stage_decay

    # s = η√k, α ← α + s; the subproblem's D = √k·I gives threshold α/√k·λ.
    k = state.stage_count + 1
    sqrt_k = jnp.sqrt(k.astype(state.alpha.dtype))
    s = (lr * sqrt_k).astype(state.alpha.dtype)
    alpha = state.alpha + s
    c = _stages.averaging_weight(_stages.value_at(momentum, count), count, ramp_start)

    def prox_argument(g, v, anchor):
      v = v + (s * g).astype(v.dtype)
      return v, anchor - v / sqrt_k.astype(v.dtype)

    def scores(spec, g, w, v, anchor):
      v, x = prox_argument(g, v, anchor)
      return _target.leaf_scores(spec, 0, 1, x, w), _target.leaf_signal(spec, v)

    trees = (updates, params, state.grad_sum, state.anchor)
    # Under a target, the quantile over this step's prox arguments x (metric I).
    lam = _target.reg_strength_for(
      mode,
      reg_strength,
      target,
      count,
      state.reg_strength,
      alpha / sqrt_k,
      specs,
      scores,
      *trees,
    )
    threshold = alpha / sqrt_k * lam

    def leaf_step(spec, g, w, v, anchor):
      v, x = prox_argument(g, v, anchor)
      if spec is None:
        z, iters = x, jnp.zeros([], jnp.int32)
      else:
        z, iters = spec.prox(x, threshold, w)
      w_new = ((1 - c) * w + c * z).astype(w.dtype)
      return _LeafStep(w_new - w, v, z, iters)

    steps = map_leaf_steps(leaf_step, _LeafStep, specs, *trees)
    new_state = ScaleByRmdaState(
      count=optax.safe_increment(count),
      stage_count=k,
      alpha=alpha,
      grad_sum=steps.grad_sum,
      anchor=state.anchor,
      prox=steps.prox,
      iterations=steps.iterations,
      reg_strength=jnp.asarray(lam, state.reg_strength.dtype),
    )
    return steps.update, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rmda(
  learning_rate: optax.ScalarOrSchedule,
  momentum: optax.ScalarOrSchedule = 0.1,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  milestones: tuple[int, ...] = (),
  decay: float = 0.1,
  momentum_ramp: bool = True,
  ramp_start: int | None = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Regularized Modernized Dual Averaging (RMDA).

  RMDA is RAMDA without the adaptive preconditioner: the subproblem's
  quadratic is :math:`\tfrac{\sqrt k}{2}‖z - W^0‖^2`, so its solution is a
  proximal operator in closed form. Per parameter leaf, at step :math:`k` of
  the current stage with gradient :math:`g` taken at the current weights
  :math:`w`:

  .. math::

    s_k &= η \sqrt{k}, \qquad α_k = α_{k-1} + s_k, \qquad
      V_k = V_{k-1} + s_k g, \\
    \hat W_k &= \operatorname{prox}_{(α_k/\sqrt{k}) ψ}
      \left(W^0 - V_k / \sqrt{k}\right), \\
    w &← (1 - c) w + c \hat W_k,

  where :math:`η` is `learning_rate`, :math:`c` the averaging weight
  (:math:`c_0` = `momentum` outside the ramp),
  :math:`ψ = λ ×` the leaf's regularizer with :math:`λ` = `reg_strength`, and
  :math:`W^0` the anchor. For a group lasso the prox is the block
  soft-threshold :math:`\hat W_g = x_g \max(0, 1 - τ ω_g / ‖x_g‖)` at
  :math:`τ = α_k λ / \sqrt{k}`; for ℓ1 the entrywise soft-threshold at
  :math:`τ`; unregularized leaves take :math:`\hat W = W^0 - V_k/\sqrt{k}`.

  Stages, restarts and the ramp of the averaging weight are those of
  :func:`ramda`: at each of `milestones` :math:`η ← γη` (γ = `decay`) and
  :math:`W^0 ← w;\ V, α, k ← 0`; on the :math:`r`-th step of the final stage
  (or from `ramp_start`) :math:`c = \min(c_0 \sqrt{r}, 1)`; without
  milestones and `ramp_start`, :math:`c = c_0` throughout.
  :func:`prox_iterate` returns :math:`\hat W` and :func:`restart` restarts the
  dual average by hand.

  Args:
    learning_rate: η, a float or a schedule of the step count. The paper uses
      0.1.
    momentum: c₀ ∈ (0, 1], the averaging weight (a float or a schedule);
      c = 1 means no averaging. The paper uses 0.1.
      Not MADGRAD's convention: ``optax.contrib.madgrad``'s `momentum` is
      1 − c₀ (its 0.9 is 0.1 here); a constant in (0.5, 1) warns.
    reg_strength: λ ≥ 0, a float or a schedule; or :func:`target_sparsity`,
      to give the fraction of the regularized groups to zero instead.
    regularizer: a spec tree that is a pytree prefix of the params with leaves
      :func:`group_lasso`, :func:`l1`, :func:`nuclear` or ``None``
      (unregularized), or a
      callable ``params -> spec tree``. ``None`` (default) leaves every
      parameter unregularized.
    milestones: step counts at which a new stage starts (strictly increasing).
    decay: γ ∈ (0, 1], the factor applied to η at each milestone.
    momentum_ramp: ramp the averaging weight (from the last milestone, or
      from `ramp_start`); ``False`` keeps c = c₀ throughout.
    ramp_start: N, the number of updates before the ramp (an integer ≥ 0):
      the (N+1)-th update is its first step, r = 1; ``None`` (default): at
      the last milestone, or no ramp without milestones.
    state_dtype: dtype of V, W⁰ and Ŵ; defaults to each parameter's dtype.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  .. warning::
    The emitted update is ``w_new - w``: RMDA must be the **last** transform
    of a chain, and ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> def loss(p):  # least squares; feature 2 of 3 is irrelevant
    ...   x = jnp.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ...   return jnp.sum((x @ p["w"] - jnp.array([[1.0], [2.0], [0.5]])) ** 2)
    >>> params = {"w": jnp.ones((3, 1))}
    >>> tx = oxr.rmda(0.02, momentum=0.1, reg_strength=1.0,
    ...               regularizer={"w": oxr.group_lasso(axes=(1,))},
    ...               ramp_start=50)  # r = 1 on update 51; c = 1 from update 150
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(200):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"][2] == 0  # the irrelevant input feature is exactly zero
    Array([ True], dtype=bool)

  References:
    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022.
  """
  return scale_by_rmda(
    learning_rate,
    momentum,
    reg_strength=reg_strength,
    regularizer=regularizer,
    milestones=milestones,
    decay=decay,
    momentum_ramp=momentum_ramp,
    ramp_start=ramp_start,
    state_dtype=state_dtype,
  )
