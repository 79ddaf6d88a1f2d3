"""What every registered exercise of every topic satisfies; the tests/test_checks_<topic>.py files pin the
realistic wrong implementations of each exercise to the message naming their cause."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

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
    module = importlib.import_module(f"lecturelib.hidden.{EXERCISES[name].topic}")
    specs = module.SPECS[name]
    assert specs and module.VISIBLE[name]
    assert not [spec for spec in specs if spec in module.VISIBLE[name]]


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
    from lecturelib.grading.paths import GRADER_ONLY
    grader_only = set(GRADER_ONLY)
    for path in package.rglob("*.py"):
        if grader_only & set(path.relative_to(package).parts):
            continue
        tree = ast.parse(path.read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert not defined & set(EXERCISES), (path.name, defined & set(EXERCISES))
        top_level = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
        assert not [n for n in top_level if n.module and "reference" in n.module.split(".")], path.name


def _perturbed(value):
    """A plausible wrong answer of the same type: every float off by a little, every int by one."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return value * 1.5 + 0.25
        if value.dtype == torch.bool:
            return ~value
        return value + 1
    if isinstance(value, np.ndarray):
        return value * 1.5 + 1
    if isinstance(value, (tuple, list)):
        return type(value)(_perturbed(v) for v in value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 1.5 + 1
    return value


def _reshaped(value):
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value[None]
    if isinstance(value, (tuple, list)):
        return type(value)(_reshaped(v) for v in value)
    return [value]


_REVEALING = re.compile(r"expected \(|expected \[|expected -?\d|entries are off|first mismatch|rel_error|"
                        r"has shape \(|secret-input-9x7")


@pytest.mark.parametrize("name", NAMES)
def test_hidden_failures_reveal_no_expected_value(name):
    """Feedback on a hidden case names the case and the likely cause, never the expected shape, values, counts, or
    the inputs (a student's own exception message may quote them: it is not shown either)."""
    reference = getattr(ref, name)

    def raising(*args, **kwargs):
        raise ValueError("secret-input-" + "9x7 does not fit")  # as if the message quoted an input

    wrong = [lambda *a, **k: _perturbed(reference(*a, **k)), lambda *a, **k: _reshaped(reference(*a, **k)), raising]
    for fn in wrong:
        result = run_suite(name, fn, "hidden")
        assert not result.passed
        for case in result.failures:
            assert case.name.startswith("hidden case"), case.name
            assert not _REVEALING.search(case.message), (case.name, case.message)


@pytest.mark.parametrize("name", NAMES)
def test_forbidden_ops_cross_the_sandbox_as_data(name):
    """What an exercise forbids travels into the sandbox as plain data, and is rebuilt there to the same watches."""
    from lecturelib.checks.runner import forbidden_from_spec, forbidden_spec
    spec = forbidden_spec(EXERCISES[name].forbidden)
    assert forbidden_spec(forbidden_from_spec(spec)) == spec
    assert all(isinstance(x, (str, int, float, bool, type(None), list, tuple)) for entry in spec for x in entry)


def _categories(specs) -> set:
    """What a suite's specs exercise: their kinds, the flags they switch on, their dtypes."""
    found = set()
    for spec in specs:
        if isinstance(spec, dict):
            found |= {("kind", spec["kind"])} if "kind" in spec else set()
            found |= {(key, True) for key, value in spec.items() if value is True}
            found |= {("dtype", spec["dtype"])} if "dtype" in spec else set()
    return found


@pytest.mark.parametrize("name", NAMES)
def test_hidden_suite_covers_every_category_of_the_visible_suite(name):
    """A wrong answer on a category that only the visible suite has (empty inputs, float32, a kind of case) would
    still earn the hidden points: the hidden suite has every kind, flag and dtype of the visible one."""
    module = importlib.import_module(f"lecturelib.hidden.{EXERCISES[name].topic}")
    assert _categories(module.VISIBLE[name]) <= _categories(module.SPECS[name])


def test_readme_lists_what_each_exercise_refuses():
    """The students' table of refused library calls is the checks' own list."""
    from lecturelib.checks.runner import CallableWatch, ForbiddenOp, TorchFunctionWatch
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    for name, exercise in EXERCISES.items():
        whats = []
        for entry in exercise.forbidden:
            if isinstance(entry, ForbiddenOp):
                whats.append(entry.what)
            elif isinstance(entry, CallableWatch):
                whats += [c.what for c in entry.callables] + [what for _, what in entry.modules]
            elif isinstance(entry, TorchFunctionWatch):
                whats += [what for _, what in entry.functions]
        if whats:
            assert name in rows, name
            assert all(what in rows[name] for what in whats), (name, whats)


@pytest.mark.parametrize("name", NAMES)
def test_personal_hidden_inputs_with_a_course_secret(name):
    """With a course secret, each student's random hidden inputs are their own, the same at every regrade, and the
    reference passes them all."""
    from lecturelib import hidden
    from lecturelib.checks.core import verify_case
    from lecturelib.checks.runner import run_calls

    def inputs(student):
        cases = hidden.build(name, "hidden", student, "s3cret")
        return cases, [repr([(c.args, c.kwargs) for c in case.calls]) for case in cases]

    alice, alice_inputs = inputs("alice")
    assert inputs("alice")[1] == alice_inputs
    seeded = [i for i, s in enumerate(importlib.import_module(f"lecturelib.hidden.{EXERCISES[name].topic}")
                                      .SPECS[name]) if isinstance(s, dict) and "seed" in s]
    bob_inputs = inputs("bob")[1]
    if seeded:
        assert any(alice_inputs[i] != bob_inputs[i] for i in seeded)
    reference = getattr(ref, name)
    for student in ("alice", "bob", "carol"):
        for case in hidden.build(name, "hidden", student, "s3cret"):
            outcomes, used = run_calls(reference, case.calls, EXERCISES[name].forbidden)
            assert verify_case(case, outcomes, used).passed, (student, case.name)
