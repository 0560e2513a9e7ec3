"""The registry of tasks: name on the command line → :class:`~._task.Task`.

A new task (a data set with its model) is one more entry: a
:class:`~optax_ramda.experiments._classifiers.ClassifierTask` for an array
data set, or a :class:`~optax_ramda.experiments._task.Task` subclass for
anything else.
"""

from __future__ import annotations

from optax_ramda.experiments._classifiers import CLASSIFIERS
from optax_ramda.experiments._lm import LM
from optax_ramda.experiments._task import Task

TASKS: dict[str, Task] = {t.name: t for t in (*CLASSIFIERS, LM)}
