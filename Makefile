# mxr: every target sets itself up (creates .venv if missing, installs, then acts).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mxr-installed
NB     := $(wildcard notebooks/[0-9][0-9]_*.ipynb)
SOL    := $(wildcard notebooks/solutions/[0-9][0-9]_solutions.ipynb)
DATA   ?= data/shapesx

.PHONY: venv test lint unit notebooks-smoke run solutions lab data clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,test]"
	@touch $@

## make test: ruff (lint, and the formatter's check on the package, tests and scripts), the pytest suite, and the notebooks under nbval in smoke mode
test: venv lint unit notebooks-smoke

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check mxr tests benchmarks docs

unit: venv
	$(VENV)/bin/pytest -q tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc

notebooks-smoke: venv
ifneq ($(NB),)
	MXR_BUDGET=smoke $(VENV)/bin/pytest -q --nbval-lax -p no:cacheprovider $(NB) $(SOL); rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc
else
	@echo "no notebooks yet"
endif

## make data: generate the ShapesX dataset if it is missing
data: venv
	$(PY) -c "from mxr.data.shapesx import ensure_shapesx; ensure_shapesx('$(DATA)')"

## make run: the main job, headless: data if missing, the notebooks' trainings (2 processes),
## then every notebook in full mode, in place, NB_JOBS at a time (they only reload cached runs,
## and each keeps about one core busy); each notebook's execution time is printed.
## NB_ALONE: the notebooks that need none of prime()'s runs. They execute beside prime() at the
## lowest priority (nice 19), so they only take a core prime() leaves idle (one waits ~200 s for
## the detector); the rest follow prime(), the longest first.
NB_JOBS  ?= 2
NB_ALONE := $(filter %/00_the_problem_and_the_data.ipynb %/06_coco_voc_to_nonvoc.ipynb,$(NB))
NB_AFTER := $(filter %/05_visualising_masks.ipynb,$(NB)) $(filter %/02_weight_transfer.ipynb,$(NB)) \
            $(filter-out $(NB_ALONE) %/05_visualising_masks.ipynb %/02_weight_transfer.ipynb,$(NB))
# $(1): notebooks; $(2): a command prefix (e.g. nice -n 19)
define execute_notebooks
printf '%s\n' $(1) | xargs -P $(NB_JOBS) -I{} sh -c 'start=$$(date +%s); \
	  MXR_BUDGET=full OMP_NUM_THREADS=1 $(2) $(VENV)/bin/jupyter nbconvert --to notebook --execute \
	    --inplace --ExecutePreprocessor.timeout=3600 "{}" >/dev/null 2>"{}.log" \
	  && { echo "== {}: executed in $$(( $$(date +%s) - start )) s"; rm -f "{}.log"; } \
	  || { echo "== {}: FAILED (see {}.log)"; exit 255; }'
endef

run: data
ifneq ($(NB),)
	@MXR_BUDGET=full $(PY) -c "from mxr.course.prime import prime; prime()" & primer=$$!; \
	  $(call execute_notebooks,$(NB_ALONE),nice -n 19); alone=$$?; \
	  wait $$primer && [ $$alone -eq 0 ]
	@$(call execute_notebooks,$(NB_AFTER))
endif
	@echo "Executed notebooks (with their outputs) are in: $(CURDIR)/notebooks/"
	@echo "Dataset: $(CURDIR)/$(DATA)"

## make solutions: the exercises' worked solutions in full mode, in place. After make run they
## reload its cached runs (under a minute and a half each), except the first time, when 04 and 05
## train three more mask branches (about 3 minutes each); on a fresh clone prime() trains first
solutions: data
	MXR_BUDGET=full $(PY) -c "from mxr.course.prime import prime; prime()"
	@$(call execute_notebooks,$(SOL))

## make lab: JupyterLab on notebooks/ for learners
lab: venv
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-venv:
	rm -rf $(VENV)
