# The two set-up commands for a fresh machine are `make demo` and `make test`; each creates the virtual
# environment in .venv if it is missing and installs autocompress into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A short real study on digits into studies/ (resumes, and then runs nothing new, when run again).
demo: $(STAMP)
	$(BIN)/autocompress study --task digits --objective size --max-drop 1 --target 30 --trials 6 --name demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
