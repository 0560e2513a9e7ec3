"""λ and group sparsity over training under `oxr.target_sparsity`, on digits mlp or cnn.

Trains each regularized method of the main job at its calibrated η (three stages,
the main job's schedule) with ``reg_strength=oxr.target_sparsity(S)``, held by
the main job's rule (``--hold runner``) or another, and records after every step the λ the optimizer chose, the
weighted group sparsity of Ŵ (the step's exactly structured point: the state's Ŵ for
RAMDA and RMDA, the weights for the others) and of the model weights. Prints the
final test accuracy, sparsities and λ, and draws docs/target_sparsity.png.
With ``--validation`` each run fits on the training part of the calibration's
split (:func:`~optax_ramda.experiments._data.validation_split`: 20 % of the
training images held out) and reports accuracy on the held-out part, never the
test split, so that choices made from it (the ramp's end) follow the
comparison's rule.

  python benchmarks/target_sparsity.py --target 0.5 --out docs/target_sparsity.png
  python benchmarks/target_sparsity.py --target 0.5 --ramp first --hold last
  python benchmarks/target_sparsity.py --target 0.7 --ramp first --validation
"""

from __future__ import annotations

import argparse
import time
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_ramda as oxr
from optax_ramda.experiments import _data, _optimizers
from optax_ramda.experiments._classifiers import CLASSIFIERS
from optax_ramda.experiments._compare import target_of
from optax_ramda.experiments._regularizers import REGULARIZERS

METHODS = ("ramda", "rmda", "proxgen", "prox_sgd", "proxssi")


def train(
  name: str,
  target: float,
  seed: int,
  epochs: int,
  hold: str,
  ramp: str | None,
  validation: bool = False,
  task_name: str = "mlp",
) -> dict[str, Any]:
  """One run; returns per-step λ and sparsities and the final metrics.

  `hold` is the rule for λ: ``"runner"`` (the main job's, which also sets the
  ramp: :func:`~optax_ramda.experiments._compare.target_of`, held where RAMDA's
  and RMDA's c reaches 1 and at the last milestone for the others, at the mean
  over the epoch before), or from the last milestone on: ``"last"`` (the
  library's default: λ of the last update before it), ``"stage"`` (the mean λ
  over the stage before it), ``"epoch"`` (the mean over its last epoch), or
  ``"follow"`` (never held). ``"stage"`` runs the fixed-λ optimizer at that λ
  from the same state, which is what the library's held stage computes.
  `ramp` raises the target along Zhu & Gupta's cubic until the first
  milestone (``"first"``) or the last (``"last"``); ``None``: constant.
  `validation`: fit on the training part of the calibration's split and score
  on its held-out part (the returned ``accuracy``), not on the test split.
  """
  task = next(t for t in CLASSIFIERS if t.name == task_name)
  data = task.prepared(_data.digits())
  if validation:  # The sweep's split: its "test" arrays are held-out training images.
    data = _data.validation_split(data)
  model = task.model(data, seed=seed)
  graphdef, _ = nnx.split(model)
  params = nnx.to_pure_dict(nnx.state(model))
  specs = REGULARIZERS["group_lasso"].specs(task, model)
  method = _optimizers.METHODS[name]
  steps_per_epoch = len(data.y_train) // task.batch_size
  total = epochs * steps_per_epoch
  marks = _optimizers.milestones(total, 3)
  _, lr = _optimizers.CALIBRATED[(task_name, name)]
  goal: Any = target
  if ramp:  # s_t = S (1 − (1 − t/T)³) over the first T steps.
    ends = marks[0] if ramp == "first" else marks[-1]
    goal = optax.polynomial_schedule(0.0, target, 3, ends)

  def make(reg_strength):
    return _optimizers.settings(
      method,
      total_steps=total,
      stages=3,
      decay=0.1,
      reg_strength=reg_strength,
      solver="exact",
      learning_rate=lr,
    )

  until = total if hold == "follow" else marks[-1]
  if hold == "runner":
    settle = _optimizers.averaging_steps(method, make(0.0).momentum)
    rule = target_of(target, marks, total, settle, steps_per_epoch)
    until = cast(int, rule.until)
    tx = method.make(make(rule), specs)
  else:
    window = steps_per_epoch if hold == "epoch" else 1
    tx = method.make(make(oxr.target_sparsity(goal, until=until, window=window)), specs)
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

  def loss(p, x, y):
    logits = nnx.merge(graphdef, p)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step_fn(p, s, idx, tx):
    updates, s = tx.update(jax.grad(loss)(p, x_train[idx], y_train[idx]), s, p)
    p = optax.apply_updates(p, updates)
    structured = oxr.prox_iterate(s) if method.dual_averaging else p
    return (
      p,
      s,
      oxr.reg_strength(s),
      oxr.sparsity(structured, specs)["group_sparsity"],
      oxr.sparsity(p, specs)["group_sparsity"],
    )

  step = jax.jit(lambda p, s, idx: step_fn(p, s, idx, tx))
  state, rng = tx.init(params), np.random.default_rng(seed)
  lams: list[Any] = []
  prox_sparsity, sparsity = [], []
  for _ in range(epochs):
    order = rng.permutation(len(data.y_train))
    for b in range(steps_per_epoch):
      if len(lams) == marks[-1] and hold == "stage":
        held = method.make(make(float(np.mean(lams[marks[-2] :]))), specs)
        step = jax.jit(lambda p, s, idx, held=held: step_fn(p, s, idx, held))
      idx = order[b * task.batch_size : (b + 1) * task.batch_size]
      params, state, lam, zp, zw = step(params, state, idx)
      lams.append(lam)
      prox_sparsity.append(zp)
      sparsity.append(zw)
  logits = nnx.merge(graphdef, params)(jnp.asarray(data.x_test))
  accuracy = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(data.y_test)))
  structured = oxr.prox_iterate(state) if method.dual_averaging else params
  return {
    "table": oxr.sparsity_table(structured, specs),
    "lambda": np.asarray(lams),
    "prox_sparsity": np.asarray(prox_sparsity),
    "sparsity": np.asarray(sparsity),
    "accuracy": np.asarray(accuracy),
    "milestones": np.asarray(marks),
    "until": np.asarray(until),
  }


def plot(
  runs: dict[str, dict[str, Any]],
  target: float,
  ramp: str | None,
  path: str,
  task: str = "mlp",
) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
  for name, run in runs.items():
    label = _optimizers.METHODS[name].label
    (line,) = top.semilogy(run["lambda"], label=label)
    held = int(run["until"])
    if held < len(run["lambda"]):  # λ held from here on.
      top.plot(held, run["lambda"][held], "o", color=line.get_color(), ms=4)
    bottom.plot(100 * run["prox_sparsity"], color=line.get_color(), label=f"{label} Ŵ")
    bottom.plot(100 * run["sparsity"], color=line.get_color(), ls=":", alpha=0.8)
  for ax in (top, bottom):
    for m in next(iter(runs.values()))["milestones"]:
      ax.axvline(m, color="grey", lw=0.8, ls="--")
  bottom.axhline(100 * target, color="black", lw=0.8)
  top.set_ylabel("λ chosen")
  bottom.set_ylabel("group sparsity (%)")
  bottom.set_xlabel("step (dashed: milestones; dots: λ held from there)")
  goal = f"cubic ramp to {target:g} by the {ramp} milestone" if ramp else f"{target:g}"
  top.set_title(f"digits {task}, target {goal}: solid Ŵ, dotted weights", fontsize=10)
  top.legend(fontsize=8, ncol=3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", choices=("mlp", "cnn"), default="mlp")
  parser.add_argument("--target", type=float, default=0.5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--out", default=None, help="the PNG to draw")
  parser.add_argument("--tables", action="store_true", help="per-layer sparsity")
  parser.add_argument(
    "--validation",
    action="store_true",
    help="fit on 80 %% of the training images, score on the other 20 %% (not test)",
  )
  parser.add_argument(
    "--hold", choices=("runner", "last", "stage", "epoch", "follow"), default="runner"
  )
  parser.add_argument(
    "--ramp",
    nargs="?",
    const="first",
    choices=("first", "last"),
    help="cubic target ramp until the first (default) or the last milestone",
  )
  args = parser.parse_args()
  runs = {}
  for name in args.methods:
    start = time.perf_counter()
    run = runs[name] = train(
      name,
      args.target,
      args.seed,
      args.epochs,
      args.hold,
      args.ramp,
      args.validation,
      args.task,
    )
    split = "validation " if args.validation else ""
    print(
      f"{name:9s} {split}accuracy {100 * float(run['accuracy']):.2f} %  "
      "group sparsity: "
      f"Ŵ {100 * run['prox_sparsity'][-1]:.2f} %, weights "
      f"{100 * run['sparsity'][-1]:.2f} %  final λ {run['lambda'][-1]:.4g}  "
      f"({time.perf_counter() - start:.0f} s)",
      flush=True,
    )
    if args.tables:
      print(run["table"])
  if args.out:
    ramp = "first" if args.hold == "runner" else args.ramp  # The runner's ramp.
    plot(runs, args.target, ramp, args.out, args.task)


if __name__ == "__main__":
  main()
