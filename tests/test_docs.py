"""Tests of the documentation: the API reference covers the public API, and
every pointer into docs/algorithm.md names a section that exists.

The Sphinx build itself (warnings as errors) runs in .ci/run; these tests also
check what the build cannot: every export of the experiments documented, every
report table with its command and machine, the index example, README's links.
"""

import os
import pathlib
import re

import optax_ramda as oxr

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def public_names():
  return sorted(n for n in vars(oxr) if not n.startswith("_"))


def documented_names():
  text = (DOCS / "api.rst").read_text()
  return re.findall(r"^\.\. auto(?:function|class|data):: (\w+)", text, re.M)


def slug(heading):
  """The anchor of a heading, as GitHub and MyST (``myst_heading_anchors``) make it."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def test_api_reference_covers_every_public_name():
  documented = documented_names()
  assert len(documented) == len(set(documented)), "a name is documented twice"
  missing = sorted(set(public_names()) - set(documented) - {"experiments"})
  assert not missing, f"public names without an entry in docs/api.rst: {missing}"
  unknown = sorted(set(documented) - set(public_names()))
  assert not unknown, f"docs/api.rst documents names oxr does not export: {unknown}"


def test_the_slug_rule_matches_known_anchors():
  assert slug("Stages and the ramp") == "stages-and-the-ramp"
  assert slug('Proximal gradient ("pg")') == "proximal-gradient-pg"


def test_every_pointer_into_the_algorithm_page_names_a_section():
  headings = re.findall(r"^#+ (.+)$", (DOCS / "algorithm.md").read_text(), re.M)
  anchors = {slug(h) for h in headings}
  titles = {h.strip() for h in headings}
  files = [ROOT / "README.md", *sorted((ROOT / "optax_ramda").rglob("*.py"))]
  pointers = 0
  for path in files:
    text = path.read_text()
    for anchor in re.findall(r"algorithm\.md#([\w\-]+)", text):
      pointers += 1
      assert anchor in anchors, f"{path.name}: no section #{anchor}"
    # The form `docs/algorithm.md, "Section title"` names a heading by title.
    for title in re.findall(r'algorithm\.md(?:\)|`)?, "([^"]+)"', text):
      pointers += 1
      assert title in titles, f'{path.name}: no section "{title}"'
  assert pointers > 0


def test_no_reference_to_design_notes_outside_the_repository():
  """Design notes that are not part of the repository are never cited."""
  skip = {".venv", "_build", "build", "dist", ".git", "runs", "__pycache__"}
  files = []
  for folder, dirs, names in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
    files += [
      pathlib.Path(folder, n)
      for n in names
      if n.endswith((".py", ".md", ".ipynb", ".rst"))
      and pathlib.Path(folder, n) != pathlib.Path(__file__)
    ]
  assert len(files) > 20
  offenders = [str(p.relative_to(ROOT)) for p in files if "DESIGN" in p.read_text()]
  assert not offenders, offenders


REPORTS = [
  "main_job",
  "calibration",
  "paper_protocol",
  "lm",
  "low_rank",
  "identification",
]


def test_experiments_api_documents_every_export():
  from optax_ramda import experiments

  text = (DOCS / "experiments_api.rst").read_text()
  documented = re.findall(
    r"^\.\. (?:auto(?:function|class)|py:data):: (\w+)", text, re.M
  )
  assert len(documented) == len(set(documented)), "a name is documented twice"
  exported = {n for n in vars(experiments) if not n.startswith("_")}
  exported -= {
    n for n in exported if type(getattr(experiments, n)).__name__ == "module"
  }
  assert sorted(exported - set(documented)) == [], "undocumented experiments exports"
  assert sorted(set(documented) - exported) == [], "documented names not exported"


MEASURED_ON = (
  "the project's 2-core Intel Xeon CPU machine (Linux, Python 3.11.7) with jax and jaxlib "
  "0.10.2, optax 0.2.8 and flax 0.12.8. Numbers vary within seed noise across CPUs and JAX "
  "builds."
)


def test_every_report_table_states_its_command_and_machine():
  """Each table of an experiment report is preceded, since the previous table,
  by the command that made it and the machine, versions and seed-noise sentence."""
  tables = 0
  for page in REPORTS:
    lines = (DOCS / f"{page}.md").read_text().splitlines()
    since_last_table: list[str] = []
    for i, line in enumerate(lines):
      if line.startswith("| ---") and lines[i - 1].startswith("|"):
        tables += 1
        before = " ".join(" ".join(since_last_table).split())
        assert "Made by `python -m optax_ramda.experiments" in before, (page, i)
        assert MEASURED_ON in before, (page, i)
        since_last_table = []
      elif not line.startswith("|"):
        since_last_table.append(line)
  assert tables >= 15


def test_index_lists_every_page():
  index = (DOCS / "index.md").read_text()
  toctrees = "".join(re.findall(r"```\{toctree\}\n(.*?)```", index, re.S))
  entries = {line.strip() for line in toctrees.splitlines() if line and ":" not in line}
  pages = {p.stem for p in DOCS.glob("*.md")} | {p.stem for p in DOCS.glob("*.rst")}
  assert entries == pages - {"index"}


def test_index_example_runs(capsys):
  (block,) = re.findall(r"```python\n(.*?)```", (DOCS / "index.md").read_text(), re.S)
  exec(compile(block, "docs/index.md", "exec"), {})
  # Features 2..7 carry no signal; the printed check is that their rows are 0.
  assert capsys.readouterr().out.split() == ["True"]


def test_readme_links_resolve():
  text = (ROOT / "README.md").read_text()
  targets = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text)
  assert targets
  missing = [t for t in targets if not (ROOT / t).exists()]
  assert not missing, missing


def test_ramda_regularizer_entry_names_every_spec():
  doc = oxr.ramda.__doc__
  entry = doc.split("    regularizer:", 1)[1].split("    solver:", 1)[0]
  for spec in ("group_lasso", "l1", "nuclear"):
    assert f":func:`{spec}`" in entry
