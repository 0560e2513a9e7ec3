"""Runs README's first example and Usage block, docs/multiple_devices.md's block
and examples/quickstart.py, and checks README's commands and length (README's
Flax section is run by tests/test_flax.py).

Oracles: NumPy closed forms of one RAMDA step (the unregularized leaf, and the
block soft-threshold for a group whose D is constant), the never-lit pixels of
the digits (which any group lasso must switch off), the single-device run for
the sharded block, and the command in .ci/run.
"""

import os
import pathlib
import re
import runpy
import subprocess
import sys
import textwrap

import numpy as np
from sklearn.datasets import load_digits

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MULTIPLE_DEVICES = ROOT / "docs" / "multiple_devices.md"


def python_blocks(section, path=README, level="##"):
  """The ```python blocks of `path`'s section titled `section`."""
  text = "\n" + path.read_text()
  body = text.split(f"\n{level} {section}\n", 1)[1].split(f"\n{level} ", 1)[0]
  return re.findall(r"```python\n(.*?)```", body, re.S)


def _never_lit_pixels(n_train):
  """Pixels that no training image lights: their gradient rows are zero, so
  safe screening keeps their groups at zero at every step."""
  x, _ = load_digits(return_X_y=True)
  return int(np.sum(np.all(x[:n_train] == 0, axis=0)))


def test_readme_is_at_most_250_lines():
  assert len(README.read_text().splitlines()) <= 250


def test_readme_test_command_is_what_ci_runs():
  """README's command 2 ends with the test command of .ci/run, and both
  commands start from a fresh venv that they activate."""
  ci = (ROOT / ".ci" / "run").read_text()
  (block,) = re.findall(
    r"## The two commands\n.*?```bash\n(.*?)```", README.read_text(), re.S
  )
  commands = [line for line in block.splitlines() if not line.startswith("#")]
  assert len(commands) == 2
  for command in commands:
    assert command.startswith(
      "python3 -m venv .venv && . .venv/bin/activate && pip install"
    )
  assert commands[0].endswith("&& python -m optax_ramda.experiments")
  assert commands[1].endswith("&& python -m pytest -q")
  assert "\npython -m pytest -q\n" in ci


def test_readme_first_example(capsys):
  """The first example runs as written and prints what README says it prints."""
  (block,) = python_blocks("A first example")
  exec(compile(block, str(README), "exec"), {})
  out = capsys.readouterr().out
  pattern = r"test accuracy ([\d.]+), pixels switched off (\d+) of 64"
  found = re.search(pattern, out)
  accuracy, off = float(found.group(1)), int(found.group(2))
  assert accuracy >= 0.8  # chance is 0.1
  assert off >= _never_lit_pixels(1400) >= 1
  # README quotes this machine's output; other CPUs and JAX builds round
  # differently, so allow a few test images and a few pixels.
  stated = re.search(r"It prints `" + pattern + "`", README.read_text())
  assert abs(float(stated.group(1)) - accuracy) <= 0.02
  assert abs(int(stated.group(2)) - off) <= 3


def test_readme_usage_block(capsys):
  (block,) = python_blocks("Usage")
  ns: dict = {}
  exec(compile(block, str(README), "exec"), ns)
  # One step by hand, in float64 (k = 1: s = α = η, V = ηg, U = ηg²,
  # D = ∛(ηg²) + ε, W⁰ = the initial params), then w ← w + c(Ŵ − w).
  eta, eps, lam, c = 1e-2, 1e-6, 1e-3, 0.1
  w0 = {"w": np.ones((5, 3)), "b": np.zeros(3)}
  g = {"w": np.full((5, 3), 0.1), "b": np.array([0.1, -0.2, 0.3])}
  d = {k: np.cbrt(eta * g[k] ** 2) + eps for k in g}
  # Unregularized leaf: Ŵ = W⁰ − V/D.
  w_hat_b = w0["b"] - eta * g["b"] / d["b"]
  # Group lasso with D constant on each row: Ŵ_g = (b_g/D) max(0, 1 − αλω/‖b_g‖)
  # with b_g = D W⁰_g − V_g and ω = √3.
  b = d["w"] * w0["w"] - eta * g["w"]
  norms = np.linalg.norm(b, axis=1, keepdims=True)
  w_hat_w = b / d["w"] * np.maximum(0, 1 - eta * lam * np.sqrt(3) / norms)
  for leaf, w_hat in (("b", w_hat_b), ("w", w_hat_w)):
    expected = (1 - c) * w0[leaf] + c * w_hat
    np.testing.assert_allclose(ns["params"][leaf], expected, rtol=1e-6)
  # Each row keeps ‖b_g‖ ≈ 0.079 far above αλω ≈ 1.7e-5: no zero group.
  assert np.all(norms > 1e3 * eta * lam * np.sqrt(3))
  assert float(capsys.readouterr().out.strip()) == 0.0


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
exec(compile(block, "docs/multiple_devices.md", "exec"), ns)
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
  (block,) = python_blocks("Multiple devices", MULTIPLE_DEVICES, level="#")
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
  assert off >= _never_lit_pixels(1400) >= 1
