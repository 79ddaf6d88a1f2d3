"""Feedback HTML that is safe to open and easy to read (``nbgrader generate_feedback``, ``make feedback``).

``nbgrader_config.py`` puts these into nbgrader's ``GenerateFeedback`` converter, so plain
``nbgrader generate_feedback`` uses them too:

* ``SanitizeOutputs`` (preprocessor): what a submission displayed is shown, never run. Plain text and PNG/JPEG
  images are kept; HTML, SVG, JavaScript, Markdown, LaTeX and other rich outputs become escaped text; a widget
  becomes a short note; a matplotlib ``<Figure size ...>`` placeholder without its image is dropped.
* ``MathToMathML`` (preprocessor): ``$...$`` and ``$$...$$`` in Markdown cells become MathML (``latex2mathml``), so
  formulas show without MathJax and without network.
* ``FeedbackExporter`` (the HTML exporter): the template ``templates/lecturelib_feedback`` (nbgrader's feedback page
  without MathJax from a CDN; test cells listed by exercise name; long output lines wrapped), and the HTML of every
  Markdown cell cleaned with an allow-list (a student's ``<script>`` in a Markdown cell shows as text).

Every cell of a submission is treated alike: the test cells' outputs come from the grader and hold plain text
only, which passes unchanged (with ``LECTURELIB_IN_KERNEL_GRADING=1`` they come from the student's kernel, and are
then as untrusted as the rest).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import bleach
from bleach.css_sanitizer import CSSSanitizer
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from nbformat import NotebookNode
from nbformat.v4 import new_output
from traitlets import Bool, Int, List, Unicode, default, validate

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "lecturelib_feedback"

WIDGET_NOTE = "interactive widget: run the notebook to use it"
SAFE_IMAGES = ("image/png", "image/jpeg")
WIDGET_PREFIX = "application/vnd.jupyter.widget"
# Rich outputs shown as escaped text, in the order a notebook front-end would prefer them.
RICH_TEXT = ("text/html", "image/svg+xml", "text/markdown", "text/latex", "application/javascript")
FIGURE_REPR = re.compile(r"<Figure size \d+(?:\.\d+)?x\d+(?:\.\d+)? with \d+ Axes>")
# The repr Python gives an object without one: IPython's HTML, SVG, ... carry nothing readable in text/plain.
DEFAULT_REPR = re.compile(r"<[\w.]+ object(?: at 0x[0-9a-fA-F]+)?>")
IMAGE_METADATA = {"width": int, "height": int, "unconfined": bool}


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):                       # nbformat allows multi-line strings as lists
        return "".join(str(v) for v in value)
    return json.dumps(value, indent=1, default=str)


def _image_metadata(output: NotebookNode) -> dict:
    """Only numeric sizes and the ``unconfined`` flag: the template writes them into an unquoted attribute."""
    clean = {}
    for mime, meta in (output.get("metadata") or {}).items():
        if mime in SAFE_IMAGES and isinstance(meta, dict):
            kept = {k: meta[k] for k, kind in IMAGE_METADATA.items()
                    if type(meta.get(k)) is kind or (kind is int and type(meta.get(k)) is float)}
            if kept:
                clean[mime] = kept
    return clean


class SanitizeOutputs(Preprocessor):
    """Outputs of code cells as text, PNG or JPEG only; widgets as a note; figure placeholders dropped."""

    enabled = Bool(True).tag(config=True)        # nbgrader registers its converters' preprocessors as they are

    max_chars = Int(3000, help="Escaped rich outputs (an SVG's source, ...) are cut to this many characters."
                    ).tag(config=True)
    widget_note = Unicode(WIDGET_NOTE, help="What stands in for an interactive widget.").tag(config=True)

    def preprocess(self, nb, resources):
        nb.metadata.pop("widgets", None)     # widget state: the page would load the widget manager from the web
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            cell.outputs = [clean for output in cell.get("outputs", []) for clean in self.clean(output)]
        return cell, resources

    def _as_text(self, output: NotebookNode, text: str) -> NotebookNode:
        if output.output_type == "execute_result":
            return new_output("execute_result", data={"text/plain": text},
                              execution_count=output.get("execution_count"))
        return new_output("display_data", data={"text/plain": text})

    def clean(self, output: NotebookNode) -> list[NotebookNode]:
        """The output as it may appear in the feedback: ``[]``, or one output of plain text or an image."""
        kind = output.get("output_type")
        if kind == "stream":
            return [new_output("stream", name="stderr" if output.get("name") == "stderr" else "stdout",
                               text=_text(output.get("text", "")))]
        if kind == "error":
            return [new_output("error", ename=_text(output.get("ename", "")), evalue=_text(output.get("evalue", "")),
                               traceback=[_text(line) for line in output.get("traceback", [])])]
        if kind not in ("display_data", "execute_result"):
            return []
        data = output.get("data") or {}
        if any(mime.startswith(WIDGET_PREFIX) for mime in data):
            return [self._as_text(output, self.widget_note)]
        images = {mime: _text(data[mime]) for mime in SAFE_IMAGES if mime in data}
        if images:
            kept = new_output(kind, data=images, metadata=_image_metadata(output))
            if kind == "execute_result":
                kept.execution_count = output.get("execution_count")
            return [kept]
        plain = _text(data.get("text/plain", "")).strip()
        if FIGURE_REPR.fullmatch(plain):
            return []                        # a figure drawn but not rasterised while grading: nothing to see
        rich = [mime for mime in RICH_TEXT if mime in data] + sorted(
            mime for mime in data if mime not in RICH_TEXT and mime != "text/plain")
        if plain and not (rich and DEFAULT_REPR.fullmatch(plain)):
            return [self._as_text(output, _text(data["text/plain"]))]
        if not rich:
            return []
        mime = rich[0]
        if mime in RICH_TEXT or mime.endswith(("+json", "+xml", "/json", "/xml")) or mime.startswith("text/"):
            source = _text(data[mime])
            if len(source) > self.max_chars:
                source = source[:self.max_chars] + f"\n... ({len(source) - self.max_chars} more characters)"
            return [self._as_text(output, f"[{mime} output, shown as text]\n{source}")]
        return [self._as_text(output, f"[{mime} output, not shown]")]


# ------------------------------------------------------------------------------------------------
# Formulas as MathML
# ------------------------------------------------------------------------------------------------
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# What the Markdown renderer (nbconvert's MarkdownWithMath) reads as math, and code spans, which hold no math.
INLINE = re.compile(r"(?P<ticks>`+)|(?<!\\)\$\$(?P<display>.+?)(?<!\\)\$\$|(?<![$\\])\$(?P<inline>.+?)(?<![$\\])\$",
                    re.S)
# Characters that Markdown would read inside the MathML's text (emphasis, links, tables, escapes).
MARKDOWN_ACTIVE = re.compile(r"[\\`*_\[\]|~$]")
# latex2mathml keeps TeX's escapes inside \text{...}: fan\_in.
TEX_ESCAPE = re.compile(r"\\([_%$#{}&])")


def latex_to_mathml(latex: str, display: bool = False) -> str:
    """One line of MathML for a formula; characters Markdown would act on are written as character references."""
    from latex2mathml.converter import convert

    mathml = convert(latex.strip(), display="block" if display else "inline")

    def text(match: re.Match) -> str:
        content = TEX_ESCAPE.sub(lambda e: "&amp;" if e.group(1) == "&" else e.group(1), match.group(1))
        return ">" + MARKDOWN_ACTIVE.sub(lambda c: f"&#{ord(c.group())};", content) + "<"

    return re.sub(r">([^<]+)<", text, mathml.replace("\n", " "))


def _fenced_blocks(source: str) -> list[tuple[bool, str]]:
    """``(is_code, text)`` pieces: fenced code blocks and what lies between them."""
    pieces, current, fence = [], [], None
    for line in source.splitlines(keepends=True):
        if fence is None:
            m = FENCE.match(line)
            if m and not (m.group(1)[0] == "`" and "`" in line[m.end():]):
                pieces.append((False, "".join(current)))
                current, fence = [line], m.group(1)
                continue
        else:
            current.append(line)
            if re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*\r?\n?", line):
                pieces.append((True, "".join(current)))
                current, fence = [], None
            continue
        current.append(line)
    pieces.append((fence is not None, "".join(current)))
    return [(code, text) for code, text in pieces if text]


class MathToMathML(Preprocessor):
    """``$...$`` and ``$$...$$`` in Markdown cells become MathML: formulas render offline, without MathJax."""

    enabled = Bool(True).tag(config=True)

    failures = List(Unicode(), help="Formulas that latex2mathml could not convert (kept as LaTeX).")

    def preprocess(self, nb, resources):
        try:
            import latex2mathml.converter  # noqa: F401
        except ImportError:
            self.log.error("latex2mathml is not installed (`make install`): formulas stay LaTeX in the feedback")
            return nb, resources
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and "$" in cell.source:
            cell.source = self.convert(cell.source)
        return cell, resources

    def convert(self, source: str) -> str:
        return "".join(text if code else self._convert_text(text) for code, text in _fenced_blocks(source))

    def _formula(self, match: re.Match) -> str:
        display = match.group("display") is not None
        latex = match.group("display") if display else match.group("inline")
        try:
            return latex_to_mathml(latex, display)
        except Exception as exc:  # noqa: BLE001 - latex2mathml raises many kinds; the LaTeX stays readable
            self.failures.append(latex)
            self.log.warning("formula not converted to MathML (%s: %s): %s", type(exc).__name__, exc, latex)
            return match.group()

    def _convert_text(self, text: str) -> str:
        out, pos = [], 0
        while (m := INLINE.search(text, pos)) is not None:
            out.append(text[pos:m.start()])
            if m.group("ticks"):                      # a code span runs to the next run of as many backticks
                n = len(m.group("ticks"))
                close = re.compile(rf"(?<!`)`{{{n}}}(?!`)").search(text, m.end())
                end = close.end() if close else m.end()
                out.append(text[m.start():end])
                pos = end
            else:
                out.append(self._formula(m))
                pos = m.end()
        out.append(text[pos:])
        return "".join(out)


# ------------------------------------------------------------------------------------------------
# Markdown cells: an allow-list of what Markdown and MathML produce
# ------------------------------------------------------------------------------------------------
MARKDOWN_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
                 "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span",
                 "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"}
MATHML_TAGS = {"math", "maction", "menclose", "merror", "mfenced", "mfrac", "mi", "mlabeledtr", "mmultiscripts", "mn",
               "mo", "mover", "mpadded", "mphantom", "mprescripts", "mroot", "mrow", "ms", "mspace", "msqrt",
               "mstyle", "msub", "msubsup", "msup", "mtable", "mtd", "mtext", "mtr", "munder", "munderover", "none",
               "semantics", "annotation"}
COMMON_ATTRIBUTES = {"class", "id", "title", "align", "colspan", "rowspan", "style"}
CSS = CSSSanitizer(allowed_css_properties=["text-align", "width", "height", "vertical-align"])


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if name.startswith("on") or name in ("href", "src", "xlink:href", "formaction", "action"):
        if tag == "a" and name == "href":
            return bool(re.match(r"(https?:|mailto:|#|[^:/?#]*(?:[/?#]|$))", value.strip(), re.I))
        if tag == "img" and name == "src":
            return bool(re.match(r"(https?:|data:image/(png|jpeg|gif);|[^:/?#]*(?:[/?#]|$))", value.strip(), re.I))
        return False
    if tag in MATHML_TAGS:
        return True                          # display, mathvariant, stretchy, columnalign, xmlns, ...
    if tag == "img" and name in ("alt", "width", "height"):
        return True
    return name in COMMON_ATTRIBUTES


def clean_markdown_html(html: str) -> str:
    """Markdown's and MathML's tags pass; anything else (``<script>``, ``<iframe>``, event handlers) becomes text."""
    return bleach.clean(html, tags=MARKDOWN_TAGS | MATHML_TAGS, attributes=_allowed_attribute,
                        protocols=["http", "https", "mailto", "data"], css_sanitizer=CSS, strip=False,
                        strip_comments=True)


def exercise_name(grade_id: str) -> str:
    """``test_conv_transpose2d`` -> ``conv_transpose2d`` (the name students see in the notebook)."""
    grade_id = str(grade_id or "")
    return grade_id[len("test_"):] if grade_id.startswith("test_") and len(grade_id) > 5 else grade_id


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback page from the course's template: no MathJax or other script from the network, test cells
    named by exercise, long lines wrapped, Markdown cells cleaned. nbgrader sets ``HTMLExporter.template_name`` to
    ``feedback`` (its own template, which loads MathJax from a CDN); this exporter uses its extension instead."""

    sanitize_html = Bool(True, help="Rich outputs left by a submission are cleaned (SanitizeOutputs turns them "
                         "into text before; this is the second line).").tag(config=True)

    @default("template_name")
    def _template_name_default(self):
        return TEMPLATE_NAME

    @validate("template_name")
    def _template_name_validate(self, proposal):     # the name of nbconvert's validator: one per trait
        value = super()._template_name_validate(proposal)
        return TEMPLATE_NAME if value in ("", "feedback") else value

    @default("extra_template_paths")
    def _bootstrap_css(self):                 # what nbgrader's GenerateFeedback sets (the page's include_css)
        import nbgrader
        return [str(Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "static" / "node_modules"
                    / "bootstrap" / "dist" / "css")]

    @default("extra_template_basedirs")
    def _basedirs_default(self):
        return [str(TEMPLATES)]

    @validate("extra_template_basedirs")
    def _with_course_templates(self, proposal):
        dirs = list(proposal.value)
        return dirs if str(TEMPLATES) in dirs else [str(TEMPLATES), *dirs]

    # Nothing is loaded from the web: the template writes none of these, and they stay empty in case one does.
    @default("mathjax_url")
    def _no_mathjax(self):
        return ""

    @default("require_js_url")
    def _no_require(self):
        return ""

    @default("jquery_url")
    def _no_jquery(self):
        return ""

    def default_filters(self):
        yield from super().default_filters()
        yield ("clean_markdown_html", clean_markdown_html)
        yield ("exercise_name", exercise_name)
