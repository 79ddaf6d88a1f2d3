"""lecturelib: interactive, autograded notebooks for a computer-vision lecture.

Modules, one per topic: ``segmentation``, ``detection``, ``detr``, ``instance_segmentation``,
``visualization``, ``transformers`` (their models in ``<topic>_models``); shared parts: ``data`` (procedural
shapes), ``plot``, ``train``, ``rois`` (RoIPool, RoIAlign), ``layers`` (model blocks), ``checks`` (the graded
exercises' checks). ``reference`` and ``hidden`` ship only to instructors.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"


def grading_time() -> bool:
    """True while nbgrader autogrades (it sets ``NBGRADER_EXECUTION``): skip training and heavy demos."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def has_reference() -> bool:
    """True in the instructor/grader copy of the package, which carries ``lecturelib.reference``."""
    import importlib.util
    spec = importlib.util.find_spec("lecturelib.reference")
    return spec is not None and spec.origin is not None  # an empty folder (namespace package) does not count
