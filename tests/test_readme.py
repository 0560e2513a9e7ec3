"""Runs README's Usage, Baselines and Multiple-devices code blocks, and
examples/quickstart.py (README's Flax section is run by tests/test_flax.py).

Oracles: NumPy closed forms of one step for the unregularized leaf (RAMDA and
ProxGen), the never-lit pixels of the digits (which any group lasso must switch
off), and the single-device run for the sharded block.
"""

import os
import pathlib
import re
import runpy
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import optax_ramda as oxr

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_blocks(section):
  """The ```python blocks of README's `## section`."""
  text = README.read_text()
  body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", body, re.S)


def _problem():
  rng = np.random.default_rng(0)
  params = {
    "w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=3), jnp.float32),
  }
  # Small gradients: README's clip_by_global_norm(1.0) leaves them unchanged.
  grads = jax.tree.map(lambda p: 0.1 * jnp.tanh(p + 0.3), params)
  assert float(optax.tree.norm(grads)) < 1.0
  return params, grads


def test_readme_usage_block(capsys):
  (block,) = python_blocks("Usage")
  params, grads = _problem()
  ns = {"params": params, "grads": grads}
  exec(compile(block, str(README), "exec"), ns)
  printed = float(capsys.readouterr().out.strip())
  assert 0.0 <= printed <= 1.0
  assert printed == float(oxr.sparsity(ns["params"], ns["specs"])["group_sparsity"])
  # The unregularized leaf after one step, by hand (k = 1, s = η, c = 0.1):
  # Ŵ = W⁰ − V/D with V = ηg, D = ∛(ηg²) + ε; w ← w + c(Ŵ − w).
  eta, eps, c = 1e-2, 1e-6, 0.1
  g = np.asarray(grads["b"], np.float64)
  w_hat = np.asarray(params["b"], np.float64) - eta * g / (np.cbrt(eta * g**2) + eps)
  expected = (1 - c) * np.asarray(params["b"], np.float64) + c * w_hat
  np.testing.assert_allclose(ns["params"]["b"], expected, rtol=1e-6)


def test_readme_baselines_block():
  (block,) = python_blocks("Baselines")
  params, grads = _problem()
  ns: dict = {}
  exec(compile(block, str(README), "exec"), ns)
  tx = ns["tx"]
  updates, _ = tx.update(grads, tx.init(params), params)
  # ProxGen's first step on the unregularized leaf is Adam's: −η g/(|g| + ε).
  # In float32, 1 − β₂ = 1 − 0.999 cancels: ~6e-5 relative error in the bias
  # correction, ~3e-5 after its square root.
  g = np.asarray(grads["b"], np.float64)
  np.testing.assert_allclose(updates["b"], -1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-4)
  # The regularized leaf moves too, and stays finite.
  assert np.all(np.isfinite(updates["w"])) and np.any(updates["w"] != 0)


_MULTIDEVICE_SCRIPT = """
import re, sys
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
import optax_ramda as oxr

block = sys.stdin.read()
rng = np.random.default_rng(0)
# float64: in float32 the "pg" solver's stopping is rounding-driven, so a
# sharded reduction order may stop it one iteration apart.
params = {"w": jnp.asarray(rng.normal(size=(8, 12)), jnp.float64),
          "b": jnp.zeros(12, jnp.float64)}
x = jnp.asarray(rng.normal(size=(16, 8)), jnp.float64)
y = jnp.asarray(rng.integers(0, 12, 16))

def loss_fn(p, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

reference = dict(params)
ns = {"params": params, "loss_fn": loss_fn}
exec(compile(block, "README.md", "exec"), ns)
mesh, tx = ns["mesh"], ns["tx"]
batch = NamedSharding(mesh, P(("g", "w")))
p, s = ns["params"], ns["state"]
assert s.grad_sum["w"].sharding.spec == P("g", "w"), s.grad_sum["w"].sharding
ref_state = tx.init(reference)
for _ in range(3):
  p, s = ns["train_step"](p, s, jax.device_put(x, batch), jax.device_put(y, batch))
  grads = jax.grad(loss_fn)(reference, x, y)
  updates, ref_state = tx.update(grads, ref_state, reference)
  reference = optax.apply_updates(reference, updates)
assert p["w"].sharding.spec == P("g", "w"), p["w"].sharding
for name in ("w", "b"):
  np.testing.assert_allclose(p[name], reference[name], rtol=1e-12, atol=1e-14)
print("devices", jax.device_count(), "ok")
"""


def test_readme_multiple_devices_block():
  """The block on 8 CPU devices; three sharded float64 steps equal one device's."""
  (block,) = python_blocks("Multiple devices")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  env.update(JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
  done = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(_MULTIDEVICE_SCRIPT)],
    input=block,
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=300,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ["devices", "8", "ok"]


def test_quickstart_example(capsys):
  runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
  out = capsys.readouterr().out
  accuracy = float(re.search(r"test accuracy\s+([\d.]+)", out).group(1))
  off, groups = map(int, re.search(r"switched off\s+(\d+) of (\d+)", out).groups())
  assert groups == 64
  assert accuracy >= 0.8  # chance is 0.1
  # Pixels that no training image lights have zero gradient rows: screened to
  # zero at every step, so they are among the switched-off pixels.
  x, _ = load_digits(return_X_y=True)
  never_lit = int(np.sum(np.all(x[:1400] == 0, axis=0)))
  assert never_lit >= 1
  assert off >= never_lit
