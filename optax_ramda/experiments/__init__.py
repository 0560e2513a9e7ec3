"""The main job: train and compare structured-sparsity optimizers on offline data.

Run it as ``python -m optax_ramda.experiments`` (``--help`` lists the flags).
It trains Flax NNX models (logistic regression, an MLP and CNNs on digits, a
1-D CNN on MNIST-1D, a byte-level Transformer on Shakespeare: the ``TASKS``)
with RAMDA, its baselines and dense references under the paper's stage
schedule, each method at its calibrated λ and η (``CALIBRATED``, from the
validation sweep ``--sweep``), under the group lasso or the nuclear norm
(``--regularizer``), and reports accuracy (or perplexity), the structure, time
per step, the parameter count after the export and the stability of the
structure, with per-epoch curves. ``--protocol paper`` runs the paper's
logistic regression protocol. Every run's weights are saved under the output
folder's ``params/`` and read back by :func:`load_params`.

Needs the ``experiments`` extra (flax, scikit-learn, mnist1d, tqdm,
matplotlib).
"""

from optax_ramda.experiments._cli import main as main
from optax_ramda.experiments._data import Dataset as Dataset
from optax_ramda.experiments._data import digits as digits
from optax_ramda.experiments._data import from_npz as from_npz
from optax_ramda.experiments._data import mnist as mnist
from optax_ramda.experiments._data import mnist1d as mnist1d
from optax_ramda.experiments._optimizers import CALIBRATED as CALIBRATED
from optax_ramda.experiments._optimizers import (
  CALIBRATION_COMMAND as CALIBRATION_COMMAND,
)
from optax_ramda.experiments._optimizers import METHODS as METHODS
from optax_ramda.experiments._outputs import load_params as load_params
from optax_ramda.experiments._tasks import TASKS as TASKS
from optax_ramda.experiments._train import Trainer as Trainer
