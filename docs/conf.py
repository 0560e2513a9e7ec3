"""Sphinx configuration of the optax_ramda documentation site.

Build: ``python -m sphinx -W --keep-going -q -b html docs docs/_build/html``.
"""

import pathlib
import sys

import chex
import jax
import optax
from sphinx.util.typing import stringify_annotation

import optax_ramda
from optax_ramda import _regularizers

sys.path.insert(0, str(pathlib.Path(__file__).parent / "_ext"))

project = "optax_ramda"
author = "optax_ramda authors"
copyright = "2026, optax_ramda authors"
release = optax_ramda.__version__
version = release

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.viewcode",
  "myst_parser",
  "mathml",  # docs/_ext/mathml.py: formulas as MathML, rendered with no script.
]
html_math_renderer = "mathml"

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
html_static_path = ["_static"]

# Markdown: $…$ and $$…$$ math, and anchors for the headings that docstrings
# and README link to (docs/algorithm.md#stages-and-the-ramp).
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# BENCHMARKS.md (included as is) steps from ## to #### headings.
suppress_warnings = ["myst.header"]

# Optax-style docstrings: Google sections (Args, Returns, Raises, Examples).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": False}

# Type hints that Python has already expanded (optax.ScalarOrSchedule is a
# Union of a float, an array and a Callable of arrays) are shown by the name
# the code wrote. Keys are the expanded forms as Sphinx prints them.
_ALIASES = {
  optax.ScalarOrSchedule: "optax.ScalarOrSchedule",
  # optax.Params, OptState and Updates are one Union: show what they hold.
  optax.Params: "pytree of arrays",
  chex.ArrayTree: "pytree of arrays",
  jax.typing.DTypeLike: "jax.typing.DTypeLike",
  jax.typing.ArrayLike: "jax.typing.ArrayLike",
  _regularizers.RegularizerArg: "spec tree | Callable[[params], spec tree]",
}
TYPE_ALIASES = {
  stringify_annotation(hint, "smart"): name
  for hint, name in sorted(
    _ALIASES.items(), key=lambda kv: -len(stringify_annotation(kv[0], "smart"))
  )
}


def _name_type_aliases(app, domain, objtype, contentnode):
  """Rewrites recorded hints to alias names, before autodoc renders them."""
  del domain, objtype, contentnode
  for hints in app.env.current_document.autodoc_annotations.values():
    for param, hint in hints.items():
      for expanded, name in TYPE_ALIASES.items():
        hint = hint.replace(expanded, name)
      hints[param] = hint


def setup(app):
  # Before autodoc's own handler (priority 500) turns the hints into fields.
  app.connect("object-description-transform", _name_type_aliases, priority=400)


# Single backticks in the docstrings name arguments (Optax's habit): render
# them as emphasized text, not as cross-references that cannot resolve.
default_role = "emphasis"

html_theme = "alabaster"
html_title = f"optax_ramda {release}"
