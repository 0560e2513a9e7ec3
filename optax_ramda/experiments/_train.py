"""The one trainer: any task, any optimizer, any regularizer; one seed a run.

The train step is pure JAX on the model's parameter dict (``nnx.split`` once,
``nnx.merge`` inside the traced loss), jitted and compiled once per (task,
optimizer), then reused across seeds; the time per step is measured on the
compiled step only. Steps are dispatched from Python rather than scanned:
inside an XLA loop, CPU convolutions run tens of times slower. Evaluation is
full-batch on the held-out set.

Data parallelism: the step runs on a one-axis ``("data",)`` mesh over every
device (of every process, after :func:`jax.distributed.initialize`). The
parameters, the optimizer state and the data set are replicated; each step's
minibatch indices are split along the mesh, so ``x[idx]`` inside the step
comes out split by rows, and XLA all-reduces the mean loss's gradient: every
device takes the same step, the one-device step up to the order of sums.
Every process holds the same data and draws the same indices from the seed;
each feeds its own devices' share.

The learning rate η and the regularization strength λ enter the compiled step
as arguments, not constants: :meth:`Trainer.set_hyperparameters` changes them
without recompiling, which is what makes a λ × η sweep cheap.

What a run records comes from its three settings: every run records
:data:`~._task.METRICS` (accuracy, group sparsity of the weights and of Ŵ);
the task adds its own metrics (the lm task's validation perplexity, and its
test perplexity at the end) and the regularizer its own (the nuclear norm's
low-rank level); the export that counts the parameters after pruning is the
regularizer's (the task's structured export, or the low-rank one).

Stability of the structure: after every epoch the zero/nonzero state of each
group (of the weights and of Ŵ) is compared with the previous epoch's;
``group_flips`` counts the groups that switched, and ``final_stage_flips``
sums them over the epochs of the final stage.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_ramda as oxr
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._optimizers import Method, Settings
from optax_ramda.experiments._regularizers import REGULARIZERS
from optax_ramda.experiments._task import METRICS, Task, Test

# Per-epoch counts of groups switching zero <-> nonzero since the previous
# epoch (0 at the initialization), of the weights and of Ŵ.
FLIPS = ("group_flips", "prox_group_flips")


def zero_groups(params: Any, specs: Any) -> jax.Array:
  """One flag per group of every group-regularized leaf: whether it is all zero.

  Args:
    params: the parameters (a pure dict).
    specs: the matching spec tree (None for unregularized leaves); nuclear
      specs have no groups and are skipped.

  Returns:
    A 1-D boolean array, the leaves' groups concatenated in tree order.

  Examples:
    >>> import jax.numpy as jnp, optax_ramda as oxr
    >>> from optax_ramda.experiments._train import zero_groups
    >>> w = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    >>> zero_groups({"w": w, "b": jnp.ones(2)},
    ...             {"w": oxr.group_lasso(axes=(1,)), "b": None}).tolist()
    [True, False, True]
  """
  flags = [jnp.zeros((0,), bool)]
  leaves = jax.tree.leaves(
    specs, is_leaf=lambda x: x is None or isinstance(x, oxr.Regularizer)
  )
  for spec, w in zip(leaves, jax.tree.leaves(params), strict=True):
    if spec is None or isinstance(spec, oxr.Nuclear):
      continue
    axes = spec.group_axes(w.ndim)
    flags.append(jnp.ravel(~jnp.any(w != 0, axis=axes) if axes else w == 0))
  return jnp.concatenate(flags)


def switches(previous: np.ndarray | None, current: np.ndarray) -> int:
  """How many groups switched between zero and nonzero, in either direction.

  Args:
    previous: the previous evaluation's flags (:func:`zero_groups`), or None
      at the initialization (nothing switched).
    current: this evaluation's flags.

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments._train import switches
    >>> switches(np.array([True, False, False]), np.array([False, True, False]))
    2
  """
  if previous is None:
    return 0
  return int(np.sum(previous != current))


def final_stage_switches(
  per_epoch: list[float], milestones: tuple[int, ...], steps_per_epoch: int
) -> float:
  """The switches summed over the transitions out of final-stage epochs.

  Entry ``e`` of `per_epoch` counts the switches from the evaluation after
  epoch ``e - 1`` (0: the initialization) to the one after epoch ``e``. The
  transitions counted are those from an epoch that ended in the final stage
  (at or after the last milestone step) to the next epoch.

  Examples:
    >>> from optax_ramda.experiments._train import final_stage_switches
    >>> # 10 steps an epoch, the final stage from step 20: epochs 2, 3, 4 end
    >>> # in it, so the transitions into epochs 3 and 4 count.
    >>> final_stage_switches([0, 5, 4, 3, 1], (10, 20), 10)
    4.0
  """
  last = milestones[-1] if milestones else 0
  first = -(-last // steps_per_epoch)  # The first epoch that ends in the final stage.
  return float(np.sum(per_epoch[first + 1 :]))


@dataclasses.dataclass
class RunResult:
  """What one run produced.

  Attributes:
    history: per-epoch lists of :data:`METRICS`, :data:`FLIPS` and the
      task's and regularizer's own metrics, index 0
      being the initialization (``train_loss`` is then NaN). ``prox_*``
      entries are Ŵ's (:func:`optax_ramda.prox_iterate`) for the
      dual-averaging methods and the weights' own for the others. Without
      per-epoch evaluation, only the initialization and the last epoch.
    final: the last epoch's metrics, plus ``params``, ``params_after_pruning``,
      ``time_per_step_ms`` (of the median epoch, compilation excluded), and
      ``final_stage_flips`` / ``prox_final_stage_flips``: the group switches
      summed over the epochs whose start lies in the final stage (NaN without
      per-epoch evaluation); then the task's and the regularizer's own
      metrics, the task's numbers on its test split (``perplexity``), and
      ``flops`` / ``flops_after_export`` where the export counts them.
    params: the trained parameters (a pure dict of host arrays).
    prox: Ŵ for the dual-averaging methods, else None.
    epoch_seconds: the wall time of each epoch's training steps.
  """

  history: dict[str, list[float]]
  final: dict[str, float]
  params: Any
  prox: Any
  epoch_seconds: list[float]


class Trainer:
  """The compiled functions of one (task, data, optimizer, settings) setup.

  Args:
    task: the task (:class:`~optax_ramda.experiments._task.Task`).
    data: the data set, already in the task's layout; its test split is what
      every epoch is evaluated on.
    method: the optimizer.
    settings: its hyperparameters.
    batch_size: the global minibatch size, a multiple of the device count; an
      epoch is ``len(x_train) // batch_size`` steps over a fresh permutation
      (the remainder is skipped that epoch).
    devices: the devices of the data-parallel mesh (default: ``jax.devices()``,
      all devices of all processes).
    regularizer: ``"group_lasso"`` (the paper's input groups),
      ``"tied_group_lasso"`` (the same with shared inputs tied) or
      ``"nuclear"`` (low rank; matrix kernels only).
    test: a split evaluated once after training (the lm task's test windows,
      ``data``'s test split being its validation split), or None.

  Raises:
    ValueError: if `batch_size` is not a multiple of the number of devices,
      for an unknown `regularizer`, or for ``"nuclear"`` on a model whose
      kernels are not all matrices.
  """

  def __init__(
    self,
    task: Task,
    data: Dataset,
    method: Method,
    settings: Settings,
    batch_size: int,
    devices: Sequence[jax.Device] | None = None,
    *,
    regularizer: str = "group_lasso",
    test: Test = None,
  ):
    if regularizer not in REGULARIZERS:
      raise ValueError(
        f"regularizer must be one of {tuple(REGULARIZERS)}, got {regularizer!r}."
      )
    devices = jax.devices() if devices is None else list(devices)
    if batch_size % len(devices):
      raise ValueError(
        f"batch_size {batch_size} is not a multiple of the {len(devices)} devices "
        "it is split over."
      )
    self.task, self.data, self.method, self.settings = task, data, method, settings
    self.regularizer = regularizer
    self._penalty = REGULARIZERS[regularizer]
    self.batch_size = batch_size
    self.steps_per_epoch = len(data.y_train) // batch_size
    self.mesh = Mesh(np.asarray(devices), ("data",))
    self._replicated = NamedSharding(self.mesh, P())
    self._rows = NamedSharding(self.mesh, P("data"))
    # Only when the mesh has devices of another process must the indices be
    # built as a global array; a process-local NumPy array is split by the
    # compiled step itself, the fastest path.
    self._multiprocess = any(d.process_index != jax.process_index() for d in devices)
    # CPU collectives: with tens of steps queued, runs over several devices
    # (Gloo across processes, and in-process on few cores) were seen to hang.
    # Waiting on the previous step keeps two in flight, which costs an
    # accelerator nothing; one device keeps its queue.
    self._wait_on_previous_step = len(devices) > 1
    model = task.model(data, seed=0)
    self.graphdef, _ = nnx.split(model)
    self.specs = self._penalty.specs(task, model)
    # The task's and the regularizer's own per-epoch records, after METRICS.
    self.extra_metrics = task.metric_names() + self._penalty.metric_names()
    self.tx = method.make(settings, self.specs)
    self._hyper = self._hyperparameters(settings)
    self.x_train = self._replicate(data.x_train)
    self.y_train = self._replicate(data.y_train)
    self.x_test = self._replicate(data.x_test)
    self.y_test = self._replicate(data.y_test)
    self._test: Test = (
      None if test is None else (self._replicate(test[0]), self._replicate(test[1]))
    )
    self.export_report: Any = None
    self._step = self._jit_step()
    # Fresh buffers: a state may alias the params (MADGRAD keeps x0 = params),
    # and the train step donates both.
    self._init_state = jax.jit(
      lambda params: jax.tree.map(jnp.copy, self.tx.init(params)),
      out_shardings=self._replicated,
    )
    self._evaluate = jax.jit(self._evaluate_fn)
    self._prox = jax.jit(oxr.prox_iterate, out_shardings=self._replicated)
    self._compiled: Any = None

  def _jit_step(self) -> Any:
    """The train step, jitted afresh with the current settings bound.

    A fresh ``partial`` has its own trace cache, so a method whose strength is
    static (magnitude pruning's target) gets a step built with the new value.
    Donation lets XLA update params and state in place; the outputs keep the
    inputs' replicated layout, so each step feeds the next.
    """
    return jax.jit(
      functools.partial(self._step_fn, self.settings),
      donate_argnums=(0, 1),
      out_shardings=self._replicated,
    )

  def _hyperparameters(self, settings: Settings) -> dict[str, jax.Array]:
    hyper = {"learning_rate": self._replicate(np.float32(settings.learning_rate))}
    if not self.method.static_strength and not isinstance(
      settings.reg_strength, oxr.TargetSparsity
    ):  # Else static (magnitude pruning's target) or chosen by the target.
      hyper["reg_strength"] = self._replicate(np.float32(settings.reg_strength))
    return hyper

  def set_hyperparameters(self, *, learning_rate: float, reg_strength: float) -> None:
    """Sets η and λ of later runs; the compiled step is reused (except for a
    new static strength, which compiles a new one).

    Args:
      learning_rate: η of the first stage, > 0.
      reg_strength: λ ≥ 0 (kept at 0 for a dense reference).
    """
    if not learning_rate > 0 or not reg_strength >= 0:
      raise ValueError(
        f"need learning_rate > 0 and reg_strength >= 0, got {learning_rate!r} "
        f"and {reg_strength!r}."
      )
    if not self.method.regularized:
      reg_strength = 0.0
    recompile = (
      self.method.static_strength and reg_strength != self.settings.reg_strength
    )
    self.settings = dataclasses.replace(
      self.settings, learning_rate=learning_rate, reg_strength=reg_strength
    )
    self._hyper = self._hyperparameters(self.settings)
    if recompile:
      self.tx = self.method.make(self.settings, self.specs)
      self._step, self._compiled = self._jit_step(), None

  def _replicate(self, value: Any) -> jax.Array:
    """A copy of a host array on every device of the mesh."""
    value = np.asarray(value)
    return jax.make_array_from_callback(
      value.shape, self._replicated, lambda index: value[index]
    )

  def _indices(self, idx: np.ndarray) -> Any:
    """One step's minibatch indices (the same in every process), split."""
    if not self._multiprocess:
      return idx
    return jax.make_array_from_callback(idx.shape, self._rows, lambda index: idx[index])

  def logits(self, params: Any, x: jax.Array) -> jax.Array:
    """The model's outputs for `params` (a pure dict) on a batch `x`."""
    return nnx.merge(self.graphdef, params)(x)

  def _loss(self, params, x, y):
    return self.task.loss(self.logits(params, x), y)

  def _step_fn(self, settings, params, opt_state, x, y, idx, hyper):
    loss, grads = jax.value_and_grad(self._loss)(params, x[idx], y[idx])
    # The same optimizer as self.tx, with η (and λ unless static) traced (same
    # state layout).
    tx = self.method.make(dataclasses.replace(settings, **hyper), self.specs)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def _evaluate_fn(self, params, opt_state, x_test, y_test):
    def metrics(p):
      accuracy = jnp.mean(jnp.argmax(self.logits(p, x_test), -1) == y_test)
      report = oxr.sparsity(p, self.specs)
      return accuracy, report["group_sparsity"], report["unstructured_sparsity"]

    accuracy, group, entry = metrics(params)
    zeros = zero_groups(params, self.specs)
    if self.method.dual_averaging:
      prox = oxr.prox_iterate(opt_state)
      prox_accuracy, prox_group, _ = metrics(prox)
      prox_zeros = zero_groups(prox, self.specs)
    else:
      prox, prox_accuracy, prox_group, prox_zeros = None, accuracy, group, zeros
    values = {
      "accuracy": accuracy,
      "group_sparsity": group,
      "unstructured_sparsity": entry,
      "prox_accuracy": prox_accuracy,
      "prox_group_sparsity": prox_group,
      "zeros": zeros,
      "prox_zeros": prox_zeros,
    }
    values.update(self.task.evaluate(self.logits, params, prox, x_test, y_test))
    structured = params if prox is None else prox
    values.update(self._penalty.evaluate(params, structured, self.specs))
    return values

  def init(self, seed: int) -> tuple[Any, Any]:
    """Parameters (seeded initialization) and optimizer state."""
    params = nnx.to_pure_dict(nnx.state(self.task.model(self.data, seed)))
    params = jax.tree.map(self._replicate, params)
    return params, self._init_state(params)

  def compile(self, params: Any, opt_state: Any) -> float:
    """Compiles the train step once; returns the seconds it took."""
    if self._compiled is not None:
      return 0.0
    start = time.perf_counter()
    idx = jax.ShapeDtypeStruct((self.batch_size,), jnp.int32, sharding=self._rows)
    self._compiled = self._step.lower(
      params, opt_state, self.x_train, self.y_train, idx, self._hyper
    ).compile()
    return time.perf_counter() - start

  def run(
    self,
    seed: int,
    epochs: int,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    every_epoch: bool = True,
    prune: bool = True,
  ) -> RunResult:
    """Trains from the seed's initialization for `epochs` epochs.

    Args:
      seed: seeds the initialization and the minibatch order.
      epochs: the number of passes.
      on_epoch: called with (epoch, metrics) after each epoch (with only
        ``train_loss`` where the epoch is not evaluated).
      every_epoch: evaluate after every epoch (False: only after the last,
        which is faster; a sweep needs no curves).
      prune: count the exported network's parameters (False: NaN).

    Returns:
      A :class:`RunResult`.
    """
    with self._penalty.context():
      return self._run(seed, epochs, on_epoch, every_epoch, prune)

  def _run(self, seed, epochs, on_epoch, every_epoch, prune) -> RunResult:
    params, opt_state = self.init(seed)
    self.compile(params, opt_state)
    rng = np.random.default_rng(seed)
    n = len(self.data.y_train)
    recorded = (*METRICS, *FLIPS, *self.extra_metrics)
    history: dict[str, list[float]] = {k: [] for k in recorded}
    masks: dict[str, np.ndarray] = {}

    def record(loss: float, params: Any, opt_state: Any) -> dict[str, float]:
      values = {"train_loss": loss}
      metrics = jax.device_get(
        self._evaluate(params, opt_state, self.x_test, self.y_test)
      )
      for flips, zeros in zip(FLIPS, ("zeros", "prox_zeros"), strict=True):
        mask = np.asarray(metrics.pop(zeros))
        values[flips] = float(switches(masks.get(zeros), mask))
        masks[zeros] = mask
      values.update({k: float(v) for k, v in metrics.items()})
      for k in recorded:
        history[k].append(values[k])
      return values

    record(float("nan"), params, opt_state)
    epoch_seconds = []
    for epoch in range(1, epochs + 1):
      order = rng.permutation(n).astype(np.int32)
      batches = order[: self.steps_per_epoch * self.batch_size].reshape(
        self.steps_per_epoch, self.batch_size
      )
      losses = []
      start = time.perf_counter()
      for idx in batches:
        params, opt_state, loss = self._compiled(
          params,
          opt_state,
          self.x_train,
          self.y_train,
          self._indices(idx),
          self._hyper,
        )
        losses.append(loss)
        if self._wait_on_previous_step and len(losses) > 1:
          losses[-2].block_until_ready()
      loss = float(jnp.mean(jnp.stack(losses)))  # Waits for the epoch to finish.
      epoch_seconds.append(time.perf_counter() - start)
      values = (
        record(loss, params, opt_state)
        if every_epoch or epoch == epochs
        else {"train_loss": loss}
      )
      if on_epoch is not None:
        on_epoch(epoch, values)

    # Replicated arrays: every process reads its own full copy.
    host_params = jax.tree.map(np.asarray, params)
    prox = (
      jax.tree.map(np.asarray, self._prox(opt_state))
      if self.method.dual_averaging
      else None
    )
    final = {k: history[k][-1] for k in METRICS}
    for flips in FLIPS:
      final[flips.replace("group", "final_stage")] = (
        final_stage_switches(
          history[flips], self.settings.milestones, self.steps_per_epoch
        )
        if every_epoch
        else float("nan")
      )
    final["params"] = float(sum(np.size(x) for x in jax.tree.leaves(host_params)))
    if isinstance(self.settings.reg_strength, oxr.TargetSparsity):
      final["reg_strength"] = float(oxr.reg_strength(opt_state))  # The λ chosen.
    finite = all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host_params))
    # A diverged run has no function to preserve: nothing to export.
    self.export_report = None
    pruned = self.pruned_params(host_params) if finite and prune else float("nan")
    final["params_after_pruning"] = float(pruned)
    # The median epoch: robust to other processes briefly taking the CPU.
    final["time_per_step_ms"] = 1e3 * np.median(epoch_seconds) / self.steps_per_epoch
    final.update({k: history[k][-1] for k in self.extra_metrics})
    if self._test is not None:
      final.update(self.task.final(self.logits, host_params, self._test))
    if self.export_report is not None:
      final["flops"] = float(self.export_report.flops_before)
      final["flops_after_export"] = float(self.export_report.flops_after)
    return RunResult(history, final, host_params, prox, epoch_seconds)

  def pruned_params(self, params: Any) -> int:
    """Parameter count of the network its regularizer's export gives.

    Under the group lasso, the task's structured export (for a classifier,
    :func:`optax_ramda.prune_input_channels`: zero input groups of each layer
    are removed along with the matching output channels of the layer feeding
    it, and zero input features of the first layer); under the nuclear norm,
    the low-rank export. Its report (FLOPs, per-layer detail), if any, is kept
    as :attr:`export_report`.
    """
    model = nnx.merge(self.graphdef, params)
    count, self.export_report = self._penalty.export(
      self.task, model, self.specs, self.data
    )
    return count
