"""Minimal RAMDA run: group-lasso logistic regression on scikit-learn's digits.

Trains a linear classifier on the 8×8 digits with one group per input pixel and
prints accuracy and how many pixels RAMDA switched off. Runs offline in seconds.

  python examples/quickstart.py
"""

import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

import optax_ramda as oxr


def main(steps: int = 600) -> None:
  x, y = load_digits(return_X_y=True)
  x = jnp.asarray(x / 16.0, jnp.float32)
  y = jnp.asarray(y)
  n_train = 1400
  params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
  specs = {"w": oxr.group_lasso(axes=(1,)), "b": None}  # one group per pixel

  def loss_fn(p, xb, yb):
    logits = xb @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    oxr.ramda(
      learning_rate=1e-2,
      momentum=0.1,
      reg_strength=3e-3,
      regularizer=specs,
      milestones=(steps // 3, 2 * steps // 3),
    ),
  )

  @jax.jit
  def train_step(p, state, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  state = tx.init(params)
  key = jax.random.PRNGKey(0)
  for step in range(steps):
    key, sub = jax.random.split(key)
    idx = jax.random.choice(sub, n_train, (128,), replace=False)
    params, state, loss = train_step(params, state, x[idx], y[idx])
    if step % 100 == 0 or step == steps - 1:
      print(f"step {step:4d}  loss {float(loss):.4f}")

  logits = x[n_train:] @ params["w"] + params["b"]
  accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y[n_train:]))
  report = oxr.sparsity(params, specs)
  print(f"test accuracy        {accuracy:.3f}")
  print(
    f"pixels switched off  {int(report['zero_groups'])} of {report['groups']} "
    f"(weighted group sparsity {float(report['group_sparsity']):.3f})"
  )


if __name__ == "__main__":
  main()
