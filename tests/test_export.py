"""Tests for the exports and the low-rank level (optax_ramda.experiments._export).

Oracles: the exported models' outputs against the originals' (float32
tolerance), their parameter counts against counts made here from the zero
patterns and ranks, the low-rank level against ``numpy.linalg.svd`` /
``matrix_rank``, and a nuclear-norm CLI run whose low-rank level and exported
size are recomputed from its saved weights with NumPy.
"""

import contextlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import TASKS, _export, _lm, load_params, main
from optax_ramda.experiments._regularizers import nuclear_specs


def _zero_rows(linear, rows):
  kernel = np.array(linear.kernel[...])
  kernel[np.asarray(rows, int)] = 0
  linear.kernel.set_value(jnp.asarray(kernel))


def _expected_params(model, width, vocab, seq_len):
  """Parameters of the export, counted from the zero rows of the original."""
  total = vocab * width + seq_len * width + 2 * width  # Embeddings, final norm.
  for block in model.blocks:
    s = block.shape
    wo = np.asarray(block.attention.out.kernel[...])
    w2 = np.asarray(block.fc2.kernel[...])
    features = np.flatnonzero(np.any(wo != 0, 1))
    heads = sorted({int(f) // s.head_dim for f in features})
    cols = [h * s.head_dim + j for h in heads for j in range(s.head_dim)]
    hidden = np.flatnonzero(np.any(w2 != 0, 1))

    def rows(w, keep):
      return int(np.sum(np.any(np.asarray(w)[:, keep] != 0, 1)))

    att = block.attention
    total += 4 * width  # Two norms.
    total += (rows(att.query.kernel[...], cols) + 1) * len(cols)
    total += (rows(att.key.kernel[...], cols) + 1) * len(cols)
    total += (rows(att.value.kernel[...], features) + 1) * len(features)
    total += len(features) * width + width
    total += (rows(block.fc1.kernel[...], hidden) + 1) * len(hidden)
    total += len(hidden) * width + width
  return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transformer_export_keeps_logits_and_counts(seed):
  rng = np.random.default_rng(seed)
  width, heads, hidden, seq_len = 16, 4, 24, 8
  model = _lm.Transformer(seq_len, width, 2, heads, hidden, nnx.Rngs(seed))
  for block in model.blocks:
    att = block.attention
    _zero_rows(block.fc2, rng.choice(hidden, rng.integers(0, hidden), replace=False))
    _zero_rows(att.out, rng.choice(width, rng.integers(0, width + 1), replace=False))
    for linear in (att.query, att.key, att.value, block.fc1):
      _zero_rows(linear, rng.choice(width, rng.integers(0, 6), replace=False))
  if seed == 2:  # Whole heads gone; one block without attention at all.
    _zero_rows(model.blocks[0].attention.out, np.arange(8))
    _zero_rows(model.blocks[1].attention.out, np.arange(width))
  x = jnp.asarray(rng.integers(0, 256, (3, seq_len)), jnp.int32)
  new, report = _export.export_transformer(model, x)
  np.testing.assert_allclose(new(x), model(x), rtol=1e-5, atol=1e-5)
  # Embeddings and final norm; per block two norms, four (w × w + w) attention
  # projections and the MLP's (w × h + h) and (h × w + w).
  per_block = 4 * width + 4 * (width * width + width) + 2 * width * hidden
  per_block += hidden + width
  assert report.params_before == 256 * width + seq_len * width + 2 * width + 2 * (
    per_block
  )
  assert report.params_after == _expected_params(model, width, 256, seq_len)
  assert report.flops_after <= report.flops_before
  if seed == 2:
    assert new.blocks[1].shape.heads == 0
    assert new.blocks[0].shape.heads <= heads - 2


def test_transformer_export_of_a_dense_model_is_the_same_size():
  model = _lm.Transformer(8, 16, 1, 2, 24, nnx.Rngs(0))
  x = jnp.zeros((2, 8), jnp.int32)
  _, report = _export.export_transformer(model, x)
  assert report.params_after == report.params_before
  # Per token, 2 × multiply-accumulates: the tied output layer 16 × 256, the
  # four 16 × 16 attention projections, the MLP's 16 × 24 and 24 × 16, and
  # attention: scores q·k over 8 positions × 16 query features, and the mix
  # of 8 positions × 16 value features.
  per_token = 2 * (16 * 256 + 4 * 16 * 16 + 2 * 16 * 24 + 8 * 16 + 8 * 16)
  assert report.flops_before == report.flops_after == 8 * per_token == 98_304


def test_transformer_flops_count_attention_of_the_exported_heads():
  # One block, 4 heads of 4 features; the export keeps heads 0 and 2 (value
  # features 0-1 of head 0, 8-11 of head 2), and 10 MLP hidden units.
  model = _lm.Transformer(8, 16, 1, 4, 24, nnx.Rngs(0))
  block = model.blocks[0]
  _zero_rows(block.attention.out, [2, 3, 4, 5, 6, 7, 12, 13, 14, 15])
  _zero_rows(block.fc2, np.arange(10, 24))
  new, report = _export.export_transformer(model, jnp.zeros((2, 8), jnp.int32))
  assert new.blocks[0].shape.heads == 2 and new.blocks[0].shape.value_dims == (2, 4)
  t, width = 8, 16
  projections = 2 * 16 * 8 + 16 * 6 + 6 * 16  # q, k (8 columns), v and out (6).
  mlp = 16 * 10 + 10 * 16
  attention = t * 8 + t * 6  # Scores of 2 heads × 4, mixing of 6 features.
  per_token = 2 * (width * 256 + projections + mlp + attention)
  assert report.flops_after == t * per_token


def test_check_outputs_raises_on_a_difference():
  a = np.ones((2, 3), np.float32)
  assert _export.check_outputs(a, a) == 0.0
  with pytest.raises(ValueError, match="differ from the original"):
    _export.check_outputs(a + 1e-2, a)
  with pytest.raises(ValueError, match="shapes"):
    _export.check_outputs(a[:1], a)


def _with_rank(linear, rank, rng):
  n_in, n_out = linear.kernel.shape
  w = rng.normal(size=(n_in, rank)) @ rng.normal(size=(rank, n_out)) / n_in
  linear.kernel.set_value(jnp.asarray(w, jnp.float32))


def _specs(model):
  return nuclear_specs(nnx.to_pure_dict(oxr.input_channel_groups(model)))


def test_low_rank_level_matches_numpy_svd():
  rng = np.random.default_rng(0)
  params = {
    "a": jnp.asarray(rng.normal(size=(6, 9)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=(7, 3)) @ rng.normal(size=(3, 5)), jnp.float32),
    "c": jnp.zeros((4, 4), jnp.float32),
    "free": jnp.ones((5, 5), jnp.float32),
  }
  specs = {"a": oxr.nuclear(), "b": oxr.nuclear(), "c": oxr.nuclear(), "free": None}
  zeros = total = 0
  for key in ("a", "b", "c"):
    w = np.asarray(params[key])
    s = np.linalg.svd(w, compute_uv=False)
    zeros += np.sum(s <= s.max() * max(w.shape) * np.finfo(np.float32).eps)
    total += min(w.shape)
    assert min(w.shape) - np.linalg.matrix_rank(w) == np.sum(
      s <= s.max() * max(w.shape) * np.finfo(np.float32).eps
    )
  level = _export.low_rank_level(params, specs)
  assert zeros == 2 + 4  # b has rank 3 of 5; c is all zero.
  np.testing.assert_allclose(float(level), zeros / total)
  jitted = jax.jit(lambda p: _export.low_rank_level(p, specs))
  np.testing.assert_allclose(float(jitted(params)), zeros / total)
  assert float(_export.low_rank_level(params, {k: None for k in params})) == 0.0


def test_low_rank_export_of_mlp_and_transformer_keeps_outputs():
  rng = np.random.default_rng(0)
  mlp = TASKS["mlp"].build((64,), 10, nnx.Rngs(0))
  _with_rank(mlp.layers[0], 5, rng)  # 5·(64+128) < 64·128: factorized.
  _with_rank(mlp.layers[2], 100, rng)  # 100·256 > 128²: kept.
  x = jnp.asarray(rng.normal(size=(7, 64)), jnp.float32)
  new, report = _export.export_low_rank(mlp, _specs(mlp), x)
  np.testing.assert_allclose(new(x), mlp(x), rtol=1e-6, atol=1e-7)
  expected = 64 * 5 + 5 * 128 + 128 + (128 * 128 + 128) + (128 * 10 + 10)
  assert report.params_after == expected == _export.param_count(new)
  assert report.params_before == 26_122
  assert isinstance(new.layers[0], _export.LowRankLinear)
  assert isinstance(mlp.layers[0], nnx.Linear)  # The original is untouched.

  model = _lm.Transformer(8, 16, 1, 2, 32, nnx.Rngs(1))
  _with_rank(model.blocks[0].fc1, 2, rng)
  _with_rank(model.blocks[0].attention.value, 3, rng)
  tokens = jnp.asarray(rng.integers(0, 256, (2, 8)), jnp.int32)
  new, report = _export.export_low_rank(model, _specs(model), tokens)
  np.testing.assert_allclose(new(tokens), model(tokens), rtol=1e-6, atol=1e-6)
  saved = (16 * 32 - 2 * 48) + (16 * 16 - 3 * 32)
  assert report.params_before - report.params_after == saved


def test_cli_nuclear_mlp_numbers_recomputed_from_saved_weights(tmp_path):
  out = tmp_path / "run"
  argv = ["--regularizer", "nuclear", "--task", "mlp", "--optimizer", "ramda"]
  argv += ["--epochs", "2", "--seeds", "1", "--train-subset", "256"]
  argv += ["--reg-strength", "0.05", "--quiet", "--out", str(out)]
  with contextlib.redirect_stdout(io.StringIO()):
    assert main(argv) == 0
  with open(out / "results.json") as f:
    results = json.load(f)
  (run,) = results["runs"]
  ramda = results["summary"][0]["methods"]["RAMDA"]
  template = nnx.to_pure_dict(nnx.state(TASKS["mlp"].build((64,), 10, nnx.Rngs(0))))
  params = load_params(os.path.join(out, run["params_file"]), template)
  zeros = total = 0
  expected_params = 0
  for layer in params["layers"].values():
    w = layer["kernel"]
    rank = np.linalg.matrix_rank(w)
    zeros += min(w.shape) - rank
    total += min(w.shape)
    n_in, n_out = w.shape
    expected_params += min(n_in * n_out, rank * (n_in + n_out)) + n_out
  assert zeros > 0
  np.testing.assert_allclose(ramda["low_rank_level"]["mean"], zeros / total)
  assert ramda["params_after_pruning"]["mean"] == expected_params
  assert "low-rank level" in (out / "table.md").read_text()
