"""What students receive computes no answer: no function in the student package passes any suite, none holds the
source of a reference solution or of a grader-side oracle, and its only cases are the visible ones (as data)."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lecturelib import hidden
from lecturelib.checks import EXERCISES
from lecturelib.checks.core import dump_cases
from lecturelib.course import build_student_package
from lecturelib.grading.paths import GRADER_ONLY, PACKAGE

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def student_package(tmp_path_factory) -> Path:
    return build_student_package(tmp_path_factory.mktemp("release") / "student_package")


def test_student_package_holds_no_grader_part_and_only_the_visible_cases(student_package):
    package = student_package / "lecturelib"
    assert not [p for p in package.rglob("*") if set(p.relative_to(package).parts) & set(GRADER_ONLY)]
    data = package / "checks" / "visible"
    assert sorted(p.name for p in data.iterdir()) == sorted(f"{t}.pt" for t in hidden.topics())
    for topic in hidden.topics():  # byte for byte what the visible specs build: no hidden case inside
        assert (data / f"{topic}.pt").read_bytes() == hidden.visible_bytes(topic), topic
    proc = subprocess.run([sys.executable, "-c", "import lecturelib.checks, importlib.util as u; "
                           "print(lecturelib.checks.__file__, u.find_spec('lecturelib.hidden'))"],
                          cwd=student_package, capture_output=True, text=True, env={"PYTHONPATH": str(student_package)})
    assert proc.returncode == 0, proc.stderr
    path, spec = proc.stdout.split()
    assert Path(path).is_relative_to(student_package) and spec == "None"


@pytest.mark.slow
def test_no_function_of_the_student_package_passes_any_suite(student_package, tmp_path):
    """Every function, method and lambda the student package defines, plugged in as the answer of every exercise
    whose arguments its signature accepts, fails both suites. The reference solutions, planted as a control
    module, are found passing both: the probe can tell."""
    probed = tmp_path / "student_package"
    shutil.copytree(student_package, probed)
    shutil.copytree(PACKAGE / "reference", probed / "lecturelib" / "_control", ignore=shutil.ignore_patterns("__pycache__"))
    cases = tmp_path / "hidden.pt"
    cases.write_bytes(dump_cases({name: hidden.build(name, "hidden") for name in EXERCISES}))
    proc = subprocess.run([sys.executable, str(HERE / "student_package_probe.py"), str(probed), str(cases)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={"PYTHONPATH": "", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    passed = {(fn, name, suite) for fn, name, suite in report["passed"]}
    control = {t for t in passed if t[0].startswith("lecturelib._control.")}
    assert passed == control, sorted(passed - control)
    assert {(name, suite) for _, name, suite in control} == {(n, s) for n in EXERCISES for s in ("visible", "hidden")}
    assert report["functions"] > 300 and min(report["tried"].values()) >= 10, report["tried"]


# ------------------------------------------------------------------------------------------------
# No reference or oracle source in what students receive
# ------------------------------------------------------------------------------------------------
class _Canonical(ast.NodeTransformer):
    """Names of variables, arguments and functions replaced by their order of appearance; annotations and
    docstrings dropped: two functions that differ only in naming and comments compare equal."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(self._name(node.id), node.ctx), node)

    def visit_arg(self, node):
        return ast.arg(self._name(node.arg))

    def visit_FunctionDef(self, node):
        node.name = self._name(node.name)
        node.returns = None
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
        node.decorator_list = []
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef


def _canonical_functions(path: Path, min_statements: int = 3) -> dict[str, str]:
    """Canonical dump -> 'file:line name' of every function (nested ones too) with at least ``min_statements``."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            statements = sum(isinstance(n, ast.stmt) for n in ast.walk(node)) - 1
            if statements >= min_statements:
                copy = ast.parse(ast.unparse(node)).body[0]
                found[ast.dump(_Canonical().visit(copy))] = f"{path.name}:{node.lineno} {node.name}"
    return found


def test_no_module_of_the_student_package_contains_a_reference_or_an_oracle(student_package):
    answers = {}
    for folder in ("reference", "hidden"):
        for path in (PACKAGE / folder).glob("*.py"):
            answers.update(_canonical_functions(path))
    assert len(answers) > 50
    leaked = []
    for path in (student_package / "lecturelib").rglob("*.py"):
        for dump, where in _canonical_functions(path).items():
            if dump in answers:
                leaked.append(f"{path.name}: {where} = {answers[dump]}")
    assert not leaked, leaked


def test_canonical_form_sees_through_renaming():
    one = "def f(x, k):\n    '''doc'''\n    y = x * 2\n    z = y + k\n    return z\n"
    two = "def g(a, b):\n    c = a * 2\n    d = c + b\n    return d\n"
    other = "def g(a, b):\n    c = a * 3\n    d = c + b\n    return d\n"
    dumps = []
    for source in (one, two, other):
        tree = ast.parse(source).body[0]
        dumps.append(ast.dump(_Canonical().visit(tree)))
    assert dumps[0] == dumps[1] != dumps[2]
