"""The experiment tasks: a Flax NNX model family and its default data set.

Each classifier is an ``nnx.Sequential`` chain of ``Linear``/``Conv`` layers and
parameter-free callables, so that :func:`optax_ramda.input_channel_groups`
groups every kernel by input channel (the paper's grouping) and
:func:`optax_ramda.prune_input_channels` can export the smaller network. The
models are built from the shape of one example, so any array data set fits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
from flax import nnx

from optax_ramda.experiments import _lm
from optax_ramda.experiments._data import Dataset


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
class Task:
  """A model family with its data layout and training defaults.

  Attributes:
    name: the task's name on the command line.
    description: one line for ``--help`` and the report.
    dataset: the built-in data set it runs on by default.
    prepare: maps a data set's inputs (examples first) to the model's layout;
      raises ValueError if they cannot take it.
    build: ``(example shape, classes, rngs) -> model`` (an ``nnx.Sequential``,
      or the lm task's Transformer).
    reg_strength: the default λ of the group-lasso regularizer.
    epochs: the default number of epochs.
    batch_size: the default minibatch size.
  """

  name: str
  description: str
  dataset: str
  prepare: Callable[[np.ndarray], np.ndarray]
  build: Callable[[tuple[int, ...], int, nnx.Rngs], nnx.Module]
  reg_strength: float
  epochs: int
  batch_size: int

  def model(self, data: Dataset, seed: int) -> nnx.Module:
    """A freshly initialized model for `data` (inputs already prepared)."""
    return self.build(tuple(data.x_train.shape[1:]), data.num_classes, nnx.Rngs(seed))

  def prepared(self, data: Dataset) -> Dataset:
    """`data` with its inputs in this task's layout."""
    return data._replace(
      x_train=self.prepare(data.x_train), x_test=self.prepare(data.x_test)
    )


TASKS: dict[str, Task] = {
  t.name: t
  for t in (
    Task(
      "logreg",
      "multinomial logistic regression, one group per input feature (convex)",
      "digits",
      _as_vectors,
      _logreg,
      reg_strength=1e-3,
      epochs=30,
      batch_size=64,
    ),
    Task(
      "mlp",
      "MLP 128-128, one group per input of every layer",
      "digits",
      _as_vectors,
      _mlp,
      reg_strength=5e-4,
      epochs=30,
      batch_size=64,
    ),
    Task(
      "cnn",
      "2-D CNN (conv 16, conv 32, pool, linear), one group per input channel",
      "digits",
      _as_images,
      _cnn,
      reg_strength=5e-4,
      epochs=30,
      batch_size=64,
    ),
    Task(
      "cnn1d",
      "1-D CNN (3 convs of 32, linear), one group per input channel",
      "mnist1d",
      _as_signals,
      _cnn1d,
      reg_strength=3e-4,
      epochs=30,
      batch_size=64,
    ),
    Task(
      "lm",
      "byte-level decoder-only Transformer (2 blocks, width 64, context 64), "
      "one group per input of every attention/MLP kernel; perplexity",
      "shakespeare",
      lambda x: x,
      _lm.Config().build,
      reg_strength=1e-4,
      epochs=6,
      batch_size=32,
    ),
  )
}
