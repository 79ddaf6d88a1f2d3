"""Reference solutions of the graded exercises (instructor/grader copy only).

Same names and signatures as the exercises, e.g. ``lecturelib.reference.conv_transpose2d``; one
module per topic (``reference/<topic>.py``), every public function re-exported here. The student
package leaves this folder out; the checks never import it (they use independent oracles).
"""
import importlib
import pkgutil

__all__ = []
for _module in pkgutil.iter_modules(__path__):
    _topic = importlib.import_module(f"{__name__}.{_module.name}")
    for _name in _topic.__all__:
        globals()[_name] = getattr(_topic, _name)
        __all__.append(_name)
