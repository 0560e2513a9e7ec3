"""The regularizer of a run: a setting orthogonal to the task and the optimizer.

* ``group_lasso`` (the default): :func:`optax_ramda.input_channel_groups`, the
  paper's input groups; the structure is the group sparsity, and the export is
  the task's structured one (:meth:`~._task.Task.export`).
* ``tied_group_lasso``: the same groups, with the kernels that read one input
  tied (:func:`optax_ramda.input_channel_groups` with ``tie=True``: attention's
  query, key and value; a recurrent cell's gates), so that a group is zero only
  when its feature can leave the input; at group lasso's calibrated points.
* ``nuclear``: every kernel that the input grouping would regularize gets
  :func:`optax_ramda.nuclear` instead (biases, embeddings and norms stay free),
  the paper's low-rank setting; each epoch also records the low-rank level of
  the weights and of Ŵ (:func:`~._export.low_rank_level`), the export is
  :func:`~._export.export_low_rank`, and the runs train under
  :func:`one_blas_thread`.

Each setting carries its calibrated points, (λ, η) per (task, optimizer).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import threadpoolctl
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import _export, _lm, _optimizers
from optax_ramda.experiments._data import Dataset
from optax_ramda.experiments._task import Task

NUCLEAR_OPTIMIZERS = ("ramda", "rmda", "proxgen", "prox_sgd", "sgd", "adamw")


def _is_spec(x: Any) -> bool:
  return x is None or isinstance(x, oxr.Regularizer)


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
  """`group_specs` with every group-lasso spec replaced by :func:`oxr.nuclear`."""
  return jax.tree.map(
    lambda s: None if s is None else oxr.nuclear(), group_specs, is_leaf=_is_spec
  )


@dataclasses.dataclass(frozen=True)
class GroupLasso:
  """The paper's input groups (see the module doc); the base of the others.

  Attributes:
    name: the name on the command line and in file names.
    calibrated: (λ, η) per (task, optimizer).
    optimizers: the default line-up (None: the task's).
    seeds: the default number of seeds (None: the task's).
  """

  name: str = "group_lasso"
  calibrated: Mapping[tuple[str, str], tuple[float, float]] = dataclasses.field(
    default_factory=lambda: collections.ChainMap(_optimizers.CALIBRATED, _lm.CALIBRATED)
  )
  optimizers: tuple[str, ...] | None = None
  seeds: int | None = None
  title: str = ""
  progress: tuple[tuple[str, str], ...] = (("group_sparsity", "group sparsity"),)
  structure_panel: tuple[str, str | None, str] = (
    "group_sparsity",
    "prox_group_sparsity",
    "group sparsity",
  )

  def specs(self, task: Task, model: nnx.Module) -> Any:
    """The spec tree of `model` (a pure dict; None for free leaves)."""
    del task
    return _pure(oxr.input_channel_groups(model))

  def metric_names(self) -> tuple[str, ...]:
    return ()

  def evaluate(self, params: Any, prox: Any, specs: Any) -> dict[str, jax.Array]:
    del params, prox, specs
    return {}

  def export(
    self, task: Task, model: nnx.Module, specs: Any, data: Dataset
  ) -> tuple[int, Any]:
    """The parameter count after the export, and its report (or None)."""
    del specs
    return task.export(model, data)

  def context(self) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class TiedGroupLasso(GroupLasso):
  """The input groups with shared inputs tied (see the module doc)."""

  name: str = "tied_group_lasso"
  title: str = ", tied groups"

  def specs(self, task: Task, model: nnx.Module) -> Any:
    del task
    return _pure(oxr.input_channel_groups(model, tie=True))


@dataclasses.dataclass(frozen=True)
class Nuclear(GroupLasso):
  """The nuclear norm on every kernel of the input grouping (module doc)."""

  name: str = "nuclear"
  calibrated: Mapping[tuple[str, str], tuple[float, float]] = dataclasses.field(
    default_factory=lambda: _lm.NUCLEAR_CALIBRATED
  )
  optimizers: tuple[str, ...] | None = NUCLEAR_OPTIMIZERS
  seeds: int | None = 1
  title: str = ", nuclear norm"
  progress: tuple[tuple[str, str], ...] = (("low_rank_level", "low-rank level"),)
  structure_panel: tuple[str, str | None, str] = (
    "low_rank_level",
    "prox_low_rank_level",
    "low-rank level",
  )

  def specs(self, task: Task, model: nnx.Module) -> Any:
    """Raises:
    ValueError: if a regularized kernel is not a matrix (a convolution)."""
    group_specs = super().specs(task, model)
    shapes = jax.tree.leaves(
      jax.tree.map(
        lambda s, p: None if s is None else p.shape,
        group_specs,
        nnx.to_pure_dict(nnx.state(model)),
        is_leaf=_is_spec,
      ),
      is_leaf=lambda x: isinstance(x, tuple),
    )
    bad = [s for s in shapes if len(s) != 2]
    if bad:
      raise ValueError(
        f"the nuclear regularizer needs matrix kernels; task {task.name} "
        f"has kernels of shapes {sorted(set(bad))}."
      )
    return nuclear_specs(group_specs)

  def metric_names(self) -> tuple[str, ...]:
    return ("low_rank_level", "prox_low_rank_level")

  def evaluate(self, params: Any, prox: Any, specs: Any) -> dict[str, jax.Array]:
    return {
      "low_rank_level": _export.low_rank_level(params, specs),
      "prox_low_rank_level": _export.low_rank_level(prox, specs),
    }

  def export(
    self, task: Task, model: nnx.Module, specs: Any, data: Dataset
  ) -> tuple[int, Any]:
    del task
    sample = jnp.asarray(data.x_test[: min(16, len(data.x_test))])
    _, report = _export.export_low_rank(model, specs, sample)
    return report.params_after, report

  def context(self) -> contextlib.AbstractContextManager[Any]:
    return one_blas_thread()


def _pure(tree: Any) -> Any:
  return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


REGULARIZERS: dict[str, GroupLasso] = {
  r.name: r for r in (GroupLasso(), TiedGroupLasso(), Nuclear())
}
