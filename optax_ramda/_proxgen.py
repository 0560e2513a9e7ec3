"""ProxGen in its Adam form, "ProxAdamW" (docs/algorithm.md)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _checks, _solvers, _stages, _target
from optax_ramda._common import adam_moments, map_leaf_steps, zero_iterations
from optax_ramda._regularizers import (
  RegularizerArg,
  specs_at_init,
  specs_at_update,
)
from optax_ramda._solvers import Solver


class ScaleByProxgenState(NamedTuple):
  """State of :func:`scale_by_proxgen`; per-parameter fields mirror the params.

  Attributes:
    count: updates applied so far (t − 1 before the update); drives schedules
      and the bias corrections.
    mu: m, the first-moment EMA of the gradients.
    nu: v, the second-moment EMA of the gradients.
    iterations: per leaf, the inner solver's iteration count at the last step
      (0 for unregularized leaves and closed forms).
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


def scale_by_proxgen(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  solver: Solver = "exact",
  max_iters: int = 100,
  rtol: float = 1e-8,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The ProxGen transform; see :func:`proxgen` for the update rule and arguments.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose updates move the
    params to the new iterate; it must be the last transform of a chain.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_decay_rate("b1", b1)
  _checks.check_decay_rate("b2", b2)
  _checks.check_positive("eps", eps)
  _checks.check_nonnegative("reg_strength", reg_strength)
  _checks.check_max_iters(max_iters)
  _checks.check_nonnegative("rtol", rtol)
  _solvers.check_solver(solver)
  target = _target.resolve(reg_strength, (), "proxgen")
  state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)
  # λ = 0 given as a number: every leaf takes Adam's step, without the solver.
  unregularized = isinstance(reg_strength, (int, float)) and reg_strength == 0

  def init_fn(params):
    specs = specs_at_init(regularizer, params)  # Fail at init, naming the leaf.
    _target.check_groups(target, specs, params)
    return ScaleByProxgenState(
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
    a = lr * moments.inv_bc1  # a = η/(1 − β₁ᵗ)

    def metric(m, v):
      # P = √v/√(1 − β₂ᵗ) + ε, in float32 at least (the correction's dtype).
      p = jnp.sqrt(v) / moments.sqrt_bc2 + eps
      return (a * m).astype(p.dtype), p

    trees = (params, moments.mu, moments.nu)
    # Under a target, the quantile over the subproblems this step is about to solve.
    lam = _target.reg_strength_for(
      mode,
      reg_strength,
      target,
      state.count,
      state.reg_strength,
      lr,
      specs,
      lambda spec, w, m, v: (
        _target.leaf_scores(spec, *metric(m, v), w, w),
        _target.leaf_signal(spec, v),
      ),
      *trees,
    )
    threshold = lr * lam

    def leaf_step(spec, w, m, v):
      am, p = metric(m, v)
      if spec is None or unregularized:  # Plain Adam: w ← w − a·m/P.
        return _LeafStep((-am / p).astype(w.dtype), jnp.zeros([], jnp.int32))
      # min_z ⟨a·m, z − w⟩ + ½ Σ P_i (z_i − w_i)² + ηλ ψ̄(z), from z⁰ = w.
      z, iters = spec.solve(
        am, p, w, threshold, w, solver=solver, max_iters=max_iters, rtol=rtol
      )
      return _LeafStep(z.astype(w.dtype) - w, iters)

    steps = map_leaf_steps(leaf_step, _LeafStep, specs, *trees)
    new_state = ScaleByProxgenState(
      count=moments.count,
      mu=moments.mu,
      nu=moments.nu,
      iterations=steps.iterations,
      reg_strength=jnp.asarray(lam, state.reg_strength.dtype),
    )
    return steps.update, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def proxgen(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  solver: Solver = "exact",
  max_iters: int = 100,
  rtol: float = 1e-8,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ProxGen with Adam's preconditioner ("ProxAdamW").

  A proximal Adam: each step minimizes Adam's local quadratic model plus the
  regularizer, so regularized leaves land on exactly structured points. At
  step :math:`t` with gradient :math:`g` at the weights :math:`w`:

  .. math::

    m &← β_1 m + (1 - β_1) g, \qquad v ← β_2 v + (1 - β_2) g^2, \\
    a &= \frac{η}{1 - β_1^t}, \qquad
      P = \frac{\sqrt{v}}{\sqrt{1 - β_2^t}} + ε, \\
    w &← \arg\min_z ⟨a m, z - w⟩ + \tfrac12 \sum_i P_i (z_i - w_i)^2
      + η ψ(z),

  where :math:`η` is `learning_rate` (a schedule is allowed), :math:`β_1,
  β_2, ε` are `b1`, `b2`, `eps`, and :math:`ψ = λ ×` the leaf's regularizer
  with :math:`λ` = `reg_strength`. Unregularized leaves take the plain Adam
  step :math:`w ← w - a m / P`: with :math:`λ = 0` ProxGen is
  :func:`optax.adam`. The subproblem of a regularized leaf is solved by the
  shared solver (`solver`, `max_iters`, `rtol`, as for :func:`ramda`):
  exactly per group by default, or by proximal gradient warm-started at
  :math:`w`; ℓ1 has a closed form.

  Args:
    learning_rate: η, a float or a schedule of the step count. The paper uses
      1e-3.
    b1: β₁ ∈ [0, 1), the first-moment decay.
    b2: β₂ ∈ [0, 1), the second-moment decay.
    eps: ε > 0, added after the bias-corrected square root.
    reg_strength: λ ≥ 0, a float or a schedule; or :func:`target_sparsity`
      (with its `until`), to give the fraction of the regularized groups to
      zero instead.
    regularizer: a spec tree (or callable ``params -> spec tree``) as for
      :func:`ramda`; ``None`` (default) leaves every parameter unregularized.
    solver: the subproblem solver, as for :func:`ramda`: ``"exact"``
      (default; per-group Newton, ProxSSI's prox, see :func:`proxssi`),
      ``"exact_unrolled"`` (the same, fewest loop trips) or ``"pg"`` (the
      paper's proximal gradient and stopping rule).
    max_iters: the inner solver's iteration cap.
    rtol: the inner solver's tolerance.
    state_dtype: dtype of the moments; defaults to each parameter's dtype.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  .. warning::
    The emitted update is ``w_new - w``: ProxGen must be the **last**
    transform of a chain, and ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> def loss(p):  # least squares; feature 2 of 3 is irrelevant
    ...   x = jnp.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ...   return jnp.sum((x @ p["w"] - jnp.array([[1.0], [2.0], [0.5]])) ** 2)
    >>> params = {"w": jnp.ones((3, 1))}
    >>> tx = oxr.proxgen(0.1, reg_strength=0.1,
    ...                  regularizer={"w": oxr.group_lasso(axes=(1,))})
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(100):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"][2] == 0  # the irrelevant input feature is exactly zero
    Array([ True], dtype=bool)

  References:
    Yun, Lozano & Yang, `Adaptive Proximal Gradient Methods for Structured
    Neural Networks <https://openreview.net/forum?id=dI1mLsnHPNH>`_,
    NeurIPS 2021.
  """
  return scale_by_proxgen(
    learning_rate,
    b1,
    b2,
    eps,
    reg_strength=reg_strength,
    regularizer=regularizer,
    solver=solver,
    max_iters=max_iters,
    rtol=rtol,
    state_dtype=state_dtype,
  )
