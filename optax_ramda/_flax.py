"""Flax presets: the paper's channel groups for every kernel of a model.

Flax stores every kernel with its output features last, but the remaining axes
differ by layer type, and the parameter tree does not record the type. The
presets decide each leaf's layout from its name, its rank and its sibling
``bias`` (or, given an ``nnx.Module``, from the layer types themselves), and
refuse to guess where those are ambiguous. Flax is imported only when a
module is passed in: ``optax_ramda`` does not depend on it.
"""

from __future__ import annotations

import dataclasses
import itertools
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
# The gate kernels of Flax's LSTMCell, GRUCell and MGUCell (Linen and NNX; NNX
# spells the forget gate ``if_``): those that read the cell's input, and those
# that read its previous hidden state.
_GATE_INPUTS = frozenset({"ii", "if", "if_", "ig", "io", "ir", "iz", "in"})
_GATE_HIDDEN = frozenset({"hi", "hf", "hg", "ho", "hr", "hz", "hn"})


class _Layout(NamedTuple):
  """Which axes of a kernel index its input and its output features.

  A kernel maps the features at ``in_axes`` to those at ``out_axes``; any other
  axes (the spatial window of a convolution) are shared by both groupings.
  ``stack_axes`` index the layers of a stacked kernel (``nnx.vmap``,
  ``nnx.scan``, Linen's ``nn.scan``): each layer has its own groups.
  """

  in_axes: tuple[int, ...]
  out_axes: tuple[int, ...]
  stack_axes: tuple[int, ...] = ()


def _stacked(layout: _Layout, stack_axes: tuple[int, ...], ndim: int) -> _Layout:
  """`layout` of one layer, placed in an `ndim` kernel with layer axes `stack_axes`."""
  rest = [a for a in range(ndim) if a not in stack_axes]
  return _Layout(
    tuple(rest[a] for a in layout.in_axes),
    tuple(rest[a] for a in layout.out_axes),
    stack_axes,
  )


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


def _per_layer_shape(node: Any) -> tuple[int, ...] | None:
  """The kernel shape that a Flax NNX layer declares for one layer, if known."""
  from flax import nnx

  if isinstance(node, nnx.Linear):
    return (node.in_features, node.out_features)
  if isinstance(node, (nnx.Conv, nnx.ConvTranspose)):
    return tuple(node.kernel_shape)
  if isinstance(node, nnx.LinearGeneral) and not node.batch_axis:
    return (*node.in_features, *node.out_features)
  return None


def _place_layers(
  shape: tuple[int, ...], per_layer: tuple[int, ...]
) -> list[tuple[int, ...]]:
  """Every choice of layer axes whose removal from `shape` leaves `per_layer`."""
  extra = len(shape) - len(per_layer)
  if extra < 0:
    return []
  return [
    axes
    for axes in itertools.combinations(range(len(shape)), extra)
    if tuple(n for a, n in enumerate(shape) if a not in axes) == per_layer
  ]


def _module_layouts(model: Any) -> dict[tuple[Hashable, ...], _Layout | str]:
  """Exact layouts of the kernels of an ``nnx.Module``, keyed by kernel path.

  A kernel with more axes than its layer declares is stacked (``nnx.vmap`` or
  ``nnx.scan`` over the layer's construction): the extra axes index layers.
  Their places are where the kernel's shape (and its bias's, which the
  transforms stack at the same places) fits the layer's; when several fit,
  the kernel is refused.
  A string explains why a kernel whose layer type is known has no layout
  (``Einsum``, a batched ``LinearGeneral``, layer axes that could sit at
  several places); kernels of other module types are left to the name rules.
  """
  from flax import nnx

  layouts: dict[tuple[Hashable, ...], _Layout | str] = {}
  for path, node in nnx.iter_graph(model):
    kernel = getattr(node, "kernel", None)
    if not isinstance(node, nnx.Module) or not isinstance(kernel, nnx.Param):
      continue
    kind = type(node).__name__
    per_layer = _per_layer_shape(node)
    if isinstance(node, (nnx.Einsum, nnx.LinearGeneral)) and per_layer is None:
      layouts[(*path, "kernel")] = (
        f"an nnx.{kind} kernel: its axes follow the layer's "
        + ("einsum string" if kind == "Einsum" else "batch axes")
        + ", which no rule reads"
      )
      continue
    if per_layer is None:
      continue  # Other (user) modules: the name rules decide.
    ndim = len(per_layer)
    layout: _Layout
    if isinstance(node, nnx.ConvTranspose):
      layout = _conv_layout(ndim, transposed=bool(node.transpose_kernel))
    elif isinstance(node, nnx.Conv):
      layout = _conv_layout(ndim)
    elif isinstance(node, nnx.LinearGeneral):
      layout = _dense_layout(ndim, len(node.in_features))
    else:
      layout = _dense_layout(ndim, 1)  # Linear
    shape = tuple(kernel.shape)
    places = _place_layers(shape, per_layer)
    bias = getattr(node, "bias", None)
    if len(places) > 1 and isinstance(bias, nnx.Param):
      # vmap/scan insert the layer axes at the same places in every array of
      # the layer: the bias, shaped like the kernel's output axes, may tell.
      bias_places = _place_layers(
        tuple(bias.shape), tuple(per_layer[a] for a in layout.out_axes)
      )
      places = [p for p in places if p in bias_places]
    key = (*path, "kernel")
    if len(places) == 1:
      layouts[key] = _stacked(layout, places[0], len(shape))
    elif not places:
      layouts[key] = (
        f"an nnx.{kind} kernel whose shape does not contain the layer's {per_layer}"
      )
    else:
      layouts[key] = (
        f"an nnx.{kind} kernel stacked over layers (one layer's kernel is "
        f"{per_layer}), whose layer axes could be any of {places}; "
        + "; ".join(
          _stacking_hint(_stacked(layout, p, len(shape)), len(shape)) for p in places
        )
      )
  return layouts


def _named_layout(
  names: tuple[Hashable, ...],
  shape: tuple[int, ...],
  bias_shape: tuple[int, ...] | None,
) -> _Layout | str | None:
  """The layout rules of :func:`input_channel_groups` for one leaf.

  ``None``: no rule applies; a string: rules that disagree, explained.
  """
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
    return _layout_from_bias(names, shape, bias_shape)
  if module in _ATTENTION_INPUTS or module == "out":
    return None  # A stacked attention kernel without a bias: nothing tells.
  lowered = module.lower()
  if "conv" in lowered or (ndim >= 4 and "general" not in lowered):
    return _conv_layout(ndim)
  return None


def _layout_from_bias(
  names: tuple[Hashable, ...], shape: tuple[int, ...], bias_shape: tuple[int, ...]
) -> _Layout | str | None:
  """A kernel's layout from its bias of rank ≥ 2: its own, or stacked layers'.

  A layer's bias has the shape of its kernel's output axes (the trailing ones),
  so a bias of rank r ≥ 2 that matches the kernel's last r axes is that of a
  ``DenseGeneral``. A stacked layer's kernel is (*layers, *kernel) and its bias
  (*layers, *bias): the leading axes that both share index layers. When both
  readings fit (a layer count equal to a feature count), the leaf is refused.
  """
  m = len(bias_shape)
  readings: list[_Layout | str | None] = []
  if tuple(shape[-m:]) == tuple(bias_shape):
    readings.append(_dense_layout(len(shape), len(shape) - m))
  for s in range(1, m):
    if len(shape) - s < 2 or shape[:s] != bias_shape[:s]:
      continue
    if tuple(shape[len(shape) - (m - s) :]) != tuple(bias_shape[s:]):
      continue
    layer = _named_layout(names, shape[s:], bias_shape[s:])
    if isinstance(layer, _Layout) and layer is not _FREE:
      readings.append(_stacked(layer, tuple(range(s)), len(shape)))
  if len(readings) == 1:
    return readings[0]
  if not readings:
    return None
  stacked = [r for r in readings if isinstance(r, _Layout) and r.stack_axes]
  return (
    f"its bias {bias_shape} fits both a layer with {len(shape) - m} input "
    "axes and layers stacked along the leading axes (nnx.vmap/nnx.scan, "
    "nn.scan), which group differently; "
    + "; ".join(_stacking_hint(r, len(shape)) for r in stacked)
  )


def _group_axes(layout: _Layout, side: str, ndim: int) -> tuple[int, ...]:
  """The axes one group spans: all but this side's features and the layers."""
  keep = (layout.in_axes if side == "in" else layout.out_axes) + layout.stack_axes
  return tuple(a for a in range(ndim) if a not in keep)


def _stacking_hint(layout: _Layout, ndim: int) -> str:
  """How to write the spec of a kernel if its layer axes are as in `layout`."""
  return (
    f"if axes {layout.stack_axes} index stacked layers, the per-layer input "
    f"groups are oxr.group_lasso(axes={_group_axes(layout, 'in', ndim)}) and "
    f"the output groups oxr.group_lasso(axes={_group_axes(layout, 'out', ndim)})"
  )


def _check_not_a_count(params: Any, caller: str) -> None:
  """Refuses the step count that ``optax.inject_hyperparams`` passes a schedule."""
  if isinstance(params, jax.Array | int) or (
    hasattr(params, "shape") and hasattr(params, "dtype") and not params.shape
  ):
    raise ValueError(
      f"{caller} got a scalar ({params!r}) instead of params. Under "
      "optax.inject_hyperparams, which calls every callable hyperparameter as a "
      'schedule of the step count, pass `static_args=("regularizer",)`: e.g. '
      "optax.inject_hyperparams(oxr.ramda, "
      'static_args=("regularizer",))(learning_rate=..., '
      f"regularizer=oxr.{caller})."
    )


def _shared_input(names: tuple[Hashable, ...]) -> str | None:
  """The tie key of a kernel that reads the same input as its siblings, if any.

  Attention's query, key and value kernels under one module, and the input
  (or the recurrent) gate kernels of one recurrent cell.
  """
  if len(names) < 2 or names[-1] != "kernel":
    return None
  module = str(names[-2])
  if module in _ATTENTION_INPUTS:
    role = "q/k/v"
  elif module in _GATE_INPUTS:
    role = "input gates"
  elif module in _GATE_HIDDEN:
    role = "hidden gates"
  else:
    return None
  parent = "/".join(str(n) for n in names[:-2])
  return f"{parent} {role}" if parent else role


def _tie_shared_inputs(params: Any, specs: Any) -> Any:
  """`specs` with the kernels that share an input tied (:func:`_shared_input`).

  A set is tied only when its kernels (two or more) have the same number of
  groups and the same dtype, as a tie needs; otherwise they keep their own.
  """
  members: dict[str, list[tuple[int, Any]]] = {}
  flat_params = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)[0]
  flat_specs, treedef = jax.tree_util.tree_flatten(
    specs, is_leaf=lambda x: x is None or isinstance(x, GroupLasso)
  )
  keys = []
  for (path, leaf), spec in zip(flat_params, flat_specs, strict=True):
    key = None if spec is None else _shared_input(path_names(path))
    keys.append(key)
    if key is not None:
      groups = spec.num_groups(tuple(leaf.shape))
      members.setdefault(key, []).append((groups, jax.numpy.dtype(leaf.dtype)))
  tied = {k for k, m in members.items() if len(m) > 1 and len(set(m)) == 1}
  return jax.tree_util.tree_unflatten(
    treedef,
    [
      dataclasses.replace(spec, tie=key) if key in tied else spec
      for spec, key in zip(flat_specs, keys, strict=True)
    ],
  )


def _channel_groups(
  params: Any, unknown: Unknown, side: str, caller: str, tie: bool = False
) -> Any:
  if unknown not in ("raise", "skip"):
    raise ValueError(f"`unknown` must be 'raise' or 'skip', got {unknown!r}.")
  _check_not_a_count(params, caller)
  passed_module = is_module(params)
  exact = _module_layouts(params) if passed_module else {}
  params = module_params(params)
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)[0]
  shapes = {path_names(p): tuple(x.shape) for p, x in flat}

  def spec(path, leaf) -> GroupLasso | None:
    names = path_names(path)
    shape = tuple(leaf.shape)
    layout: _Layout | str | None
    if names in exact:
      layout = exact[names]
    else:
      layout = _named_layout(names, shape, shapes.get((*names[:-1], "bias")))
    if layout is _FREE:
      return None
    if isinstance(layout, _Layout):
      return group_lasso(_group_axes(layout, side, len(shape)))
    if unknown == "skip":
      return None
    where = f"the parameter {jax.tree_util.keystr(tuple(path))} of shape {shape}"
    why = f" ({layout})" if isinstance(layout, str) else ""
    module_hint = (
      ""
      if passed_module or names in exact
      else "pass the nnx.Module instead of its state so that layer types are known, "
    )
    raise ValueError(
      f"{caller} cannot tell the layout of {where}{why}. Give this leaf an "
      "explicit spec (e.g. oxr.group_lasso(axes=...)) in a spec tree, "
      f"{module_hint}or use {caller}(..., unknown='skip') to leave such leaves "
      "unregularized."
    )

  specs = jax.tree_util.tree_map_with_path(spec, params, is_leaf=is_variable)
  return _tie_shared_inputs(params, specs) if tie else specs


def input_channel_groups(
  params: Any, *, unknown: Unknown = "raise", tie: bool = False
) -> Any:
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

  Stacked layers (Flax's scan-over-layers pattern: ``nnx.vmap``/``nnx.scan``
  over a layer's construction, Linen's ``nn.scan``/``nn.vmap`` with
  ``variable_axes={"params": 0}``) keep L layers in one kernel with extra
  layer axes; each layer keeps its own groups, one per (layer, feature): a
  stacked ``Linear`` kernel (L, in, out) gets spans (2,), a stacked 2-D
  ``Conv`` (L, kh, kw, in, out) spans (1, 2, 4). Given the ``nnx.Module``, the
  layer axes are where the kernel's (and its bias's) shape fits the one the
  layer declares, wherever ``out_axes`` put them. Given a state or Linen
  params, a kernel ``(*layers, *k)`` is recognized from its bias ``(*layers, *b)``
  (the leading axes both share); a kernel whose bias fits both a single layer
  and a stack (a layer count equal to a feature count), a stacked attention
  kernel without a bias, or layer axes that could sit at several places, is
  refused with the spec to write for each reading, never misgrouped. A
  stacked kernel without a bias is read as an unstacked one of its rank: pass
  the module, or a spec, for those.

  Rank-2 ``kernel`` leaves are taken as (in, out) whatever their module
  (``Einsum`` aside); a hand-written (out, in) matrix or an ``nnx.Einsum``
  under another name needs an explicit spec, or the module passed in.

  With ``tie=True``, the kernels that read the same input are tied
  (``group_lasso(..., tie=key)``): an input feature's group is then its rows in
  all of them, zero only when the feature can be removed from the input. The
  sets: the ``query``/``key``/``value`` kernels of one attention module
  (self-attention: they read one input; in cross-attention the query reads
  another, and the tie only asks more of it than it needs), and the gate
  kernels of one ``LSTMCell``/``GRUCell``/``MGUCell`` that read its input
  (``ii``, ``if``, ``ig``, ``io``; ``ir``, ``iz``, ``in``) and those that read its
  previous hidden state (``hi``, ...). The key names the parent module and the
  set, e.g. ``"encoder/attention q/k/v"``; a set whose kernels differ in group
  count or dtype stays untied. Untied (the default), each kernel drops its
  own rows: more weights become zero at a given λ, and a layer that gathers
  each kernel's own inputs (the lm task's export does) uses them all, but a
  feature leaves the input only when it is zero in every kernel that reads
  it. For other shared inputs, tie the specs yourself.

  Args:
    params: Linen params/variables, an ``nnx.State``, or an ``nnx.Module``.
    unknown: ``"raise"`` (default) or ``"skip"``: what to do with a leaf whose
      layout the rules above do not determine.
    tie: whether to tie the kernels that read the same input (above).

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

    An attention block's query, key and value kernels, tied:

    >>> attention = {name: {"kernel": jnp.zeros((16, 4, 8))}
    ...              for name in ("query", "key", "value")}
    >>> oxr.input_channel_groups({"attention": attention}, tie=True)["attention"]["key"]
    {'kernel': GroupLasso(axes=(1, 2), weight='sqrt', tie='attention q/k/v')}
  """
  return _channel_groups(params, unknown, "in", "input_channel_groups", tie)


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
