"""Re-estimating BatchNorm statistics after training (Flax NNX and Linen).

A BatchNorm layer evaluates with running averages of its batch statistics,
updated by an exponential moving average (momentum 0.99 by default in Flax):
they describe the weights of the last ~100 steps. RAMDA's final stage moves
the weights to the structured Ŵ within a few steps (the averaging weight
ramps to one), faster than the averages follow, and zeroing an input channel
changes the statistics of every later layer. The helper here replaces the
averages by exact ones for the final weights. Flax is imported only when a
model is passed in: ``optax_ramda`` does not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from optax_ramda._flax import is_module


def recompute_batch_stats(
  model: Any,
  batches: Iterable[Any],
  forward: Callable[[Any, Any], Any] | None = None,
) -> Any:
  r"""Re-estimates every BatchNorm's statistics as exact averages over `batches`.

  For each BatchNorm layer, the running mean and variance become the plain
  averages, over the :math:`n` given batches, of the per-batch statistics at
  the current weights (Flax's: the mean and the biased variance over every
  axis but the features):

  .. math::

    \mu = \frac1n \sum_{i=1}^n \operatorname{mean}(x_i), \qquad
    \sigma^2 = \frac1n \sum_{i=1}^n \operatorname{var}(x_i),

  where :math:`x_i` is the layer's input on batch :math:`i`, as in "precise
  BatchNorm" (and PyTorch's ``swa_utils.update_bn``), instead of the moving
  average :math:`\mu ← m \mu + (1 - m) \operatorname{mean}(x_i)` of training.
  In training mode every BatchNorm normalizes with its batch's own
  statistics, so each layer sees the inputs it saw in training, and one
  forward pass per batch re-estimates all layers at once. Use batches of
  equal size from the training data (a few dozen suffice), without
  augmentation that evaluation would not use.

  When it is needed: after the final stage of :func:`ramda` (or
  :func:`rmda`) with milestones, whose ramp moves the weights to Ŵ within
  :math:`⌈1/c_0^2⌉` steps (100 for :math:`c_0 = 0.1`), about as many as a
  momentum-0.99 average needs to forget; and after pruning or exporting a
  model whose groups were zeroed. On a small BatchNorm CNN on digits, RAMDA's
  eval-mode accuracy was far below its training-mode one even without the
  ramp, so check eval against training mode whenever BatchNorm is used. Call
  it before evaluating, and again after
  any change of the weights. Models without BatchNorm (LayerNorm, RMSNorm,
  GroupNorm normalize each example by itself) need nothing.

  Args:
    model: an ``nnx.Module`` (updated in place; every ``nnx.BatchNorm`` in it
      is re-estimated), or a Linen ``variables`` dict with a
      ``"batch_stats"`` collection.
    batches: an iterable of model inputs (whatever `forward` takes).
    forward: for NNX, ``forward(model, batch)`` runs the model (default
      ``model(batch)``); the helper switches every ``nnx.BatchNorm`` to batch
      statistics itself, but a ``use_running_average`` passed at call time
      wins, so pass it as ``False`` (or leave it out). For Linen (required),
      ``forward(variables, batch)`` returns ``model.apply(variables, batch,
      ..., mutable=["batch_stats"])``, i.e. ``(output, {"batch_stats": ...})``,
      with the model in training mode (``use_running_average=False``).

  Returns:
    NNX: the model (updated in place). Linen: new ``variables`` with the
    re-estimated ``"batch_stats"`` (the params untouched).

  Raises:
    ValueError: no batches, a model without BatchNorm statistics, a Linen
      model without `forward`, or a Linen BatchNorm with momentum 1 (its
      statistics never follow a batch).

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import optax_ramda as oxr
    >>> model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)),
    ...                        nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
    >>> batches = [jnp.array([[1.0, 0.0], [3.0, 0.0]]),
    ...            jnp.array([[5.0, 2.0], [7.0, 2.0]])]
    >>> model.layers[0].kernel[...] = jnp.eye(2)  # identity: x reaches the norm
    >>> _ = oxr.recompute_batch_stats(model, batches)
    >>> model.layers[1].mean[...]  # (2 + 6) / 2 and (0 + 2) / 2
    Array([4., 1.], dtype=float32)
    >>> model.layers[1].var[...]  # each batch has variance (1, 0)
    Array([1., 0.], dtype=float32)
  """
  batches = list(batches)
  if not batches:
    raise ValueError("recompute_batch_stats needs at least one batch.")
  if is_module(model):
    return _recompute_nnx(model, batches, forward)
  if forward is None:
    raise ValueError(
      "recompute_batch_stats needs `forward` for Linen variables: e.g. "
      "forward=lambda v, x: model.apply(v, x, train=True, "
      'mutable=["batch_stats"]).'
    )
  return _recompute_linen(model, batches, forward)


def _recompute_nnx(model: Any, batches: list[Any], forward: Any) -> Any:
  from flax import nnx

  norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
  if not norms:
    raise ValueError("recompute_batch_stats found no nnx.BatchNorm in the model.")
  saved = [(m.momentum, m.use_running_average) for m in norms]
  run = forward if forward is not None else (lambda m, x: m(x))

  @nnx.jit
  def batch_stats(model, batch):
    run(model, batch)
    # Arrays, not the Variables: those are the model's own, updated next batch.
    return nnx.as_pure(nnx.state(model, nnx.BatchStat))

  try:
    # Momentum 0 makes each BatchNorm store its batch's own statistics.
    for m in norms:
      m.momentum, m.use_running_average = 0.0, False
    total = None
    for batch in batches:
      stats = batch_stats(model, batch)
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  finally:
    for m, (momentum, use_running_average) in zip(norms, saved, strict=True):
      m.momentum, m.use_running_average = momentum, use_running_average
  nnx.update(model, jax.tree.map(lambda s: s / len(batches), total))
  return model


def _recompute_linen(variables: Any, batches: list[Any], forward: Any) -> Any:
  import flax.linen as nn

  if "batch_stats" not in variables:
    raise ValueError(
      "recompute_batch_stats needs Linen variables with a 'batch_stats' "
      f"collection; got the collections {sorted(variables)}."
    )
  # A Linen BatchNorm's momentum m is a module attribute: read it as the
  # module runs. With the running averages at zero, one training-mode step
  # stores (1 - m)·(batch statistic), which gives the statistic back.
  momenta: dict[tuple[str, ...], float] = {}

  def read_momentum(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm):
      momenta[tuple(context.module.path)] = float(context.module.momentum)
    return next_fun(*args, **kwargs)

  zeroed = {
    **variables,
    "batch_stats": jax.tree.map(jnp.zeros_like, variables["batch_stats"]),
  }

  @jax.jit
  def batch_stats(batch):
    with nn.intercept_methods(read_momentum):
      _, updated = forward(zeroed, batch)
    return updated["batch_stats"]

  total = None
  for batch in batches:
    stats = batch_stats(batch)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  for path, m in momenta.items():
    if m == 1.0:
      raise ValueError(
        f"The BatchNorm at {'/'.join(path)} has momentum 1: its statistics "
        "never follow a batch, so they cannot be re-estimated."
      )

  def average(path, s):
    names = tuple(str(getattr(k, "key", k)) for k in path)[:-1]  # Drop mean/var.
    return s / ((1.0 - momenta[names]) * len(batches))

  new_stats = jax.tree_util.tree_map_with_path(average, total)
  return {**variables, "batch_stats": new_stats}
