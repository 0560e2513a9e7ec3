"""The lm task's model: a byte-level decoder-only pre-norm Transformer in Flax NNX.

Token and learned position embeddings, blocks of causal multi-head
self-attention and a GELU MLP (each behind a LayerNorm, added to the residual
stream), a final LayerNorm and an output layer tied to the token embedding.
Every projection is an ``nnx.Linear``, so :func:`optax_ramda.input_channel_groups`
gives one group per input feature of the attention query/key/value/output and
MLP kernels, while the embeddings and norms stay unregularized. A
:class:`BlockShape` describes a block as trained or as exported (fewer heads,
value features, hidden units and input features).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

VOCAB = 256  # Byte level.


def _take(x: jax.Array, keep: tuple[int, ...] | None) -> jax.Array:
  return x if keep is None else x[..., np.asarray(keep, np.int32)]


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs, zeros: bool) -> nnx.Linear:
  if zeros:  # Export targets: weights are copied in; sizes may be zero.
    init = nnx.initializers.zeros
    return nnx.Linear(n_in, n_out, kernel_init=init, rngs=rngs)
  return nnx.Linear(n_in, n_out, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class BlockShape:
  """The sizes of one Transformer block, full or as exported.

  Attributes:
    heads: the attention heads kept.
    head_dim: the query/key width of each head.
    value_dims: the value width of each kept head.
    hidden: the MLP's hidden units.
    query_inputs: the input features the query projection reads (None: all);
      likewise `key_inputs`, `value_inputs` and `mlp_inputs` (the MLP's first
      layer). The features index the block's normalized residual stream.
  """

  heads: int
  head_dim: int
  value_dims: tuple[int, ...]
  hidden: int
  query_inputs: tuple[int, ...] | None = None
  key_inputs: tuple[int, ...] | None = None
  value_inputs: tuple[int, ...] | None = None
  mlp_inputs: tuple[int, ...] | None = None

  @staticmethod
  def full(width: int, heads: int, hidden: int) -> BlockShape:
    """The shape of an unpruned block."""
    if width % heads:
      raise ValueError(f"width {width} is not a multiple of heads {heads}.")
    head_dim = width // heads
    return BlockShape(heads, head_dim, (head_dim,) * heads, hidden)


def _size(keep: tuple[int, ...] | None, width: int) -> int:
  return width if keep is None else len(keep)


class Attention(nnx.Module):
  """Causal multi-head self-attention with per-head value widths."""

  def __init__(
    self, width: int, shape: BlockShape, scale: float, rngs: nnx.Rngs, zeros: bool
  ):
    self.shape = shape
    self.scale = scale
    qk = shape.heads * shape.head_dim
    self.query = _linear(_size(shape.query_inputs, width), qk, rngs, zeros)
    self.key = _linear(_size(shape.key_inputs, width), qk, rngs, zeros)
    self.value = _linear(
      _size(shape.value_inputs, width), sum(shape.value_dims), rngs, zeros
    )
    self.out = _linear(sum(shape.value_dims), width, rngs, zeros)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    s = self.shape
    if s.heads == 0:
      return self.out(jnp.zeros((b, t, 0), x.dtype))
    q = self.query(_take(x, s.query_inputs)).reshape(b, t, s.heads, s.head_dim)
    k = self.key(_take(x, s.key_inputs)).reshape(b, t, s.heads, s.head_dim)
    v = self.value(_take(x, s.value_inputs))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * self.scale
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    if len(set(s.value_dims)) == 1:
      v = v.reshape(b, t, s.heads, s.value_dims[0])
      mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, -1)
    else:  # Exported: heads of different value widths.
      bounds = np.cumsum(s.value_dims)[:-1].tolist()
      parts = jnp.split(v, bounds, axis=-1)
      mixed = jnp.concatenate(
        [
          jnp.einsum("bqk,bkd->bqd", weights[:, h], part)
          for h, part in enumerate(parts)
        ],
        axis=-1,
      )
    return self.out(mixed)


class Block(nnx.Module):
  """Pre-norm block: x + attention(norm(x)), then + MLP(norm(x))."""

  def __init__(
    self, width: int, shape: BlockShape, scale: float, rngs: nnx.Rngs, zeros: bool
  ):
    self.shape = shape
    self.norm1 = nnx.LayerNorm(width, rngs=rngs)
    self.attention = Attention(width, shape, scale, rngs, zeros)
    self.norm2 = nnx.LayerNorm(width, rngs=rngs)
    self.fc1 = _linear(_size(shape.mlp_inputs, width), shape.hidden, rngs, zeros)
    self.fc2 = _linear(shape.hidden, width, rngs, zeros)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attention(self.norm1(x))
    h = nnx.gelu(self.fc1(_take(self.norm2(x), self.shape.mlp_inputs)))
    return x + self.fc2(h)


class Transformer(nnx.Module):
  """Decoder-only pre-norm Transformer over bytes, output tied to the embedding.

  Args:
    seq_len: the context length (learned positions).
    width: the residual width.
    depth: the number of blocks.
    heads: attention heads per block (``width`` must be a multiple).
    hidden: MLP hidden units per block.
    rngs: the initialization's random streams.
    vocab: the vocabulary size.
    shapes: per-block :class:`BlockShape` (an exported model); default full.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_ramda.experiments._transformer import Transformer
    >>> model = Transformer(8, 16, 1, 2, 32, nnx.Rngs(0))
    >>> model(jnp.zeros((3, 8), jnp.int32)).shape
    (3, 8, 256)
  """

  def __init__(
    self,
    seq_len: int,
    width: int,
    depth: int,
    heads: int,
    hidden: int,
    rngs: nnx.Rngs,
    *,
    vocab: int = VOCAB,
    shapes: tuple[BlockShape, ...] | None = None,
  ):
    zeros = shapes is not None
    if shapes is None:
      shapes = (BlockShape.full(width, heads, hidden),) * depth
    self.seq_len, self.width, self.vocab = seq_len, width, vocab
    scale = 1 / math.sqrt(width // heads)
    self.embed = nnx.Embed(vocab, width, rngs=rngs)
    self.position = nnx.Embed(seq_len, width, rngs=rngs)
    self.blocks = nnx.List([Block(width, s, scale, rngs, zeros) for s in shapes])
    self.norm = nnx.LayerNorm(width, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = self.embed(tokens) + self.position(jnp.arange(tokens.shape[-1]))
    for block in self.blocks:
      x = block(x)
    return self.embed.attend(self.norm(x))


@dataclasses.dataclass(frozen=True)
class Config:
  """The lm task's model size and context.

  Attributes:
    seq_len: context length in bytes.
    width: residual width.
    depth: blocks.
    heads: attention heads per block.
    hidden: MLP hidden units per block.
    chars: the corpus bytes used (None: all 5.3 MB).
  """

  seq_len: int = 64
  width: int = 64
  depth: int = 2
  heads: int = 4
  hidden: int = 256
  chars: int | None = 300_000

  def build(self, shape: tuple[int, ...], classes: int, rngs: nnx.Rngs) -> Transformer:
    """The model for windows of `shape` = (seq_len,) and `classes` tokens."""
    return Transformer(
      shape[0], self.width, self.depth, self.heads, self.hidden, rngs, vocab=classes
    )
