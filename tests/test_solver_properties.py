"""Property-based tests of the group-lasso subproblem solver (docs/algorithm.md#the-subproblem).

For random subproblems — leaf layouts and group axes, a preconditioner D spanning
up to two decades, thresholds that screen anywhere from no group to every group,
group weights, and warm starts — every mode of `solve_group_lasso` returns a point
that

* satisfies the subproblem's KKT conditions to the tolerance its stopping rule
  implies, and
* never has a larger objective than its warm start, nor a smaller one than the
  exact solver's.

Oracle: the optimality conditions and the objective, evaluated in NumPy float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_ramda as oxr

LAYOUTS = [
  ((6,), (0,)),
  ((5, 4), (1,)),
  ((4, 5), (0,)),
  ((7, 1), (1,)),
  ((3, 2, 4), (0, 2)),
  ((2, 2, 3, 4), (0, 1, 3)),
]
MAX_ITERS = 20_000


@functools.partial(jax.jit, static_argnames=("axes", "weight", "solver", "stopping"))
def _solve(v, d, anchor, threshold, init, rtol, tol, *, axes, weight, solver, stopping):
  return oxr.solve_group_lasso(
    v, d, anchor, threshold, axes, weight, init=init, solver=solver,
    max_iters=MAX_ITERS, rtol=rtol, stopping=stopping, subgradient_tol=tol,
  )  # fmt: skip


def _group_norms(x, axes):
  return np.sqrt(np.sum(x**2, axis=axes, keepdims=True))


def _objective(v, d, anchor, tau_w, z, axes):
  dz = z - anchor
  return float(np.sum(v * dz + 0.5 * d * dz**2) + tau_w * _group_norms(z, axes).sum())


def _kkt_residual(v, d, anchor, tau_w, z, axes):
  """dist(0, ∂q(z)) over the leaf: ∇f + τω z/‖z‖ on nonzero groups, and the
  excess of ‖∇f‖ over τω on zero groups."""
  grad = v + d * (z - anchor)
  z_norm = _group_norms(z, axes)
  nonzero = z_norm > 0
  moving = grad + tau_w * z / np.where(nonzero, z_norm, 1)
  per_group = np.where(
    nonzero,
    _group_norms(moving, axes),
    np.maximum(_group_norms(grad, axes) - tau_w, 0),
  )
  return float(np.sqrt(np.sum(per_group**2)))


@settings(max_examples=25, deadline=None, derandomize=True)  # Reproducible in CI.
@given(
  layout=st.sampled_from(LAYOUTS),
  d_spread=st.floats(0.0, 2.0),
  screened=st.floats(-0.1, 1.1),
  weight=st.sampled_from(["sqrt", 0.5]),
  start=st.sampled_from(["anchor", "zeros", "random"]),
  log_tol=st.floats(-8.0, -2.0),
  seed=st.integers(0, 2**31 - 1),
)
def test_solutions_meet_kkt_and_never_increase_the_objective(
  layout, d_spread, screened, weight, start, log_tol, seed
):
  shape, axes = layout
  rng = np.random.default_rng(seed)
  v = rng.normal(size=shape)
  d = 10.0 ** rng.uniform(0, d_spread, size=shape)
  anchor = rng.normal(size=shape)
  init = {"anchor": anchor, "zeros": np.zeros(shape),
          "random": rng.normal(size=shape)}[start]  # fmt: skip
  omega = np.sqrt(np.prod([shape[a] for a in axes])) if weight == "sqrt" else weight
  # τ such that about `screened` of the groups are zero (none below 0, all above
  # 1), kept 1e-3 away from every ‖b_g‖: on the boundary ‖b_g‖ = τω_g, rounding
  # decides whether a group is screened, here and in the solver.
  b_norms = _group_norms(d * anchor - v, axes).ravel()
  level = float(np.quantile(b_norms, np.clip(screened, 0.0, 1.0)))
  tau_w = level * (0.9 if screened < 0 else 1.1 if screened > 1 else 1 + 1e-3)
  tau = tau_w / omega
  rtol, tol = 1e-10, 10.0**log_tol * (1 + np.abs(v).max())

  with jax.enable_x64(True):
    args = [jnp.asarray(x) for x in (v, d, anchor, tau, init, rtol, tol)]
    solve = functools.partial(_solve, *args, axes=axes, weight=weight)
    results = {
      "decrease": solve(solver="pg", stopping="decrease"),
      "subgradient": solve(solver="pg", stopping="subgradient"),
      "exact": solve(solver="exact", stopping="decrease"),
    }
  z = {k: np.asarray(r[0]) for k, r in results.items()}
  iters = {k: int(r[1]) for k, r in results.items()}
  q = {k: _objective(v, d, anchor, tau_w, x, axes) for k, x in z.items()}
  residual = {k: _kkt_residual(v, d, anchor, tau_w, x, axes) for k, x in z.items()}
  q_init = _objective(v, d, anchor, tau_w, init, axes)
  slack = 1e-12 * (abs(q_init) + 1)

  # The rules, not the cap, stopped PG: the bounds below apply.
  assert iters["decrease"] < MAX_ITERS and iters["subgradient"] < MAX_ITERS, iters
  # Decrease rule (see tests/test_solvers.py): a step h ≤ 1/L per group bounds the
  # residual by √(8 · max d · rtol · (|q̄| + 1)), q̄ the objective of the unscreened
  # groups.
  active = _group_norms(d * anchor - v, axes) > tau_w
  dz = z["decrease"] - anchor
  q_bar = np.sum(np.where(active, v * dz + 0.5 * d * dz**2, 0)) + tau_w * np.sum(
    _group_norms(z["decrease"], axes)
  )
  assert residual["decrease"] <= np.sqrt(8 * d.max() * rtol * (abs(q_bar) + 1)) + 1e-9
  # The paper's condition (7): the certified subgradient has norm ≤ tol.
  assert residual["subgradient"] <= tol * (1 + 1e-9) + 1e-12
  # Exact: per group |φ(μ) − τω| ≤ 4 eps τω, plus rounding of z = b/(d + μ).
  eps = np.finfo(np.float64).eps
  bound = 16 * eps * (tau_w * np.sqrt(b_norms.size) + np.linalg.norm(b_norms))
  assert residual["exact"] <= bound, (residual["exact"], bound)

  for k in z:
    assert q[k] <= q_init + slack, (k, q[k], q_init)
    assert q[k] >= q["exact"] - 1e-9 * (abs(q["exact"]) + 1), (k, q[k], q["exact"])
    assert np.all(_group_norms(z[k], axes)[~active] == 0), k  # Screened: exactly 0.
  # The optimum's zero groups are exactly those with ‖b_g‖ ≤ τω_g.
  np.testing.assert_array_equal(_group_norms(z["exact"], axes) == 0, ~active)
