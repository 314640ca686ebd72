#!/usr/bin/env bash
# The one set-up step of `make dev` and `make test`: creates .venv with Python 3.11+ and installs the
# project with its `dev` extra (editable; `dev` includes `all`: the apiserver's and the nodemanager's
# packages, then the test tools) whenever pyproject.toml changed since the last install.
# Needs only python3 with venv (Debian: python3-venv); quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${BOOTSTRAP_PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$PYTHON" ]; then
    echo "bootstrap: no python3 found; install Python 3.11+ with venv (Debian: python3 python3-venv)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: $PYTHON is $("$PYTHON" -V 2>&1); agent-nodes needs Python 3.11 or newer" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $("$PYTHON" -V 2>&1)" >&2
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.installed
wanted=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
    && .venv/bin/python -c 'import litestar, docker, pytest, nodectl' 2>/dev/null; then
    exit 0
fi
echo "bootstrap: installing the project and its test tools into .venv" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "$wanted" >"$stamp"
