"""Set-up files agree with each other: pyproject.toml, environment.yml, Makefile, .ci/run."""
import re
import tomllib
from notebook_tools import REPO



def _pyproject_requirements() -> set[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return {r.replace(" ", "") for r in reqs}


def _environment_requirements() -> set[str]:
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    reqs = {line.strip()[2:].replace(" ", "") for line in lines[start + 1:] if line.strip().startswith("- ")}
    return reqs - {"-e."}


def test_environment_yml_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_torch_is_pinned_everywhere():
    assert "torch==2.13.0" in _pyproject_requirements()
    makefile = (REPO / "Makefile").read_text()
    assert '"torch==2.13.0"' in makefile
    # torch is installed before anything that could pull an unpinned (CUDA) build
    assert makefile.index("torch==2.13.0") < makefile.index('-e ".[course,dev]"')
    assert "editable_mode=compat" in makefile


def test_ci_runs_make_test_and_readme_shows_both_commands():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme


def test_nbgrader_config_handles_known_traps():
    config = (REPO / "nbgrader_config.py").read_text()
    for setting in ("IgnorePattern.enabled = True", "OverwriteCells.add_missing_cells = True",
                    'Execute.kernel_name = "lecturelib"', 'source_directory'):
        assert setting in config
    assert re.search(r"Execute\.timeout", config)


def test_weights_are_shipped_as_package_data():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "weights/*.pt" in meta["tool"]["setuptools"]["package-data"]["lecturelib"]
    assert any((REPO / "lecturelib" / "weights").glob("*.pt"))
