# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The torch build to install; override for your platform, e.g. TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# pytest workers (CI has 2 cores)
JOBS   ?= 2
# Jupyter settings of the course environment, copied from jupyter-config/ into the venv:
# no "official Jupyter news?" prompt, and no nbgrader Assignment/Course List (they need an
# exchange directory, which this course does not use). The server file is named zz-... so
# that it is read after nbgrader's own nbgrader.json, which enables those extensions.
JUPYTER_CONFIG := $(patsubst jupyter-config/%,$(VENV)/%,$(shell find jupyter-config -type f))
# extra arguments of `make lab`, e.g. LAB_ARGS="--no-browser --port=8890"
LAB_ARGS ?=
# where `make student-copy` writes the class repository (build/ is not tracked), and its options,
# e.g. STUDENT_COPY_ARGS="--zip" or STUDENT_COPY_ARGS="--closed 02_transformer_blocks"
STUDENT_COPY ?= build/student-copy
STUDENT_COPY_ARGS ?=

.PHONY: setup demo test release release-check student-copy bench lab clean

setup: $(STAMP) $(JUPYTER_CONFIG)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
	touch $(STAMP)

$(VENV)/%: jupyter-config/% | $(STAMP)
	mkdir -p $(@D)
	cp $< $@

## main job: release, grade three sample students, print the gradebook
demo: $(STAMP)
	$(BIN)/python -m autograder demo

## the whole suite on CPU, quick profile: unit tests, release hygiene, autograding, nbval
test: setup
	COURSE_PROFILE=quick MPLBACKEND=Agg $(BIN)/python -m pytest -n $(JOBS) --dist loadfile \
		tests source solutions --nbval-lax -p no:cacheprovider

release: $(STAMP)
	$(BIN)/python -m autograder release

release-check: $(STAMP)
	$(BIN)/python -m autograder release --check

## what the class receives (autograder/classroom.py says what is withheld): the release, `course` without
## the answers of open assignments, the student README and environment; replaces $(STUDENT_COPY)
student-copy: $(STAMP)
	$(BIN)/python -m autograder student-copy $(STUDENT_COPY) --force $(STUDENT_COPY_ARGS)

## full profile on a GPU: writes benchmarks/results.json and the README table
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

## JupyterLab in the repository root, where nbgrader finds nbgrader_config.py (Validate button,
## formgrader), with the file browser on assignments/; root may only start it with --allow-root
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/assignments $(LAB_ARGS)

clean:
	rm -rf .demo submitted autograded feedback grading-logs gradebook.db grades-*.csv
