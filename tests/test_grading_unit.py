"""Parts of the isolated grader that need no nbgrader run: wire format, test-cell parsing, sandbox."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from lecturelib.checks.core import Raised, build_cases, verify_case
from lecturelib.grading import protocol
from lecturelib.grading.execute import parse_checks, visible_source
from lecturelib.grading.sandbox import PACKAGE, REPO, bubblewrap, bwrap_args


def test_outcomes_round_trip_as_plain_data(tmp_path):
    outcomes = [[torch.arange(6.0).reshape(2, 3), (np.array([1, 2]), 3.5, float("nan"))],
                [Raised("ValueError", "bad", "cell 3")], [{"a": None, "b": [True, "x"]}]]
    protocol.save_outcomes(outcomes, [[], ["F.conv_transpose2d"], []], tmp_path / "out")
    back, forbidden = protocol.load_outcomes(tmp_path / "out")
    assert type(back[0][0]) is torch.Tensor and torch.equal(back[0][0], outcomes[0][0])
    assert type(back[0][1]) is tuple and np.array_equal(back[0][1][0], [1, 2]) and back[0][1][1] == 3.5
    assert np.isnan(back[0][1][2])
    assert back[1][0] == Raised("ValueError", "bad", "cell 3")
    assert back[2][0] == {"a": None, "b": [True, "x"]}
    assert forbidden == [[], ["F.conv_transpose2d"], []]


def test_outcomes_refuse_pickled_objects(tmp_path):
    (tmp_path / "out.json").write_text('{"cases": [[{"array": "a0"}]], "forbidden": [[]]}')
    np.savez(tmp_path / "out.npz", a0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError):
        protocol.load_outcomes(tmp_path / "out")


def test_malformed_outcome_is_refused(tmp_path):
    (tmp_path / "out.json").write_text('{"cases": [[{"code": "import os"}]], "forbidden": [[]]}')
    np.savez(tmp_path / "out.npz")
    with pytest.raises(ValueError, match="unknown outcome kind"):
        protocol.load_outcomes(tmp_path / "out")


def test_verdict_from_decoded_outcomes(tmp_path):
    """The same verify() runs on outcomes that crossed the boundary."""
    import torch.nn.functional as F
    _, cases = build_cases("conv_transpose2d", "visible")
    outcomes = [[F.conv_transpose2d(*call.args, **call.kwargs) for call in case.calls] for case in cases]
    protocol.save_outcomes(outcomes, [[] for _ in cases], tmp_path / "o")
    back, forbidden = protocol.load_outcomes(tmp_path / "o")
    assert all(verify_case(c, o, f).passed for c, o, f in zip(cases, back, forbidden))
    assert not verify_case(cases[0], back[0], ["F.conv_transpose2d"]).passed


def test_parse_checks_reads_only_check_calls():
    source = ('check("conv_transpose2d", conv_transpose2d)\n### BEGIN HIDDEN TESTS\n'
              'check("conv_transpose2d", conv_transpose2d, suite="hidden")\n### END HIDDEN TESTS')
    calls = parse_checks(source)
    assert [(c.exercise, c.suite, c.expression) for c in calls] == [
        ("conv_transpose2d", "visible", "conv_transpose2d"), ("conv_transpose2d", "hidden", "conv_transpose2d")]
    assert parse_checks("assert f(1) == 2") is None
    assert parse_checks('check("a", f)\nprint(1)') is None
    assert visible_source(source) == 'check("conv_transpose2d", conv_transpose2d)'


def test_sandbox_hides_grader_files_and_network(tmp_path):
    if bubblewrap() is None:
        pytest.skip("bubblewrap not available")
    work = tmp_path / "work"
    (work / "submission").mkdir(parents=True)
    course = tmp_path / "course"
    course.mkdir()
    (course / "gradebook.db").write_text("secret")
    probe = """
import os, socket, pathlib, sys
repo, package, course = map(pathlib.Path, sys.argv[1:4])
print("reference", (package / "reference").exists() and any((package / "reference").iterdir()))
print("hidden", (package / "hidden").exists() and any((package / "hidden").iterdir()))
print("notebooks", (repo / "notebooks").exists())
print("tests", (repo / "tests").exists() or (repo / ".git").exists())
print("course", (course / "gradebook.db").exists())
print("checks", (package / "checks" / "core.py").exists())
try:
    open(package / "x", "w")
    print("write-package True")
except OSError:
    print("write-package False")
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
    print("net True")
except OSError:
    print("net False")
print("pid", os.getpid())
"""
    cmd = bwrap_args(work, [course]) + [sys.executable, "-c", probe, str(REPO), str(PACKAGE), str(course)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.split("\n")
    facts = dict(line.split(" ", 1) for line in out if line)
    assert facts == {"reference": "False", "hidden": "False", "notebooks": "False", "tests": "False",
                     "course": "False", "checks": "True", "write-package": "False", "net": "False", "pid": "2"}


@pytest.mark.parametrize("figures, kinds", [(False, ["text/plain"]), (True, ["image/png", "text/plain"])])
def test_figures_are_not_rasterised_while_grading_unless_asked(tmp_path, figures, kinds):
    import logging

    import nbformat

    from lecturelib.grading.execute import grade_notebook
    from lecturelib.grading.sandbox import Limits

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]);")])
    (tmp_path / "sub").mkdir()
    graded, report = grade_notebook(nb, tmp_path / "sub", [tmp_path], logging.getLogger("test"),
                                    Limits(figures=figures, cell_timeout=60))
    assert report["status"] == ["graded"]
    assert [sorted(o.get("data", {})) for o in graded.cells[0].outputs] == [kinds]
