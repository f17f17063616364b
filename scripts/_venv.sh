# Sourced by scripts/test, scripts/check and scripts/demo: make sure .venv exists and
# holds edgefleet (editable) with its pinned dependencies.  Re-installs only when
# pyproject.toml changed since the last install.
#
# Also .venv-tools: command-line tools the tests run as separate programs and that
# cannot share .venv because their dependency pins clash with ours (sslyze 6.3.1 needs
# cryptography < 47; edgefleet pins 50).  Installed once per tool version.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "edgefleet needs Python >= 3.11 (found $("$PY" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.edgefleet-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "installing edgefleet and its pinned dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]" >&2
    touch "$STAMP"
fi

TOOLS_VENV="$ROOT/.venv-tools"
SSLYZE_VERSION="6.3.1"  # tests/system/test_tls_scan.py scans both cloud ports with it
TOOLS_STAMP="$TOOLS_VENV/.edgefleet-tools"
if [ "$(cat "$TOOLS_STAMP" 2>/dev/null)" != "sslyze==$SSLYZE_VERSION" ]; then
    echo "installing sslyze $SSLYZE_VERSION into $TOOLS_VENV" >&2
    [ -x "$TOOLS_VENV/bin/python" ] || "$PY" -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$TOOLS_VENV/bin/python" -m pip install --quiet "sslyze==$SSLYZE_VERSION" >&2
    echo "sslyze==$SSLYZE_VERSION" > "$TOOLS_STAMP"
fi
# Not on PATH: the tools' own dependencies must never shadow edgefleet's.

export PATH="$VENV/bin:$PATH"
