#!/usr/bin/env bash
# `make test-mindspore`: keeptune's MindSpore interop checked against the real libraries
# (tests/interop/test_real_mindspore.py, marker `mindspore`) in an environment of its own,
# .venv-mindspore: keeptune's lock (CPU torch, transformers, PEFT) plus MindSpore 2.10
# (an 800 MB wheel), mindpet 1.0.4 and MindFormers 2.1.0 (requirements/mindspore.txt).
# The environment is made once and reused until the lock, requirements/mindspore.txt or
# this script change (keeptune itself is installed editable). Where the wheels cannot be
# installed (no CPython 3.9-3.12, or the package index has no MindSpore 2.10 for this
# platform) it says so and exits 0 without testing; any other failure fails.
# Usage: scripts/test-mindspore.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-mindspore
LOCK=requirements/lock.txt
EXTRA=requirements/mindspore.txt
NO_DEPS="mindpet==1.0.4 mindformers==2.1.0"

skip() { echo "test-mindspore: SKIPPED: $*"; exit 0; }

# MindSpore 2.10 publishes wheels for CPython 3.9 to 3.12.
PY=
for candidate in ${PYTHON:-} python3 python3.11 python3.12 python3.10 python3.9; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 12))' >/dev/null 2>&1; then
    PY=$candidate
    break
  fi
done
[ -n "$PY" ] || skip "MindSpore 2.10 has wheels for CPython 3.9-3.12 only, and none is on PATH (set PYTHON=...)"

stamp=$(cat "$LOCK" "$EXTRA" "$0" | sha256sum | cut -d' ' -f1)-$NO_DEPS-$("$PY" --version)
if [ "$(cat "$VENV/.keeptune-mindspore" 2>/dev/null)" != "$stamp" ]; then
  echo "test-mindspore: making $VENV with $("$PY" --version) (MindSpore is an 800 MB wheel: minutes the first time)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # keeptune's lock, then the MindSpore side with the lock's pins as constraints, except the
  # packages requirements/mindspore.txt pins itself (numpy 1.x for MindSpore, fsspec for datasets).
  pip install --no-deps --require-hashes -r "$LOCK"
  own=$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' "$EXTRA" | tr 'A-Z_.' 'a-z--' | paste -sd'|')
  sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;]*\).*/\1/p' "$LOCK" \
    | awk -F'==' -v own="^($own)$" '{ name = tolower($1); gsub(/[_.]/, "-", name) } name !~ own' > "$work/constraints.txt"
  if ! pip install -c "$work/constraints.txt" -r "$EXTRA" 2> "$work/pip.log"; then
    cat "$work/pip.log" >&2
    if grep -qE "No matching distribution found for (mindspore|numpy)|Could not find a version that satisfies the requirement (mindspore|numpy)" "$work/pip.log"; then
      rm -rf "$VENV"
      skip "the package index has no MindSpore 2.10 wheel for $("$PY" --version) on $(uname -m) (see pip's message above)"
    fi
    exit 1
  fi
  # shellcheck disable=SC2086
  pip install --no-deps $NO_DEPS
  pip install --no-deps --no-build-isolation -e .
  echo "$stamp" > "$VENV/.keeptune-mindspore"
fi
echo "== test-mindspore: $("$VENV/bin/python" --version)," \
  "$("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
     | grep -iE '^(mindspore|mindpet|mindformers|torch|transformers|peft|numpy|protobuf)==' | tr '\n' ' ')"
"$VENV/bin/python" -m pytest -q -m mindspore tests/interop/test_real_mindspore.py "$@"
