"""Shared fixtures."""

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
# multi-process runs, and the Jupyter kernel that executes the notebooks.
_SLOW_FIXTURES = {"runs", "jupyter_path"}


def pytest_collection_modifyitems(config, items):
  """Marks the tests that need a slow fixture `slow` (`-m "not slow"` skips)."""
  del config
  for item in items:
    if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
