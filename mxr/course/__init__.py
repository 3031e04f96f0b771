"""The course layer: what only the notebooks need (mxr.course.runs: the run cache; choices: the
training panel's choices; prime: the notebooks' runs ahead of them; figures, analysis, probes and
widgets)."""
