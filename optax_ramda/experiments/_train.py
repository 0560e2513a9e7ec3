"""One training run: a task's model, one optimizer, one seed, per-epoch records.

The train step is pure JAX on the model's parameter dict (``nnx.split`` once,
``nnx.merge`` inside the traced loss), jitted and compiled once per (task,
optimizer), then reused across seeds; the time per step is measured on the
compiled step only. Steps are dispatched from Python rather than scanned:
inside an XLA loop, CPU convolutions run tens of times slower. Evaluation is
full-batch on the held-out set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_ramda as oxr
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._optimizers import Method, Settings
from optax_ramda.experiments._tasks import Task

# Per-epoch records, in this order in the JSON history.
METRICS = (
  "train_loss",
  "accuracy",
  "group_sparsity",
  "unstructured_sparsity",
  "prox_accuracy",
  "prox_group_sparsity",
)


@dataclasses.dataclass
class RunResult:
  """What one run produced.

  Attributes:
    history: per-epoch lists of :data:`METRICS`, index 0 being the
      initialization (``train_loss`` is then NaN). ``prox_*`` entries are Ŵ's
      (:func:`optax_ramda.prox_iterate`) for the dual-averaging methods and the
      weights' own for the others.
    final: the last epoch's metrics, plus ``params``, ``params_after_pruning``
      and ``time_per_step_ms`` (of the median epoch, compilation excluded).
    params: the trained parameters (a pure dict of host arrays).
    prox: Ŵ for the dual-averaging methods, else None.
    epoch_seconds: the wall time of each epoch's training steps.
  """

  history: dict[str, list[float]]
  final: dict[str, float]
  params: Any
  prox: Any
  epoch_seconds: list[float]


def to_pure_dict(tree: Any) -> Any:
  """An ``nnx.State`` as a plain nested dict; other trees unchanged."""
  return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


class Trainer:
  """The compiled functions of one (task, data, optimizer, settings) setup.

  Args:
    task: the model family.
    data: the data set, already in the task's layout.
    method: the optimizer.
    settings: its hyperparameters.
    batch_size: the minibatch size; an epoch is ``len(x_train) // batch_size``
      steps over a fresh permutation (the remainder is skipped that epoch).
  """

  def __init__(
    self,
    task: Task,
    data: Dataset,
    method: Method,
    settings: Settings,
    batch_size: int,
  ):
    self.task, self.data, self.method, self.settings = task, data, method, settings
    self.batch_size = batch_size
    self.steps_per_epoch = len(data.y_train) // batch_size
    model = task.model(data, seed=0)
    self.graphdef, _ = nnx.split(model)
    self.specs = to_pure_dict(oxr.input_channel_groups(model))
    self.tx = method.make(settings, self.specs)
    self.x_train = jnp.asarray(data.x_train)
    self.y_train = jnp.asarray(data.y_train)
    self.x_test = jnp.asarray(data.x_test)
    self.y_test = jnp.asarray(data.y_test)
    # Donation lets XLA update params and state in place.
    self._step = jax.jit(self._step_fn, donate_argnums=(0, 1))
    self._evaluate = jax.jit(self._evaluate_fn)
    self._compiled: Any = None

  def logits(self, params: Any, x: jax.Array) -> jax.Array:
    """The model's outputs for `params` (a pure dict) on a batch `x`."""
    return nnx.merge(self.graphdef, params)(x)

  def _loss(self, params, x, y):
    logits = self.logits(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def _step_fn(self, params, opt_state, x, y, idx):
    loss, grads = jax.value_and_grad(self._loss)(params, x[idx], y[idx])
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def _evaluate_fn(self, params, opt_state):
    def metrics(p):
      accuracy = jnp.mean(jnp.argmax(self.logits(p, self.x_test), -1) == self.y_test)
      report = oxr.sparsity(p, self.specs)
      return accuracy, report["group_sparsity"], report["unstructured_sparsity"]

    accuracy, group, entry = metrics(params)
    if self.method.dual_averaging:
      prox_accuracy, prox_group, _ = metrics(oxr.prox_iterate(opt_state))
    else:
      prox_accuracy, prox_group = accuracy, group
    return {
      "accuracy": accuracy,
      "group_sparsity": group,
      "unstructured_sparsity": entry,
      "prox_accuracy": prox_accuracy,
      "prox_group_sparsity": prox_group,
    }

  def init(self, seed: int) -> tuple[Any, Any]:
    """Parameters (seeded initialization) and optimizer state."""
    params = to_pure_dict(nnx.state(self.task.model(self.data, seed)))
    # Fresh buffers: a state may alias the params (MADGRAD keeps x0 = params),
    # and the train step donates both.
    opt_state = jax.tree.map(lambda x: jnp.array(x, copy=True), self.tx.init(params))
    return params, opt_state

  def compile(self, params: Any, opt_state: Any) -> float:
    """Compiles the train step once; returns the seconds it took."""
    if self._compiled is not None:
      return 0.0
    start = time.perf_counter()
    idx = jax.ShapeDtypeStruct((self.batch_size,), jnp.int32)
    self._compiled = self._step.lower(
      params, opt_state, self.x_train, self.y_train, idx
    ).compile()
    return time.perf_counter() - start

  def run(
    self,
    seed: int,
    epochs: int,
    *,
    progress: bool = True,
    desc: str = "",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
  ) -> RunResult:
    """Trains from the seed's initialization for `epochs` epochs.

    Args:
      seed: seeds the initialization and the minibatch order.
      epochs: the number of passes.
      progress: show a tqdm bar (on stderr).
      desc: the bar's label.
      on_epoch: called with (epoch, metrics) after each epoch.

    Returns:
      A :class:`RunResult`.
    """
    params, opt_state = self.init(seed)
    self.compile(params, opt_state)
    rng = np.random.default_rng(seed)
    n = len(self.data.y_train)
    history: dict[str, list[float]] = {k: [] for k in METRICS}

    def record(loss: float, params: Any, opt_state: Any) -> dict[str, float]:
      values = {"train_loss": loss}
      values.update({k: float(v) for k, v in self._evaluate(params, opt_state).items()})
      for k in METRICS:
        history[k].append(values[k])
      return values

    record(float("nan"), params, opt_state)
    epoch_seconds = []
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=True)
    for epoch in bar:
      order = rng.permutation(n).astype(np.int32)
      batches = order[: self.steps_per_epoch * self.batch_size].reshape(
        self.steps_per_epoch, self.batch_size
      )
      losses = []
      start = time.perf_counter()
      for idx in batches:
        params, opt_state, loss = self._compiled(
          params, opt_state, self.x_train, self.y_train, idx
        )
        losses.append(loss)
      loss = float(jnp.mean(jnp.stack(losses)))  # Waits for the epoch to finish.
      epoch_seconds.append(time.perf_counter() - start)
      values = record(loss, params, opt_state)
      bar.set_postfix(
        loss=f"{loss:.3f}",
        acc=f"{values['accuracy']:.3f}",
        sparsity=f"{values['group_sparsity']:.3f}",
      )
      if on_epoch is not None:
        on_epoch(epoch, values)
    bar.close()

    host_params = jax.tree.map(np.asarray, params)
    prox = (
      jax.tree.map(np.asarray, oxr.prox_iterate(opt_state))
      if self.method.dual_averaging
      else None
    )
    final = {k: history[k][-1] for k in METRICS}
    final["params"] = float(sum(np.size(x) for x in jax.tree.leaves(host_params)))
    finite = all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host_params))
    # A diverged run has no function to preserve: nothing to export.
    pruned = self.pruned_params(host_params) if finite else float("nan")
    final["params_after_pruning"] = float(pruned)
    # The median epoch: robust to other processes briefly taking the CPU.
    final["time_per_step_ms"] = 1e3 * np.median(epoch_seconds) / self.steps_per_epoch
    return RunResult(history, final, host_params, prox, epoch_seconds)

  def pruned_params(self, params: Any) -> int:
    """Parameter count of the network exported by structured pruning.

    Zero input groups of each layer are removed along with the matching
    output channels of the layer feeding it, and zero input features of the
    first layer (:func:`optax_ramda.prune_input_channels`).
    """
    model = nnx.merge(self.graphdef, params)
    _, report = oxr.prune_input_channels(
      model, self.data.x_test[: min(256, len(self.data.x_test))], prune_inputs=True
    )
    return report.params_after
