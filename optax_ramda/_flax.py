"""Flax presets: the paper's channel groups for every kernel of a model.

Flax stores every kernel with its output features last, but the remaining axes
differ by layer type, and the parameter tree does not record the type. The
presets decide each leaf's layout from its name, its rank and its sibling
``bias`` (or, given an ``nnx.Module``, from the layer types themselves), and
refuse to guess where those are ambiguous. Flax is imported only when a
module is passed in: ``optax_ramda`` does not depend on it.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any, Literal, NamedTuple, TypeAlias

import jax

from optax_ramda._regularizers import GroupLasso, group_lasso

Unknown: TypeAlias = Literal["raise", "skip"]

# Leaves that are never regularized: biases, norm scales, embeddings, and the
# batch statistics of a Linen ``variables`` dict.
_FREE_NAMES = frozenset({"bias", "scale", "embedding", "mean", "var"})
_KERNEL_NAMES = frozenset({"kernel", "lora_a", "lora_b"})
_ATTENTION_INPUTS = frozenset({"query", "key", "value"})


class _Layout(NamedTuple):
  """Which axes of a kernel index its input and its output features.

  A kernel maps the features at ``in_axes`` to those at ``out_axes``; any other
  axes (the spatial window of a convolution) are shared by both groupings.
  """

  in_axes: tuple[int, ...]
  out_axes: tuple[int, ...]


_FREE = _Layout((), ())  # Sentinel: an unregularized leaf.


def _dense_layout(ndim: int, num_in: int) -> _Layout:
  """DenseGeneral: (*in_features, *out_features) with `num_in` input axes."""
  return _Layout(tuple(range(num_in)), tuple(range(num_in, ndim)))


def _conv_layout(ndim: int, transposed: bool = False) -> _Layout:
  """Convolution: (*window, in, out), or (*window, out, in) if `transposed`."""
  a, b = ndim - 2, ndim - 1
  return _Layout((b,), (a,)) if transposed else _Layout((a,), (b,))


def _key_name(key: Any) -> Hashable:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return getattr(key, attr)
  return str(key)


def path_names(path: tuple[Any, ...]) -> tuple[Hashable, ...]:
  """The names along a key path, without the ``.value`` of an NNX Variable."""
  names = tuple(_key_name(k) for k in path)
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] == "value":
    names = names[:-1]
  return names


def is_variable(x: Any) -> bool:
  """Whether `x` is an ``nnx.Variable`` (False when flax is not imported)."""
  nnx = sys.modules.get("flax.nnx")
  return nnx is not None and isinstance(x, nnx.Variable)


def is_module(x: Any) -> bool:
  """Whether `x` is an ``nnx.Module`` (False when flax is not imported)."""
  nnx = sys.modules.get("flax.nnx")
  return nnx is not None and isinstance(x, nnx.Module)


def module_params(x: Any) -> Any:
  """``nnx.state(x, nnx.Param)`` for an ``nnx.Module``; anything else as is."""
  if not is_module(x):
    return x
  from flax import nnx

  return nnx.state(x, nnx.Param)


def _module_layouts(model: Any) -> dict[tuple[Hashable, ...], _Layout | None]:
  """Exact layouts of the kernels of an ``nnx.Module``, keyed by kernel path.

  ``None`` marks a kernel whose layer type is known but whose layout no rule
  covers (``Einsum``, a batched ``LinearGeneral``); kernels of other module
  types are left to the name rules.
  """
  from flax import nnx

  layouts: dict[tuple[Hashable, ...], _Layout | None] = {}
  for path, node in nnx.iter_graph(model):
    kernel = getattr(node, "kernel", None)
    if not isinstance(node, nnx.Module) or not isinstance(kernel, nnx.Param):
      continue
    ndim = len(kernel.shape)
    layout: _Layout | None
    if isinstance(node, nnx.Linear):
      layout = _dense_layout(ndim, 1)
    elif isinstance(node, nnx.ConvTranspose):
      layout = _conv_layout(ndim, transposed=bool(node.transpose_kernel))
    elif isinstance(node, nnx.Conv):
      layout = _conv_layout(ndim)
    elif isinstance(node, nnx.LinearGeneral) and not node.batch_axis:
      layout = _dense_layout(ndim, len(node.in_features))
    elif isinstance(node, (nnx.Einsum, nnx.LinearGeneral)):
      layout = None
    else:
      continue  # Other (user) modules: the name rules decide.
    layouts[(*path, "kernel")] = layout
  return layouts


def _named_layout(
  names: tuple[Hashable, ...],
  shape: tuple[int, ...],
  bias_shape: tuple[int, ...] | None,
) -> _Layout | None:
  """The layout rules of :func:`input_channel_groups` for one leaf."""
  name = names[-1] if names else ""
  module = str(names[-2]) if len(names) > 1 else ""
  ndim = len(shape)
  if name in _FREE_NAMES:
    return _FREE
  if name not in _KERNEL_NAMES or ndim < 2 or "einsum" in module.lower():
    return None
  if ndim == 2:
    return _dense_layout(2, 1)
  if ndim == 3 and module in _ATTENTION_INPUTS:
    return _dense_layout(3, 1)
  if ndim == 3 and module == "out":
    return _dense_layout(3, 2)
  if bias_shape is not None and len(bias_shape) >= 2:
    if tuple(shape[-len(bias_shape) :]) == tuple(bias_shape):
      return _dense_layout(ndim, ndim - len(bias_shape))
    return None
  lowered = module.lower()
  if "conv" in lowered or (ndim >= 4 and "general" not in lowered):
    return _conv_layout(ndim)
  return None


def _channel_groups(params: Any, unknown: Unknown, side: str, caller: str) -> Any:
  if unknown not in ("raise", "skip"):
    raise ValueError(f"`unknown` must be 'raise' or 'skip', got {unknown!r}.")
  exact = _module_layouts(params) if is_module(params) else {}
  params = module_params(params)
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)[0]
  shapes = {path_names(p): tuple(x.shape) for p, x in flat}

  def spec(path, leaf) -> GroupLasso | None:
    names = path_names(path)
    shape = tuple(leaf.shape)
    if names in exact:
      layout = exact[names]
    else:
      layout = _named_layout(names, shape, shapes.get((*names[:-1], "bias")))
    if layout is _FREE:
      return None
    if layout is None:
      if unknown == "skip":
        return None
      raise ValueError(
        f"{caller} cannot tell the layout of the parameter "
        f"{jax.tree_util.keystr(tuple(path))} of shape {shape}. Give this leaf "
        "an explicit spec (e.g. oxr.group_lasso(axes=...)) in a spec tree, pass "
        "the nnx.Module instead of its state so that layer types are known, or "
        f"use {caller}(..., unknown='skip') to leave such leaves unregularized."
      )
    # A group spans every axis except the ones indexing this side's features.
    keep = layout.in_axes if side == "in" else layout.out_axes
    return group_lasso(tuple(a for a in range(len(shape)) if a not in keep))

  return jax.tree_util.tree_map_with_path(spec, params, is_leaf=is_variable)


def input_channel_groups(params: Any, *, unknown: Unknown = "raise") -> Any:
  """Spec tree with one group per input feature/channel of every kernel.

  The paper's grouping (docs/algorithm.md#the-problem-and-the-regularizers):
  zeroing a group removes one input of a layer. Usable directly as
  ``regularizer=oxr.input_channel_groups``; it accepts Linen param dicts (or
  whole ``variables``), ``nnx.State`` trees with or without their ``.value``
  entries (``nnx.Optimizer`` passes both), and ``nnx.Module`` objects (whose
  types then decide every layout exactly).

  Rules, by leaf name and rank (spans = the axes one group spans):

  * ``bias``, ``scale``, ``embedding`` (norm layers, ``Embed``) and the batch
    statistics ``mean``, ``var``: unregularized (``None``).
  * rank-2 ``kernel`` (in, out) of ``Dense``/``Linear``, of the gates of
    ``LSTMCell``, ``OptimizedLSTMCell`` and ``GRUCell`` (input and recurrent
    kernels alike: a recurrent group is one hidden unit's feedback), and
    ``lora_a``/``lora_b``: spans (1,), one group per row.
  * rank-3 ``kernel`` under ``query``/``key``/``value`` (attention input
    projections, (in, heads, head_dim)): spans (1, 2), one input feature across
    all heads. Under ``out`` ((heads, head_dim, out)): spans (2,), one group per
    (head, head feature) pair, i.e. per input of the output projection (for
    whole-head groups, give ``group_lasso(axes=(1, 2))`` yourself).
  * a ``DenseGeneral``/``LinearGeneral`` kernel with a ``bias`` of rank r ≥ 2
    matching its trailing axes: the last r axes are its features; spans them.
  * convolutions (``Conv``, ``ConvTranspose`` with ``transpose_kernel=False``)
    ``(*window, in, out)``: spans every axis but ``in``: (0, 2) for 1-D, (0, 1, 3)
    for 2-D, (0, 1, 2, 4) for 3-D. Rank ≥ 4 kernels are taken as convolutions
    unless their module name contains ``general``; a rank-3 kernel only if its
    module name contains ``conv`` (e.g. Linen's ``Conv_0``), since a 1-D
    convolution and a ``DenseGeneral`` over two input axes look alike.
  * anything else (kernels of a module whose name contains ``einsum``, custom
    parameters, the rank-3 kernel of an ``nnx.Sequential``'s unnamed 1-D
    convolution) is ambiguous: raises
    ValueError naming the leaf, or is left unregularized with
    ``unknown="skip"``. Passing the ``nnx.Module`` resolves Linear, Conv,
    ConvTranspose and LinearGeneral kernels exactly, whatever their names.

  Rank-2 ``kernel`` leaves are taken as (in, out) whatever their module
  (``Einsum`` aside); a hand-written (out, in) matrix or an ``nnx.Einsum``
  under another name needs an explicit spec, or the module passed in.

  Args:
    params: Linen params/variables, an ``nnx.State``, or an ``nnx.Module``.
    unknown: ``"raise"`` (default) or ``"skip"``: what to do with a leaf whose
      layout the rules above do not determine.

  Returns:
    A spec tree with the structure of `params` (of ``nnx.state(model,
    nnx.Param)`` for a module): :func:`group_lasso` specs and ``None``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> params = {"Conv_0": {"kernel": jnp.zeros((3, 3, 1, 8)), "bias": jnp.zeros(8)},
    ...           "Dense_0": {"kernel": jnp.zeros((32, 10)), "bias": jnp.zeros(10)}}
    >>> specs = oxr.input_channel_groups(params)
    >>> specs["Conv_0"]["kernel"], specs["Dense_0"]["kernel"], specs["Dense_0"]["bias"]
    (GroupLasso(axes=(0, 1, 3), weight='sqrt'), GroupLasso(axes=(1,), weight='sqrt'), None)
  """
  return _channel_groups(params, unknown, "in", "input_channel_groups")


def output_channel_groups(params: Any, *, unknown: Unknown = "raise") -> Any:
  """Spec tree with one group per output feature/channel of every kernel.

  Zeroing a group removes one output unit of a layer (a column of a Dense
  kernel, a filter of a convolution). The layouts are decided exactly as in
  :func:`input_channel_groups`; a group then spans every axis but the output
  ones: (0,) for (in, out) kernels (also LSTM/GRU gates), (0, 1) for a 2-D
  convolution (0, 1, 2 for 3-D, 0 for 1-D), (0,) for attention
  ``query``/``key``/``value`` kernels (one group per (head, head feature)
  output) and (0, 1) for the attention ``out`` kernel. Biases, norm scales and
  embeddings stay unregularized.

  Args:
    params: Linen params/variables, an ``nnx.State``, or an ``nnx.Module``.
    unknown: ``"raise"`` (default) or ``"skip"``, as in
      :func:`input_channel_groups`.

  Returns:
    A spec tree with the structure of `params`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax_ramda as oxr
    >>> params = {"Conv_0": {"kernel": jnp.zeros((3, 3, 1, 8)), "bias": jnp.zeros(8)}}
    >>> oxr.output_channel_groups(params)["Conv_0"]["kernel"]
    GroupLasso(axes=(0, 1, 2), weight='sqrt')
  """
  return _channel_groups(params, unknown, "out", "output_channel_groups")
