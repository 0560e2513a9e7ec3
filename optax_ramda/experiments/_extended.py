"""The trainer of the lm task and of the nuclear-norm (low-rank) runs.

:class:`ExtendedTrainer` is the main job's :class:`Trainer` with two options:

* ``regularizer="nuclear"``: every kernel that
  :func:`optax_ramda.input_channel_groups` would group gets
  :func:`optax_ramda.nuclear` instead (biases, embeddings and norms stay
  free), the paper's low-rank setting; each epoch then records the low-rank
  level of the weights and of Ŵ (:func:`~optax_ramda.experiments._export.low_rank_level`),
  and the exported size is that of
  :func:`~optax_ramda.experiments._export.export_low_rank`.
* a language model (the lm task): each epoch records the validation loss and
  perplexity (exp of the mean token cross-entropy); the end of the run adds the
  test split's, and the exported size is that of
  :func:`~optax_ramda.experiments._export.export_transformer` (group lasso).
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import _export, _lm
from optax_ramda.experiments._train import Trainer

REGULARIZERS = ("group_lasso", "nuclear")


def one_blas_thread() -> threadpoolctl.threadpool_limits:
  """Limits BLAS and LAPACK to one thread, as a context manager.

  On CPU, jax computes an SVD (each step of the nuclear-norm runs takes
  several) with the LAPACK of scipy's OpenBLAS, which starts threads of its
  own beside XLA's. On a machine with few cores they compete with XLA's and
  with each other's spin-waits: on the 2-core machine of README's nuclear
  table, a 128 × 128 float32 SVD took 97 ms with OpenBLAS's default threads
  while another process kept the other core busy, and 3.9 ms with one.
  """
  import scipy.linalg  # noqa: F401  # Loads the OpenBLAS that jax's LAPACK calls.

  return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def nuclear_specs(group_specs: Any) -> Any:
  """`group_specs` with every group-lasso spec replaced by :func:`oxr.nuclear`.

  Raises:
    ValueError: if a regularized leaf is not a matrix (e.g. a convolution).
  """

  def swap(spec):
    return None if spec is None else oxr.nuclear()

  specs = jax.tree.map(
    swap, group_specs, is_leaf=lambda x: x is None or isinstance(x, oxr.Regularizer)
  )
  return specs


class ExtendedTrainer(Trainer):
  """:class:`Trainer` with the nuclear regularizer and language-model metrics.

  Args:
    *args: as for :class:`Trainer`.
    regularizer: ``"group_lasso"`` (the paper's input groups) or
      ``"nuclear"`` (low rank; 2-D kernels only).
    test: for a language model, the test windows and targets ``(x, y)``
      evaluated once after training (``data.x_test`` is then the validation
      split, evaluated every epoch); None for a classifier.
    **kwargs: as for :class:`Trainer`.

  Raises:
    ValueError: for an unknown `regularizer`, or ``"nuclear"`` on a model
      whose kernels are not all matrices.
  """

  def __init__(
    self,
    *args: Any,
    regularizer: str = "group_lasso",
    test: tuple[np.ndarray, np.ndarray] | None = None,
    **kwargs: Any,
  ):
    if regularizer not in REGULARIZERS:
      raise ValueError(
        f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}."
      )
    super().__init__(*args, **kwargs)
    self.regularizer = regularizer
    self.language_model = test is not None
    if regularizer == "nuclear":
      shapes = jax.tree.leaves(
        jax.tree.map(
          lambda s, p: None if s is None else p.shape,
          self.specs,
          nnx.to_pure_dict(nnx.state(self.task.model(self.data, 0))),
          is_leaf=lambda x: x is None or isinstance(x, oxr.Regularizer),
        ),
        is_leaf=lambda x: isinstance(x, tuple),
      )
      bad = [s for s in shapes if len(s) != 2]
      if bad:
        raise ValueError(
          f"the nuclear regularizer needs matrix kernels; task {self.task.name} "
          f"has kernels of shapes {sorted(set(bad))}."
        )
      self.specs = nuclear_specs(self.specs)
      self.tx = self.method.make(self.settings, self.specs)
    self.extra_metrics: tuple[str, ...] = ()
    if self.language_model:
      self.extra_metrics += ("val_loss", "val_perplexity", "prox_val_perplexity")
    if regularizer == "nuclear":
      self.extra_metrics += ("low_rank_level", "prox_low_rank_level")
    if test is not None:
      self.x_eval = self._replicate(test[0])
      self.y_eval = self._replicate(test[1])
      self._test_loss = jax.jit(lambda p, x, y: _lm.cross_entropy(self.logits(p, x), y))
    self.export_report: _export.ExportReport | None = None

  def _evaluate_fn(self, params, opt_state, x_test, y_test):
    values = super()._evaluate_fn(params, opt_state, x_test, y_test)
    prox = oxr.prox_iterate(opt_state) if self.method.dual_averaging else params
    if self.language_model:
      loss = _lm.cross_entropy(self.logits(params, x_test), y_test)
      values["val_loss"] = loss
      values["val_perplexity"] = jnp.exp(loss)
      if self.method.dual_averaging:
        prox_loss = _lm.cross_entropy(self.logits(prox, x_test), y_test)
        values["prox_val_perplexity"] = jnp.exp(prox_loss)
      else:
        values["prox_val_perplexity"] = values["val_perplexity"]
    if self.regularizer == "nuclear":
      values["low_rank_level"] = _export.low_rank_level(params, self.specs)
      values["prox_low_rank_level"] = _export.low_rank_level(prox, self.specs)
    return values

  def run(self, seed: int, epochs: int, **kwargs: Any):
    """:meth:`Trainer.run`, with :attr:`extra_metrics` in the history and final.

    A language model's final metrics also hold ``test_loss`` and
    ``perplexity`` (the test split's), and every run's ``flops`` and
    ``flops_after_export`` (per example, from the export). Nuclear-norm runs
    train under :func:`one_blas_thread`.
    """
    extra: dict[str, list[float]] = {k: [] for k in self.extra_metrics}

    def keep(values: dict[str, Any]) -> None:
      for k in self.extra_metrics:
        extra[k].append(float(values[k]))

    params, opt_state = self.init(seed)  # The initialization's record.
    keep(jax.device_get(self._evaluate(params, opt_state, self.x_test, self.y_test)))
    user_hook = kwargs.pop("on_epoch", None)

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
      keep(values)
      if user_hook is not None:
        user_hook(epoch, values)

    self.export_report = None
    with (
      one_blas_thread() if self.regularizer == "nuclear" else contextlib.nullcontext()
    ):
      result = super().run(seed, epochs, on_epoch=on_epoch, **kwargs)
    result.history.update(extra)
    result.final.update({k: v[-1] for k, v in extra.items()})
    if self.language_model:
      loss = float(self._test_loss(result.params, self.x_eval, self.y_eval))
      result.final["test_loss"] = loss
      result.final["perplexity"] = float(np.exp(loss))
    report = self.export_report
    result.final["flops"] = float("nan") if report is None else report.flops_before
    result.final["flops_after_export"] = (
      float("nan") if report is None else report.flops_after
    )
    return result

  def pruned_params(self, params: Any) -> int:
    """Parameter count of the exported model (low-rank or structured)."""
    model = nnx.merge(self.graphdef, params)
    sample = jnp.asarray(self.data.x_test[: min(16, len(self.data.x_test))])
    if self.regularizer == "nuclear":
      _, report = _export.export_low_rank(model, self.specs, sample)
    elif self.language_model:
      _, report = _export.export_transformer(model, sample)  # type: ignore[arg-type]
    else:
      return super().pruned_params(params)
    self.export_report = report
    return report.params_after
