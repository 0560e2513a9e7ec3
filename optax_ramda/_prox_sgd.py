"""ProxSGD: proximal SGD with momentum, unit step (docs/algorithm.md)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _checks, _stages, _target
from optax_ramda._common import map_leaf_steps, zero_iterations
from optax_ramda._regularizers import (
  RegularizerArg,
  specs_at_init,
  specs_at_update,
)


class ScaleByProxSgdState(NamedTuple):
  """State of :func:`scale_by_prox_sgd`; per-parameter fields mirror the params.

  Attributes:
    count: updates applied so far; drives schedules.
    trace: b, the momentum buffer (an EMA of the gradients).
    iterations: per leaf, the inner solver's iteration count at the last step
      (0 for the closed forms of group lasso and ℓ1).
    reg_strength: λ of the last update (chosen by the optimizer under
      :func:`target_sparsity`); 0 before the first.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
  trace: optax.Updates
  iterations: Any
  reg_strength: jax.Array


class _LeafStep(NamedTuple):
  update: jax.Array
  iterations: jax.Array


def scale_by_prox_sgd(
  learning_rate: optax.ScalarOrSchedule,
  momentum: optax.ScalarOrSchedule = 0.1,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The ProxSGD transform; see :func:`prox_sgd` for the update rule and arguments.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose updates move the
    params to the new iterate; it must be the last transform of a chain.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_unit_interval("momentum", momentum)
  _checks.check_nonnegative("reg_strength", reg_strength)
  target = _target.resolve(reg_strength, (), "prox_sgd")
  state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)

  def init_fn(params):
    specs = specs_at_init(regularizer, params)  # Fail at init, naming the leaf.
    _target.check_groups(target, specs, params)
    return ScaleByProxSgdState(
      count=jnp.zeros([], jnp.int32),
      trace=optax.tree.zeros_like(params, dtype=state_dtype),
      iterations=zero_iterations(params),
      reg_strength=jnp.zeros([], float),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    return _target.dispatch(target, state.count, step, updates, state, params)

  def step(updates, state, params, mode):
    specs = specs_at_update(regularizer, updates, params)
    lr = _stages.value_at(learning_rate, state.count)
    c = _stages.value_at(momentum, state.count)
    # b ← (1 − c)b + c·g from b = 0: the first step gives b = c·g.
    trace = jax.tree.map(
      lambda g, b: ((1 - c) * b + c * g).astype(b.dtype), updates, state.trace
    )
    trees = (params, trace)
    # Under a target, the quantile over this step's prox arguments x, in the metric I.
    lam = _target.reg_strength_for(
      mode,
      reg_strength,
      target,
      state.count,
      state.reg_strength,
      lr,
      specs,
      lambda spec, w, b: (
        _target.leaf_scores(spec, 0, 1, w - lr * b, w),
        _target.leaf_signal(spec, b),
      ),
      *trees,
    )
    threshold = lr * lam

    def leaf_step(spec, w, b):
      x = w - lr * b  # In float32 at least, so bf16 params lose no more.
      if spec is None:
        z, iters = x, jnp.zeros([], jnp.int32)
      else:
        z, iters = spec.prox(x, threshold, w)
      return _LeafStep(z.astype(w.dtype) - w, iters)

    steps = map_leaf_steps(leaf_step, _LeafStep, specs, *trees)
    new_state = ScaleByProxSgdState(
      count=optax.safe_increment(state.count),
      trace=trace,
      iterations=steps.iterations,
      reg_strength=jnp.asarray(lam, state.reg_strength.dtype),
    )
    return steps.update, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def prox_sgd(
  learning_rate: optax.ScalarOrSchedule,
  momentum: optax.ScalarOrSchedule = 0.1,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal stochastic gradient with momentum (ProxSGD), unit step.

  A momentum SGD step followed by the regularizer's proximal operator, which
  puts regularized leaves on exactly structured points. With gradient
  :math:`g` at the weights :math:`w` (the buffer starts at :math:`b = 0`, so
  the first step sets :math:`b = c g`):

  .. math::

    b &← (1 - c) b + c g, \\
    w &← \operatorname{prox}_{ηψ}(w - η b),

  where :math:`η` is `learning_rate`, :math:`c` is `momentum` and
  :math:`ψ = λ ×` the leaf's regularizer with :math:`λ` = `reg_strength`. The
  prox is the block soft-threshold at :math:`ηλω_g` for a group lasso, the
  soft-threshold at :math:`ηλ` for ℓ1, and the identity for unregularized
  leaves. With :math:`λ = 0` this is :func:`optax.sgd` with learning rate
  :math:`ηc` and momentum :math:`1 - c`.

  Args:
    learning_rate: η, a float or a schedule of the step count. The paper uses
      0.1.
    momentum: c ∈ (0, 1], the weight of the new gradient in the buffer (a
      float or a schedule); c = 1 is plain proximal SGD.
    reg_strength: λ ≥ 0, a float or a schedule; or :func:`target_sparsity`
      (with its `until`), to give the fraction of the regularized groups to
      zero instead.
    regularizer: a spec tree (or callable ``params -> spec tree``) as for
      :func:`ramda`; ``None`` (default) leaves every parameter unregularized.
    state_dtype: dtype of the momentum buffer; defaults to each parameter's
      dtype.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  .. warning::
    The emitted update is ``w_new - w``: ProxSGD must be the **last**
    transform of a chain, and ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> def loss(p):  # least squares; feature 2 of 3 is irrelevant
    ...   x = jnp.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ...   return jnp.sum((x @ p["w"] - jnp.array([[1.0], [2.0], [0.5]])) ** 2)
    >>> params = {"w": jnp.ones((3, 1))}
    >>> tx = oxr.prox_sgd(0.05, reg_strength=0.2,
    ...                   regularizer={"w": oxr.group_lasso(axes=(1,))})
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(200):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"][2] == 0  # the irrelevant input feature is exactly zero
    Array([ True], dtype=bool)

  References:
    Yang, Yuan, Stańczak & Zhu, `ProxSGD: Training Structured Neural Networks
    under Regularization and Constraints
    <https://openreview.net/forum?id=HygpthEtvr>`_, ICLR 2020.
  """
  return scale_by_prox_sgd(
    learning_rate,
    momentum,
    reg_strength=reg_strength,
    regularizer=regularizer,
    state_dtype=state_dtype,
  )
