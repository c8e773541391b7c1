#!/usr/bin/env bash
# The fallback TFLite runtime: tflite-runtime 2.14 needs numpy<2 (and has no wheels for Python >= 3.12),
# so it gets its own environment, .venv-tflite, in which the runtime-parametrised vision tests run again.
# Called by scripts/test (every scripts/test.d/*.sh); safe to run on its own.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'tflite_runtime: %s\n' "$*" >&2; }

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 11)))' 2>/dev/null; then
  say "tflite-runtime 2.14 has wheels for Python 3.9-3.11 only; $("$PY" --version 2>&1) cannot run this check"
  exit 1
fi
REQS=("numpy<2" "tflite-runtime==2.14.0" "opencv-python-headless>=4.9" "pytest>=8" "pytest-asyncio>=0.24"
      "pytest-timeout>=2.3")
want=$(printf '%s\n' "${REQS[@]}" | sha256sum | cut -c1-16)
if [ ! -x .venv-tflite/bin/python ] || [ "$(cat .venv-tflite/.cityedge-stamp 2>/dev/null)" != "$want" ]; then
  say "installing numpy<2 + tflite-runtime 2.14 + OpenCV into .venv-tflite"
  [ -x .venv-tflite/bin/python ] || "$PY" -m venv .venv-tflite
  .venv-tflite/bin/python -m pip install -q --disable-pip-version-check "${REQS[@]}"
  echo "$want" > .venv-tflite/.cityedge-stamp
fi
# The project is not installed there (its other dependencies want numpy 2): run from the source tree.
# The tests pick the runtimes importable in this Python, so here they exercise tflite-runtime.
PYTHONPATH="$PWD" .venv-tflite/bin/python -c \
  'from gateway.vision.detector import installed_backends as b; import sys; print("runtimes:", b()); sys.exit("tflite_runtime" not in b())'
PYTHONPATH="$PWD" exec .venv-tflite/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_vision_models.py tests/test_vision_pipeline.py "$@"
