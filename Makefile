# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean browser crf-only-check wheel-check

# The web demo's browser test drives Debian's chromium through chromium-driver (Selenium,
# no browser download). As root (CI) they are installed when missing and the test must
# run (DEEPLAB_REQUIRE_BROWSER=1); otherwise it skips when they are missing.
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo 1)
HAVE_BROWSER = command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m deeplab demo --out demo_out

browser:
ifeq ($(IS_ROOT),1)
	@$(HAVE_BROWSER) || (apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends chromium chromium-driver)
else
	@$(HAVE_BROWSER) || echo "note: chromium / chromium-driver missing and not root:" \
		"the web demo's browser test will be skipped"
endif

test: $(STAMP) browser
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy
	DEEPLAB_REQUIRE_BROWSER=$(IS_ROOT) $(PY) -m pytest -q
	$(MAKE) crf-only-check wheel-check

# `pip install deeplab` is the CRF alone: a fresh environment with only its dependencies
# runs the CRF, pydensecrf drop-in and `deeplab crf` tests (torch absent).
crf-only-check: $(STAMP)
	$(PY) tests/install_check.py crf-only

# The sdist and wheel as users get them: built, installed with [networks] into a fresh
# environment, `deeplab demo` and the README's Python blocks run from a temporary folder.
wheel-check: $(STAMP)
	$(PY) tests/install_check.py wheel

# The tests alone, slow ones included (make test runs them too, after the static checks).
test-all: $(STAMP) browser
	DEEPLAB_REQUIRE_BROWSER=$(IS_ROOT) $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/crf_cpu.py

clean:
	rm -rf $(VENV) demo_out
