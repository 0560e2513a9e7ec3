"""Independent NumPy float64 transcription of RAMDA and its subproblem (docs/algorithm.md).

This module is a test oracle written from the design text only. It favours clarity over
speed: explicit Python loops over groups and steps, no JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Scalar = float | Callable[[int], float]


# --------------------------------------------------------------------------------------
# Group layout helpers
# --------------------------------------------------------------------------------------


def _group_layout(
  shape: tuple[int, ...], axes: Sequence[int]
) -> tuple[list[int], tuple, int]:
  """Returns (permutation moving group axes last, permuted shape, group size)."""
  ndim = len(shape)
  span = sorted({int(a) % ndim for a in axes}) if ndim else []
  rest = [i for i in range(ndim) if i not in span]
  perm = rest + span
  group_size = int(np.prod([shape[i] for i in span], dtype=np.int64))
  return perm, tuple(shape[i] for i in perm), group_size


def _to_groups(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
  """Reshapes ``x`` to (num_groups, group_size), group axes last."""
  x = np.asarray(x, dtype=np.float64)
  perm, _, group_size = _group_layout(x.shape, axes)
  return np.transpose(x, perm).reshape(-1, group_size)


def _from_groups(
  zg: np.ndarray, shape: tuple[int, ...], axes: Sequence[int]
) -> np.ndarray:
  """Inverse of :func:`_to_groups`."""
  perm, pshape, _ = _group_layout(shape, axes)
  return np.transpose(zg.reshape(pshape), np.argsort(perm))


def _group_weight(group_size: int, weight) -> float:
  if isinstance(weight, str):
    if weight != "sqrt":
      raise ValueError(f"unknown weight {weight!r}")
    return float(np.sqrt(group_size))
  return float(weight)


def _group_objective(v, d, a, z, tau, w) -> float:
  """q restricted to one group: <v, z-a> + 1/2 sum d (z-a)^2 + tau w ||z||."""
  diff = z - a
  return float(
    np.dot(v, diff) + 0.5 * np.dot(d, diff * diff) + tau * w * np.linalg.norm(z)
  )


# --------------------------------------------------------------------------------------
# Subproblem solvers (§3)
# --------------------------------------------------------------------------------------


def solve_group_lasso_pg(
  v,
  d,
  anchor,
  tau,
  axes,
  weight="sqrt",
  init=None,
  max_iters=100,
  rtol=1e-8,
) -> tuple[np.ndarray, int]:
  """Solves the §3 group-lasso subproblem for one leaf by per-group proximal gradient.

  Args:
    v: Linear term V (same shape as anchor).
    d: Positive diagonal D.
    anchor: Centre W0.
    tau: Threshold tau = alpha * lambda (scalar >= 0).
    axes: Axes that one group spans; the remaining axes index the groups.
    weight: "sqrt" for w_g = sqrt(|g|), else a number used for every group.
    init: Warm start (default: anchor).
    max_iters: Maximum number of PG iterations.
    rtol: Relative-decrease tolerance of the faithful stopping rule.

  Returns:
    (z, iterations), z with the shape of anchor.
  """
  v = np.asarray(v, dtype=np.float64)
  anchor = np.asarray(anchor, dtype=np.float64)
  d = np.broadcast_to(np.asarray(d, dtype=np.float64), anchor.shape)
  v = np.broadcast_to(v, anchor.shape)
  tau = float(tau)
  if tau == 0.0:
    return anchor - v / d, 0
  z0 = (
    anchor
    if init is None
    else np.broadcast_to(np.asarray(init, np.float64), anchor.shape)
  )

  vg, dg, ag = _to_groups(v, axes), _to_groups(d, axes), _to_groups(anchor, axes)
  zg = _to_groups(z0, axes).copy()
  num_groups, group_size = ag.shape
  w = _group_weight(group_size, weight)

  # Safe screening: group is zero at the optimum iff ||b_g|| <= tau w_g.
  active = []
  for gi in range(num_groups):
    b = dg[gi] * ag[gi] - vg[gi]
    if np.linalg.norm(b) <= tau * w:
      zg[gi] = 0.0
    else:
      active.append(gi)
  if not active:  # Every group is screened: nothing to iterate.
    return _from_groups(zg, anchor.shape, axes), 0
  steps = {gi: 1.0 / np.max(dg[gi]) for gi in active}

  def objective() -> float:
    return sum(
      _group_objective(vg[gi], dg[gi], ag[gi], zg[gi], tau, w) for gi in active
    )

  iterations = 0
  q_prev = None
  for j in range(1, max_iters + 1):
    for gi in active:
      h = steps[gi]
      y = zg[gi] - h * (vg[gi] + dg[gi] * (zg[gi] - ag[gi]))
      ny = np.linalg.norm(y)
      if ny == 0.0:
        zg[gi] = 0.0
      else:
        zg[gi] = y * max(0.0, 1.0 - h * tau * w / ny)
    iterations = j
    q = objective()
    if j >= 2 and (q_prev - q) / (abs(q) + 1.0) < rtol:
      break
    q_prev = q
  return _from_groups(zg, anchor.shape, axes), iterations


def prox_l1_closed_form(v, d, anchor, tau) -> np.ndarray:
  """Closed-form l1 subproblem: z_i = soft(anchor_i - v_i / d_i, tau / d_i)."""
  v = np.asarray(v, dtype=np.float64)
  d = np.asarray(d, dtype=np.float64)
  anchor = np.asarray(anchor, dtype=np.float64)
  x = anchor - v / d
  t = float(tau) / d
  return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def solve_group_lasso_exact_bisection(
  v, d, anchor, tau, axes, weight="sqrt"
) -> np.ndarray:
  """High-accuracy group-lasso subproblem solution by bisection on the secular equation.

  For each unscreened group, finds mu > 0 with ||b / (d + mu)|| * mu = tau * w_g and
  returns z = b / (d + mu), where b = d * anchor - v; screened groups are zero.

  Args:
    v: Linear term V.
    d: Positive diagonal D.
    anchor: Centre W0.
    tau: Threshold (scalar >= 0).
    axes: Axes that one group spans.
    weight: "sqrt" for w_g = sqrt(|g|), else a number used for every group.

  Returns:
    z with the shape of anchor.
  """
  anchor = np.asarray(anchor, dtype=np.float64)
  v = np.broadcast_to(np.asarray(v, dtype=np.float64), anchor.shape)
  d = np.broadcast_to(np.asarray(d, dtype=np.float64), anchor.shape)
  tau = float(tau)
  if tau == 0.0:
    return anchor - v / d
  vg, dg, ag = _to_groups(v, axes), _to_groups(d, axes), _to_groups(anchor, axes)
  num_groups, group_size = ag.shape
  w = _group_weight(group_size, weight)
  target = tau * w
  zg = np.zeros_like(ag)
  for gi in range(num_groups):
    b = dg[gi] * ag[gi] - vg[gi]
    nb = np.linalg.norm(b)
    if nb <= target:
      continue

    def phi(mu, b=b, dd=dg[gi]):
      return mu * np.linalg.norm(b / (dd + mu))

    # phi is increasing from 0 to ||b||; phi(mu) >= mu ||b|| / (max d + mu).
    lo = 0.0
    hi = target * np.max(dg[gi]) / (nb - target)
    while phi(hi) < target:
      hi *= 2.0
    for _ in range(200):
      mid = 0.5 * (lo + hi)
      if mid <= lo or mid >= hi:
        break
      if phi(mid) < target:
        lo = mid
      else:
        hi = mid
    mu = 0.5 * (lo + hi)
    zg[gi] = b / (dg[gi] + mu)
  return _from_groups(zg, anchor.shape, axes)


# --------------------------------------------------------------------------------------
# Optimizers (§2)
# --------------------------------------------------------------------------------------


def _value(x: Scalar, count: int) -> float:
  return float(x(count)) if callable(x) else float(x)


def ramda_reference(
  params,
  grads_fn,
  num_steps,
  *,
  learning_rate,
  momentum,
  eps,
  reg_strength,
  regularizers,
  max_iters=100,
  rtol=1e-8,
  milestones=(),
  decay=0.1,
  momentum_ramp=True,
  ramp_start=None,
  warm_start="params",
) -> list[dict]:
  """Runs RAMDA in float64 and records every step.

  Args:
    params: Dict name -> array.
    grads_fn: Callable (params_dict, step_index) -> dict of gradients at params_dict.
    num_steps: Number of updates to apply.
    learning_rate: Float or callable of the 0-based step count.
    momentum: Averaging weight c0, float or callable of the step count.
    eps: Epsilon added outside the cube root (decayed per stage).
    reg_strength: lambda, float or callable of the step count.
    regularizers: Dict name -> None, ("group", axes, weight) or ("l1",).
    max_iters: PG iteration cap.
    rtol: PG stopping tolerance.
    milestones: Step counts at which a new stage starts (restart before that update).
    decay: Per-stage factor gamma on eta and eps.
    momentum_ramp: Ramp c = min(c0 sqrt(r), 1) on the r-th step of the final stage
      (only if there are milestones).
    ramp_start: Step count from which the ramp runs instead (r = count - ramp_start + 1).
    warm_start: PG starts at the current weights ("params") or at the previous
      step's subproblem solution ("prox"; the params before the first step).

  Returns:
    One dict per step with keys "params", "prox", "iterations", "alpha", "k".
  """
  milestones = tuple(int(m) for m in milestones)
  w = {n: np.array(p, dtype=np.float64, copy=True) for n, p in params.items()}
  anchor = {n: p.copy() for n, p in w.items()}
  big_v = {n: np.zeros_like(p) for n, p in w.items()}
  big_u = {n: np.zeros_like(p) for n, p in w.items()}
  alpha, k = 0.0, 0
  prev_prox = {n: p.copy() for n, p in w.items()}
  records = []
  for count in range(num_steps):
    if count in milestones:
      anchor = {n: p.copy() for n, p in w.items()}
      big_v = {n: np.zeros_like(p) for n, p in w.items()}
      big_u = {n: np.zeros_like(p) for n, p in w.items()}
      alpha, k = 0.0, 0
    stage = sum(1 for m in milestones if m <= count)
    eta = _value(learning_rate, count) * decay**stage
    eps_t = float(eps) * decay**stage
    lam = _value(reg_strength, count)
    c0 = _value(momentum, count)

    grads = grads_fn({n: p.copy() for n, p in w.items()}, count)

    k += 1
    s = eta * np.sqrt(k)
    alpha += s
    if ramp_start is not None:
      c = min(c0 * np.sqrt(count - ramp_start + 1), 1.0) if count >= ramp_start else c0
    elif momentum_ramp and milestones and stage == len(milestones):
      c = min(c0 * np.sqrt(k), 1.0)  # The k-th step of the final stage.
    else:
      c = c0

    prox, iters, new_w = {}, {}, {}
    for n in w:
      g = np.asarray(grads[n], dtype=np.float64)
      big_v[n] = big_v[n] + s * g
      big_u[n] = big_u[n] + s * g * g
      dd = np.cbrt(big_u[n]) + eps_t
      spec = regularizers.get(n)
      tau = alpha * lam
      if spec is None or tau == 0.0:
        w_hat, it = anchor[n] - big_v[n] / dd, 0
      elif spec[0] == "l1":
        w_hat, it = prox_l1_closed_form(big_v[n], dd, anchor[n], tau), 0
      elif spec[0] == "group":
        _, axes, weight = spec
        w_hat, it = solve_group_lasso_pg(
          big_v[n],
          dd,
          anchor[n],
          tau,
          axes,
          weight,
          init=w[n] if warm_start == "params" else prev_prox[n],
          max_iters=max_iters,
          rtol=rtol,
        )
      else:
        raise ValueError(f"unknown regularizer {spec!r}")
      prox[n], iters[n] = w_hat, it
      new_w[n] = (1.0 - c) * w[n] + c * w_hat
    w = new_w
    prev_prox = prox
    records.append(
      {
        "params": {n: p.copy() for n, p in w.items()},
        "prox": {n: p.copy() for n, p in prox.items()},
        "iterations": iters,
        "alpha": float(alpha),
        "k": int(k),
      }
    )
  return records


def madgrad_reference(
  params, grads_fn, num_steps, *, learning_rate, momentum, eps
) -> list[dict]:
  """MADGRAD without weight decay, written as a plain dual-averaging loop.

  ``momentum`` is the averaging weight c (x <- (1 - c) x + c z), i.e. 1 - beta in the
  MADGRAD paper's notation.

  Args:
    params: Dict name -> array.
    grads_fn: Callable (params_dict, step_index) -> dict of gradients.
    num_steps: Number of updates.
    learning_rate: Float or callable of the 0-based step count.
    momentum: Averaging weight c, float or callable of the step count.
    eps: Epsilon added outside the cube root.

  Returns:
    A list of dicts name -> params after each step.
  """
  x0 = {n: np.array(p, dtype=np.float64, copy=True) for n, p in params.items()}
  x = {n: p.copy() for n, p in x0.items()}
  s_sum = {n: np.zeros_like(p) for n, p in x0.items()}
  nu = {n: np.zeros_like(p) for n, p in x0.items()}
  history = []
  for t in range(num_steps):
    lr = _value(learning_rate, t)
    ck = _value(momentum, t)
    lamb = lr * np.sqrt(t + 1)
    grads = grads_fn({n: p.copy() for n, p in x.items()}, t)
    for n in x:
      g = np.asarray(grads[n], dtype=np.float64)
      s_sum[n] += lamb * g
      nu[n] += lamb * g * g
      z = x0[n] - s_sum[n] / (np.cbrt(nu[n]) + eps)
      x[n] = (1.0 - ck) * x[n] + ck * z
    history.append({n: p.copy() for n, p in x.items()})
  return history
