"""``python -m optax_ramda.experiments``: see :func:`optax_ramda.experiments.main`."""

import sys

from optax_ramda.experiments._cli import main

if __name__ == "__main__":
  sys.exit(main())
