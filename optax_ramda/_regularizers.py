"""Regularizer specs, and spec trees that assign one to each parameter leaf.

A spec says which structure ψ pushes one leaf toward. A *spec tree* is a pytree
prefix of the parameters whose leaves are specs or ``None`` (unregularized): a
spec at an inner node applies to every parameter below it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _checks, _solvers, _ties

Shape: TypeAlias = tuple[int, ...]
KeyPath: TypeAlias = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Regularizer:
  """Base class of the regularizer specs. Subclasses are frozen dataclasses."""

  def check(self, shape: Shape, path: str) -> Regularizer:
    """Returns this spec resolved for a leaf of `shape`, or raises ValueError."""
    raise NotImplementedError

  def group_axes(self, ndim: int) -> tuple[int, ...]:
    """The axes one group spans on a leaf of rank `ndim` (after `check`)."""
    raise NotImplementedError

  def group_weight(self, shape: Shape) -> float:
    """ω_g, the weight of every group of a leaf of `shape` (after `check`)."""
    raise NotImplementedError

  def value(self, x: jax.Array) -> jax.Array:
    """ψ(x)/λ for one leaf."""
    norms = _solvers.group_norm(x, self.group_axes(x.ndim))
    return self.group_weight(x.shape) * jnp.sum(norms)

  def prox(
    self, x: jax.Array, threshold: jax.typing.ArrayLike, init: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """prox_{τψ̄}(x) = argmin_z ½‖z − x‖² + τ ψ̄(z), ψ̄ = ψ/λ; (z, iterations).

    The subproblem with D = I, which proximal gradient solves in one step;
    specs with a closed form override this. `init` is the warm start.
    """
    tau = jnp.asarray(threshold).astype(x.dtype)
    return self.solve(
      jnp.zeros_like(x),
      jnp.ones_like(x),
      x,
      tau,
      init.astype(x.dtype),
      solver="pg",
      max_iters=100,
      rtol=1e-8,
    )

  def solve(
    self,
    v: jax.Array,
    d: jax.Array,
    anchor: jax.Array,
    threshold: jax.typing.ArrayLike,
    init: jax.Array,
    *,
    solver: str,
    max_iters: jax.typing.ArrayLike,
    rtol: jax.typing.ArrayLike,
    stopping: str = "decrease",
    subgradient_tol: jax.typing.ArrayLike = 0.0,
  ) -> tuple[jax.Array, jax.Array]:
    """Solves the subproblem of one leaf; returns (z, iterations).

    `solver`, `max_iters`, `rtol`, `stopping` and `subgradient_tol` are those of
    :func:`solve_group_lasso`; a spec with its own solver may ignore them.
    """
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class GroupLasso(Regularizer):
  """Group lasso ψ(W) = λ Σ_g ω_g ‖W_g‖₂; use :func:`group_lasso` to build one.

  Attributes:
    axes: the axes that one group spans; the remaining axes index the groups.
    weight: ``"sqrt"`` for ω_g = √(group size), or a nonnegative float used for every
      group.
    tie: ``None``, or a key shared with the specs of other leaves: the group
      at each group index is then that index's entries in all of them.
  """

  axes: tuple[int, ...]
  weight: float | Literal["sqrt"] = "sqrt"
  tie: str | None = None

  def __repr__(self) -> str:
    tie = "" if self.tie is None else f", tie={self.tie!r}"
    return f"GroupLasso(axes={self.axes}, weight={self.weight!r}{tie})"

  def check(self, shape: Shape, path: str) -> GroupLasso:
    ndim = len(shape)
    if ndim == 0:
      raise ValueError(
        f"group_lasso(axes={self.axes}) was given to the scalar leaf {path}; "
        "a group lasso needs an array leaf."
      )
    try:
      axes = _solvers.normalize_axes(self.axes, ndim)
    except ValueError as e:
      raise ValueError(
        f"group_lasso(axes={self.axes}) does not fit the leaf {path} of shape "
        f"{shape}: {e}"
      ) from None
    return dataclasses.replace(self, axes=axes)

  def group_axes(self, ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in self.axes)

  def num_groups(self, shape: Shape) -> int:
    """The groups of a leaf of `shape`: the product of the axes not spanned."""
    span = self.group_axes(len(shape))
    return math.prod(d for a, d in enumerate(shape) if a not in span)

  def group_weight(self, shape: Shape) -> float:
    return _solvers.group_weight(shape, self.group_axes(len(shape)), self.weight)

  def prox(self, x, threshold, init):
    del init  # Closed form: block soft-thresholding at τω_g.
    cut = jnp.asarray(threshold).astype(x.dtype) * self.group_weight(x.shape)
    z = _solvers.block_soft_threshold(x, cut, self.group_axes(x.ndim))
    return z, jnp.zeros([], jnp.int32)

  def solve(
    self,
    v,
    d,
    anchor,
    threshold,
    init,
    *,
    solver,
    max_iters,
    rtol,
    stopping="decrease",
    subgradient_tol=0.0,
  ):
    return _solvers.solve_group_lasso(
      v,
      d,
      anchor,
      threshold,
      self.axes,
      self.weight,
      init=init,
      solver=solver,
      max_iters=max_iters,
      rtol=rtol,
      stopping=stopping,
      subgradient_tol=subgradient_tol,
    )


@dataclasses.dataclass(frozen=True)
class L1(Regularizer):
  """ℓ1 norm ψ(W) = λ Σ_i abs(W_i); use :func:`l1` to build one."""

  def check(self, shape: Shape, path: str) -> L1:
    del shape, path
    return self

  def group_axes(self, ndim: int) -> tuple[int, ...]:
    del ndim
    return ()

  def group_weight(self, shape: Shape) -> float:
    del shape
    return 1.0

  def prox(self, x, threshold, init):
    del init  # Closed form: soft-thresholding at τ.
    z = _solvers.soft_threshold(x, jnp.asarray(threshold).astype(x.dtype))
    return z, jnp.zeros([], jnp.int32)

  def solve(
    self,
    v,
    d,
    anchor,
    threshold,
    init,
    *,
    solver,
    max_iters,
    rtol,
    stopping="decrease",
    subgradient_tol=0.0,
  ):
    """The closed form (soft-thresholding, :func:`prox_l1`); 0 iterations.

    The solver options are accepted and not used: nothing is iterated.
    """
    del init, solver, max_iters, rtol, stopping, subgradient_tol  # Closed form.
    z = _solvers.prox_l1(v, d, anchor, threshold)
    return z, jnp.zeros([], jnp.int32)


@dataclasses.dataclass(frozen=True)
class Nuclear(Regularizer):
  """Nuclear norm ψ(W) = λ ‖W‖_* of a matrix; use :func:`nuclear` to build one.

  The subproblem has no closed form for a non-constant D: it is solved by
  :func:`solve_nuclear` (proximal gradient with singular-value
  soft-thresholding) with this spec's own `max_iters` and `rtol`, whatever the
  optimizer's `solver`, `max_iters` and `rtol` (which are tuned for the
  group lasso); the optimizer's `stopping` rule applies.

  Attributes:
    max_iters: the PG iteration cap (the authors use 5).
    rtol: the relative-decrease tolerance (the authors use 1e-3).
  """

  max_iters: int = 5
  rtol: float = 1e-3

  def check(self, shape: Shape, path: str) -> Nuclear:
    if len(shape) != 2:
      raise ValueError(
        f"nuclear() was given to the leaf {path} of shape {shape}; the nuclear "
        "norm needs a 2-D (matrix) leaf."
      )
    return self

  def group_axes(self, ndim: int) -> tuple[int, ...]:
    # ψ does not separate: the whole matrix is its only "group".
    return tuple(range(ndim))

  def group_weight(self, shape: Shape) -> float:
    del shape
    return 1.0

  def value(self, x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.linalg.svd(x, compute_uv=False))

  def solve(
    self,
    v,
    d,
    anchor,
    threshold,
    init,
    *,
    solver,
    max_iters,
    rtol,
    stopping="decrease",
    subgradient_tol=0.0,
  ):
    """Solves the nuclear-norm subproblem of one leaf; returns (z, iterations).

    Always proximal gradient (:func:`solve_nuclear`) with this spec's own
    `max_iters` and `rtol`: the optimizer's `solver`, `max_iters` and `rtol`
    are accepted and **not used**, because they configure the group-lasso
    solver (there is no ``"exact"`` solver for the nuclear norm, and each PG
    iteration here costs an SVD). One optimizer can thus combine
    ``solver="exact"`` for its group-lasso leaves with nuclear-norm leaves.
    `stopping` and `subgradient_tol` apply. To change the cap or the
    tolerance, build the spec with ``nuclear(max_iters=..., rtol=...)``.
    """
    del solver, max_iters, rtol  # PG with this spec's own cap and tolerance.
    return _solvers.solve_nuclear(
      v,
      d,
      anchor,
      threshold,
      init,
      self.max_iters,
      self.rtol,
      stopping=stopping,
      subgradient_tol=subgradient_tol,
    )


def group_lasso(
  axes: int | Sequence[int],
  weight: float | Literal["sqrt"] = "sqrt",
  *,
  tie: str | None = None,
) -> GroupLasso:
  """Group-lasso spec: ψ(W) = λ Σ_g ω_g ‖W_g‖₂ with groups spanning `axes`.

  With `tie`, every leaf whose spec carries the same key contributes to the
  same groups: the group at index i is the union of the entries at index i
  (over the axes not in `axes`) of all those leaves, so it is zero only when
  it is zero in every one of them. Tie the kernels that read the same input,
  such as attention's query, key and value, or an LSTM's gates, to zero input
  features that can be removed from all of them. The tied leaves need the
  same number of groups, the same dtype and the same `weight`; with
  ``"sqrt"``, ω_g is the square root of the joint group's size.

  Args:
    axes: the axes that one group spans; the remaining axes index the groups.
      For a Flax ``Dense`` kernel of shape (in, out), ``axes=(1,)`` makes one
      group per input feature (row), the paper's convention.
    weight: ``"sqrt"`` (default) for ω_g = √n_g with n_g the group size, or a
      nonnegative float used as ω_g for every group.
    tie: a key naming a set of leaves whose groups are joined (default: the
      leaf's groups are its own).

  Returns:
    A :class:`GroupLasso` spec, to be placed in a spec tree.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> oxr.group_lasso(axes=(1,))
    GroupLasso(axes=(1,), weight='sqrt')
    >>> params = {"q": jnp.array([[3.0], [0.0]]), "k": jnp.array([[4.0], [0.0]])}
    >>> tied = oxr.group_lasso(axes=(1,), tie="qk")  # row i of q and k: one group
    >>> oxr.regularizer_value(params, {"q": tied, "k": tied})  # √2 · ‖(3, 4)‖
    Array(7.071..., dtype=float32)
  """
  axes_tuple = (axes,) if isinstance(axes, int) else tuple(axes)
  if not axes_tuple:
    raise ValueError(
      "group_lasso needs at least one group axis; use l1() for entrywise sparsity."
    )
  if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes_tuple):
    raise ValueError(f"group_lasso axes must be integers, got {axes!r}.")
  if len(set(axes_tuple)) != len(axes_tuple):
    raise ValueError(f"group_lasso axes must be distinct, got {axes_tuple}.")
  if weight != "sqrt":
    if isinstance(weight, str) or not float(weight) >= 0:
      raise ValueError(
        f"group_lasso weight must be 'sqrt' or a float >= 0, got {weight!r}."
      )
    weight = float(weight)
  if tie is not None and (not isinstance(tie, str) or not tie):
    raise ValueError(f"group_lasso tie must be a nonempty string, got {tie!r}.")
  return GroupLasso(axes=axes_tuple, weight=weight, tie=tie)


def l1() -> L1:
  """ℓ1 spec: ψ(W) = λ Σ_i abs(W_i) (unstructured sparsity).

  Returns:
    An :class:`L1` spec, to be placed in a spec tree.

  Examples:
    >>> import optax_ramda as oxr
    >>> oxr.l1()
    L1()
  """
  return L1()


def nuclear(max_iters: int = 5, rtol: float = 1e-3) -> Nuclear:
  """Nuclear-norm spec for a matrix leaf: ψ(W) = λ ‖W‖_* (low rank).

  Args:
    max_iters: the cap on the proximal-gradient iterations of the subproblem;
      each one takes an SVD of the leaf. The default is the authors'.
    rtol: the relative-decrease tolerance of the subproblem's stopping rule.

  Returns:
    A :class:`Nuclear` spec, to be placed in a spec tree (2-D leaves only);
    :func:`sparsity` reports the rank of such leaves.

  Examples:
    >>> import optax_ramda as oxr
    >>> oxr.nuclear()
    Nuclear(max_iters=5, rtol=0.001)
  """
  _checks.check_max_iters(max_iters)
  _checks.check_nonnegative("rtol", rtol)
  return Nuclear(max_iters=int(max_iters), rtol=float(rtol))


SpecTree: TypeAlias = Any
RegularizerArg: TypeAlias = SpecTree | Callable[[Any], SpecTree]


def is_spec(x: Any) -> bool:
  """Whether `x` is a leaf of a spec tree (a spec or ``None``).

  Specs are dataclasses, and ``None`` is an empty pytree to JAX, so a plain
  ``jax.tree.map`` over a spec tree would skip the ``None`` entries (and
  fail to line up with the params). Pass ``is_leaf=is_spec`` to map over a
  spec tree, for example over the output of :func:`resolve_specs`, together
  with the params.

  Args:
    x: any object.

  Returns:
    ``True`` for a :class:`Regularizer` spec or ``None``, else ``False``.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> oxr.is_spec(oxr.l1()), oxr.is_spec(None), oxr.is_spec({"w": None})
    (True, True, False)
    >>> params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    >>> specs = oxr.resolve_specs({"w": oxr.group_lasso(axes=(1,)), "b": None}, params)
    >>> jax.tree.map(lambda s, p: s is not None, specs, params, is_leaf=oxr.is_spec)
    {'b': False, 'w': True}
  """
  return x is None or isinstance(x, Regularizer)


def _is_prefix(prefix: KeyPath, path: KeyPath) -> bool:
  return len(prefix) <= len(path) and tuple(path[: len(prefix)]) == tuple(prefix)


def resolve_specs(regularizer: RegularizerArg, params: Any) -> Any:
  """Broadcasts a spec tree (or callable) to one checked spec per param leaf.

  Args:
    regularizer: a spec tree that is a pytree prefix of `params` (leaves are
      specs or ``None``), or a callable ``params -> spec tree``.
    params: the parameters; arrays or anything with ``shape`` (e.g.
      ``jax.ShapeDtypeStruct``).

  Returns:
    A tree with the structure of `params` whose leaves are resolved specs or
    ``None``; map over it with ``is_leaf=is_spec``.

  Raises:
    ValueError: naming the leaf path, when the spec tree does not match the
      params or a spec does not fit its leaf.
  """
  param_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  if not param_leaves:
    # Nothing to regularize. `optax.tree_map_params` calls `init` on such a
    # leafless placeholder to find the params-shaped parts of a state.
    return jax.tree_util.tree_unflatten(treedef, [])
  specs = regularizer(params) if callable(regularizer) else regularizer
  spec_leaves = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)[0]
  for path, spec in spec_leaves:
    if not is_spec(spec):
      raise ValueError(
        f"The spec tree holds {spec!r} at {jax.tree_util.keystr(path)}; spec "
        "tree leaves must be regularizer specs (group_lasso(...), l1(), ...) "
        "or None."
      )
    if not any(_is_prefix(path, p) for p, _ in param_leaves):
      raise ValueError(
        f"The spec tree has an entry at {jax.tree_util.keystr(path)} that "
        "matches no parameter; the spec tree must be a prefix of the params "
        f"tree, whose leaves are at {[jax.tree_util.keystr(p) for p, _ in param_leaves]}."
      )
  resolved = []
  for path, leaf in param_leaves:
    matches = [spec for p, spec in spec_leaves if _is_prefix(p, path)]
    name = jax.tree_util.keystr(path) or "<root>"
    if not matches:
      raise ValueError(
        f"The parameter {name} has no entry in the spec tree; give it a spec "
        "or None (unregularized). The spec tree must be a prefix of the params."
      )
    spec = matches[0]
    if spec is not None:
      if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise ValueError(
          f"The parameter {name} has dtype {leaf.dtype}; a regularized leaf "
          "must be floating point."
        )
      spec = spec.check(tuple(leaf.shape), name)
    resolved.append(spec)
  _check_ties(resolved, param_leaves)
  return jax.tree_util.tree_unflatten(treedef, resolved)


def _check_ties(specs: list[Any], param_leaves: list[tuple[KeyPath, Any]]) -> None:
  """The leaves of each tie agree in group count, dtype and weight."""
  first: dict[str, tuple[str, int, Any, Any]] = {}
  for spec, (path, leaf) in zip(specs, param_leaves, strict=True):
    if not isinstance(spec, GroupLasso) or spec.tie is None:
      continue
    name = jax.tree_util.keystr(path) or "<root>"
    groups = spec.num_groups(tuple(leaf.shape))
    mine = (name, groups, jnp.dtype(leaf.dtype), spec.weight)
    other = first.setdefault(spec.tie, mine)
    for what, i in (("groups", 1), ("dtype", 2), ("weight", 3)):
      if mine[i] != other[i]:
        raise ValueError(
          f"The leaves {other[0]} and {name} are tied (tie={spec.tie!r}) but "
          f"differ in {what}: {other[i]} against {mine[i]}. Tied leaves need "
          "the same number of groups (the product of the axes a group does "
          "not span), the same dtype and the same weight."
        )


NO_PARAMS_MSG = (
  "This optimizer computes its new iterate from the parameters: call "
  "`update(updates, state, params)` with the current params."
)


def specs_at_init(regularizer: RegularizerArg, params: Any) -> Any:
  """The checks every optimizer's ``init`` runs; returns the resolved specs.

  Raises:
    ValueError: naming the leaf, for a non-floating parameter or a spec tree
      that does not fit the params (see :func:`resolve_specs`).
  """
  _checks.check_floating_params(params)
  return resolve_specs(regularizer, params)


def specs_at_update(regularizer: RegularizerArg, updates: Any, params: Any) -> Any:
  """The checks every optimizer's ``update`` runs; returns the resolved specs.

  Raises:
    ValueError: when `params` is missing (these optimizers compute the new
      iterate from it), or when `updates` do not match `params` leaf by leaf.
  """
  if params is None:
    raise ValueError(NO_PARAMS_MSG)
  _checks.check_same_structure(updates, params)
  return resolve_specs(regularizer, params)


def regularizer_value(params: optax.Params, regularizer: RegularizerArg) -> jax.Array:
  """ψ(params)/λ: the regularizer summed over the regularized leaves.

  Args:
    params: the parameters.
    regularizer: a spec tree or callable, as for :func:`resolve_specs`.

  Returns:
    A scalar.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> w = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    >>> oxr.regularizer_value(w, oxr.group_lasso(axes=(1,)))  # √2 · (5 + 0)
    Array(7.071..., dtype=float32)
  """
  specs = resolve_specs(regularizer, params)
  flat_specs, (flat_params,) = _ties.virtual(
    jax.tree.leaves(specs, is_leaf=is_spec), jax.tree.leaves(params)
  )
  values = [
    jnp.zeros([], p.dtype) if s is None else s.value(p)
    for s, p in zip(flat_specs, flat_params, strict=True)
  ]
  return optax.tree.sum(values)
