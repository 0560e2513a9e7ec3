"""ProxSSI: an Adam step, then the exact weighted proximal step (docs/algorithm.md)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _checks, _stages, _target
from optax_ramda._common import adam_moments, map_leaf_steps, zero_iterations
from optax_ramda._regularizers import (
  RegularizerArg,
  specs_at_init,
  specs_at_update,
)


class ScaleByProxssiState(NamedTuple):
  """State of :func:`scale_by_proxssi`; per-parameter fields mirror the params.

  Attributes:
    count: updates applied so far (t − 1 before the update); drives schedules
      and the bias corrections.
    mu: m, the first-moment EMA of the gradients.
    nu: v, the second-moment EMA of the gradients.
    iterations: per leaf, the Newton evaluations of the slowest group at the
      last step (0 for unregularized leaves, ℓ1 and closed forms).
    reg_strength: λ of the last update (chosen by the optimizer under
      :func:`target_sparsity`); 0 before the first.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
  mu: optax.Updates
  nu: optax.Updates
  iterations: Any
  reg_strength: jax.Array


class _LeafStep(NamedTuple):
  update: jax.Array
  iterations: jax.Array


def scale_by_proxssi(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-6,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The ProxSSI transform; see :func:`proxssi` for the update rule and arguments.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose updates move the
    params to the new iterate; it must be the last transform of a chain.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_decay_rate("b1", b1)
  _checks.check_decay_rate("b2", b2)
  _checks.check_positive("eps", eps)
  _checks.check_nonnegative("reg_strength", reg_strength)
  target = _target.resolve(reg_strength, (), "proxssi")
  state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)

  def init_fn(params):
    specs = specs_at_init(regularizer, params)  # Fail at init, naming the leaf.
    _target.check_groups(target, specs, params)
    return ScaleByProxssiState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=state_dtype),
      nu=optax.tree.zeros_like(params, dtype=state_dtype),
      iterations=zero_iterations(params),
      reg_strength=jnp.zeros([], float),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    return _target.dispatch(target, state.count, step, updates, state, params)

  def step(updates, state, params, mode):
    specs = specs_at_update(regularizer, updates, params)
    lr = _stages.value_at(learning_rate, state.count)
    moments = adam_moments(updates, state.count, state.mu, state.nu, b1, b2)
    # The authors' Adam step (Hugging Face AdamW style): the bias corrections
    # go into the step size, and ε is added to the *uncorrected* root.
    step_size = lr * moments.sqrt_bc2 * moments.inv_bc1

    def adam_step(w, m, v):
      # The uncorrected metric √v + ε, in float32 at least (as w − x is).
      p = jnp.sqrt(v.astype(jnp.promote_types(v.dtype, jnp.float32))) + eps
      return w - (step_size * (m / p)).astype(p.dtype), p

    trees = (params, moments.mu, moments.nu)
    # Under a target, the quantile over this step's weighted prox: b = p∘x.
    lam = _target.reg_strength_for(
      mode,
      reg_strength,
      target,
      state.count,
      state.reg_strength,
      lr,
      specs,
      lambda spec, w, m, v: (
        _target.leaf_scores(spec, 0, *adam_step(w, m, v)[::-1], w),
        _target.leaf_signal(spec, v),
      ),
      *trees,
    )
    threshold = lr * lam

    def leaf_step(spec, w, m, v):
      x, p = adam_step(w, m, v)
      if spec is None:
        return _LeafStep((x - w).astype(w.dtype), jnp.zeros([], jnp.int32))
      # The weighted prox: argmin_z ½ Σ p_i (z_i − x_i)² + ηλ ψ̄(z), which is
      # the shared subproblem with V = 0, D = p and anchor x. For a group lasso
      # "exact" is the per-group Newton on the secular equation; a spec without
      # it (nuclear) runs its iterative solver, warm-started at w: the solution
      # is near w, not x, once the iterates settle.
      z, iters = spec.solve(
        jnp.zeros_like(x), p, x, threshold, w, solver="exact", max_iters=100, rtol=1e-8
      )
      return _LeafStep(z.astype(w.dtype) - w, iters)

    steps = map_leaf_steps(leaf_step, _LeafStep, specs, *trees)
    new_state = ScaleByProxssiState(
      count=moments.count,
      mu=moments.mu,
      nu=moments.nu,
      iterations=steps.iterations,
      reg_strength=jnp.asarray(lam, state.reg_strength.dtype),
    )
    return steps.update, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def proxssi(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-6,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ProxSSI: Adam with an exact weighted proximal step.

  An Adam step followed by the proximal operator of the regularizer in the
  metric of Adam's preconditioner, as Deleu & Bengio's code (and the RAMDA
  authors' experiments) run it. At step :math:`t` with gradient :math:`g` at
  the weights :math:`w`:

  .. math::

    m &← β_1 m + (1 - β_1) g, \qquad v ← β_2 v + (1 - β_2) g^2, \qquad
      p = \sqrt{v} + ε, \\
    x &= w - η \frac{\sqrt{1 - β_2^t}}{1 - β_1^t} \frac{m}{p}, \\
    w &← \arg\min_z \tfrac12 \sum_i p_i (z_i - x_i)^2 + η ψ(z),

  where :math:`η` is `learning_rate` (a schedule is allowed), :math:`β_1,
  β_2, ε` are `b1`, `b2`, `eps`, and :math:`ψ = λ ×` the leaf's regularizer
  with :math:`λ` = `reg_strength`. Unlike :func:`proxgen`, ε is added to the
  *uncorrected* root (as in Hugging Face's AdamW) and the prox uses the
  uncorrected metric :math:`p`: early in training the threshold is
  :math:`1/\sqrt{1 - β_2^t}` times stronger than ProxGen's (31.6× at
  :math:`t = 1` with :math:`β_2 = 0.999`). For a group lasso the weighted prox
  is :math:`z_g = p_g x_g / (p_g + μ_g)` with :math:`μ_g` the root of the
  secular equation :math:`μ ‖p_g x_g / (p_g + μ)‖ = ηλω_g` (zero groups when
  :math:`‖p_g x_g‖ ≤ ηλω_g`), found to machine precision by the shared
  ``"exact"`` solver (safeguarded Newton, see :func:`solve_group_lasso`); for
  ℓ1 it is the soft-threshold of :math:`x_i` at :math:`ηλ/p_i`; other specs
  (:func:`nuclear`) use their own iterative solver, warm-started at :math:`w`.
  Unregularized leaves take the Adam step :math:`w ← x`.

  Args:
    learning_rate: η, a float or a schedule of the step count.
    b1: β₁ ∈ [0, 1), the first-moment decay.
    b2: β₂ ∈ [0, 1), the second-moment decay.
    eps: ε > 0, added to the uncorrected square root √v.
    reg_strength: λ ≥ 0, a float or a schedule; or :func:`target_sparsity`
      (with its `until`), to give the fraction of the regularized groups to
      zero instead.
    regularizer: a spec tree (or callable ``params -> spec tree``) as for
      :func:`ramda`; ``None`` (default) leaves every parameter unregularized.
    state_dtype: dtype of the moments; defaults to each parameter's dtype.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  .. warning::
    The emitted update is ``w_new - w``: ProxSSI must be the **last**
    transform of a chain, and ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> def loss(p):  # least squares; feature 2 of 3 is irrelevant
    ...   x = jnp.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ...   return jnp.sum((x @ p["w"] - jnp.array([[1.0], [2.0], [0.5]])) ** 2)
    >>> params = {"w": jnp.ones((3, 1))}
    >>> tx = oxr.proxssi(0.1, reg_strength=0.1,
    ...                  regularizer={"w": oxr.group_lasso(axes=(1,))})
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(100):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"][2] == 0  # the irrelevant input feature is exactly zero
    Array([ True], dtype=bool)

  References:
    Deleu & Bengio, `Structured Sparsity Inducing Adaptive Optimizers for Deep
    Learning <https://arxiv.org/abs/2102.03869>`_, 2021.
  """
  return scale_by_proxssi(
    learning_rate,
    b1,
    b2,
    eps,
    reg_strength=reg_strength,
    regularizer=regularizer,
    state_dtype=state_dtype,
  )
