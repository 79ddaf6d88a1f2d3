"""nbgrader configuration of the course (nbgrader 0.9.6). The source notebooks live in notebooks/.

Every setting here answers a trap seen with nbgrader 0.9.6 (see README, "For TAs").
Environment overrides: LECTURELIB_COURSE_ROOT (where release/, submitted/, autograded/, feedback/
and the gradebook live; default: this folder), LECTURELIB_DB_URL (e.g. a PostgreSQL URL),
LECTURELIB_CELL_TIMEOUT (seconds per cell when autograding; default 120), LECTURELIB_EXCHANGE (nbgrader's
exchange folder; default: <course root>/exchange).
"""
import os
from pathlib import Path

c = get_config()  # noqa: F821 - provided by nbgrader

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("LECTURELIB_COURSE_ROOT", HERE)).resolve()

c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.course_id = "lecturelib"
# The source notebooks stay in the repository even when the course root is elsewhere
# (LECTURELIB_SOURCE_ROOT points elsewhere, e.g. for the grading benchmark).
SOURCE = Path(os.environ.get("LECTURELIB_SOURCE_ROOT", HERE / "notebooks")).resolve()
c.CourseDirectory.source_directory = os.path.relpath(SOURCE, ROOT)
# sqlite waits up to 60 s for a lock, so parallel autograde workers queue instead of failing.
c.CourseDirectory.db_url = os.environ.get("LECTURELIB_DB_URL", f"sqlite:///{ROOT / 'gradebook.db'}?timeout=60")
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]
# A writable exchange inside the course avoids nbgrader's "Unwritable directory" error; on JupyterHub,
# LECTURELIB_EXCHANGE names the exchange folder shared with the students' servers.
c.Exchange.root = os.environ.get("LECTURELIB_EXCHANGE", str(ROOT / "exchange"))

# Solutions become this stub in the student version; the checks recognise it and say "not implemented yet".
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Honest grading: student code runs in a sandboxed kernel (bubblewrap), the verdict of every test cell is
# computed outside it from plain data, and written into the cell's output before nbgrader scores it.
# LECTURELIB_IN_KERNEL_GRADING=1 restores nbgrader's own Execute (faster, not safe against tampering).
# An honest student's editor actions (a copied solution cell, metadata that no longer reads, a timestamp.txt
# that does not parse) are repaired before nbgrader's own steps, which would lose the whole notebook to them.
# Links, FIFOs and devices in a submission are neither graded nor copied; student ids are names, not patterns.
from lecturelib.grading.repair import harden_nbgrader  # noqa: E402

harden_nbgrader()
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "lecturelib.grading.repair.RepairSubmission",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]

if not os.environ.get("LECTURELIB_IN_KERNEL_GRADING"):
    c.Autograde.autograde_preprocessors = [
        "lecturelib.grading.execute.IsolatedExecute",
        "nbgrader.preprocessors.IgnorePattern",
        "nbconvert.preprocessors.ClearMetadataPreprocessor",
        "nbgrader.preprocessors.LimitOutput",
        "nbgrader.preprocessors.SaveAutoGrades",
        "lecturelib.grading.execute.FlagDisagreements",
        "nbgrader.preprocessors.AssignLatePenalties",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    # Limits of the sandboxed run (environment overrides for the TA's shell; these are the only place read).
    env = os.environ.get
    c.IsolatedExecute.cell_timeout = int(env("LECTURELIB_CELL_TIMEOUT", "120"))
    c.IsolatedExecute.collect_timeout = int(env("LECTURELIB_COLLECT_TIMEOUT", "60"))
    c.IsolatedExecute.submission_seconds = int(env("LECTURELIB_SUBMISSION_SECONDS", "1800"))
    c.IsolatedExecute.memory_mb = int(env("LECTURELIB_MEMORY_MB", "6144"))
    c.IsolatedExecute.cpu_seconds = int(env("LECTURELIB_CPU_SECONDS", "1800"))
    c.IsolatedExecute.keep_figures = env("LECTURELIB_GRADING_FIGURES", "") not in ("", "0")
    c.IsolatedExecute.report_root = str(ROOT / "grading_reports")
    c.IsolatedExecute.source_root = str(SOURCE)
    c.IsolatedExecute.course_roots = os.pathsep.join([str(ROOT), str(SOURCE)])
    # A secret (kept out of the repository) makes every student's hidden inputs their own.
    c.IsolatedExecute.course_secret = env("LECTURELIB_COURSE_SECRET", "")

# Run every notebook with the project's own Python (an absolute path in the kernelspec that
# `make install` registers), never whatever `python` comes first on PATH.
c.Execute.kernel_name = "lecturelib"
c.Execute.timeout = int(os.environ.get("LECTURELIB_CELL_TIMEOUT", "120"))
c.Execute.interrupt_on_timeout = True

# A test cell fails only by raising (check() raises CheckFailed). Anything written to stderr, such as
# torch's UserWarnings or a progress bar, must not cost a correct answer its points.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"[\s\S]"

# Test cells whose nbgrader metadata a student deleted are put back from the gradebook.
c.OverwriteCells.add_missing_cells = True

# grades.csv: `nbgrader export --exporter=lecturelib.grading.export.GradesCsv` adds the isolated grader's status.
c.GradesCsv.report_root = str(ROOT / "grading_reports")

# --- Feedback HTML (lecturelib/grading/feedback.py) ------------------------------------------------------------
# What a submission displayed is shown as text, never run as markup (HTML, SVG, JavaScript, Markdown outputs);
# PNG/JPEG and plain text stay; widgets become a note; "<Figure size ...>" placeholders are dropped; formulas are
# MathML (no MathJax from a CDN); test cells are listed by exercise name; long lines wrap; Markdown cells are
# cleaned with an allow-list. Plain `nbgrader generate_feedback` (and the formgrader's button) use it too.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "lecturelib.grading.feedback.SanitizeOutputs",
    "lecturelib.grading.feedback.MathToMathML",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.GenerateFeedback.exporter_class = "lecturelib.grading.feedback.FeedbackExporter"
