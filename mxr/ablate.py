"""Old home of :mod:`mxr.course.ablate` (the course layer moved into ``mxr/course/``); this alias keeps
``import mxr.ablate`` and ``from mxr import ablate`` working."""

import sys

from mxr.course import ablate

sys.modules[__name__] = ablate
