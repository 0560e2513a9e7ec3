"""Shared fixtures, and the `slow` marker of the tests that need a slow fixture."""

import sys

import jax
import pytest
from xdist.scheduler import LoadScopeScheduling


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats enabled (parity tests), then restores."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def pytest_collection_finish(session):
  """Refuses a collection that left float64 on: importing a module (the doctest
  collection imports tests/multidevice/*.py too) must not switch it for every
  test of the process; use the `x64` fixture or switch inside a function."""
  if jax.config.jax_enable_x64:
    raise pytest.UsageError(
      "jax_enable_x64 is on after collection: a collected module switches it at "
      "import; switch it inside a function (a worker's main) or use the x64 fixture."
    )


# Fixtures that launch subprocesses for minutes: the multi-device and
# multi-process runs, and the Jupyter kernel that executes the notebooks. Each
# is named with its module, since a fixture's name alone can be reused for a
# fast one elsewhere (test_sweep's `runs`).
_SLOW_FIXTURES = {
  ("tests.test_multidevice", "runs"),
  ("tests.test_experiments_multidevice", "runs"),
  ("tests.test_notebooks", "jupyter_path"),
}


def _is_slow(fixturedef) -> bool:
  return (getattr(fixturedef.func, "__module__", None), fixturedef.argname) in (
    _SLOW_FIXTURES
  )


def pytest_collection_modifyitems(config, items):
  """Marks `slow` the tests that use a slow fixture, directly or through another.

  `-m "not slow"` skips them. The fixture closure of a test holds the fixtures
  that its fixtures request too (test_multidevice's `sharded` needs `runs`).
  """
  del config
  for item in items:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # Doctests have no fixture closure.
      continue
    defs = [d for ds in info.name2fixturedefs.values() for d in ds]
    if any(_is_slow(d) for d in defs):
      item.add_marker(pytest.mark.slow)
  # A renamed fixture would silently unmark its tests: refuse instead, once its
  # module is imported.
  for module, name in _SLOW_FIXTURES:
    if module in sys.modules and not hasattr(sys.modules[module], name):
      raise pytest.UsageError(
        f"tests/conftest.py lists the slow fixture {name} of {module}, which "
        "has none by that name."
      )


# pytest-xdist (`-n auto` in pyproject.toml) hands out tests one by one, except
# the units below (a module, or the tests of a module whose node ids start with
# the key), each of which runs as a whole on one worker: their tests share a
# module-scoped fixture or a cache of compiled steps, which would otherwise be
# built once per worker. The two modules that launch fleets of
# multi-device subprocesses form one unit, so that their fleets never run at once
# (a 2-core machine would run 8 processes). `xdist_group` marks with
# `--dist loadgroup` would say the same, but pytest-xdist 3.8 ignores them under
# pytest >= 9.2 (pytest-dev/pytest-xdist#1386).
_UNITS = {
  "tests/test_multidevice.py": "multi-device subprocesses",
  "tests/test_experiments_multidevice.py": "multi-device subprocesses",
  "tests/test_checkpoint.py": "tests/test_checkpoint.py",
  "tests/test_contract.py": "tests/test_contract.py",
  "tests/test_experiments.py": "tests/test_experiments.py",
  "tests/test_flax.py": "tests/test_flax.py",
  "tests/test_flax_examples.py::test_sharding_recipes": "flax sharding recipes",
  "tests/test_robustness.py": "tests/test_robustness.py",
  "tests/test_sweep.py": "tests/test_sweep.py",
}


class _UnitScheduling(LoadScopeScheduling):
  """xdist's load-scope scheduling, with `_UNITS` as scopes and every other test
  its own; larger units go out first (xdist orders scopes by test count)."""

  def _split_scope(self, nodeid: str) -> str:
    return next(
      (unit for key, unit in _UNITS.items() if nodeid.startswith(key)), nodeid
    )


def pytest_xdist_make_scheduler(config, log):
  """The scheduler for `--dist load`, the default under `-n`; others as asked."""
  if config.getvalue("dist") == "load":
    return _UnitScheduling(config, log)
  return None
