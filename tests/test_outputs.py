"""Tests of the output folder contract (optax_ramda.experiments._outputs).

No result is ever lost: without --out each invocation gets a fresh
runs/<tasks>-<UTC time>[-k]/ folder (runs started in the same second too, the
clock mocked here), an --out that holds results is refused before training and
left unchanged unless --overwrite is given, and the params/ file names carry
the task, regularizer, optimizer and seed.
"""

import contextlib
import datetime
import io
import json
import os

import numpy as np
import pytest

from optax_ramda.experiments import _outputs, main

TINY = [
  "--task", "logreg", "--optimizer", "sgd", "--epochs", "1", "--seeds", "1",
  "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--stages", "1",
  "--quiet",
]  # fmt: skip
NOW = datetime.datetime(2026, 12, 5, 8, 35, 0, tzinfo=datetime.UTC)


@pytest.fixture
def frozen_clock(monkeypatch):
  monkeypatch.setattr(_outputs, "_utc_now", lambda: NOW)


def _main(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    assert main(argv) == 0
  assert "run 1/1" not in err.getvalue()  # --quiet: no progress bar.
  return out.getvalue()


def _snapshot(folder):
  """Every file under `folder` with its bytes and modification time."""
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
  return files


def test_params_file_names_task_regularizer_optimizer_and_seed():
  assert _outputs.params_file("lm", "group_lasso", "adamw", 0) == os.path.join(
    "params", "lm-group_lasso-adamw-seed0.npz"
  )


def test_fresh_folders_never_collide_within_one_second(tmp_path, frozen_clock):
  root = str(tmp_path / "runs")
  made = [_outputs.fresh_folder(["logreg", "mlp"], root) for _ in range(3)]
  stem = os.path.join(root, "logreg+mlp-20261205T083500Z")
  assert made == [stem, f"{stem}-2", f"{stem}-3"]
  assert all(os.path.isdir(p) and not os.listdir(p) for p in made)


def test_no_out_writes_each_run_to_its_own_folder(tmp_path, monkeypatch, frozen_clock):
  monkeypatch.chdir(tmp_path)
  first, second = _main(TINY), _main(TINY)  # Started "in the same second".
  folders = [os.path.join("runs", "logreg-20261205T083500Z")]
  folders.append(folders[0] + "-2")
  for text, folder in zip((first, second), folders, strict=True):
    lines = text.strip().splitlines()
    assert lines[0] == f"writing to {folder}/"  # The path, at the start ...
    assert lines[-1].startswith(f"wrote {folder}/results.json")  # ... and the end.
    assert sorted(os.listdir(folder)) == [
      "curves.png",
      "params",
      "results.json",
      "table.md",
    ]
    assert os.listdir(os.path.join(folder, "params")) == [
      "logreg-group_lasso-sgd-seed0.npz"
    ]
    with open(os.path.join(folder, "results.json")) as f:
      assert json.load(f)["arguments"]["out"] == folder


@pytest.mark.parametrize("existing", ["results.json", "fronts.png", "params/old.npz"])
def test_out_holding_results_is_refused_and_left_unchanged(tmp_path, capsys, existing):
  out = tmp_path / "used"
  (out / "params").mkdir(parents=True)
  (out / existing).write_text("an earlier result")
  before = _snapshot(out)
  with pytest.raises(SystemExit) as exc:
    main([*TINY, "--out", str(out)])
  assert exc.value.code == 2
  err = capsys.readouterr().err
  name = "params/" if existing.startswith("params") else existing
  assert f"--out {str(out)!r} already holds results ({name})" in err
  assert "pass --overwrite to replace them, or choose another --out" in err
  assert _snapshot(out) == before


def test_overwrite_writes_into_a_used_out(tmp_path):
  out = tmp_path / "used"
  out.mkdir()
  (out / "table.md").write_text("an earlier table")
  _main([*TINY, "--out", str(out), "--overwrite"])
  assert (out / "table.md").read_text().startswith("`python -m optax_ramda")
  with np.load(out / "params" / "logreg-group_lasso-sgd-seed0.npz") as f:
    assert "params/layers/0/kernel" in f.files


def test_an_empty_out_or_empty_params_is_not_a_result(tmp_path):
  out = tmp_path / "fresh"
  (out / "params").mkdir(parents=True)  # Left by a run that stopped early.
  assert _outputs.existing_results(str(out)) == []
  assert _outputs.existing_results(str(tmp_path / "missing")) == []
  (out / "curves.png").write_bytes(b"")
  (out / "params" / "x.npz").write_bytes(b"")
  assert _outputs.existing_results(str(out)) == ["curves.png", "params/"]
