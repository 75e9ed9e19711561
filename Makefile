# handcourse: `make course` opens the course, `make test` runs every test and notebook.
# Both set everything up first (a virtual environment in .venv), so each works on a fresh machine.
# `make test` adds the optional peer (MediaPipe Hands, the `peers` extra) and its model file, so its
# tests run instead of being skipped; `make course` keeps the light install.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
# On Linux without an NVIDIA GPU (no nvidia-smi), torch comes from PyTorch's CPU index: the CPU build,
# about 200 MB, instead of PyPI's CUDA build with several GB of CUDA libraries. With a GPU, or on macOS
# and Windows (whose PyPI builds have no CUDA libraries), plain PyPI. Override either way:
#   make course TORCH_INDEX=                                  # PyPI's default build (or your pip config's)
#   make course TORCH_INDEX=https://download.pytorch.org/whl/cu126
ifeq ($(shell uname -s)-$(shell command -v nvidia-smi),Linux-)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif
TORCH_INDEX ?=
PORT ?= 8888

.PHONY: course test setup setup-peers notebooks student benchmarks full-checkpoints clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: installed together with smplx from nothing, pip would pick the newest CUDA build.
	$(PY) -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup-peers: $(VENV)/.installed-peers

$(VENV)/.installed-peers: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,peers]"
	touch $@

# JupyterLab opens on chapter 0, with the repository in its file browser.
course: setup
	$(VENV)/bin/jupyter lab --port $(PORT) $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/00_challenges.ipynb

# The fetch does nothing when data/peers/hand_landmarker.task is there with its pinned hash.
# HANDLIB_REQUIRE_PEERS=1: the peer's tests fail, rather than skip, if it cannot run.
test: setup-peers
	$(PY) -m handlib fetch-peer mediapipe
	HANDLIB_PROFILE=quick HANDLIB_REQUIRE_PEERS=1 $(PY) -m pytest -v --durations=15

# Re-run every notebook and store its outputs without widget state (what the repository keeps).
# Widget state is not kept in the notebooks: nbclient's store_widget_state=False fails on Output
# widgets (KeyError in nbclient/output_widget.py), so each notebook is executed and then stripped.
notebooks: setup
	for notebook in notebooks/*.ipynb; do \
	  HANDLIB_PROFILE=quick $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1800 $$notebook || exit 1; \
	  $(PY) -c 'import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); nb.metadata.pop("widgets", None); \
	    nbformat.write(nb, sys.argv[1])' $$notebook || exit 1; \
	done

# The student notebooks (what an instructor hands out): every answer between `### BEGIN SOLUTION` and
# `### END SOLUTION` becomes a stub, the instructor-only answer cells go, the outputs of exercise and
# check cells are cleared. The committed notebooks/ stay the instructor versions; student/ is ignored.
STUDENT ?= student
student: setup
	$(PY) -m handlib student --out $(STUDENT)

# The speed benchmarks (bench_*.py: printed tables, ratios against a peer run in the same process).
# The chapters' experiments (domain_gap, cai_label_fraction, *_tables) train for hours: each says how
# to run it in its docstring.
benchmarks: setup
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# Train the full profile of every method and variant (the shared backbone first: the others start
# from it), and ship each finished run in handlib/assets/checkpoints with its
# record (`python -m handlib export`). Each training stops after MINUTES with a checkpoint; run the
# target again to resume. On a 2-core CPU each method takes at most about 90 minutes; a GPU makes it
# minutes. The first run renders the training sets on every CPU core into data/cache.
# With Python and torch already installed (no .venv): make full-checkpoints PY=python3
MINUTES ?= 600
full-checkpoints:
	names=$$($(PY) -c "from handlib.registry import shipped_names; print(*shipped_names())") || exit 1; \
	for name in $$names; do \
	  $(PY) -m handlib train $$name --profile full --minutes $(MINUTES) && \
	  $(PY) -m handlib export $$name --profile full || exit 1; \
	done
	$(PY) -m handlib benchmark --profile full

clean:
	rm -rf $(VENV) data/cache data/runs
