# The two set-up commands for a fresh machine are `make demo` and `make test`; each creates the virtual
# environment in .venv if it is missing and installs autocompress into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test test-slow clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A short real study on digits into studies/ (resumes, and then runs nothing new, when run again).
demo: $(STAMP)
	$(BIN)/autocompress study --task digits --objective size --max-drop 1 --target 30 --trials 12 --name demo

# The browser test needs Chromium, the PostgreSQL storage test the server binaries (it starts its own server);
# both fail, not skip, without them, so they are installed from Debian's packages when missing.
system-deps:
	@if ! command -v chromium >/dev/null || ! { command -v initdb >/dev/null || \
	      ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then \
	    $(SUDO) apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium postgresql; \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
