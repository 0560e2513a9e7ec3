"""Sphinx configuration of the optax_ramda API reference.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

import optax_ramda

project = "optax_ramda"
author = "optax_ramda authors"
copyright = "2026, optax_ramda authors"
release = optax_ramda.__version__
version = release

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: $…$ and $$…$$ math, and anchors for the headings that docstrings
# and README link to (docs/algorithm.md#stages-and-the-ramp).
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# Optax-style docstrings: Google sections (Args, Returns, Raises, Examples).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": False}

# Single backticks in the docstrings name arguments (Optax's habit): render
# them as emphasized text, not as cross-references that cannot resolve.
default_role = "emphasis"

html_theme = "alabaster"
html_title = f"optax_ramda {release}"
