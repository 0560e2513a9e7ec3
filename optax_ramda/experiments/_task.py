"""What a task of the experiments is: data, model, loss, metrics, columns, export.

A :class:`Task` is one plug-in of the runner, in the manner of MLCommons
AlgoPerf's workloads: it loads its data, builds its Flax NNX model, gives the
training loss and the metrics of each evaluation, says which numbers its table
shows, and exports the smaller model its zero groups imply. The optimizer
(:mod:`optax_ramda.experiments._optimizers`) and the regularizer
(:mod:`optax_ramda.experiments._regularizers`) are settings orthogonal to the
task: one :class:`~optax_ramda.experiments.Trainer` trains any task with any
of them, and one runner (:mod:`optax_ramda.experiments._runner`) drives the
comparison, the sweep and the paper protocol over any tasks.

The classifiers live in :mod:`optax_ramda.experiments._classifiers`, the
language model in :mod:`optax_ramda.experiments._lm`, and the registry of
names in :mod:`optax_ramda.experiments._tasks`; a new task (a data set with
its model) is one more entry there.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, NoReturn

import jax
import optax
from flax import nnx

from optax_ramda.experiments._data import Dataset

# (key in a run's `final`, column header, format) of a table.
Column = tuple[str, str, str]
# A test split evaluated once after training (the lm task's), or None.
Test = tuple[Any, Any] | None
Error = Callable[[str], NoReturn]
Logits = Callable[[Any, jax.Array], jax.Array]

# Per-epoch records of every run, in this order in the JSON history.
METRICS = (
  "train_loss",
  "accuracy",
  "group_sparsity",
  "unstructured_sparsity",
  "prox_accuracy",
  "prox_group_sparsity",
)
# The final numbers summarized over seeds where a task has more than METRICS
# (absent ones are NaN).
SUMMARY_KEYS = (
  "accuracy",
  "perplexity",
  "val_perplexity",
  "test_loss",
  "val_loss",
  "group_sparsity",
  "prox_group_sparsity",
  "low_rank_level",
  "prox_low_rank_level",
  "final_stage_flips",
  "prox_final_stage_flips",
  "time_per_step_ms",
  "params",
  "params_after_pruning",
  "flops",
  "flops_after_export",
)


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
  """A model family with its data, training defaults and report (base class).

  Attributes:
    name: the task's name on the command line.
    description: one line for ``--help`` and the report.
    dataset: the data set it runs on by default.
    build: ``(example shape, classes, rngs) -> model``.
    reg_strength: the default λ where no calibrated point applies.
    epochs: the default number of epochs.
    batch_size: the default minibatch size.
    seeds: the default number of seeds.
    optimizers: its default line-up (None: every method).
    low_rank: whether every regularized kernel is a matrix, so that the
      nuclear-norm regularizer applies.
    progress: per-epoch metrics shown on the progress bar, as (key, label).
  """

  name: str
  description: str
  dataset: str
  build: Callable[[tuple[int, ...], int, nnx.Rngs], nnx.Module]
  reg_strength: float
  epochs: int
  batch_size: int
  seeds: int = 3
  optimizers: tuple[str, ...] | None = None
  low_rank: bool = False
  progress: tuple[tuple[str, str], ...] = (("accuracy", "test acc"),)

  def configure(self, args: argparse.Namespace, error: Error) -> Task:
    """This task as the flags set it up (the lm task's size flags); checks them."""
    del args, error
    return self

  @abc.abstractmethod
  def load(self, args: argparse.Namespace) -> tuple[Dataset, Test]:
    """The data set of a run (``--data``, ``--dataset``, subsets) and its test split.

    Raises:
      ValueError: if the data cannot be read or does not fit the model.
    """

  def model(self, data: Dataset, seed: int) -> nnx.Module:
    """A freshly initialized model for `data` (inputs already prepared)."""
    return self.build(tuple(data.x_train.shape[1:]), data.num_classes, nnx.Rngs(seed))

  def loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The training loss: the mean softmax cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def metric_names(self) -> tuple[str, ...]:
    """The per-epoch metrics of :meth:`evaluate`, in record order."""
    return ()

  def evaluate(
    self, logits: Logits, params: Any, prox: Any, x: jax.Array, y: jax.Array
  ) -> dict[str, jax.Array]:
    """The task's own per-epoch metrics (beside accuracy and sparsity), traced.

    Args:
      logits: the model's outputs as a function of (params, x).
      params: the weights.
      prox: Ŵ of a dual-averaging method, else None.
      x: the evaluation inputs.
      y: their labels.
    """
    del logits, params, prox, x, y
    return {}

  def final(self, logits: Logits, params: Any, test: Test) -> dict[str, float]:
    """Numbers measured once after training (on `test`)."""
    del logits, params, test
    return {}

  @abc.abstractmethod
  def export(self, model: nnx.Module, data: Dataset) -> tuple[int, Any]:
    """The parameter count after the structured export, and its report or None."""

  @abc.abstractmethod
  def columns(self, regularizer: str) -> tuple[Column, ...]:
    """The table's columns under `regularizer`."""

  def summary_keys(self, regularizer: str) -> tuple[str, ...]:
    """The final numbers summarized over seeds under `regularizer`."""
    del regularizer
    return SUMMARY_KEYS

  def quality_panel(self) -> tuple[str, str, bool]:
    """The figure's quality panel: (history key, name, whether a percentage)."""
    return ("accuracy", "accuracy", True)

  def note(self, data: Dataset, epochs: int) -> str:
    """The table title's note on the budget."""
    del data
    return f"{epochs} epochs"
