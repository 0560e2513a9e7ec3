"""Launching worker processes robustly: timeouts, kill on failure, full output.

The device count of a CPU process is fixed when JAX initializes, so every run
with several devices happens in a fresh subprocess whose ``XLA_FLAGS`` asks
for them. Processes that belong together
(the ranks of one ``jax.distributed`` run) form a :class:`Group`: when one
fails, the others are killed instead of waiting for a peer that never comes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


# Coordinator ports come from below Linux's ephemeral range (32768-60999), so no
# outgoing connection (say, another run's ranks dialing their coordinator) can be
# given one between its pick and the coordinator's bind. Each pytest-xdist
# worker has its own block, so runs in parallel workers never pick the same port,
# and the process id spreads concurrent sessions within a block.
_PORT_BASE, _PORT_BLOCK, _PORT_BLOCKS = 20_000, 500, 24
_port_offsets = itertools.count()


def _worker_index() -> int:
  """This pytest-xdist worker's number (``PYTEST_XDIST_WORKER=gwN``); 0 without."""
  worker = os.environ.get("PYTEST_XDIST_WORKER", "")
  return int(worker[2:]) if worker[:2] == "gw" and worker[2:].isdigit() else 0


def free_port() -> int:
  """A TCP port on 127.0.0.1, free a moment ago, from this worker's own block.

  Successive calls step through the block, so one process never hands out the
  same port twice while an earlier run may still hold it.
  """
  start = _PORT_BASE + (_worker_index() % _PORT_BLOCKS) * _PORT_BLOCK
  for _ in range(_PORT_BLOCK):
    port = start + (os.getpid() + next(_port_offsets)) % _PORT_BLOCK
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
      return port
  raise RuntimeError(f"no free port in {start}-{start + _PORT_BLOCK - 1}")


def cpu_env(devices: int) -> dict[str, str]:
  """The environment for a CPU-only child with `devices` host devices.

  Compiling dominates these tiny runs, so LLVM optimizes less; every run that
  is compared with another uses the same flags.
  """
  env = dict(os.environ)
  flags = [
    f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)
  ]
  flags += [
    f"{_DEVICE_FLAG}={devices}",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
  ]
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  return env


@dataclass
class Process:
  """One child process; its output goes to a file, so no pipe can fill up."""

  name: str
  argv: list[str]
  devices: int
  popen: subprocess.Popen | None = None
  log: IO[str] | None = None
  returncode: int | None = None

  def start(self) -> None:
    self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115
    self.popen = subprocess.Popen(
      [sys.executable, *self.argv],
      cwd=REPO,
      env=cpu_env(self.devices),
      stdin=subprocess.DEVNULL,
      stdout=self.log,
      stderr=subprocess.STDOUT,
      start_new_session=True,  # its own process group, killed as a whole
    )

  def poll(self) -> int | None:
    if self.returncode is None and self.popen is not None:
      self.returncode = self.popen.poll()
    return self.returncode

  def kill(self) -> None:
    if self.popen is not None and self.popen.poll() is None:
      # SIGKILL: jax.distributed's preemption notifier swallows SIGTERM.
      with contextlib.suppress(ProcessLookupError):
        os.killpg(self.popen.pid, signal.SIGKILL)
      self.popen.wait()
    self.poll()

  def output(self, limit: int = 6000) -> str:
    """The end of its stdout and stderr, without Gloo's connection chatter."""
    if self.log is None:
      return ""
    self.log.flush()
    self.log.seek(0)
    text = "".join(line for line in self.log if not line.startswith("[Gloo]"))
    return text if len(text) <= limit else "...\n" + text[-limit:]


@dataclass
class Group:
  """Processes that succeed or fail together, under one deadline."""

  name: str
  processes: list[Process]
  timeout: float
  deadline: float = 0.0
  error: str | None = None
  done: bool = False
  elapsed: float = 0.0
  _started: float = field(default=0.0, repr=False)

  def start(self) -> Group:
    self._started = time.monotonic()
    self.deadline = self._started + self.timeout
    for p in self.processes:
      p.start()
    return self

  def step(self) -> bool:
    """Checks on the processes once; returns whether the group is finished."""
    if self.done:
      return True
    codes = [p.poll() for p in self.processes]
    failed = [
      p for p, c in zip(self.processes, codes, strict=True) if c not in (None, 0)
    ]
    if failed:
      self._finish(", ".join(f"{p.name} exited with {p.returncode}" for p in failed))
    elif all(c == 0 for c in codes):
      self._finish(None)
    elif time.monotonic() > self.deadline:
      self._finish(f"timed out after {self.timeout:.0f} s")
    return self.done

  def _finish(self, error: str | None) -> None:
    for p in self.processes:
      p.kill()  # a no-op for those that exited
    self.error, self.done = error, True
    self.elapsed = time.monotonic() - self._started

  def report(self) -> str:
    """The failure and every process's output (for a test failure message)."""
    parts = [f"{self.name}: {self.error}"]
    for p in self.processes:
      parts.append(f"--- {p.name} (exit {p.returncode}): {' '.join(p.argv)}")
      parts.append(p.output())
    return "\n".join(parts)


def wait(groups: list[Group], max_processes: int = 4, poll: float = 0.05) -> None:
  """Runs the groups, at most `max_processes` processes at a time, to the end.

  Groups start in order (a group larger than the limit starts alone); each
  one's deadline counts from its own start.
  """
  pending, running = list(groups), []
  try:
    while pending or running:
      busy = sum(len(g.processes) for g in running)
      while pending and (
        not running or busy + len(pending[0].processes) <= max_processes
      ):
        running.append(pending.pop(0).start())
        busy += len(running[-1].processes)
      running = [g for g in running if not g.step()]
      time.sleep(poll)
  finally:  # Also on KeyboardInterrupt: leave no orphans behind.
    for g in groups:
      if g._started and not g.done:
        g._finish("interrupted")
      elif not g._started:
        g.error, g.done = "not started", True


def module(name: str) -> list[str]:
  """The argv prefix that runs ``tests.multidevice.<name>``."""
  return ["-m", f"tests.multidevice.{name}"]


def single(name: str, argv: list[str], *, devices: int, timeout: float) -> Group:
  """One process with `devices` CPU devices."""
  return Group(name, [Process(name, argv, devices)], timeout)


def distributed(
  name: str, argv: list[str], *, processes: int, devices: int, timeout: float
) -> Group:
  """`processes` ranks of a ``jax.distributed`` run on 127.0.0.1.

  Rank i runs `argv` followed by ``--coordinator 127.0.0.1:PORT
  --num-processes N --process-id i``, with `devices` local CPU devices; the
  port is picked free just before.
  """
  coordinator = f"127.0.0.1:{free_port()}"
  ranks = [
    Process(
      f"{name}[{i}]",
      [
        *argv,
        "--coordinator",
        coordinator,
        "--num-processes",
        str(processes),
        "--process-id",
        str(i),
      ],
      devices,
    )
    for i in range(processes)
  ]
  return Group(f"{name} on {coordinator}", ranks, timeout)
