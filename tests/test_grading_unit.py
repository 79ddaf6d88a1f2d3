"""Parts of the isolated grader that need no nbgrader run: wire format, test-cell parsing, sandbox."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lecturelib.checks import runner
from lecturelib.checks.core import Raised, build_cases, verify_case
from lecturelib.grading import protocol
from lecturelib.grading.execute import parse_checks, visible_source
from lecturelib.grading.paths import PACKAGE, REPO
from lecturelib.grading.sandbox import Work, bubblewrap, bwrap_args


def _reply(records, arrays=None) -> str:
    """A reply as the kernel sends it: the repr of the runner's JSON string."""
    import base64
    import io
    import json
    buffer = io.BytesIO()
    np.savez(buffer, **(arrays or {}))
    return repr(json.dumps({"cases": records, "arrays": base64.b64encode(buffer.getvalue()).decode()}))


def test_outcomes_round_trip_as_plain_data():
    outcomes = [[torch.arange(6.0).reshape(2, 3), (np.array([1, 2]), 3.5, float("nan"))],
                [Raised("ValueError", "bad", "cell 3")], [{"a": None, "b": [True, "x"]}]]
    text = runner.encode_outcomes([{"nonce": n, "outcomes": o, "forbidden": f} for n, o, f in
                                   zip("abc", outcomes, [[], ["F.conv_transpose2d"], []])])
    back, forbidden, problems = protocol.read_reply(repr(text), list("abc"), [2, 1, 1])
    assert problems == []
    assert type(back[0][0]) is torch.Tensor and torch.equal(back[0][0], outcomes[0][0])
    assert type(back[0][1]) is tuple and np.array_equal(back[0][1][0], [1, 2]) and back[0][1][1] == 3.5
    assert np.isnan(back[0][1][2])
    assert back[1][0] == Raised("ValueError", "bad", "cell 3")
    assert back[2][0] == {"a": None, "b": [True, "x"]}
    assert forbidden == [[], ["F.conv_transpose2d"], []]


def test_every_case_is_answered_exactly_once_by_its_nonce():
    """Missing, duplicated, malformed or extra outcomes fail the case they concern; order does not matter."""
    ok = {"outcomes": [{"value": 1}], "forbidden": []}
    records = [{"nonce": "b", **ok}, {"nonce": "a", **ok}, {"nonce": "c", **ok}, {"nonce": "c", **ok},
               {"nonce": "d", "outcomes": [{"code": "import os"}], "forbidden": []}, {"nonce": "zz", **ok}]
    back, _, problems = protocol.read_reply(_reply(records), ["a", "b", "c", "d", "e"], [1, 1, 1, 1, 1])
    assert back == [[1], [1], None, None, None]
    assert problems == ["1 outcome(s) answer no case"]
    back, _, _ = protocol.read_reply(_reply([{"nonce": "a", "outcomes": [{"value": 1}] * 2, "forbidden": []}]),
                                     ["a"], [1])
    assert back == [None]  # two outcomes for a case of one call


def test_outcomes_refuse_pickled_objects():
    reply = _reply([{"nonce": "a", "outcomes": [{"array": "a0"}], "forbidden": []}],
                   {"a0": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(ValueError, match="Python objects|allow_pickle"):
        protocol.read_reply(reply, ["a"], [1])


def test_a_small_reply_cannot_expand_to_gigabytes(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_ARRAY_BYTES", 1000)
    reply = _reply([{"nonce": "a", "outcomes": [{"array": "a0"}], "forbidden": []}], {"a0": np.zeros(10_000)})
    with pytest.raises(ValueError, match="too large"):
        protocol.read_reply(reply, ["a"], [1])


def test_verdict_from_decoded_outcomes():
    """The grader's own runner, run on the cases' inputs, gives outcomes that the same verifiers accept; the
    forbidden op is reported through the same channel."""
    import torch.nn.functional as F

    from lecturelib import reference as ref
    from lecturelib.checks import EXERCISES
    _, cases = build_cases("conv_transpose2d", "hidden")
    payload, nonces = protocol.request(cases, EXERCISES["conv_transpose2d"].forbidden)
    expression = protocol.collector_expression("fn", payload, "n0")
    library = lambda x, w, bias=None, stride=1, padding=0: F.conv_transpose2d(x, w, bias, stride=stride,  # noqa
                                                                               padding=padding)
    for fn, passes in ((ref.conv_transpose2d, True), (library, False)):
        back, forbidden, _ = protocol.read_reply(repr(eval(expression, {"fn": fn})), nonces,
                                                 [len(c.calls) for c in cases])
        assert all(verify_case(c, o, f).passed == passes for c, o, f in zip(cases, back, forbidden))
    assert "transposed convolution" in forbidden[0][0]


def test_submission_copy_refuses_links_fifos_and_devices(tmp_path):
    import os

    from lecturelib.grading.sandbox import copy_submission
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    dst.mkdir()
    (src / "a.ipynb").write_text("{}")
    (tmp_path / "secret").write_text("solutions")
    (src / "link.ipynb").symlink_to(tmp_path / "secret")
    (src / "sub" / "dirlink").symlink_to(tmp_path)
    os.mkfifo(src / "fifo")
    refused = copy_submission(src, dst)
    assert sorted(refused) == ["fifo (not a regular file: FIFO, socket or device)", "link.ipynb (a symbolic link)",
                               "sub/dirlink (a symbolic link)"]
    assert sorted(p.name for p in dst.rglob("*")) == ["a.ipynb", "sub"]


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
    work = Work()                       # byte-compiles the package, course.py included
    assert any((PACKAGE / "__pycache__").glob("course.*.pyc"))
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
print("course-bytecode", any(p.stat().st_size for p in (package / "__pycache__").glob("course.*.pyc")))
print("grading", (package / "grading").exists() and any((package / "grading").iterdir()))
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
    try:
        cmd = bwrap_args(work, [course]) + [sys.executable, "-c", probe, str(REPO), str(PACKAGE), str(course)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.split("\n")
    finally:
        work.remove()
    facts = dict(line.split(" ", 1) for line in out if line)
    assert facts == {"reference": "False", "hidden": "False", "notebooks": "False", "tests": "False",
                     "course": "False", "checks": "True", "course-bytecode": "False", "grading": "False",
                     "write-package": "False", "net": "False", "pid": "2"}


@pytest.mark.parametrize("figures, shown, interactive", [(False, [], "False"),
                                                         (True, [["image/png", "text/plain"]], "True")])
def test_figures_are_neither_drawn_nor_shown_while_grading_unless_asked(tmp_path, figures, shown, interactive):
    """Unless ``keep_figures``, a grading kernel's pyplot is not interactive: no figure is drawn after each pyplot
    call (0.07 s for an imshow with a colorbar) or shown at the end of its cell."""
    import logging

    import nbformat

    from lecturelib.grading.execute import grade_notebook
    from lecturelib.grading.sandbox import Limits

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]);"),
        nbformat.v4.new_code_cell("import gc, matplotlib\nprint(matplotlib.is_interactive())\n"
                                  "print(gc.get_freeze_count() > 1000, get_ipython().history_manager.enabled)")])
    (tmp_path / "sub").mkdir()
    graded, report = grade_notebook(nb, tmp_path / "sub", [tmp_path], logging.getLogger("test"),
                                    Limits(figures=figures, cell_timeout=60))
    assert report["status"] == ["graded"]
    assert [sorted(o.get("data", {})) for o in graded.cells[0].outputs] == shown
    # and whatever survived the first cell is out of the cyclic collector's way; no input history is kept
    assert graded.cells[1].outputs[0]["text"].split() == [interactive, "True", "False"]


def test_kernels_start_with_the_font_list_built_once(tmp_path):
    """Each kernel's MPLCONFIGDIR holds a copy of the font list built once per machine; matplotlib loads it instead
    of scanning the fonts again (the file is left as it was), where an empty folder makes it build one."""
    from lecturelib.grading.sandbox import PYTHON, Work, font_cache

    cache = font_cache()
    assert cache is not None and cache.name.startswith("fontlist-v") and cache.stat().st_size > 1000
    work = Work()
    try:
        copied = work.root / "box" / "home" / "mpl" / cache.name
        assert copied.read_bytes() == cache.read_bytes()
        before = copied.stat().st_mtime_ns
        for mpl in (copied.parent, tmp_path / "empty"):
            env = {**os.environ, "HOME": str(tmp_path), "MPLCONFIGDIR": str(mpl)}
            subprocess.run([PYTHON, "-c", "import matplotlib.font_manager"], env=env, check=True, timeout=120)
        assert copied.stat().st_mtime_ns == before                      # loaded, not built again
        assert (tmp_path / "empty" / cache.name).is_file()              # without it, matplotlib builds one
    finally:
        work.remove()


def test_a_venv_reached_through_a_symlink_runs_in_the_sandbox(tmp_path):
    """bubblewrap binds real paths only: the kernel must start from the venv's real path."""
    from pathlib import Path
    link = tmp_path / "venv-link"
    link.symlink_to(Path(sys.prefix).resolve())
    code = """
import logging, nbformat, pathlib, tempfile
from lecturelib.grading.execute import grade_notebook
from lecturelib.grading.sandbox import Limits
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(6 * 7, sys.prefix)")])
sub = pathlib.Path(tempfile.mkdtemp())
graded, report = grade_notebook(nb, sub, [sub], logging.getLogger("t"), Limits(cell_timeout=60))
print(report["status"], graded.cells[0].outputs[0]["text"])
"""
    proc = subprocess.run([str(link / "bin" / Path(sys.executable).name), "-c", code], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "['graded'] 42" in proc.stdout, proc.stdout


@pytest.mark.parametrize("source, what", [
    ("import threading\nthreading.Thread(target=print).start()", "imports threading"),
    ("from torch.utils._python_dispatch import _disable_current_modes", "imports torch.utils._python_dispatch"),
    ("import torch\ntorch.nn.functional.conv2d = None", "assigns to torch.nn.functional.conv2d"),
    ("import numpy as np\nnp.savez = print", "assigns to np.savez"),
    ("exec('x = 1')", "uses exec"),
    ("get_ipython().input_transformers_post.append(None)", "uses get_ipython"),
    ("import os\nos._exit(1)", "private attribute ._exit of os"),
    ("import sys\nsys.setprofile(None)", "imports sys"),
    ("f = lambda: 0\nf.__code__ = None", "uses .__code__"),
    ("!pip install torch", "uses get_ipython"),
])
def test_scan_names_the_escape_hatches(source, what):
    from lecturelib.grading.scan import scan
    assert any(what in str(f) for f in scan([(3, source)])), [str(f) for f in scan([(3, source)])]


def test_scan_reads_plain_python_as_written_and_magics_through_ipython():
    """A cell that parses as Python is read as it is (IPython's transforms would leave it alone; the findings keep
    the cell's line numbers); a cell with IPython syntax is read after IPython's transforms."""
    from lecturelib.grading.scan import scan
    assert [(f.cell, f.line) for f in scan([(4, "%matplotlib inline\nx = 1\nimport threading")])] == [(4, 3)]
    found = scan([(4, "x = 1\n!echo hi\nimport threading")])
    assert any("uses get_ipython" in str(f) for f in found) and any("imports threading" in str(f) for f in found)


def test_scan_leaves_honest_code_alone():
    from lecturelib.grading.scan import scan
    honest = '''%matplotlib inline
import math
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import HTML, display
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    out = torch.zeros(3)
    out[0] += x.sum() * math.pi
    helper = {"a": 1}
    helper["b"] = np.zeros(2)
    display(HTML("<b>done</b>"))
    return F.relu(out)
%timeit conv_transpose2d(torch.ones(2), None)
'''
    assert scan([(0, honest)]) == []


def test_nbgrader_cli_is_nbgrader_without_the_slow_import():
    """lecturelib.grading.nbgrader_cli runs nbgrader's own main, with rfc3987_syntax (38 lark grammars built at
    import, for a format nbgrader never checks) hidden from jsonschema."""
    import subprocess
    import sys
    probe = ("import runpy, sys\n"
             "sys.argv = ['nbgrader', '--version']\n"
             "try:\n    runpy.run_module('lecturelib.grading.nbgrader_cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('jsonschema' in sys.modules, sys.modules.get('rfc3987_syntax', 'absent'))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    import nbgrader
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert nbgrader.__version__ in proc.stdout                 # nbgrader's own --version answered
    assert lines[-2:] == ["True", "None"]                      # jsonschema loaded, the slow module hidden
