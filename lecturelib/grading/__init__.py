"""Honest grading: student code runs in a sandbox, verdicts are computed outside from plain data.

Grader-only (the student package leaves this folder out, except what runs inside the sandbox:
``collect``, ``protocol`` and ``limits`` are imported there from the grader's own copy).
See ``execute.IsolatedExecute`` (the nbgrader preprocessor) and the threat model in the README.
"""
