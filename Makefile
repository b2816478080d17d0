# Every target is self-sufficient on a fresh clone: it creates .venv and installs
# what it needs first.  `make book` builds the HTML book, `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep every tool's state inside the repository (ignored folders), never in $HOME.
export VGG_LIB_CACHE ?= $(CURDIR)/.cache/vgg_lib
export VGG_LIB_RUNS ?= $(CURDIR)/runs
export JUPYTER_CONFIG_DIR := $(CURDIR)/.state/jupyter/config
export JUPYTER_DATA_DIR := $(CURDIR)/.state/jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.state/jupyter/runtime
export IPYTHONDIR := $(CURDIR)/.state/ipython
export MPLCONFIGDIR := $(CURDIR)/.state/matplotlib
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export PYTHONHASHSEED := 0

.PHONY: setup book test test-fast lab jobs reproduce localise verify browser slurm data web-assets clean clean-book

setup: $(STAMP) data

# Fashion-MNIST from Debian's package (the reference experiments' data), installed if missing.
data:
	bash scripts/install_fashion_mnist.sh

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 --display-name "Python 3 (vgg_lib)" >/dev/null
	@touch $@

# Third-party JavaScript (MathJax, RequireJS, the widget manager) is fetched from the
# npm registry at build time and served by the book itself: no CDN at read time.
web-assets: build/web_assets/.done
build/web_assets/.done: scripts/web_assets.sh
	bash scripts/web_assets.sh build/web_assets

browser:
	bash scripts/install_chromium.sh

# Debian's Slurm and munge for the tests of the slurm executor (tests/test_cluster.py), which
# start them as a one-node cluster in a temporary folder; skipped (with the reason) without root.
slurm:
	bash scripts/install_slurm.sh

book: $(STAMP) data web-assets
	@mkdir -p .state    # IPython, Jupyter and matplotlib keep their state here (see the exports)
	$(VENV)/bin/jupyter-book build . --path-output . -W --keep-going || \
	  (echo "book build failed: see the reports under _build/html/reports"; exit 1)

test: $(STAMP) browser slurm
	$(MAKE) book
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=book

jobs: $(STAMP)
	$(PY) -m vgg_lib.jobs grid book/jobs/example_grid.yaml

# The reference grid behind the Training, Testing, Fusion and Reproduction chapters (the
# Reproduction chapter prints its measured wall time on 2 cores); resumable (finished runs are reused); writes results/ (committed).
reproduce: $(STAMP) data
	$(PY) -m vgg_lib.experiments reproduce --jobs 2

# Appendix A only: the localisers of the D-shapes nets (and those nets, if not trained yet);
# resumable; writes results/localisation/ (committed).
localise: $(STAMP)
	$(PY) -m vgg_lib.experiments localise --jobs 2

# Re-train the cheapest reference run and compare it with results/ (the book build does it too).
verify: $(STAMP) data
	$(PY) -m vgg_lib.experiments verify

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV) build .state .cache
