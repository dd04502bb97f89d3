# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The torch build to install; override for your platform, e.g. TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# pytest workers (CI has 2 cores)
JOBS   ?= 2

.PHONY: setup demo test release release-check bench lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
	touch $(STAMP)

## main job: release, grade three sample students, print the gradebook
demo: $(STAMP)
	$(BIN)/python -m autograder demo

## the whole suite on CPU, quick profile: unit tests, release hygiene, autograding, nbval
test: $(STAMP)
	COURSE_PROFILE=quick MPLBACKEND=Agg $(BIN)/python -m pytest -n $(JOBS) --dist loadfile \
		tests source solutions --nbval-lax -p no:cacheprovider

release: $(STAMP)
	$(BIN)/python -m autograder release

release-check: $(STAMP)
	$(BIN)/python -m autograder release --check

## full profile on a GPU: writes benchmarks/results.json and the README table
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lab: $(STAMP)
	$(BIN)/jupyter lab assignments/

clean:
	rm -rf .demo submitted autograded feedback grading-logs gradebook.db grades-*.csv
