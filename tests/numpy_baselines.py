"""Independent NumPy float64 transcription of the baselines' update rules (docs/algorithm.md) (RMDA, ProxGen, ProxSGD, ProxSSI).

A test oracle written from the design text only: explicit loops over steps and groups, no
JAX. The §3 subproblem solvers it needs (PG with the faithful stopping rule, bisection on the
secular equation, the ℓ1 closed form) come from `tests/numpy_reference.py`, the same kind of
transcription.

Regularizers are given per parameter name as None, ("group", axes, weight) or ("l1",).
"""

from __future__ import annotations

import numpy as np

from tests import numpy_reference as ref


def _value(x, count: int) -> float:
  return float(x(count)) if callable(x) else float(x)


def _copy(params) -> dict:
  return {n: np.array(p, dtype=np.float64, copy=True) for n, p in params.items()}


def prox(spec, x, tau) -> np.ndarray:
  """prox_{tau psi}(x) = argmin_z 1/2 ||z - x||^2 + tau psi(z), group by group."""
  x = np.asarray(x, dtype=np.float64)
  if spec is None:
    return x.copy()
  if spec[0] == "l1":
    return np.sign(x) * np.maximum(np.abs(x) - tau, 0.0)
  if spec[0] != "group":
    raise ValueError(f"unknown regularizer {spec!r}")
  _, axes, weight = spec
  groups = ref._to_groups(x, axes)
  omega = ref._group_weight(groups.shape[1], weight)
  out = np.zeros_like(groups)
  for i, xg in enumerate(groups):
    norm = np.linalg.norm(xg)
    if norm > tau * omega:  # Block soft-threshold; the group is zero otherwise.
      out[i] = (1.0 - tau * omega / norm) * xg
  return ref._from_groups(out, x.shape, axes)


def weighted_prox(spec, x, p, tau) -> tuple[np.ndarray, int]:
  """argmin_z 1/2 sum_i p_i (z_i - x_i)^2 + tau psi(z); returns (z, 0).

  The §3 subproblem with V = 0, D = p and anchor x: group lasso by bisection on the secular
  equation, l1 in closed form.
  """
  x = np.asarray(x, dtype=np.float64)
  zeros = np.zeros_like(x)
  if spec is None:
    return x.copy(), 0
  if spec[0] == "l1":
    return ref.prox_l1_closed_form(zeros, p, x, tau), 0
  _, axes, weight = spec
  return ref.solve_group_lasso_exact_bisection(zeros, p, x, tau, axes, weight), 0


def rmda_reference(
  params,
  grads_fn,
  num_steps,
  *,
  learning_rate,
  momentum,
  reg_strength,
  regularizers,
  milestones=(),
  decay=0.1,
  momentum_ramp=True,
  ramp_start=None,
) -> list[dict]:
  """RMDA (RAMDA without U, closed-form prox), float64, every step recorded.

  Returns:
    One dict per step with "params", "prox", "alpha" and "k".
  """
  w = _copy(params)
  anchor = _copy(w)
  big_v = {n: np.zeros_like(p) for n, p in w.items()}
  alpha, k = 0.0, 0
  records = []
  for count in range(num_steps):
    if count in milestones:  # Restart before this update, at the current weights.
      anchor = _copy(w)
      big_v = {n: np.zeros_like(p) for n, p in w.items()}
      alpha, k = 0.0, 0
    stage = sum(1 for m in milestones if m <= count)
    eta = _value(learning_rate, count) * decay**stage
    lam = _value(reg_strength, count)
    c0 = _value(momentum, count)
    grads = grads_fn(_copy(w), count)
    k += 1
    s = eta * np.sqrt(k)
    alpha += s
    # The r-th step of the ramp uses min(c0 sqrt(r), 1); the ramp is the final stage
    # (r = k there), or from ramp_start on (r = count - ramp_start + 1).
    if ramp_start is not None:
      c = min(c0 * np.sqrt(count - ramp_start + 1), 1.0) if count >= ramp_start else c0
    elif momentum_ramp and milestones and stage == len(milestones):
      c = min(c0 * np.sqrt(k), 1.0)
    else:
      c = c0
    w_hat = {}
    for n in w:
      big_v[n] = big_v[n] + s * np.asarray(grads[n], np.float64)
      # argmin <V, z - W0> + sqrt(k)/2 ||z - W0||^2 + alpha psi(z).
      x = anchor[n] - big_v[n] / np.sqrt(k)
      w_hat[n] = prox(regularizers.get(n), x, alpha / np.sqrt(k) * lam)
      w[n] = (1.0 - c) * w[n] + c * w_hat[n]
    records.append({"params": _copy(w), "prox": _copy(w_hat), "alpha": alpha, "k": k})
  return records


def _adam_reference(
  params, grads_fn, num_steps, *, learning_rate, b1, b2, eps, reg_strength, prox_step
) -> list[dict]:
  """The Adam moment loop shared by ProxGen and ProxSSI.

  ``prox_step(name, w, m, v, t, eta, eps, eta_lam)`` returns the new weights of a leaf
  and the solver's iteration count; each method applies its own bias corrections.
  """
  w = _copy(params)
  m = {n: np.zeros_like(p) for n, p in w.items()}
  v = {n: np.zeros_like(p) for n, p in w.items()}
  records = []
  for count in range(num_steps):
    t = count + 1
    eta = _value(learning_rate, count)
    lam = _value(reg_strength, count)
    grads = grads_fn(_copy(w), count)
    iters = {}
    for n in w:
      g = np.asarray(grads[n], np.float64)
      m[n] = b1 * m[n] + (1 - b1) * g
      v[n] = b2 * v[n] + (1 - b2) * g * g
      w[n], iters[n] = prox_step(n, w[n], m[n], v[n], t, eta, eta * lam)
    records.append({"params": _copy(w), "iterations": iters})
  return records


def proxgen_reference(
  params,
  grads_fn,
  num_steps,
  *,
  learning_rate,
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  reg_strength,
  regularizers,
  solver="pg",
  max_iters=100,
  rtol=1e-8,
) -> list[dict]:
  """ProxGen, Adam form, float64.

  Regularized leaves: argmin_z <a m, z - w> + 1/2 sum P (z - w)^2 + eta lam psi(z) by the
  subproblem solver, warm-started and centred at w; unregularized leaves: w - a m / P.

  Returns:
    One dict per step with "params" and "iterations".
  """

  def prox_step(n, w, m, v, t, eta, tau):
    # Bias-corrected: a = eta / (1 - b1^t), P = sqrt(v) / sqrt(1 - b2^t) + eps.
    a_m = eta / (1 - b1**t) * m
    p = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
    spec = regularizers.get(n)
    if spec is None:
      return w - a_m / p, 0
    if spec[0] == "l1":
      return ref.prox_l1_closed_form(a_m, p, w, tau), 0
    _, axes, weight = spec
    if solver == "exact":
      return ref.solve_group_lasso_exact_bisection(a_m, p, w, tau, axes, weight), 0
    return ref.solve_group_lasso_pg(
      a_m, p, w, tau, axes, weight, init=w, max_iters=max_iters, rtol=rtol
    )

  return _adam_reference(
    params,
    grads_fn,
    num_steps,
    learning_rate=learning_rate,
    b1=b1,
    b2=b2,
    eps=eps,
    reg_strength=reg_strength,
    prox_step=prox_step,
  )


def proxssi_reference(
  params,
  grads_fn,
  num_steps,
  *,
  learning_rate,
  b1=0.9,
  b2=0.999,
  eps=1e-6,
  reg_strength,
  regularizers,
) -> list[dict]:
  """ProxSSI as its authors ran it, float64: the Adam step, then the exact weighted prox.

  Transcribed from Deleu & Bengio's code (Hugging Face AdamW style): eps is added to the
  *uncorrected* root, p = sqrt(v) + eps; the step is
  x = w - eta sqrt(1 - b2^t) / (1 - b1^t) m / p; then
  argmin_z 1/2 sum p (z - x)^2 + eta lam psi(z) in the same uncorrected metric; group
  lasso by bisection on the secular equation.

  Returns:
    One dict per step with "params" and "iterations" (always 0).
  """

  def prox_step(n, w, m, v, t, eta, tau):
    p = np.sqrt(v) + eps
    step_size = eta * np.sqrt(1 - b2**t) / (1 - b1**t)
    return weighted_prox(regularizers.get(n), w - step_size * m / p, p, tau)

  return _adam_reference(
    params,
    grads_fn,
    num_steps,
    learning_rate=learning_rate,
    b1=b1,
    b2=b2,
    eps=eps,
    reg_strength=reg_strength,
    prox_step=prox_step,
  )


def prox_sgd_reference(
  params, grads_fn, num_steps, *, learning_rate, momentum, reg_strength, regularizers
) -> list[dict]:
  """ProxSGD with unit step, float64.

  b = c g at the first step, then b = (1 - c) b + c g; w = prox_{eta psi}(w - eta b).

  Returns:
    One dict per step with "params".
  """
  w = _copy(params)
  b = {}
  records = []
  for count in range(num_steps):
    eta = _value(learning_rate, count)
    c = _value(momentum, count)
    lam = _value(reg_strength, count)
    grads = grads_fn(_copy(w), count)
    for n in w:
      g = np.asarray(grads[n], np.float64)
      b[n] = c * g if count == 0 else (1 - c) * b[n] + c * g
      w[n] = prox(regularizers.get(n), w[n] - eta * b[n], eta * lam)
    records.append({"params": _copy(w)})
  return records
