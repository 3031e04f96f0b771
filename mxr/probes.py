"""Old home of :mod:`mxr.course.probes` (the course layer moved into ``mxr/course/``); this alias keeps
``import mxr.probes`` and ``from mxr import probes`` working."""

import sys

from mxr.course import probes

sys.modules[__name__] = probes
