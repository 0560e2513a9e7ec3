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
