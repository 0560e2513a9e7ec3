"""Tests of the documentation: the API reference covers the public API, and
every pointer into docs/algorithm.md names a section that exists.

The Sphinx build itself (warnings as errors) runs in .ci/run.
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
