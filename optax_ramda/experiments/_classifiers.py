"""The classification tasks: digits logreg/mlp/cnn and mnist1d cnn1d.

Each classifier is an ``nnx.Sequential`` chain of ``Linear``/``Conv`` layers and
parameter-free callables, so that :func:`optax_ramda.input_channel_groups`
groups every kernel by input channel (the paper's grouping) and
:func:`optax_ramda.prune_input_channels` can export the smaller network. The
models are built from the shape of one example, so any array data set fits
(``--dataset``, or ``--data`` for a user's own ``.npz`` file).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import _data
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._task import METRICS, Column, Task, Test

# (key in a run's `final`, column header, format) of the tables.
COLUMNS: tuple[Column, ...] = (
  ("accuracy", "test accuracy (%)", "percent"),
  ("group_sparsity", "group sparsity (%)", "percent"),
  ("unstructured_sparsity", "unstructured sparsity (%)", "percent"),
  ("prox_group_sparsity", "Ŵ group sparsity (%)", "percent"),
  ("time_per_step_ms", "time/step (ms)", "ms"),
  ("params_after_pruning", "params after pruning", "count"),
  ("final_stage_flips", "group switches, final stage", "number"),
  ("prox_final_stage_flips", "Ŵ group switches, final stage", "number"),
)
NUCLEAR_COLUMNS: tuple[Column, ...] = (
  ("accuracy", "test accuracy (%)", "percent"),
  ("low_rank_level", "low-rank level (%)", "percent"),
  ("prox_low_rank_level", "Ŵ low-rank level (%)", "percent"),
  ("time_per_step_ms", "time/step (ms)", "ms"),
  ("params_after_pruning", "params after low-rank export", "count"),
)
# A run's final numbers summarized besides METRICS (group lasso).
FINAL_EXTRA = (
  "params_after_pruning",
  "time_per_step_ms",
  "final_stage_flips",
  "prox_final_stage_flips",
)


def _flatten(x):
  """Channels-last feature map → vector, C order (as pruning expects)."""
  return x.reshape(x.shape[0], -1)


def _logreg(shape: tuple[int, ...], classes: int, rngs: nnx.Rngs) -> nnx.Sequential:
  return nnx.Sequential(nnx.Linear(shape[-1], classes, rngs=rngs))


def _mlp(shape: tuple[int, ...], classes: int, rngs: nnx.Rngs) -> nnx.Sequential:
  return nnx.Sequential(
    nnx.Linear(shape[-1], 128, rngs=rngs),
    nnx.relu,
    nnx.Linear(128, 128, rngs=rngs),
    nnx.relu,
    nnx.Linear(128, classes, rngs=rngs),
  )


def _cnn(shape: tuple[int, ...], classes: int, rngs: nnx.Rngs) -> nnx.Sequential:
  h, w, c = shape
  return nnx.Sequential(
    nnx.Conv(c, 16, (3, 3), rngs=rngs),
    nnx.relu,
    nnx.Conv(16, 32, (3, 3), rngs=rngs),
    nnx.relu,
    functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2)),
    _flatten,
    nnx.Linear((h // 2) * (w // 2) * 32, classes, rngs=rngs),
  )


def _cnn1d(shape: tuple[int, ...], classes: int, rngs: nnx.Rngs) -> nnx.Sequential:
  length, c = shape
  out = math.ceil(math.ceil(length / 2) / 2)  # Two stride-2 'SAME' convolutions.
  return nnx.Sequential(
    nnx.Conv(c, 32, (5,), rngs=rngs),
    nnx.relu,
    nnx.Conv(32, 32, (3,), strides=(2,), rngs=rngs),
    nnx.relu,
    nnx.Conv(32, 32, (3,), strides=(2,), rngs=rngs),
    nnx.relu,
    _flatten,
    nnx.Linear(out * 32, classes, rngs=rngs),
  )


def _as_vectors(x: np.ndarray) -> np.ndarray:
  return x.reshape(x.shape[0], -1)


def _as_images(x: np.ndarray) -> np.ndarray:
  if x.ndim == 3:  # (n, h, w): one channel.
    return x[..., None]
  if x.ndim == 4:
    return x
  raise ValueError(
    f"the cnn task needs images of shape (examples, height, width[, channels]), "
    f"got examples of shape {x.shape[1:]}."
  )


def _as_signals(x: np.ndarray) -> np.ndarray:
  if x.ndim == 2:  # (n, length): one channel.
    return x[..., None]
  if x.ndim == 3:
    return x
  raise ValueError(
    f"the cnn1d task needs signals of shape (examples, length[, channels]), got "
    f"examples of shape {x.shape[1:]}."
  )


@dataclasses.dataclass(frozen=True)
class ClassifierTask(Task):
  """A classifier on an array data set (see :class:`~._task.Task`).

  Attributes:
    prepare: maps a data set's inputs (examples first) to the model's layout;
      raises ValueError if they cannot take it.
  """

  prepare: Callable[[np.ndarray], np.ndarray] = _as_vectors

  def prepared(self, data: Dataset) -> Dataset:
    """`data` with its inputs in this task's layout."""
    return data._replace(
      x_train=self.prepare(data.x_train), x_test=self.prepare(data.x_test)
    )

  def load(self, args: argparse.Namespace) -> tuple[Dataset, Test]:
    source = args.data or args.dataset or self.dataset
    data = _data.load(source)
    return self.prepared(_data.subset(data, args.train_subset, args.test_subset)), None

  def export(self, model: nnx.Module, data: Dataset) -> tuple[int, Any]:
    """Structured pruning: zero input groups of each layer are removed with the
    matching output channels of the layer feeding it, and zero input features
    of the first layer (:func:`optax_ramda.prune_input_channels`)."""
    sample = data.x_test[: min(256, len(data.x_test))]
    _, report = oxr.prune_input_channels(model, sample, prune_inputs=True)
    return report.params_after, None

  def columns(self, regularizer: str) -> tuple[Column, ...]:
    return NUCLEAR_COLUMNS if regularizer == "nuclear" else COLUMNS

  def summary_keys(self, regularizer: str) -> tuple[str, ...]:
    if regularizer == "nuclear":
      return super().summary_keys(regularizer)
    return (*METRICS, *FINAL_EXTRA)


CLASSIFIERS: tuple[ClassifierTask, ...] = (
  ClassifierTask(
    "logreg",
    "multinomial logistic regression, one group per input feature (convex)",
    "digits",
    _logreg,
    reg_strength=1e-3,
    epochs=30,
    batch_size=64,
    low_rank=True,
    prepare=_as_vectors,
  ),
  ClassifierTask(
    "mlp",
    "MLP 128-128, one group per input of every layer",
    "digits",
    _mlp,
    reg_strength=5e-4,
    epochs=30,
    batch_size=64,
    low_rank=True,
    prepare=_as_vectors,
  ),
  ClassifierTask(
    "cnn",
    "2-D CNN (conv 16, conv 32, pool, linear), one group per input channel",
    "digits",
    _cnn,
    reg_strength=5e-4,
    epochs=30,
    batch_size=64,
    prepare=_as_images,
  ),
  ClassifierTask(
    "cnn1d",
    "1-D CNN (3 convs of 32, linear), one group per input channel",
    "mnist1d",
    _cnn1d,
    reg_strength=3e-4,
    epochs=30,
    batch_size=64,
    prepare=_as_signals,
  ),
)
