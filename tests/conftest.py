"""Shared fixtures, and the `slow` marker of the tests that need a slow fixture."""

import sys

import jax
import pytest


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats enabled (parity tests), then restores."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


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
