"""``python -m lecturelib.grading.nbgrader_cli <args>``: ``python -m nbgrader <args>``, started faster.

nbgrader imports nbformat, which imports jsonschema, whose format checkers import ``rfc3987_syntax`` when it is
installed (``jupyter_events`` installs it): that module builds 38 lark grammars at import time, for a format
(RFC 3987 IRIs) that nothing nbgrader runs ever checks. Measured: 0.53 s instead of 6.9 s for ``import jsonschema``
on a loaded 2-core machine (``python -X importtime``), paid by every nbgrader command, once per graded
submission. Hiding the module makes jsonschema skip that one checker (it imports it inside
``contextlib.suppress(ImportError)``); plain ``nbgrader`` gives the same results, only later (tested).
"""
from __future__ import annotations

import sys


def main() -> None:
    sys.modules.setdefault("rfc3987_syntax", None)   # a None entry makes `import rfc3987_syntax` raise ImportError
    from nbgrader.apps.nbgraderapp import main as nbgrader_main
    nbgrader_main()


if __name__ == "__main__":
    main()
