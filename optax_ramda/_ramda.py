"""RAMDA: Regularized Adaptive Momentum Dual Averaging (docs/algorithm.md)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _checks, _common, _stages, _target
from optax_ramda._common import copy_as, cube_root, map_leaf_steps, zero_iterations
from optax_ramda._regularizers import (
  RegularizerArg,
  specs_at_init,
  specs_at_update,
)
from optax_ramda._solvers import (
  Solver,
  Stopping,
  WarmStart,
  check_solver,
  check_stopping,
  check_warm_start,
  subgradient_tolerance,
)


class ScaleByRamdaState(NamedTuple):
  """State of :func:`scale_by_ramda`; per-parameter fields mirror the params.

  Attributes:
    count: updates applied so far; drives schedules and milestones.
    stage_count: k, updates since the last (re)start of the dual average.
    alpha: α = Σ s_j over the current stage.
    grad_sum: V = Σ s_j g_j, the dual average.
    grad_sq_sum: U = Σ s_j g_j², the preconditioner's accumulator.
    anchor: W⁰, the centre of the subproblem (a copy, never the params buffer).
    prox: Ŵ, the last subproblem solution: exactly structured.
    iterations: per leaf, the inner solver's iteration count at the last step
      (0 for leaves solved in closed form).
    reg_strength: λ of the last update (chosen by the optimizer under
      :func:`target_sparsity`); 0 before the first. Read it with
      :func:`reg_strength`.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
  stage_count: jax.Array
  alpha: jax.Array
  grad_sum: optax.Updates
  grad_sq_sum: optax.Updates
  anchor: optax.Params
  prox: optax.Params
  iterations: Any
  reg_strength: jax.Array

  def restart(self, params: optax.Params) -> "ScaleByRamdaState":
    """Restarts the dual average at `params` (W⁰ ← params; V, U, α, k ← 0)."""
    return self._replace(
      stage_count=jnp.zeros_like(self.stage_count),
      alpha=jnp.zeros_like(self.alpha),
      grad_sum=optax.tree.zeros_like(self.grad_sum),
      grad_sq_sum=optax.tree.zeros_like(self.grad_sq_sum),
      anchor=jax.tree.map(lambda p, a: copy_as(p, a.dtype), params, self.anchor),
    )


class _LeafStep(NamedTuple):
  update: jax.Array
  grad_sum: jax.Array
  grad_sq_sum: jax.Array
  prox: jax.Array
  iterations: jax.Array


def scale_by_ramda(
  learning_rate: optax.ScalarOrSchedule,
  momentum: optax.ScalarOrSchedule = 0.1,
  eps: float = 1e-6,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  solver: Solver = "exact",
  max_iters: int = 100,
  rtol: float = 1e-8,
  stopping: Stopping = "decrease",
  subgradient_tol: float = 1e-5,
  warm_start: WarmStart = "params",
  milestones: tuple[int, ...] = (),
  decay: float = 0.1,
  momentum_ramp: bool = True,
  ramp_start: int | None = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
  """The RAMDA transform; see :func:`ramda` for the update rule and arguments.

  Returns:
    A :class:`optax.GradientTransformation` whose updates move the params to
    the new RAMDA iterate; it must be the last transform of a chain.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_unit_interval("momentum", momentum)
  _common.warn_madgrad_momentum(momentum)
  _checks.check_positive("eps", eps)
  _checks.check_nonnegative("reg_strength", reg_strength)
  _checks.check_max_iters(max_iters)
  _checks.check_nonnegative("rtol", rtol)
  check_stopping(stopping, subgradient_tol)
  _checks.check_unit_interval("decay", decay)
  milestones = _checks.check_milestones(milestones)
  ramp_start = _stages.ramp_start_of(
    momentum_ramp, _checks.check_ramp(momentum_ramp, ramp_start), milestones
  )
  check_solver(solver)
  check_warm_start(warm_start)
  target = _target.resolve(
    reg_strength, milestones, "ramda", _stages.full_weight_count(ramp_start, momentum)
  )
  state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)
  # λ = 0 given as a number: every leaf takes the closed form, in the same
  # fused pass as V and U (the solver's λ > 0 test would split it).
  unregularized = isinstance(reg_strength, (int, float)) and reg_strength == 0

  def init_fn(params):
    specs = specs_at_init(regularizer, params)  # Fail at init, naming the leaf.
    _target.check_groups(target, specs, params)
    return ScaleByRamdaState(
      count=jnp.zeros([], jnp.int32),
      stage_count=jnp.zeros([], jnp.int32),
      alpha=jnp.zeros([], float),
      grad_sum=optax.tree.zeros_like(params, dtype=state_dtype),
      grad_sq_sum=optax.tree.zeros_like(params, dtype=state_dtype),
      anchor=jax.tree.map(lambda p: copy_as(p, state_dtype or p.dtype), params),
      prox=jax.tree.map(lambda p: copy_as(p, state_dtype or p.dtype), params),
      iterations=zero_iterations(params),
      reg_strength=jnp.zeros([], float),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args  # Accepted, as optax.chain passes them to every transform.
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
    eps_t = jnp.asarray(eps, state.alpha.dtype) * stage_decay

    # Steps 1-3 of the RAMDA step: k ← k + 1, s = η√k, α ← α + s.
    k = state.stage_count + 1
    s = (lr * jnp.sqrt(k.astype(lr.dtype))).astype(state.alpha.dtype)
    alpha = state.alpha + s
    c = _stages.averaging_weight(_stages.value_at(momentum, count), count, ramp_start)

    def accumulate(g, v, u):
      sg = s * g  # U gains (s·g)·g: it overflows only where s·g² itself does.
      v = v + sg.astype(v.dtype)
      u = u + (sg * g).astype(u.dtype)
      return v, u, cube_root(u) + eps_t.astype(u.dtype)

    def warm(w, prox):
      return w if warm_start == "params" else prox

    def scores(spec, g, w, v, u, anchor, prox):
      v, u, d = accumulate(g, v, u)
      return (
        _target.leaf_scores(spec, v, d, anchor, warm(w, prox)),
        _target.leaf_signal(spec, u),
      )

    trees = (
      updates,
      params,
      state.grad_sum,
      state.grad_sq_sum,
      state.anchor,
      state.prox,
    )
    # Under a target, the quantile over the subproblems this step will solve.
    lam = _target.reg_strength_for(
      mode,
      reg_strength,
      target,
      count,
      state.reg_strength,
      alpha,
      specs,
      scores,
      *trees,
    )
    threshold = alpha * lam

    def leaf_step(spec, g, w, v, u, anchor, prox):
      v, u, d = accumulate(g, v, u)
      if spec is None or unregularized:
        z, iters = anchor - v / d, jnp.zeros([], jnp.int32)
      else:
        z, iters = spec.solve(
          v,
          d,
          anchor,
          threshold,
          warm(w, prox),
          solver=solver,
          max_iters=max_iters,
          rtol=rtol,
          stopping=stopping,
          subgradient_tol=subgradient_tolerance(subgradient_tol, alpha, k, g.size),
        )
      w_new = ((1 - c) * w + c * z).astype(w.dtype)
      return _LeafStep(w_new - w, v, u, z, iters)

    steps = map_leaf_steps(leaf_step, _LeafStep, specs, *trees)
    new_state = ScaleByRamdaState(
      count=optax.safe_increment(count),
      stage_count=k,
      alpha=alpha,
      grad_sum=steps.grad_sum,
      grad_sq_sum=steps.grad_sq_sum,
      anchor=state.anchor,
      prox=steps.prox,
      iterations=steps.iterations,
      reg_strength=jnp.asarray(lam, state.reg_strength.dtype),
    )
    return steps.update, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ramda(
  learning_rate: optax.ScalarOrSchedule,
  momentum: optax.ScalarOrSchedule = 0.1,
  eps: float = 1e-6,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  regularizer: RegularizerArg = None,
  solver: Solver = "exact",
  max_iters: int = 100,
  rtol: float = 1e-8,
  stopping: Stopping = "decrease",
  subgradient_tol: float = 1e-5,
  warm_start: WarmStart = "params",
  milestones: tuple[int, ...] = (),
  decay: float = 0.1,
  momentum_ramp: bool = True,
  ramp_start: int | None = None,
  state_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
  r"""Regularized Adaptive Momentum Dual Averaging (RAMDA).

  RAMDA trains a model whose weights come out *structured* (whole groups, such
  as the input features of a layer, exactly zero) with the accuracy of an
  adaptive method. Per parameter leaf, at step :math:`k` of the current stage
  with gradient :math:`g` taken at the current weights :math:`w`:

  .. math::

    s_k &= η \sqrt{k}, \qquad α_k = α_{k-1} + s_k, \\
    V_k &= V_{k-1} + s_k g, \qquad U_k = U_{k-1} + s_k g^2, \qquad
      D_k = \sqrt[3]{U_k} + ε, \\
    \hat W_k &≈ \arg\min_z ⟨V_k, z - W^0⟩ + \tfrac12 ‖z - W^0‖^2_{D_k}
      + α_k ψ(z), \\
    w &← (1 - c) w + c \hat W_k,

  where :math:`η` is `learning_rate`, :math:`c` the averaging weight
  (:math:`c_0` = `momentum`, ramped in the final stage, below),
  :math:`ε` is `eps`, :math:`ψ = λ ×` the leaf's regularizer with
  :math:`λ` = `reg_strength`, and :math:`W^0` the anchor: the weights at the
  start of the stage. Unregularized leaves
  take the closed form :math:`\hat W = W^0 - V/D`; regularized ones are solved
  by `solver`: exactly per group by default, or by proximal gradient
  warm-started at :math:`w` (or at the previous :math:`\hat W`, see
  `warm_start`). With :math:`λ = 0` and no milestones RAMDA is MADGRAD
  without weight decay: ``optax.contrib.madgrad(L, momentum=β, eps=e)``
  equals ``ramda(L + e, momentum=1 - β, eps=e)`` up to rounding (optax adds
  e to its learning rate).

  Stages: when the step count reaches one of `milestones`, :math:`η` and
  :math:`ε` are multiplied by `decay` and the dual average restarts at the
  current weights (:math:`W^0 ← w`; :math:`V, U, α, k ← 0`).

  The ramp: the model weights :math:`w` average the :math:`\hat W_k`, so they
  become exactly structured only once :math:`c` reaches one. On the
  :math:`r`-th step of the ramp (:math:`r = 1, 2, …`) the averaging weight is
  :math:`c = \min(c_0 \sqrt{r}, 1)`: the first step still uses :math:`c_0`,
  and :math:`c = 1` from its :math:`⌈1/c_0^2⌉`-th step on. With milestones the ramp
  runs through the final stage (after the last milestone), as in the paper;
  without milestones there is no final stage and :math:`c` stays
  :math:`c_0`, so that with :math:`λ = 0` RAMDA is MADGRAD. When the learning
  rate follows an Optax schedule instead of milestones, `ramp_start` starts
  the ramp after a given number of updates. At any time :func:`prox_iterate` returns
  :math:`\hat W` from the state.

  Args:
    learning_rate: η, a float or a schedule of the step count.
    momentum: c₀ ∈ (0, 1], the averaging weight (a float or a schedule),
      the weight of the new point; c = 1 means no averaging. The paper uses
      0.01 to 0.1. Not MADGRAD's convention: ``optax.contrib.madgrad``'s
      `momentum` is 1 − c₀ (its 0.9 is 0.1 here); a constant in (0.5, 1)
      warns.
    eps: ε > 0 added to the cube root of U.
    reg_strength: λ ≥ 0, a float or a schedule; or :func:`target_sparsity`,
      to give the fraction of the regularized groups to zero instead, with λ
      chosen each step until c first reaches one in the final stage (see
      there; read λ with :func:`reg_strength`).
    regularizer: a spec tree that is a pytree prefix of the params with leaves
      :func:`group_lasso`, :func:`l1`, :func:`nuclear` (2-D leaves) or
      ``None`` (unregularized), or a
      callable ``params -> spec tree`` such as :func:`input_channel_groups`
      (under ``optax.inject_hyperparams``, which takes callables for
      schedules, pass ``static_args=("regularizer",)``).
      ``None`` (default) leaves every parameter unregularized.
    solver: ``"exact"`` (default): per-group safeguarded Newton on the
      secular equation, exact to machine precision, so the paper's inexactness
      condition (7) holds for every ε; ``"pg"``: the authors' proximal gradient
      and stopping rule, iterate for iterate (see :func:`solve_group_lasso`);
      ``"exact_unrolled"``: the exact solution with the fewest loop trips
      (what ``"exact"`` runs off CPU). Nuclear-norm leaves always use their
      own PG.
    max_iters: the ``"pg"`` solver's iteration cap.
    rtol: the ``"pg"`` solver's relative-decrease tolerance.
    stopping: the ``"pg"`` solver's stopping rule: ``"decrease"`` (the
      authors', with `rtol`) or ``"subgradient"``, after the paper's
      condition (7): on a leaf of n entries, a subgradient of the subproblem
      divided by α of norm at most ε_k = ν√n·k^(−0.51) (ν =
      `subgradient_tol`), and no increase over the warm start. Applying
      ε_k to the subproblem divided by α is the library's interpretation
      (the paper states (7) for the unscaled subproblem); see
      :func:`subgradient_tolerance` and docs/algorithm.md#the-subproblem.
    subgradient_tol: ν of ``stopping="subgradient"``, a bound on the
      root-mean-square subgradient entry at k = 1, in the units of a
      gradient entry; in the solver study of BENCHMARKS.md the default was
      about as accurate as the ``"decrease"`` rule early in training.
    warm_start: where the iterative solvers (``"pg"``, and the nuclear
      spec's PG) start: ``"params"``, the current weights w (the authors'
      choice; float64 runs reproduce their iterates), or ``"prox"``, the last
      subproblem solution Ŵ (kept in the state). ``"exact"`` and the closed
      forms ignore it. In the solver study of BENCHMARKS.md, ``"prox"`` cut
      PG's iterations 1.9–2.7× early in training at equal or better accuracy,
      but only 1.4–1.6× over whole runs, so ``"params"`` stays the default.
    milestones: step counts at which a new stage starts (strictly increasing).
    decay: γ ∈ (0, 1], the factor applied to η and ε at each milestone.
    momentum_ramp: ramp the averaging weight (from the last milestone, or
      from `ramp_start`); ``False`` keeps c = c₀ throughout.
    ramp_start: N, the number of updates before the ramp (an integer ≥ 0):
      the (N+1)-th update is its first step, r = 1; ``None`` (default): at
      the last milestone, or no ramp without milestones.
    state_dtype: dtype of V, U, W⁰ and Ŵ; defaults to each parameter's dtype.

  Returns:
    A :class:`optax.GradientTransformation`.

  .. warning::
    The emitted update is ``w_new - w``: RAMDA must be the **last** transform
    of a chain, and ``update`` needs ``params``. A transform after it changes
    the step it took, so the weights no longer follow the update rule above
    and the zeroed groups are not exactly zero. In the example below, with
    ``optax.scale(0.5)`` appended, the weights go half way to the new iterate
    each step: after 100 steps the irrelevant weight is 7.9e-31 instead of 0,
    and the others, (0.552, 0.275), are not Ŵ (0.543, 0.267); with
    ``optax.add_decayed_weights(1e-2)`` appended, w = (0.385, 0.127, 0) while
    Ŵ = (0.377, 0.122, 0). Put clipping, weight decay and any other
    gradient transform *before* RAMDA.

  .. note::
    Non-finite gradients are never hidden: a NaN or inf entry makes its group
    (its entry, for ℓ1) of the weights non-finite, however large λ. To skip such
    steps, wrap the optimizer or the whole chain:
    ``optax.apply_if_finite(oxr.ramda(...), max_consecutive_errors=5)`` leaves
    the params and the state unchanged on a step with a non-finite gradient.
    For float16 or bfloat16 params, pass ``state_dtype=jnp.float32``: in
    float16, U = Σ s g² underflows and overflows; in bfloat16 it keeps 8 bits.
    See ROBUSTNESS.md.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> def loss(p):  # least squares; feature 2 of 3 is irrelevant
    ...   x = jnp.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ...   return jnp.sum((x @ p["w"] - jnp.array([[1.0], [2.0], [0.5]])) ** 2)
    >>> params = {"w": jnp.ones((3, 1))}
    >>> tx = optax.chain(
    ...     optax.clip_by_global_norm(10.0),
    ...     oxr.ramda(0.1, momentum=1.0, reg_strength=0.1,
    ...               regularizer={"w": oxr.group_lasso(axes=(1,))}))
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(loss)(params), state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   params, state = step(params, state)
    >>> params["w"][2] == 0  # the irrelevant input feature is exactly zero
    Array([ True], dtype=bool)

  References:
    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural Network
    <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.

    Defazio & Jelassi, `Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization
    <https://arxiv.org/abs/2101.11075>`_, 2021 (MADGRAD, the λ = 0 case).
  """
  return scale_by_ramda(
    learning_rate,
    momentum,
    eps,
    reg_strength=reg_strength,
    regularizer=regularizer,
    solver=solver,
    max_iters=max_iters,
    rtol=rtol,
    stopping=stopping,
    subgradient_tol=subgradient_tol,
    warm_start=warm_start,
    milestones=milestones,
    decay=decay,
    momentum_ramp=momentum_ramp,
    ramp_start=ramp_start,
    state_dtype=state_dtype,
  )


def prox_iterate(state: optax.OptState) -> optax.Params:
  """Ŵ, the last subproblem solution, from a (possibly chained) state.

  Ŵ is exactly structured from early in training, while the averaged weights
  only become so once the averaging weight reaches one; evaluate or export Ŵ
  to see the structure the method has found.

  Args:
    state: the state of :func:`ramda` or of a chain or wrapper containing it.

  Returns:
    A params-shaped tree.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import optax_ramda as oxr
    >>> tx = optax.chain(optax.clip(1.0), oxr.ramda(1e-2))
    >>> state = tx.init({"w": jnp.ones(3)})
    >>> oxr.prox_iterate(state)["w"]
    Array([1., 1., 1.], dtype=float32)
  """
  found = optax.tree.get_all_with_path(state, "prox")
  if len(found) != 1:
    raise ValueError(
      "prox_iterate needs a state holding exactly one RAMDA-type state, found "
      f"{len(found)}."
    )
  return found[0][1]


def restart(state: optax.OptState, params: optax.Params) -> optax.OptState:
  """Restarts the dual average at `params` by hand: W⁰ ← params; V, U, α, k ← 0.

  Unlike a milestone, it does not decay η or ε: the step count, and with it
  the learning-rate stage, is kept, and so is Ŵ.

  Args:
    state: the state of :func:`ramda` (or of a chain or wrapper containing it).
    params: the current parameters.

  Returns:
    The state with every dual-averaging sub-state restarted.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> tx = oxr.ramda(1e-2)
    >>> state = tx.init({"w": jnp.zeros(2)})
    >>> state = oxr.restart(state, {"w": jnp.ones(2)})
    >>> state.anchor["w"]
    Array([1., 1.], dtype=float32)
  """

  def is_restartable(x):
    return isinstance(x, tuple) and callable(getattr(type(x), "restart", None))

  return jax.tree.map(
    lambda s: s.restart(params) if is_restartable(s) else s,
    state,
    is_leaf=is_restartable,
  )


class Subproblem(NamedTuple):
  """The subproblem of RAMDA's last step; params-shaped trees and a scalar.

  Attributes:
    v: V, the dual average.
    d: D = ∛U + ε, the preconditioner (the stage's ε, RAMDA's cube root).
    anchor: W⁰, the anchor.
    threshold: τ = α·λ, the scalar that multiplies each leaf's ψ/λ.
  """

  v: optax.Updates
  d: optax.Updates
  anchor: optax.Params
  threshold: jax.Array


def subproblem(
  state: optax.OptState,
  eps: float = 1e-6,
  *,
  reg_strength: optax.ScalarOrSchedule | _target.TargetSparsity = 0.0,
  milestones: tuple[int, ...] = (),
  decay: float = 0.1,
) -> Subproblem:
  r"""The subproblem that RAMDA's last update solved, from its state.

  .. math::

    \hat W ≈ \arg\min_z ⟨V, z - W^0⟩ + \tfrac12 ‖z - W^0‖^2_D + τ ψ(z)/λ,
    \qquad D = \sqrt[3]{U} + ε γ^{\text{stage}}, \quad τ = α λ,

  computed as :func:`ramda` computes it (its cube root, the ε of the stage of
  the last step). Pass the `eps`, `reg_strength`, `milestones` and `decay`
  that the optimizer was built with. Feed a leaf to :func:`solve_group_lasso`
  (``v, d, anchor, threshold``) to study the solvers on real subproblems. To
  reproduce the update's Ŵ with the inexact ``"pg"`` solver, also pass
  ``init=`` the params *before* that update (the warm start of
  ``warm_start="params"``; the previous Ŵ for ``warm_start="prox"``).

  Args:
    state: the state of :func:`ramda` after at least one update (or of a chain
      or wrapper containing exactly one RAMDA state).
    eps: ε of the optimizer.
    reg_strength: λ of the optimizer, a float or a schedule; for a
      :func:`target_sparsity`, the λ of the last update, kept in the state.
    milestones: the optimizer's milestones.
    decay: the optimizer's γ.

  Returns:
    A :class:`Subproblem`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> spec = oxr.group_lasso(axes=(1,))
    >>> tx = oxr.ramda(0.1, eps=1e-6, reg_strength=0.5, regularizer=spec)
    >>> w = jnp.ones((2, 2))
    >>> _, state = tx.update(jnp.array([[1.0, 1.0], [-8.0, 8.0]]), tx.init(w), w)
    >>> sub = oxr.subproblem(state, 1e-6, reg_strength=0.5)
    >>> sub.d  # ∛(s g²) + ε with s = η√1 = 0.1
    Array([[0.464..., 0.464...],
           [1.856..., 1.856...]], dtype=float32)
    >>> z, _ = oxr.solve_group_lasso(
    ...     sub.v, sub.d, sub.anchor, sub.threshold, (1,), solver="exact")
    >>> bool(jnp.all(z == oxr.prox_iterate(state)))  # the Ŵ of the update
    True
  """
  found = [
    s
    for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScaleByRamdaState))
    if isinstance(s, ScaleByRamdaState)
  ]
  if len(found) != 1:
    raise ValueError(
      f"subproblem needs a state holding exactly one RAMDA state, found {len(found)}."
    )
  ramda_state = found[0]
  milestones = _checks.check_milestones(milestones)
  last = jnp.maximum(ramda_state.count - 1, 0)  # The count of the last update.
  dtype = ramda_state.alpha.dtype
  stage = _stages.stage_of(last, milestones)
  eps_t = jnp.asarray(eps, dtype) * jnp.asarray(decay, dtype) ** stage
  d = jax.tree.map(
    lambda u: cube_root(u) + eps_t.astype(u.dtype), ramda_state.grad_sq_sum
  )
  if isinstance(reg_strength, _target.TargetSparsity):
    lam = ramda_state.reg_strength
  else:
    lam = _stages.value_at(reg_strength, last)
  threshold = ramda_state.alpha * lam
  return Subproblem(ramda_state.grad_sum, d, ramda_state.anchor, threshold)
