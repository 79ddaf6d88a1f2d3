"""What every registered exercise of every topic satisfies; the tests/test_checks_<topic>.py files pin the
realistic wrong implementations of each exercise to the message naming their cause."""
from __future__ import annotations

import importlib

import nbformat
import pytest

from check_tools import fails
from lecturelib import reference as ref
from lecturelib.checks import EXERCISES, run_suite
from lecturelib.grading.execute import parse_checks
from notebook_tools import NOTEBOOKS

NAMES = sorted(EXERCISES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("suite", ["visible", "hidden"])
def test_reference_passes(name, suite):
    result = run_suite(name, getattr(ref, name), suite)
    assert result.passed, result.report()
    assert len(result.cases) >= 2


@pytest.mark.parametrize("name", NAMES)
def test_hidden_suite_has_its_own_cases(name):
    specs = importlib.import_module(f"lecturelib.hidden.{EXERCISES[name].topic}").SPECS[name]
    assert specs
    assert not [spec for spec in specs if spec in EXERCISES[name].visible]


@pytest.mark.parametrize("name", NAMES)
def test_stub_says_not_implemented(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    message = fails(name, stub)
    assert "not implemented yet" in message and "likely cause" not in message


def test_every_exercise_is_graded_once_with_both_suites():
    """Each registered exercise has one graded test cell, in the notebook of its topic, running the visible and
    the hidden suite; no notebook checks an exercise that is not registered."""
    graded: dict[str, list[tuple[str, set[str]]]] = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution"):
                calls = parse_checks(cell.source)
                assert calls, (path.name, cell.source)
                for exercise in {c.exercise for c in calls}:
                    graded.setdefault(exercise, []).append(
                        (path.stem, {c.suite for c in calls if c.exercise == exercise}))
    assert set(graded) == set(EXERCISES)
    for name, cells in graded.items():
        assert len(cells) == 1, (name, cells)
        notebook, suites = cells[0]
        assert suites == {"visible", "hidden"}, name
        assert notebook == EXERCISES[name].topic, (name, notebook)


def test_no_graded_function_is_implemented_where_students_can_read_it():
    """The student package leaves out reference/, hidden/, grading/ and course.py; nothing else in it may define
    a graded function (under its own name) or import the references when it loads."""
    import ast
    from pathlib import Path

    package = Path(importlib.import_module("lecturelib").__file__).parent
    grader_only = {"reference", "hidden", "grading", "course.py"}
    for path in package.rglob("*.py"):
        if grader_only & set(path.relative_to(package).parts):
            continue
        tree = ast.parse(path.read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert not defined & set(EXERCISES), (path.name, defined & set(EXERCISES))
        top_level = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
        assert not [n for n in top_level if n.module and "reference" in n.module.split(".")], path.name
