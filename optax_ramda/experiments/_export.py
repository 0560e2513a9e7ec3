"""Exports of trained models: the smaller network their zeros or low rank imply.

* :func:`export_transformer`: the structured export of the lm task's
  :class:`~optax_ramda.experiments._transformer.Transformer` under the paper's input
  groups. A zero input group of an MLP's second layer removes that hidden unit
  (the first layer's column and bias entry too); a zero input group of the
  attention output projection removes that value feature (the value
  projection's column), and a head whose value features are all gone loses
  its query and key columns as well; zero rows of the query, key, value and
  first MLP kernels (after those removals) drop the matching input features
  of the normalized residual stream. The residual width, embeddings and norms
  stay.
* :func:`export_low_rank`: every ``nnx.Linear`` whose kernel carries a
  :func:`optax_ramda.nuclear` spec and has numerical rank r becomes two
  layers, (in × r, no bias) then (r × out, with the bias), when
  r·(in + out) < in·out.
* :func:`low_rank_level`: the paper's low-rank level, the fraction of zero
  singular values among all singular values of the nuclear-regularized
  matrices.

Both exports compare the new model's outputs with the old one's on a sample
batch and raise if they differ beyond float32 tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments._transformer import BlockShape, Transformer


@dataclasses.dataclass(frozen=True)
class ExportReport:
  """What an export removed.

  Attributes:
    params_before: parameters of the original model.
    params_after: parameters of the exported model.
    flops_before: FLOPs per example (2 × multiply-accumulates of the matrix
      products; for the Transformer per sequence, attention included).
    flops_after: the same for the exported model.
    max_abs_diff: the largest difference between the two models' outputs on
      the sample batch.
    detail: per layer, what was kept (text).
  """

  params_before: int
  params_after: int
  flops_before: int
  flops_after: int
  max_abs_diff: float
  detail: tuple[str, ...] = ()

  def __str__(self) -> str:
    return (
      f"params {self.params_before:,} -> {self.params_after:,} "
      f"(-{100 * (1 - self.params_after / self.params_before):.1f}%), "
      f"FLOPs {self.flops_before:,} -> {self.flops_after:,} "
      f"(-{100 * (1 - self.flops_after / max(self.flops_before, 1)):.1f}%), "
      f"max |Δoutput| {self.max_abs_diff:.2e}"
    )


def param_count(model: Any) -> int:
  """The number of parameters (``nnx.Param`` entries) of a model."""
  return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def check_outputs(
  new: jax.Array, old: jax.Array, *, rtol: float = 1e-4, atol: float = 1e-4
) -> float:
  """Raises ValueError unless ``|new − old| ≤ atol + rtol·|old|`` everywhere.

  Returns:
    The largest absolute difference.
  """
  a, b = np.asarray(new, np.float64), np.asarray(old, np.float64)
  same_shape = a.shape == b.shape
  diff = np.abs(a - b) if same_shape else np.full(1, np.inf)
  if not same_shape or not np.all(diff <= atol + rtol * np.abs(b)):
    worst = float(np.max(diff)) if same_shape else float("nan")
    raise ValueError(
      f"the exported model's outputs differ from the original's (shapes "
      f"{a.shape} vs {b.shape}, max |Δ| {worst:.3g}, tolerance "
      f"{atol:g} + {rtol:g}·|output|)."
    )
  return float(np.max(diff, initial=0.0))


def _nonzero_rows(kernel: np.ndarray) -> np.ndarray:
  return np.flatnonzero(np.any(kernel != 0, axis=1))


def _inputs(rows: np.ndarray, width: int) -> tuple[int, ...] | None:
  return None if len(rows) == width else tuple(int(i) for i in rows)


def _set(linear: Any, kernel: np.ndarray, bias: np.ndarray | None) -> None:
  linear.kernel.set_value(jnp.asarray(kernel, linear.kernel[...].dtype))
  if bias is not None:
    linear.bias.set_value(jnp.asarray(bias, linear.bias[...].dtype))


def _copy(new: Any, old: Any) -> None:
  """Copies a norm layer's scale and bias."""
  new.scale.set_value(old.scale[...])
  new.bias.set_value(old.bias[...])


def _rows(kernel: np.ndarray, keep: tuple[int, ...] | None) -> np.ndarray:
  return kernel if keep is None else kernel[np.asarray(keep, np.int64)]


def transformer_flops(model: Transformer) -> int:
  """FLOPs of one sequence of ``model.seq_len`` tokens through `model`.

  Counts 2 × multiply-accumulates of every projection, of the attention scores
  (q·k over all t × t pairs, as computed before masking) and of the attention
  mixing, and of the tied output layer; norms, softmax and biases excluded.
  """
  t, width = model.seq_len, model.width
  total = 2 * width * model.vocab  # Output layer (tied embedding).
  for block in model.blocks:
    s = block.shape
    for linear in (
      block.attention.query,
      block.attention.key,
      block.attention.value,
      block.attention.out,
      block.fc1,
      block.fc2,
    ):
      total += 2 * math.prod(linear.kernel[...].shape)
    total += 2 * t * (s.heads * s.head_dim + sum(s.value_dims))
  return int(t * total)


def export_transformer(
  model: Transformer, sample: jax.Array, *, rtol: float = 1e-4, atol: float = 1e-4
) -> tuple[Transformer, ExportReport]:
  """The smaller Transformer that computes the same logits (structured export).

  Args:
    model: a trained :class:`~optax_ramda.experiments._transformer.Transformer` (full
      shapes).
    sample: a batch of token windows, to check that both models agree.
    rtol: relative tolerance of that check.
    atol: absolute tolerance of that check.

  Returns:
    The exported model and an :class:`ExportReport`.

  Raises:
    ValueError: if the exported model's logits differ from the original's.
  """
  width = model.width
  plans = []
  for block in model.blocks:
    att, s = block.attention, block.shape
    wq, wk = np.asarray(att.query.kernel[...]), np.asarray(att.key.kernel[...])
    wv, wo = np.asarray(att.value.kernel[...]), np.asarray(att.out.kernel[...])
    w1, w2 = np.asarray(block.fc1.kernel[...]), np.asarray(block.fc2.kernel[...])
    offsets = np.concatenate([[0], np.cumsum(s.value_dims)])
    features = _nonzero_rows(wo)  # Value features the output projection reads.
    heads = [
      h
      for h in range(s.heads)
      if np.any((features >= offsets[h]) & (features < offsets[h + 1]))
    ]
    value_dims = tuple(
      int(np.sum((features >= offsets[h]) & (features < offsets[h + 1]))) for h in heads
    )
    qk_cols = np.concatenate(
      [np.arange(h * s.head_dim, (h + 1) * s.head_dim) for h in heads]
      or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    hidden = _nonzero_rows(w2)
    shape = BlockShape(
      heads=len(heads),
      head_dim=s.head_dim,
      value_dims=value_dims,
      hidden=len(hidden),
      query_inputs=_inputs(_nonzero_rows(wq[:, qk_cols]), width),
      key_inputs=_inputs(_nonzero_rows(wk[:, qk_cols]), width),
      value_inputs=_inputs(_nonzero_rows(wv[:, features]), width),
      mlp_inputs=_inputs(_nonzero_rows(w1[:, hidden]), width),
    )
    plans.append((shape, qk_cols, features, hidden))

  new = Transformer(
    model.seq_len,
    width,
    len(plans),
    1,
    1,
    nnx.Rngs(0),
    vocab=model.vocab,
    shapes=tuple(p[0] for p in plans),
  )
  new.embed.embedding.set_value(model.embed.embedding[...])
  new.position.embedding.set_value(model.position.embedding[...])
  _copy(new.norm, model.norm)
  detail = []
  for i, (old_b, new_b, (shape, qk_cols, features, hidden)) in enumerate(
    zip(model.blocks, new.blocks, plans, strict=True)
  ):
    new_b.attention.scale = old_b.attention.scale
    for name in ("norm1", "norm2"):
      _copy(getattr(new_b, name), getattr(old_b, name))
    oa, na = old_b.attention, new_b.attention

    def get(linear):
      return np.asarray(linear.kernel[...]), np.asarray(linear.bias[...])

    (wq, bq), (wk, bk) = get(oa.query), get(oa.key)
    (wv, bv), (wo, bo) = get(oa.value), get(oa.out)
    _set(na.query, _rows(wq[:, qk_cols], shape.query_inputs), bq[qk_cols])
    _set(na.key, _rows(wk[:, qk_cols], shape.key_inputs), bk[qk_cols])
    _set(na.value, _rows(wv[:, features], shape.value_inputs), bv[features])
    _set(na.out, wo[features], bo)
    (w1, b1), (w2, b2) = get(old_b.fc1), get(old_b.fc2)
    _set(new_b.fc1, _rows(w1[:, hidden], shape.mlp_inputs), b1[hidden])
    _set(new_b.fc2, w2[hidden], b2)
    detail.append(
      f"block {i}: heads {old_b.shape.heads} -> {shape.heads}, value features "
      f"{sum(old_b.shape.value_dims)} -> {sum(shape.value_dims)}, MLP hidden "
      f"{old_b.shape.hidden} -> {shape.hidden}, inputs q/k/v/mlp "
      + "/".join(
        str(_size(k, width))
        for k in (
          shape.query_inputs,
          shape.key_inputs,
          shape.value_inputs,
          shape.mlp_inputs,
        )
      )
      + f" of {width}"
    )
  diff = check_outputs(new(sample), model(sample), rtol=rtol, atol=atol)
  report = ExportReport(
    param_count(model),
    param_count(new),
    transformer_flops(model),
    transformer_flops(new),
    diff,
    tuple(detail),
  )
  return new, report


def _size(keep: tuple[int, ...] | None, width: int) -> int:
  return width if keep is None else len(keep)


def _tolerance(s: np.ndarray, shape: Sequence[int], dtype: Any) -> float:
  """Singular values at or below this count as zero (NumPy's matrix_rank rule)."""
  return float(np.max(s, initial=0.0)) * max(shape) * float(jnp.finfo(dtype).eps)


def _nuclear_kernels(params: Any, specs: Any) -> list[jax.Array]:
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: x is None or oxr_is_spec(x))
  return [
    w
    for spec, w in zip(leaves, jax.tree.leaves(params), strict=True)
    if isinstance(spec, oxr.Nuclear)
  ]


def oxr_is_spec(x: Any) -> bool:
  """Whether `x` is a regularizer spec."""
  return isinstance(x, oxr.Regularizer)


def low_rank_level(params: Any, specs: Any) -> jax.Array:
  """The fraction of zero singular values of the nuclear-regularized matrices.

  The paper's low-rank level: over every leaf with a :func:`optax_ramda.nuclear`
  spec, the singular values at or below ``σ_max · max(m, n) · eps`` (the
  numerical-rank rule of ``numpy.linalg.matrix_rank`` in the leaf's dtype)
  counted among all ``min(m, n)`` of them. Works under ``jax.jit``.

  Args:
    params: the parameters (or Ŵ), a pytree.
    specs: the matching spec tree (None for unregularized leaves).

  Returns:
    A scalar in [0, 1] (0 when no leaf is nuclear-regularized).
  """
  zeros, total = jnp.zeros(()), 0
  for w in _nuclear_kernels(params, specs):
    s = jnp.linalg.svd(w, compute_uv=False)
    tol = jnp.max(s, initial=0.0) * max(w.shape) * jnp.finfo(w.dtype).eps
    zeros = zeros + jnp.sum(s <= tol)
    total += min(w.shape)
  return zeros / total if total else jnp.zeros(())


class LowRankLinear(nnx.Module):
  """``x @ down @ up + bias``: a rank-r factorization of a Linear layer."""

  def __init__(self, kernel_down: np.ndarray, kernel_up: np.ndarray, bias: Any):
    n_in, rank = kernel_down.shape
    n_out = kernel_up.shape[1]
    zeros = nnx.initializers.zeros
    rngs = nnx.Rngs(0)
    self.down = nnx.Linear(n_in, rank, use_bias=False, kernel_init=zeros, rngs=rngs)
    self.up = nnx.Linear(
      rank, n_out, use_bias=bias is not None, kernel_init=zeros, rngs=rngs
    )
    _set(self.down, kernel_down, None)
    _set(self.up, kernel_up, bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.up(self.down(x))


def _replace(root: Any, path: tuple[Hashable, ...], new: Any) -> None:
  parent = root
  for key in path[:-1]:
    parent = parent[key] if isinstance(key, int) else getattr(parent, str(key))
  if isinstance(path[-1], int):
    parent[path[-1]] = new
  else:
    setattr(parent, str(path[-1]), new)


def export_low_rank(
  model: Any,
  specs: Any,
  sample: jax.Array,
  *,
  rtol: float = 1e-4,
  atol: float = 1e-4,
) -> tuple[Any, ExportReport]:
  """Factorizes every nuclear-regularized Linear of rank r into two layers.

  A kernel W (in × out) of numerical rank r (singular values above
  ``σ_max · max(in, out) · eps``) with r·(in + out) < in·out becomes
  ``W = (U_r S_r)(V_rᵀ)``: a Linear (in × r, no bias) followed by one
  (r × out) with the original bias. Other layers are kept.

  Args:
    model: an ``nnx.Module`` (it is not modified).
    specs: its spec tree, as for ``nnx.state(model, nnx.Param)`` in pure-dict
      form; kernels with a :class:`optax_ramda.Nuclear` spec are candidates.
    sample: an input batch, to check that both models agree.
    rtol: relative tolerance of that check.
    atol: absolute tolerance of that check.

  Returns:
    The exported model and an :class:`ExportReport` (FLOPs per example of the
    Linear layers, 2 × in × out each, or 2 × r × (in + out) when factorized).

  Raises:
    ValueError: if the exported model's outputs differ from the original's.
  """
  nuclear_paths = set()
  for path, spec in jax.tree_util.tree_flatten_with_path(
    specs, is_leaf=lambda x: x is None or oxr_is_spec(x)
  )[0]:
    if isinstance(spec, oxr.Nuclear):
      names = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
      nuclear_paths.add(names[:-1])  # The Linear module's path.
  new = nnx.clone(model)
  flops_before = flops_after = 0
  detail = []
  for path, node in list(nnx.iter_graph(model)):
    if not isinstance(node, nnx.Linear):
      continue
    w = np.asarray(node.kernel[...], np.float64)
    n_in, n_out = w.shape
    flops_before += 2 * n_in * n_out
    if tuple(path) not in nuclear_paths:
      flops_after += 2 * n_in * n_out
      continue
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    rank = int(np.sum(s > _tolerance(s, w.shape, node.kernel[...].dtype)))
    if rank * (n_in + n_out) >= n_in * n_out:
      flops_after += 2 * n_in * n_out
      detail.append(f"{'/'.join(map(str, path))}: rank {rank}, kept {n_in}×{n_out}")
      continue
    dtype = node.kernel[...].dtype
    down = (u[:, :rank] * s[:rank]).astype(dtype)
    up = vt[:rank].astype(dtype)
    bias = None if node.bias is None else node.bias[...]
    _replace(new, tuple(path), LowRankLinear(down, up, bias))
    flops_after += 2 * rank * (n_in + n_out)
    detail.append(
      f"{'/'.join(map(str, path))}: rank {rank}, {n_in}×{n_out} -> "
      f"{n_in}×{rank} + {rank}×{n_out}"
    )
  diff = check_outputs(new(sample), model(sample), rtol=rtol, atol=atol)
  return new, ExportReport(
    param_count(model),
    param_count(new),
    flops_before,
    flops_after,
    diff,
    tuple(detail),
  )
