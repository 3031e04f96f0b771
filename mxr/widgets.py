"""Old home of :mod:`mxr.course.widgets` (the course layer moved into ``mxr/course/``); this alias keeps
``import mxr.widgets`` and ``from mxr import widgets`` working."""

import sys

from mxr.course import widgets

sys.modules[__name__] = widgets
