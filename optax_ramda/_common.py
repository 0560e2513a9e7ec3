"""Helpers that every optimizer of the package shares.

The optimizers are per-leaf maps: each one resolves its regularizer specs,
runs a step function on every parameter leaf, and collects the leaves' results
(the update, the new state fields, the inner iteration count) into trees. The
pieces of that pattern, and the numerical building blocks the optimizers share
(the copy that may be donated, the cube root, Adam's moments), live here.
"""

import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from optax_ramda import _ties
from optax_ramda._regularizers import is_spec


def warn_madgrad_momentum(momentum: Any) -> None:
  """Warns when a constant c₀ looks like a momentum in MADGRAD's convention.

  Our `momentum` is c₀, the weight of the new iterate in w ← (1 − c)w + cz
  (0.01 to 0.1 in the paper); ``optax.contrib.madgrad``'s is 1 − c₀ (0.9
  there is 0.1 here). A value in (0.5, 1) almost switches the averaging off
  (c = 1 from the ramp's second step), which c₀ = 1 does deliberately.
  """
  if callable(momentum):
    return
  try:
    c0 = float(momentum)
  except jax.errors.ConcretizationTypeError:
    return  # traced, e.g. injected by optax.inject_hyperparams: not a constant
  if 0.5 < c0 < 1:
    warnings.warn(
      f"momentum={c0:g} is c₀, the weight of the new iterate in "
      "w ← (1 − c)·w + c·ẑ, not MADGRAD's or SGD's momentum: "
      f"optax.contrib.madgrad(momentum={c0:g}) corresponds to "
      f"momentum={1 - c0:.3g} here (the paper uses 0.01 to 0.1). Pass "
      "momentum=1.0 to switch the averaging off deliberately.",
      UserWarning,
      stacklevel=_caller_level(),
    )


def _caller_level() -> int:
  """The ``stacklevel`` of the first frame outside this package (the user's)."""
  package = __file__.rsplit("/", 1)[0]
  frame, level = sys._getframe(1), 1
  while frame is not None and frame.f_code.co_filename.startswith(package):
    frame, level = frame.f_back, level + 1  # type: ignore[assignment]
  return level


def copy_as(x: jax.Array, dtype: jax.typing.DTypeLike) -> jax.Array:
  """A fresh copy of `x` in `dtype`: never an alias, so it can be donated."""
  if isinstance(x, jax.ShapeDtypeStruct):
    raise ValueError(
      "This optimizer's state holds a copy of the params, and a "
      "jax.ShapeDtypeStruct has no values to copy; for an abstract state use "
      "jax.eval_shape(tx.init, params)."
    )
  # Under jit this copy takes the sharding of `x`; eagerly, jnp.array keeps it.
  return jnp.array(x, dtype=dtype, copy=True)


def _is_box(x: Any) -> bool:
  """Whether `x` is a Flax box: a Linen ``AxisMetadata`` or an ``nnx.Variable``.

  Checked through ``sys.modules``: when Flax is not imported, no box exists.
  """
  meta = sys.modules.get("flax.core.meta")
  nnx = sys.modules.get("flax.nnx")
  return (meta is not None and isinstance(x, meta.AxisMetadata)) or (
    nnx is not None and isinstance(x, nnx.Variable)
  )


def _plain(x: Any) -> Any:
  """The one array inside a Flax box (or `x` itself): no sharding metadata."""
  return jax.tree.leaves(x)[0] if _is_box(x) else x


# Per-leaf scalars of the states (the inner iteration counts) are plain arrays,
# never boxes: a Flax box carries its kernel's sharding names (Linen's
# ``nn.Partitioned``, NNX's ``out_sharding``), which a rank-0 array cannot
# follow (``nn.get_partition_spec`` → ``jit(out_shardings=...)`` and
# ``nnx.Optimizer`` under a mesh both fail). Plain scalars are replicated.
PLAIN_FIELDS = ("iterations",)


def zero_iterations(params: optax.Params) -> Any:
  """The initial per-leaf inner iteration counts: an int32 zero per leaf.

  Params-shaped, but a Flax box (Linen ``nn.Partitioned``, ``nnx.Variable``)
  becomes a plain, replicated scalar rather than a box around one.
  """
  return jax.tree.map(lambda _: jnp.zeros([], jnp.int32), params, is_leaf=_is_box)


def unzip_steps(steps: Any, step_type: Any) -> Any:
  """A params-shaped tree of `step_type` NamedTuples → a `step_type` of trees.

  Unlike ``jax.tree.transpose``, this also works for params without leaves
  (``{}``, or what ``optax.partition`` hands an optimizer with nothing to do).
  The fields named in ``PLAIN_FIELDS`` come out without Flax boxes, as
  :func:`zero_iterations` builds them.
  """

  def is_step(x):
    return isinstance(x, step_type)

  def field(i, name):
    tree = jax.tree.map(lambda step: step[i], steps, is_leaf=is_step)
    if name in PLAIN_FIELDS:
      tree = jax.tree.map(_plain, tree, is_leaf=_is_box)
    return tree

  return step_type(*(field(i, name) for i, name in enumerate(step_type._fields)))


def map_leaf_steps(
  leaf_step: Callable[..., Any], step_type: Any, specs: Any, *trees: Any
) -> Any:
  """Runs ``leaf_step(spec, *leaves)`` on every leaf and unzips the results.

  Leaves whose group lasso specs are tied (``group_lasso(..., tie=key)``) are
  stepped together, as one virtual leaf whose groups are the joint ones (see
  ``_ties``): `leaf_step` must be elementwise apart from its spec's solve or
  prox, which holds for every optimizer here.

  Args:
    leaf_step: the per-leaf step; returns a `step_type` NamedTuple of arrays
      (params-shaped, or scalars such as an iteration count).
    step_type: the NamedTuple class of the per-leaf results.
    specs: the resolved spec tree (a spec or ``None`` per params leaf).
    *trees: params-shaped trees whose leaves are passed after the spec.

  Returns:
    A `step_type` whose fields are params-shaped trees.
  """
  flat_specs, treedef = jax.tree.flatten(specs, is_leaf=is_spec)
  treedef = cast(Any, treedef)  # jax's stub types it as an optional PyTreeDef.
  flat_trees = [treedef.flatten_up_to(tree) for tree in trees]
  steps = _ties.map_virtual(leaf_step, flat_specs, *flat_trees)
  return unzip_steps(treedef.unflatten(steps), step_type)


def cube_root(u: jax.Array) -> jax.Array:
  """∛u for u ≥ 0 (+0 → +0, inf → inf, NaN → NaN), to within 1 ulp.

  On XLA:CPU ``jnp.cbrt`` takes 30-40× the time of an elementwise multiply,
  and ``exp(log(u)/3)`` still dominated a RAMDA (and a MADGRAD) step on CPU.
  Here the exponent bits divided by 3 give a start within ~6 %, and Newton
  steps on y³ = u (quadratic: 3 in float32, 4 in float64) reach ≤ 1 ulp over
  the normal range with only multiplies and one division per step: ~2× faster
  than ``exp(log(u)/3)`` and ~10× faster than ``jnp.cbrt`` on CPU in float32
  (see BENCHMARKS.md). Subnormal u (flushed to zero on CPU) are returned as
  they are. Narrow floats are computed in float32.
  """
  x = u.astype(jnp.promote_types(u.dtype, jnp.float32))
  if x.dtype == jnp.float64:
    int_type, magic, steps = jnp.int64, 0x2A9F7893782DA1CE, 4
  else:
    int_type, magic, steps = jnp.int32, 0x2A5137A0, 3
  # Outside the normal range the iteration runs on garbage (0 stays 2/3 of the
  # start, inf becomes NaN) and the final select returns x itself; no select on
  # the input, which XLA:CPU would write out as an extra pass.
  y = jax.lax.bitcast_convert_type(
    jax.lax.bitcast_convert_type(x, int_type) // 3 + magic, x.dtype
  )
  for _ in range(steps):
    y = y - (y - x / jnp.square(y)) / 3
  normal = (x >= jnp.finfo(x.dtype).tiny) & (x < jnp.inf)
  return jnp.where(normal, y, x).astype(u.dtype)


class AdamMoments(NamedTuple):
  """Adam's moments after one more gradient, and their bias corrections.

  Attributes:
    count: t, the step number of this update (1 on the first).
    mu: m ← β₁m + (1 − β₁)g.
    nu: v ← β₂v + (1 − β₂)g².
    inv_bc1: 1/(1 − β₁ᵗ), the first moment's bias correction.
    sqrt_bc2: √(1 − β₂ᵗ), the root of the second moment's.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
  mu: optax.Updates
  nu: optax.Updates
  inv_bc1: jax.Array
  sqrt_bc2: jax.Array


def adam_moments(
  updates: optax.Updates, count: jax.Array, mu: Any, nu: Any, b1: Any, b2: Any
) -> AdamMoments:
  """Adam's moment updates shared by ProxGen and ProxSSI.

  The preconditioners (which differ between the two methods) are formed
  leaf by leaf in each optimizer's step, so that no parameter-sized
  temporary is held for the whole tree.

  Args:
    updates: the gradients g.
    count: the number of updates applied so far (t − 1).
    mu: the first moments m.
    nu: the second moments v.
    b1: β₁.
    b2: β₂.

  Returns:
    The :class:`AdamMoments` of step t.
  """
  t = optax.safe_increment(count)
  mu = optax.tree.update_moment(updates, mu, b1, 1)
  # g² in the wider of the gradient and moment dtypes: a float16 g² is flushed
  # to 0 for |g| ≲ 8e-3, which leaves P = ε and a step of a·m/ε.
  wide = jax.tree.map(
    lambda g, v: g.astype(jnp.promote_types(g.dtype, v.dtype)), updates, nu
  )
  nu = optax.tree.update_moment_per_elem_norm(wide, nu, b2, 2)
  tf = t.astype(jnp.result_type(float))
  inv_bc1 = 1 / (1 - jnp.asarray(b1, tf.dtype) ** tf)
  sqrt_bc2 = jnp.sqrt(1 - jnp.asarray(b2, tf.dtype) ** tf)
  return AdamMoments(t, mu, nu, inv_bc1, sqrt_bc2)
