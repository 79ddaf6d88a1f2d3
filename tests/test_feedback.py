"""Feedback HTML (lecturelib/grading/feedback.py): what a submission displayed is shown, never run; widgets and
figure placeholders become notes or nothing; formulas are MathML with nothing loaded from the web; test cells are
named by exercise; long lines wrap. Unit tests on hand-made notebooks, then nbgrader end to end (slow)."""
from __future__ import annotations

import re
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lecturelib.grading.feedback import (WIDGET_NOTE, FeedbackExporter, MathToMathML, SanitizeOutputs,
                                         clean_markdown_html, exercise_name, latex_to_mathml)
from notebook_tools import REPO

SCRIPT = "<script>alert(1)</script>"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><circle r="3" onload="alert(2)"/></svg>'
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WIDGET = {"model_id": "0123abcd", "version_major": 2, "version_minor": 0}


def _display(data: dict, **kw):
    return new_output("display_data", data=data, **kw)


def _cleaned(*outputs):
    cell = new_code_cell("x = 1", outputs=list(outputs))
    nb = new_notebook(cells=[cell], metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {}}})
    nb, _ = SanitizeOutputs().preprocess(nb, {})
    assert "widgets" not in nb.metadata
    return nb.cells[0].outputs


# ------------------------------------------------------------------------------------------------
# SanitizeOutputs
# ------------------------------------------------------------------------------------------------
def test_rich_outputs_become_escaped_text():
    outputs = _cleaned(
        _display({"text/html": SCRIPT, "text/plain": "<IPython.core.display.HTML object>"}),
        _display({"image/svg+xml": SVG, "text/plain": "<IPython.core.display.SVG object>"}),
        _display({"application/javascript": "alert(3)", "text/plain": "<IPython.core.display.Javascript object>"}),
        _display({"text/markdown": "<img src=x onerror=alert(4)>", "text/plain": "<IPython.core.display.Markdown "
                                                                                 "object>"}),
        _display({"text/latex": r"$\alpha$"}),
        _display({"application/pdf": "JVBERi0x"}),
    )
    assert [list(o.data) for o in outputs] == [["text/plain"]] * 6
    texts = [o.data["text/plain"] for o in outputs]
    assert texts[0] == f"[text/html output, shown as text]\n{SCRIPT}"
    assert texts[1].startswith("[image/svg+xml output, shown as text]\n<svg") and "onload" in texts[1]
    assert texts[2].endswith("alert(3)") and texts[3].endswith("onerror=alert(4)>")
    assert texts[4].endswith(r"$\alpha$")
    assert texts[5] == "[application/pdf output, not shown]"


def test_a_readable_text_repr_wins_over_the_markup():
    table = _display({"text/html": "<table><tr><td>1</td></tr></table>", "text/plain": "   a\n0  1"})
    (out,) = _cleaned(table)
    assert dict(out.data) == {"text/plain": "   a\n0  1"}


def test_long_markup_is_cut():
    (out,) = _cleaned(_display({"text/html": "<p>" + "x" * 10_000 + "</p>", "text/plain": "<HTML object>"}))
    assert len(out.data["text/plain"]) < 3200 and "more characters)" in out.data["text/plain"]


def test_plain_text_images_streams_and_errors_stay():
    stream = new_output("stream", name="stdout", text="PASSED conv_transpose2d (visible)\n")
    error = new_output("error", ename="CheckFailed", evalue="FAILED", traceback=["CheckFailed: FAILED"])
    result = new_output("execute_result", data={"text/plain": "42"}, execution_count=3)
    image = _display({"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>", "text/html": SCRIPT},
                     metadata={"image/png": {"width": "1 onerror=alert(1)", "height": 30, "alt": "x"}})
    out = _cleaned(stream, error, result, image)
    assert [o.output_type for o in out] == ["stream", "error", "execute_result", "display_data"]
    assert out[0].text == stream.text and out[1].traceback == error.traceback
    assert out[2].data == {"text/plain": "42"} and out[2].execution_count == 3
    assert dict(out[3].data) == {"image/png": PNG}
    assert out[3].metadata == {"image/png": {"height": 30}}   # the template writes width unquoted: numbers only


def test_widgets_become_a_note_and_figure_placeholders_go():
    slider = _display({"application/vnd.jupyter.widget-view+json": WIDGET, "text/plain": "IntSlider(value=0)"})
    box = new_output("execute_result", execution_count=5,
                     data={"application/vnd.jupyter.widget-view+json": WIDGET, "text/plain": "VBox(children=...)"})
    figure = _display({"text/plain": "<Figure size 1300x330 with 4 Axes>"})
    out = _cleaned(slider, figure, box)
    assert [o.data["text/plain"] for o in out] == [WIDGET_NOTE, WIDGET_NOTE]
    assert out[1].output_type == "execute_result"


# ------------------------------------------------------------------------------------------------
# MathToMathML
# ------------------------------------------------------------------------------------------------
def _math(source: str) -> str:
    nb = new_notebook(cells=[new_markdown_cell(source), new_code_cell("x = '$a$'")])
    nb, _ = MathToMathML().preprocess(nb, {})
    assert nb.cells[1].source == "x = '$a$'"
    return nb.cells[0].source


def test_formulas_become_mathml():
    out = _math("Inline $a_i^2 < b$ and\n\n$$\n\\frac{1}{\\text{fan\\_in}}\n$$\n")
    assert "$" not in out
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in out
    assert 'display="block"' in out and "<mfrac>" in out
    assert "fan&#95;in" in out                                # no "\_", and no "_" for Markdown's emphasis
    block = next(line for line in out.splitlines() if 'display="block"' in line)
    assert block.startswith("<math") and block.endswith("</math>")     # one line: Markdown keeps it whole


def test_code_and_escaped_dollars_are_not_math():
    source = "Costs \\$5 and \\$6; `a $b$ c` stays code.\n\n```python\nx = '$y$'\n```\n\n~~~\n$z$\n~~~\n"
    assert _math(source) == source


def test_a_formula_latex2mathml_cannot_read_stays_latex():
    pre = MathToMathML()
    out = pre.convert(r"bad $a^$ and good $x$")
    assert out.startswith(r"bad $a^$ and good <math") and pre.failures == ["a^"]


def test_mathml_from_latex_is_one_line():
    assert "\n" not in latex_to_mathml(r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", display=True)


# ------------------------------------------------------------------------------------------------
# The exporter and its template
# ------------------------------------------------------------------------------------------------
def test_markdown_html_is_cleaned_but_mathml_stays():
    math = latex_to_mathml("x^2")
    html = clean_markdown_html(f'<p>{SCRIPT} <a href="javascript:alert(1)">l</a> <a href="https://a.b">ok</a> '
                               f'<img src="x" onerror="alert(2)"> {math}</p><iframe src="https://e.vil"></iframe>')
    assert "<script" not in html and "&lt;script&gt;alert(1)" in html
    assert "javascript:" not in html and "onerror" not in html and "<iframe" not in html
    assert '<a href="https://a.b">ok</a>' in html and "<msup><mi>x</mi><mn>2</mn></msup>" in html


def test_exercise_names():
    assert exercise_name("test_conv_transpose2d") == "conv_transpose2d"
    assert exercise_name("intro") == "intro" and exercise_name(None) == ""


def test_nbgraders_template_name_is_replaced_by_ours():
    from traitlets.config import Config
    config = Config()
    config.HTMLExporter.template_name = "feedback"                  # what nbgrader sets, also in the formgrader
    exporter = FeedbackExporter(config=config)
    assert exporter.template_name == "lecturelib_feedback"
    assert exporter.mathjax_url == ""


def _graded_notebook():
    def meta(**kw):
        return {"nbgrader": {"schema_version": 3, "locked": False, "solution": False, "grade": False, **kw}}
    cells = [
        new_markdown_cell("# Transposed convolution\n\nThe output size is $(H - 1)s - 2p + k$.\n\n$$y = W^T x$$\n\n"
                          f"Student's note: {SCRIPT}", metadata={}),
        new_code_cell("def conv_transpose2d(x, w): ...", metadata=meta(solution=True, grade_id="conv_transpose2d"),
                      outputs=[_display({"text/html": SCRIPT, "text/plain": "<IPython.core.display.HTML object>"}),
                               _display({"application/vnd.jupyter.widget-view+json": WIDGET,
                                         "text/plain": "IntSlider(value=0)"}),
                               _display({"text/plain": "<Figure size 640x480 with 1 Axes>"})]),
        new_code_cell('check("conv_transpose2d", conv_transpose2d)',
                      metadata=meta(grade=True, locked=True, grade_id="test_conv_transpose2d", points=4, score=1),
                      outputs=[new_output("stream", name="stdout", text="FAILED conv_transpose2d " + "x " * 300)]),
        new_code_cell("# a grade id a student wrote", metadata=meta(grade=True, grade_id='"><script>x</script>',
                                                                    points=0, score=0)),
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def test_feedback_page_of_a_hand_made_notebook():
    exporter = FeedbackExporter()
    for pre in (SanitizeOutputs, MathToMathML):
        exporter.register_preprocessor(pre)
    resources = {"nbgrader": {"notebook": "segmentation", "score": 1.0, "max_score": 4.0, "late_penalty": 0}}
    html, _ = exporter.from_notebook_node(_graded_notebook(), resources=resources)
    assert "<script" not in html                                     # no script at all: none from the web either
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2   # the output and the Markdown cell, as text
    assert "mathjax" not in html.lower() and "cdn" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert html.count("<math") == 2 and "<msup><mi>W</mi><mi>T</mi></msup>" in html
    assert WIDGET_NOTE in html and "IntSlider" not in html and "model_id" not in html
    assert "<Figure size" not in html and "&lt;Figure size" not in html
    assert '<a href="#test_conv_transpose2d">conv_transpose2d</a> (Score: 1.0 / 4.0)' in html
    assert "Test cell" not in html
    assert "white-space: pre-wrap" in html


# ------------------------------------------------------------------------------------------------
# nbgrader end to end
# ------------------------------------------------------------------------------------------------
ASSIGNMENT, NOTEBOOK, STUDENT = "01_transformers", "transformers", "feedback_probe"
SHOWS = '''
import IPython.display as ipd
import ipywidgets
import matplotlib.pyplot as plt
ipd.display(ipd.HTML("<script>alert(1)</script>"))
ipd.display(ipd.SVG('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><circle r="3"/></svg>'))
ipd.display(ipywidgets.IntSlider())
plt.figure()
plt.plot([1, 2])
plt.show()
print("a long line " * 60)
'''


@pytest.fixture(scope="module")
def feedback_html(course):
    from notebook_tools import solved_release, submit_and_autograde

    from lecturelib import course as tool
    nb = solved_release(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
                        REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    first = next(c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
    first.source += "\n" + SHOWS
    submit_and_autograde(course, ASSIGNMENT, {STUDENT: nb}, NOTEBOOK)
    autograded = nbformat.read(course / "autograded" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    shown = [o for o in next(c for c in autograded.cells
                             if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")).outputs
             if o.output_type == "display_data"]
    assert {m for o in shown for m in o.data} >= {"text/html", "image/svg+xml",
                                                  "application/vnd.jupyter.widget-view+json"}    # what it escapes
    written = tool.feedback(ASSIGNMENT)
    path = course / "feedback" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.html"
    assert path in written
    return path.read_text()


@pytest.mark.slow
def test_feedback_escapes_what_the_submission_displayed(feedback_html):
    assert "<script" not in feedback_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in feedback_html
    assert "[image/svg+xml output, shown as text]" in feedback_html and "<svg" not in feedback_html


@pytest.mark.slow
def test_feedback_has_no_widget_reprs_or_figure_placeholders(feedback_html):
    assert WIDGET_NOTE in feedback_html
    assert "IntSlider(" not in feedback_html and "model_id" not in feedback_html
    assert "Figure size" not in feedback_html


@pytest.mark.slow
def test_feedback_names_exercises_renders_formulas_offline_and_wraps(feedback_html):
    source = nbformat.read(REPO / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    tests = [c.metadata.nbgrader.grade_id for c in source.cells
             if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.get("solution")]
    toc = feedback_html.split('<div id="toc">', 1)[1].split("</div>", 1)[0]
    assert re.findall(r'<a href="#test_(\w+)">(\w+)</a>', toc) == [(t[5:], t[5:]) for t in tests]
    assert "Test cell" not in feedback_html
    assert feedback_html.count("<math") > 20 and "$$" not in feedback_html
    assert "mathjax" not in feedback_html.lower() and "cdn" not in feedback_html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", feedback_html)
    assert "white-space: pre-wrap" in feedback_html


@pytest.mark.slow
def test_nbgrader_commands_print_no_config_alias_warning(feedback_html):
    from lecturelib import course as tool
    proc = tool.nbgrader("generate_feedback", ASSIGNMENT, f"--student={STUDENT}", "--force")
    assert "Unrecognized alias" not in proc.stdout + proc.stderr
    assert "Converting notebook" in proc.stderr                      # the course's config was read (course root)
    listed = tool.nbgrader("db", "student", "list")
    assert "Unrecognized alias" not in listed.stdout + listed.stderr and STUDENT in listed.stdout + listed.stderr


@pytest.mark.slow
def test_plain_nbgrader_generate_feedback_uses_the_same_pipeline(feedback_html, course):
    """A TA's own `nbgrader generate_feedback` from the repository gives the same page."""
    import os
    import subprocess
    env = {**os.environ, "LECTURELIB_COURSE_ROOT": str(course)}
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback", ASSIGNMENT,
                           f"--student={STUDENT}", "--force"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (course / "feedback" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.html").read_text()
    assert "<script" not in html and WIDGET_NOTE in html and "<math" in html
