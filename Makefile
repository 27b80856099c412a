# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv in the repo root on first use and install segflow with its pinned stack.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck browser clean tflite-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --no-cache-dir -e ".[dev]"
	# SAM 2 ships only a source build that needs torch at build time: no build isolation,
	# which pyproject cannot express (CPU-only: no CUDA extension)
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --no-cache-dir --no-build-isolation "sam2>=1.1"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segflow demo --out runs/demo --overwrite

# Debian's Chromium for the end-to-end browser test (Playwright never downloads a browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "warning: /usr/bin/chromium missing and not root; the browser test will be skipped"; fi; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q

# The TFLite converter (onnx2tf + TensorFlow) lives in its own cached virtualenv, since its pins
# clash with segflow's; `segflow export --format tflite` and its tests build it on first use
# (about 2-5 minutes, 1.9 GB under .cache/venvs). This builds it ahead of time.
tflite-venv: $(STAMP)
	$(PY) -c "from segflow.export.tflite import LOCK_FILE, VENV_NAME; from segflow.export.converter_venv import converter_python; print(converter_python(VENV_NAME, LOCK_FILE, log=print))"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) runs .pytest_cache
