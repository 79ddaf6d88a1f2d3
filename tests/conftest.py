"""Test isolation: Jupyter/IPython state in temp dirs, a headless matplotlib, the venv on PATH."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

_STATE = Path(tempfile.mkdtemp(prefix="lecturelib-test-state-"))
for var, sub in [("IPYTHONDIR", "ipython"), ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                 ("JUPYTER_DATA_DIR", "jupyter-data"), ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")]:
    os.environ[var] = str(_STATE / sub)
    (_STATE / sub).mkdir(parents=True, exist_ok=True)
os.environ["MPLBACKEND"] = "Agg"
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
os.environ.pop("NBGRADER_EXECUTION", None)
os.environ.pop("LECTURELIB_COURSE_ROOT", None)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """A temporary course root with every assignment released (shared by the grading tests)."""
    root = tmp_path_factory.mktemp("course")
    limits = {"LECTURELIB_COURSE_ROOT": str(root), "LECTURELIB_CELL_TIMEOUT": "20",
              "LECTURELIB_COLLECT_TIMEOUT": "10", "LECTURELIB_MEMORY_MB": "6144"}
    with pytest.MonkeyPatch.context() as patch:     # session-scoped: the monkeypatch fixture is per test
        for key, value in limits.items():
            patch.setenv(key, value)
        from lecturelib import course as tool
        tool.release()
        yield root
