"""Old home of :mod:`mxr.course.viz` (the course layer moved into ``mxr/course/``); this alias keeps
``import mxr.viz`` and ``from mxr import viz`` working."""

import sys

from mxr.course import viz

sys.modules[__name__] = viz
