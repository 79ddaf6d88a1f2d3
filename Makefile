# The README's two commands: `make lab` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
# nbgrader runs `alembic` when it creates a gradebook: the venv must be on PATH.
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install lab test test-fast bench audit weights release autograde grades feedback grade-demo clean-course clean

install: $(STAMP)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
# The editable install is a plain path entry (compat mode), so a student package placed first on
# PYTHONPATH really replaces the package (setuptools' default finder would still serve its submodules).
$(STAMP): pyproject.toml environment.yml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[course,dev]" \
		--config-settings editable_mode=compat
	$(BIN)/python -m ipykernel install --sys-prefix --name lecturelib --display-name "Python (lecturelib)" >/dev/null
	touch $(STAMP)

# The instructor's notebooks: solutions and hidden tests inside. Students: release/README.md (`make release`).
# JupyterLab refuses to start as root (Docker, university containers) unless told --allow-root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
lab: install
	@echo "make lab: the instructor's notebooks (solutions and hidden tests inside). Students get release/ from"
	@echo "          \`make release\` and follow release/README.md (make setup, make lab there)."
	$(BIN)/jupyter lab $(ALLOW_ROOT) notebooks/

test: install
	$(BIN)/python -m pytest -q --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/run.py $(TOPIC)

# How strong each exercise's checks are: its mutant library through both suites (lecturelib/hidden/audit.py);
# exits non-zero below the targets. TOPIC=detr (or an exercise name) limits it. tests/test_audit.py runs it too.
audit: install
	$(BIN)/python -m lecturelib.hidden.audit $(TOPIC)

# Retrain the shipped model weights in lecturelib/weights/ (deterministic; a few minutes each on 2 cores).
# TOPIC=detr (or TOPIC="detection detr") limits it to some topics, as for `make bench`; a topic's second model
# goes by its recipe's name (TOPIC=keypoints: scripts/train_keypoints.py, the keypoint head of 05).
weights: install
	$(BIN)/python scripts/train_weights.py $(TOPIC)

# --- TA workflow (see README) ---------------------------------------------------------------
# ASSIGNMENT=02_segmentation limits release, autograde, feedback and grade-demo to one assignment.
ASSIGNMENT_ARG := $(if $(ASSIGNMENT),--assignment $(ASSIGNMENT))
release: install
	$(BIN)/python -m lecturelib.course release $(ASSIGNMENT_ARG)

autograde: install
	$(BIN)/python -m lecturelib.course autograde $(ASSIGNMENT_ARG) $(if $(WORKERS),--workers $(WORKERS))

grades: install
	$(BIN)/python -m lecturelib.course grades

feedback: install
	$(BIN)/python -m lecturelib.course feedback $(ASSIGNMENT_ARG)

grade-demo: install
	$(BIN)/python -m lecturelib.course demo $(ASSIGNMENT_ARG) $(if $(WORKERS),--workers $(WORKERS))

clean-course:
	rm -rf release submitted autograded feedback exchange gradebook.db grades.csv

clean: clean-course
	rm -rf $(VENV) .pytest_cache *.egg-info
