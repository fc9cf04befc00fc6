# `make run` runs the main job, `make test` the tests; both set up .venv first.
VENV  := .venv
STAMP := $(VENV)/.keeptune-setup
ARGS  ?=

.PHONY: run test test-slow bench clean
$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

run: $(STAMP)
	$(VENV)/bin/keeptune run $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/eval_squad.py $(ARGS)

clean:
	rm -rf $(VENV) runs
