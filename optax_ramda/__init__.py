"""optax_ramda: structured-sparsity optimizers for JAX, as Optax transforms.

RAMDA (Regularized Adaptive Momentum Dual Averaging, Huang & Lee 2024) and the
baselines it is compared against, sharing one set of regularizer specs and one
jitted subproblem solver.
"""

from optax_ramda._flax import input_channel_groups as input_channel_groups
from optax_ramda._flax import output_channel_groups as output_channel_groups
from optax_ramda._magnitude import MagnitudePruningState as MagnitudePruningState
from optax_ramda._magnitude import magnitude_pruning as magnitude_pruning
from optax_ramda._normalization import recompute_batch_stats as recompute_batch_stats
from optax_ramda._prox_sgd import ScaleByProxSgdState as ScaleByProxSgdState
from optax_ramda._prox_sgd import prox_sgd as prox_sgd
from optax_ramda._prox_sgd import scale_by_prox_sgd as scale_by_prox_sgd
from optax_ramda._proxgen import ScaleByProxgenState as ScaleByProxgenState
from optax_ramda._proxgen import proxgen as proxgen
from optax_ramda._proxgen import scale_by_proxgen as scale_by_proxgen
from optax_ramda._proxssi import ScaleByProxssiState as ScaleByProxssiState
from optax_ramda._proxssi import proxssi as proxssi
from optax_ramda._proxssi import scale_by_proxssi as scale_by_proxssi
from optax_ramda._pruning import PruningReport as PruningReport
from optax_ramda._pruning import prune_input_channels as prune_input_channels
from optax_ramda._pruning import prune_linen_params as prune_linen_params
from optax_ramda._ramda import ScaleByRamdaState as ScaleByRamdaState
from optax_ramda._ramda import Subproblem as Subproblem
from optax_ramda._ramda import prox_iterate as prox_iterate
from optax_ramda._ramda import ramda as ramda
from optax_ramda._ramda import restart as restart
from optax_ramda._ramda import scale_by_ramda as scale_by_ramda
from optax_ramda._ramda import subproblem as subproblem
from optax_ramda._regularizers import L1 as L1
from optax_ramda._regularizers import GroupLasso as GroupLasso
from optax_ramda._regularizers import Nuclear as Nuclear
from optax_ramda._regularizers import Regularizer as Regularizer
from optax_ramda._regularizers import group_lasso as group_lasso
from optax_ramda._regularizers import is_spec as is_spec
from optax_ramda._regularizers import l1 as l1
from optax_ramda._regularizers import nuclear as nuclear
from optax_ramda._regularizers import regularizer_value as regularizer_value
from optax_ramda._regularizers import resolve_specs as resolve_specs
from optax_ramda._rmda import ScaleByRmdaState as ScaleByRmdaState
from optax_ramda._rmda import rmda as rmda
from optax_ramda._rmda import scale_by_rmda as scale_by_rmda
from optax_ramda._solvers import prox_l1 as prox_l1
from optax_ramda._solvers import solve_group_lasso as solve_group_lasso
from optax_ramda._solvers import solve_nuclear as solve_nuclear
from optax_ramda._solvers import subgradient_tolerance as subgradient_tolerance
from optax_ramda._sparsity import sparsity as sparsity
from optax_ramda._sparsity import sparsity_table as sparsity_table
from optax_ramda._target import TargetSparsity as TargetSparsity
from optax_ramda._target import reg_strength as reg_strength
from optax_ramda._target import target_sparsity as target_sparsity

__version__ = "0.2.0"
