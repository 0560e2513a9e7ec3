"""Structured pruning export: the smaller network that a group-sparse one implies.

When the input group of feature ``c`` of a layer is zero (the paper's grouping,
:func:`input_channel_groups`), what feeds that input never reaches the output:
the previous layer's output channel ``c`` (kernel column or filter, bias entry)
and the per-channel parameters between the two (BatchNorm) can be removed along
with the zero rows, and the network computes the same function. The functions
here do that for plain layer chains and report what it saved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

_Kind = Literal["weight", "channelwise", "mixing", "fn"]


@dataclasses.dataclass(frozen=True)
class PruningReport:
  """What :func:`prune_input_channels` (or :func:`prune_linen_params`) removed.

  Attributes:
    widths_before: output features of each Linear/Dense/Conv layer, in order.
    widths_after: the same after pruning.
    kept: per Linear/Dense/Conv layer, the indices of its kept output channels.
    kept_inputs: the kept indices of the model input's last axis (all of them
      unless ``prune_inputs=True``): the pruned model takes
      ``x[..., kept_inputs]``.
    params_before: trainable parameter count of the original model.
    params_after: the same for the pruned model.
    flops_before: FLOPs per example of the Linear/Dense/Conv layers, counted
      as 2 × multiply-accumulates (biases, norms and activations excluded).
    flops_after: the same for the pruned model.
  """

  widths_before: tuple[int, ...]
  widths_after: tuple[int, ...]
  kept: tuple[np.ndarray, ...]
  kept_inputs: np.ndarray
  params_before: int
  params_after: int
  flops_before: int
  flops_after: int

  @property
  def param_reduction(self) -> float:
    """The fraction of parameters removed."""
    return 1 - self.params_after / self.params_before if self.params_before else 0.0

  @property
  def flop_reduction(self) -> float:
    """The fraction of FLOPs removed."""
    return 1 - self.flops_after / self.flops_before if self.flops_before else 0.0

  def __str__(self) -> str:
    return (
      f"widths {list(self.widths_before)} -> {list(self.widths_after)}, "
      f"inputs {self.kept_inputs.size}; "
      f"params {self.params_before} -> {self.params_after} "
      f"(-{100 * self.param_reduction:.1f}%), "
      f"FLOPs/example {self.flops_before} -> {self.flops_after} "
      f"(-{100 * self.flop_reduction:.1f}%)"
    )


@dataclasses.dataclass
class _Item:
  """One element of a layer chain, as the planner sees it."""

  kind: _Kind
  label: str
  kernel: np.ndarray | None = None  # weight layers: (*window, in, out)
  features: int | None = None  # channelwise and mixing layers


@dataclasses.dataclass
class _Plan:
  kept_inputs: np.ndarray  # kept entries of the input's last axis
  kept_out: list[np.ndarray]  # per weight layer: kept output channels
  kept_rows: list[np.ndarray]  # per weight layer: kept input rows
  kept_features: dict[int, np.ndarray]  # per channelwise item: kept features


def _zero_rows(kernel: np.ndarray) -> np.ndarray:
  """Whether each input row (axis -2) of a (*window, in, out) kernel is zero."""
  axes = tuple(a for a in range(kernel.ndim) if a != kernel.ndim - 2)
  return np.all(kernel == 0, axis=axes)


def _plan(items: Sequence[_Item], input_features: int, prune_inputs: bool) -> _Plan:
  """Decides what every layer keeps; shared by the NNX and Linen front ends.

  Boundary j is the input of weight layer j; its channels are the outputs of
  weight layer j − 1 (the model input for j = 0). A channel is dropped when
  every row of layer j that reads it is zero.
  """
  weights = [i for i, item in enumerate(items) if item.kind == "weight"]
  if not weights:
    raise ValueError("The model has no Linear/Dense/Conv layer to prune.")
  kernels = [items[i].kernel for i in weights]
  keeps: list[np.ndarray] = []
  kept_rows: list[np.ndarray] = []
  kept_features: dict[int, np.ndarray] = {}
  for j, (w, kernel) in enumerate(zip(weights, kernels, strict=True)):
    assert kernel is not None
    label = items[w].label
    rows = kernel.shape[-2]
    zero = _zero_rows(kernel)
    if j == 0:
      if prune_inputs and rows != input_features:
        raise ValueError(
          f"prune_inputs=True needs the first layer {label} to read the model "
          f"input's last axis ({input_features} features) directly, but it has "
          f"{rows} input features."
        )
      channels = rows
      dead = zero if prune_inputs else np.zeros(rows, bool)
    else:
      previous = kernels[j - 1]
      assert previous is not None
      channels = previous.shape[-1]
      if rows == channels:
        dead = zero
      elif rows % channels == 0 and kernel.ndim == 2:
        # A channels-last feature map flattened in C order: row r reads
        # channel r % C, so a channel is dead when all of its rows are zero.
        dead = np.all(zero.reshape(rows // channels, channels), axis=0)
      else:
        raise ValueError(
          f"Cannot match the {rows} input features of {label} to the "
          f"{channels} output channels of {items[weights[j - 1]].label}: only "
          "equal counts, or a flattened channels-last feature map (a multiple, "
          "into a Dense/Linear layer), are supported."
        )
    keep = np.flatnonzero(~dead)
    if keep.size == 0:
      keep = np.arange(1)  # Keep one (zero-weight) channel: no zero-width layers.
    keeps.append(keep)
    tiles = np.arange(rows // channels)[:, None] * channels
    kept_rows.append((tiles + keep).reshape(-1))
    start = weights[j - 1] + 1 if j else 0
    for i in range(start, w):
      item = items[i]
      if item.kind == "mixing" and keep.size < channels:
        raise ValueError(
          f"{item.label} mixes features, so dropping the zero-weight channels "
          f"before {label} would change its output; pruning through it is not "
          "supported."
        )
      if item.kind != "channelwise":
        continue
      if item.features == channels:
        kept_features[i] = keep
      elif item.features == rows:
        kept_features[i] = kept_rows[-1]
      else:
        raise ValueError(
          f"{item.label} has {item.features} features, matching neither the "
          f"{channels} channels nor the {rows} input features of {label}."
        )
  last = kernels[-1]
  assert last is not None
  kept_out = [*keeps[1:], np.arange(last.shape[-1])]
  kept_inputs = keeps[0] if prune_inputs else np.arange(input_features)
  return _Plan(kept_inputs, kept_out, kept_rows, kept_features)


# Slicing runs in NumPy: an export step, where eager JAX ops would only add
# one compilation per shape.
def _take(x: Any, keep: np.ndarray, axis: int = -1) -> jax.Array:
  return jnp.asarray(np.take(np.asarray(x), keep, axis=axis))


def _slice_kernel(kernel: Any, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  return _take(np.take(np.asarray(kernel), rows, axis=-2), cols)


def _flops(kernels: Sequence[Any], positions: Sequence[int]) -> int:
  """2 × multiply-accumulates per example of kernels applied at `positions`."""
  return sum(
    2 * math.prod(k.shape) * p for k, p in zip(kernels, positions, strict=True)
  )


def _size(tree: Any) -> int:
  return sum(np.size(x) for x in jax.tree.leaves(tree))


def _positions(output_shape: Sequence[int]) -> int:
  """Output positions per example: all axes but the batch and the features."""
  return math.prod(output_shape[1:-1])


def _nnx_item(layer: Any, index: int) -> _Item:
  from flax import nnx

  label = f"layer {index} ({type(layer).__name__})"
  if isinstance(layer, nnx.Linear):
    return _Item("weight", label, np.asarray(layer.kernel[...]))
  if isinstance(layer, nnx.Conv):
    if layer.feature_group_count != 1 or layer.mask is not None:
      raise ValueError(
        f"{label}: grouped or masked convolutions are not supported by pruning."
      )
    return _Item("weight", label, np.asarray(layer.kernel[...]))
  if isinstance(layer, nnx.BatchNorm):
    if layer.axis not in (-1,):
      raise ValueError(f"{label}: only BatchNorm over the last axis is supported.")
    return _Item("channelwise", label, features=layer.num_features)
  if isinstance(layer, (nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm)):
    return _Item("mixing", label)
  if isinstance(layer, nnx.Dropout):
    return _Item("fn", label)
  if isinstance(layer, nnx.Module):
    raise ValueError(
      f"{label} is not supported by pruning: layer chains may hold nnx.Linear, "
      "nnx.Conv, nnx.BatchNorm, nnx.Dropout, norm layers (only where nothing "
      "is pruned across them) and parameter-free callables."
    )
  if not callable(layer):
    raise ValueError(f"{label} is not callable.")
  return _Item("fn", label)


def _run(
  layers: Sequence[Any], x: jax.Array
) -> tuple[jax.Array, list[tuple[int, ...]]]:
  """Applies `layers` to `x` in evaluation mode; returns output, output shapes."""
  from flax import nnx

  model = nnx.clone(nnx.Sequential(*layers))
  model.eval()  # Running statistics, no dropout; the caller's layers are untouched.
  shapes = []
  for layer in model.layers:
    x = layer(x)
    shapes.append(tuple(x.shape))
  return x, shapes


def _param_count(layers: Sequence[Any]) -> int:
  from flax import nnx

  return sum(
    x.size
    for layer in layers
    if isinstance(layer, nnx.Module)
    for x in jax.tree.leaves(nnx.state(layer, nnx.Param))
  )


def _check_close(output: jax.Array, reference: jax.Array, rtol: float) -> None:
  new, ref = np.asarray(output), np.asarray(reference)
  scale = float(np.max(np.abs(ref))) if ref.size else 0.0
  if not np.allclose(new, ref, rtol=rtol, atol=rtol * scale):
    raise ValueError(
      "The pruned model's output differs from the original's on the sample "
      f"input (max abs difference {np.max(np.abs(new - ref)):.3g}): a "
      "parameter-free callable in the chain is not channelwise (say, a softmax "
      "over features) or flattens a feature map in another order than "
      "channels-last C order."
    )


def prune_input_channels(
  model: Any,
  sample_input: jax.typing.ArrayLike,
  *,
  prune_inputs: bool = False,
  rtol: float = 1e-4,
) -> tuple[Any, PruningReport]:
  r"""Builds the smaller NNX model implied by zero input groups.

  For every pair of consecutive ``nnx.Linear``/``nnx.Conv`` layers, the
  output channels of the first whose input rows in the second are all zero
  (the groups of :func:`input_channel_groups`) are dropped: their kernel
  columns/filters, their bias entries, the BatchNorm parameters and statistics
  in between, and the zero rows themselves. The pruned model computes the same
  function: a dropped channel only ever met zero weights.

  Supported: a ``nnx.Sequential`` or a list of layers, each an ``nnx.Linear``,
  an ``nnx.Conv`` (not grouped, no mask), an ``nnx.BatchNorm`` (last axis), an
  ``nnx.Dropout``, a norm that mixes features (``LayerNorm``, ``RMSNorm``,
  ``GroupNorm``: allowed only where nothing is pruned across it), or a
  parameter-free callable that treats channels separately (activations,
  pooling) or flattens a channels-last feature map in C order (into a
  Linear). Any other module raises ValueError; so do convolutions that do not
  read the previous layer's channels one to one. As a safeguard the pruned
  model is run on `sample_input` (in evaluation mode, on copies) and must
  reproduce the original's output, else ValueError.

  A layer whose every input row is zero keeps one channel, so no layer
  becomes zero-width. The model input is kept whole unless `prune_inputs`.

  Args:
    model: an ``nnx.Sequential`` or a sequence of layers and callables.
    sample_input: a batch (leading batch axis) the model accepts; it sets the
      spatial sizes counted in FLOPs and feeds the output check.
    prune_inputs: also drop the zero input rows of the first layer (which must
      read the input's last axis); the pruned model then takes
      ``x[..., report.kept_inputs]``.
    rtol: relative tolerance of the output check (summation order changes
      when zero terms are removed, so results agree to rounding, not bits).

  Returns:
    ``(pruned, report)``: a new ``nnx.Sequential`` (a list if a list was
    given) made of copies of the layers, and a :class:`PruningReport`. The
    original model is not modified.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import optax_ramda as oxr
    >>> model = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(3, 2, rngs=nnx.Rngs(1)))
    >>> kernel = model.layers[2].kernel
    >>> kernel[...] = kernel[...].at[1].set(0.0)  # hidden unit 1 is unused
    >>> pruned, report = oxr.prune_input_channels(model, jnp.ones((1, 4)))
    >>> report.widths_after, report.params_before, report.params_after
    ((2, 2), 23, 16)
    >>> bool(jnp.allclose(pruned(jnp.ones((1, 4))), model(jnp.ones((1, 4)))))
    True
  """
  from flax import nnx

  layers: list[Any] = (
    list(model.layers) if isinstance(model, nnx.Sequential) else list(model)
  )
  x = jnp.asarray(sample_input)
  items = [_nnx_item(layer, i) for i, layer in enumerate(layers)]
  reference, shapes = _run(layers, x)
  plan = _plan(items, x.shape[-1], prune_inputs)

  new_layers: list[Any] = []
  weight_index = 0
  for i, layer in enumerate(layers):
    if not isinstance(layer, nnx.Module):
      new_layers.append(layer)
      continue
    old: Any = layer
    new: Any = nnx.clone(old)
    if items[i].kind == "weight":
      rows, cols = plan.kept_rows[weight_index], plan.kept_out[weight_index]
      new.kernel.set_value(_slice_kernel(old.kernel[...], rows, cols))
      if old.bias is not None:
        new.bias.set_value(_take(old.bias[...], cols))
      new.in_features, new.out_features = rows.size, cols.size
      if isinstance(old, nnx.Conv):
        new.kernel_shape = tuple(new.kernel.shape)
      weight_index += 1
    elif i in plan.kept_features:
      keep = plan.kept_features[i]
      for name in ("scale", "bias", "mean", "var"):
        variable = getattr(old, name)
        if variable is not None:
          getattr(new, name).set_value(_take(variable[...], keep))
      new.num_features = keep.size
    new_layers.append(new)

  pruned_input = x[..., plan.kept_inputs] if prune_inputs else x
  pruned_output, pruned_shapes = _run(new_layers, pruned_input)
  _check_close(pruned_output, reference, rtol)
  weights = [i for i, item in enumerate(items) if item.kind == "weight"]
  report = PruningReport(
    widths_before=tuple(int(layers[i].kernel.shape[-1]) for i in weights),
    widths_after=tuple(int(new_layers[i].kernel.shape[-1]) for i in weights),
    kept=tuple(plan.kept_out),
    kept_inputs=plan.kept_inputs,
    params_before=_param_count(layers),
    params_after=_param_count(new_layers),
    flops_before=_flops(
      [layers[i].kernel for i in weights], [_positions(shapes[i]) for i in weights]
    ),
    flops_after=_flops(
      [new_layers[i].kernel for i in weights],
      [_positions(pruned_shapes[i]) for i in weights],
    ),
  )
  pruned = (
    nnx.Sequential(*new_layers) if isinstance(model, nnx.Sequential) else new_layers
  )
  return pruned, report


def prune_linen_params(
  module: Any,
  variables: Mapping[str, Any],
  layers: Sequence[str],
  sample_input: jax.typing.ArrayLike,
  *,
  prune_inputs: bool = False,
  **apply_kwargs: Any,
) -> tuple[dict[str, Any], PruningReport]:
  """Prunes the variables of a Linen layer chain, as :func:`prune_input_channels`.

  Linen parameters do not record how layers connect, so `layers` names the
  top-level submodules that hold parameters (``Dense``, ``Conv``,
  ``BatchNorm``, norms), in the order the module calls them; parameter-free
  operations between them follow the rules of :func:`prune_input_channels`.
  Every top-level entry of ``variables["params"]`` must be listed. A
  ``BatchNorm`` is recognised by its ``batch_stats`` entry; other norms mix
  features. Build the pruned module with ``report.widths_after`` as its
  layer widths and check its output, since the module's code is not known
  here.

  Args:
    module: the Linen module (used once, with ``capture_intermediates``, for
      the output sizes that FLOPs are counted on).
    variables: its variables (``{"params": ..., "batch_stats": ...}``).
    layers: the names of its parameterised submodules, in call order.
    sample_input: a batch the module accepts.
    prune_inputs: also drop zero input rows of the first layer.
    **apply_kwargs: extra arguments of ``module.apply`` (``train=False``).

  Returns:
    ``(new_variables, report)``: variables of the pruned module, as plain
    dicts, and a :class:`PruningReport`.
  """
  params = variables["params"]
  stats = variables.get("batch_stats", {})
  missing = sorted(set(params) - set(layers))
  unknown = [name for name in layers if name not in params]
  if missing or unknown:
    raise ValueError(
      f"`layers` must list every top-level parameter entry of the module, "
      f"in call order; missing {missing}, not found {unknown}."
    )
  items = []
  for name in layers:
    entry = params[name]
    if "kernel" in entry:
      kernel = np.asarray(entry["kernel"])
      if kernel.ndim < 2:
        raise ValueError(f"{name}: a kernel of rank {kernel.ndim} is not supported.")
      items.append(_Item("weight", name, kernel))
    elif name in stats:
      items.append(_Item("channelwise", name, features=stats[name]["mean"].shape[-1]))
    elif set(entry) <= {"scale", "bias"}:
      items.append(_Item("mixing", name))
    else:
      raise ValueError(
        f"{name}: a layer with parameters {sorted(entry)} is not supported."
      )
  _, captured = module.apply(
    variables,
    sample_input,
    capture_intermediates=True,
    mutable=["intermediates"],
    **apply_kwargs,
  )
  outputs = captured["intermediates"]
  positions = []
  for item in items:
    if item.kind == "weight":
      calls = outputs[item.label]["__call__"]
      if len(calls) != 1:
        raise ValueError(f"{item.label} is called {len(calls)} times; need once.")
      positions.append(_positions(calls[0].shape))
  plan = _plan(items, np.shape(sample_input)[-1], prune_inputs)

  new_params = {name: dict(entry) for name, entry in params.items()}
  new_stats = {name: dict(entry) for name, entry in stats.items()}
  weight_index = 0
  for i, item in enumerate(items):
    entry = new_params[item.label]
    if item.kind == "weight":
      rows, cols = plan.kept_rows[weight_index], plan.kept_out[weight_index]
      entry["kernel"] = _slice_kernel(entry["kernel"], rows, cols)
      if "bias" in entry:
        entry["bias"] = _take(entry["bias"], cols)
      weight_index += 1
    elif i in plan.kept_features:
      keep = plan.kept_features[i]
      for group in (entry, new_stats[item.label]):
        for key in group:
          group[key] = _take(group[key], keep)
  new_variables = {
    k: v for k, v in variables.items() if k not in ("params", "batch_stats")
  }
  new_variables["params"] = new_params
  if stats:
    new_variables["batch_stats"] = new_stats

  kernels_before = [
    item.kernel for item in items if item.kind == "weight" and item.kernel is not None
  ]
  kernels_after = [
    new_params[item.label]["kernel"] for item in items if item.kind == "weight"
  ]
  report = PruningReport(
    widths_before=tuple(int(k.shape[-1]) for k in kernels_before),
    widths_after=tuple(int(k.shape[-1]) for k in kernels_after),
    kept=tuple(plan.kept_out),
    kept_inputs=plan.kept_inputs,
    params_before=_size(params),
    params_after=_size(new_params),
    # Dropping channels leaves spatial sizes, hence positions, unchanged.
    flops_before=_flops(kernels_before, positions),
    flops_after=_flops(kernels_after, positions),
  )
  return new_variables, report
