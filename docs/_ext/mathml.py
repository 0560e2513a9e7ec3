"""Renders the docs' math to MathML at build time, so pages need no script or network.

Browsers display MathML natively, so the site shows its formulas offline. Each
formula goes through ``latex2mathml``; a formula it cannot convert (a command it
does not know, an alignment outside ``split``) is reported as a Sphinx warning,
which ``-W`` turns into a failed build, instead of reaching a reader as raw TeX.
"""

from __future__ import annotations

import re

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.util import logging
from sphinx.util.math import get_node_equation_number

logger = logging.getLogger(__name__)

# latex2mathml leaves what it cannot parse as text: an unknown command as
# <mi>\name</mi>, a stray alignment tab as <mi>&</mi>.
_UNCONVERTED = re.compile(r"<m[io][^>]*>(\\[A-Za-z]+|&)</m[io]>")

# Rewrites for what latex2mathml lacks (\arg) or sets letter by letter in italics
# (\operatorname spells its name as one-letter <mi>s, which browsers slant).
_REWRITES = [
  (re.compile(r"\\arg\\min"), r"\\mathrm{arg\\,min}"),
  (re.compile(r"\\operatorname\{([^}]*)\}"), r"\\mathrm{\1}"),
]


def to_mathml(latex: str, display: str, node: nodes.Node) -> str:
  """MathML for `latex`, warning (at the node's source line) if it is incomplete."""
  for pattern, replacement in _REWRITES:
    latex = pattern.sub(replacement, latex)
  try:
    mathml = convert(latex, display=display)
  except Exception as error:  # latex2mathml raises its own exception types.
    logger.warning("cannot render math %r: %s", latex, error, location=node)
    return f"<code>{latex}</code>"
  unconverted = _UNCONVERTED.findall(mathml)
  if unconverted:
    logger.warning("math %r: not converted: %s", latex, unconverted, location=node)
  return mathml


def visit_math(self, node: nodes.math) -> None:
  self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
  self.body.append(to_mathml(node.astext(), "inline", node) + "</span>")
  raise nodes.SkipNode


def visit_displaymath(self, node: nodes.math_block) -> None:
  self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
  if node["number"]:
    number = get_node_equation_number(self, node)
    self.body.append(f'<span class="eqno">({number})')
    self.add_permalink_ref(node, "Link to this equation")
    self.body.append("</span>")
  # As Sphinx's MathJax renderer: blank lines separate equations, and an
  # equation with line breaks is a `split` (rows aligned at `&`).
  for part in (p for p in node.astext().split("\n\n") if p.strip()):
    if "\\\\" in part and "\\begin" not in part:
      part = "\\begin{split}" + part + "\\end{split}"
    self.body.append(to_mathml(part, "block", node))
  self.body.append("</div>\n")
  raise nodes.SkipNode


def setup(app):
  app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
  app.add_css_file("mathml.css")
  return {"parallel_read_safe": True, "parallel_write_safe": True}
