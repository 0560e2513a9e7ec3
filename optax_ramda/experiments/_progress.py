"""The one progress bar of a job: run k of N, elapsed, ETA, the run's metrics.

A comparison or a sweep is many runs; one tqdm bar on stderr counts them (run
k of N, elapsed time and the estimate of the time left) and shows which run is
training and, after each evaluated epoch, its numbers under their names (the
task's "test acc" or "val ppl", the regularizer's "group sparsity" or "low-rank
level"). ``--quiet`` disables it, as do processes other than 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm  # Text bars everywhere; tqdm.auto warns without ipywidgets.

# The least time between two redraws for an epoch's numbers (seconds).
REDRAW_SECONDS = 0.2


class Progress:
  """One bar over `total` runs.

  Args:
    total: the number of runs of the job.
    disable: draw nothing (``--quiet``, or not process 0).
    unit: what one step of the bar is.
  """

  def __init__(self, total: int, *, disable: bool, unit: str = "run"):
    self.total = total
    self.bar = tqdm(total=total, unit=unit, disable=disable, desc=f"{unit} 0/{total}")
    self._name = ""
    self._labels: Sequence[tuple[str, str]] = ()
    self._drawn = 0.0

  def start(self, name: str, labels: Sequence[tuple[str, str]] = ()) -> None:
    """A run starts: `name` labels it; `labels` are its (metric, label) pairs."""
    self._name, self._labels = name, labels
    self.bar.set_description_str(f"run {self.bar.n + 1}/{self.total}", refresh=False)
    self.bar.set_postfix_str(name)
    self._drawn = time.monotonic()

  def epoch(self, epoch: int, epochs: int, values: dict[str, Any]) -> None:
    """Shows the run's numbers after an epoch (redrawn at most every 0.2 s)."""
    parts = [self._name, f"epoch {epoch}/{epochs}"]
    parts += [f"{label} {values[k]:.3f}" for k, label in self._labels if k in values]
    self.bar.set_postfix_str(", ".join(parts), refresh=False)
    now = time.monotonic()
    if now - self._drawn >= REDRAW_SECONDS or epoch == epochs:
      self.bar.refresh()
      self._drawn = now

  def add(self, runs: int) -> None:
    """`runs` more runs join the job (a grid extended by the sweep)."""
    self.total += runs
    self.bar.total = self.total

  def done(self) -> None:
    """The run finished."""
    self.bar.update()

  def close(self) -> None:
    self.bar.close()
