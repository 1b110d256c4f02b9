#!/bin/sh
# The Python package (python/uflow) and its Dask runner: tests/test_python.py with Debian's
# python3 (numpy, Pillow, pandas, distributed: tools/install_deps.sh test installs them).
# Skipped, with the reason printed, only where python3 or numpy is missing.
cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if [ -z "$PY" ]; then echo "SKIP: no python3 (sh tools/install_deps.sh test installs it)"; echo "RESULT 0 0"; exit 0; fi
if ! "$PY" -c "import numpy" 2>/dev/null; then
    echo "SKIP: $PY has no numpy (sh tools/install_deps.sh test installs python3-numpy)"; echo "RESULT 0 0"; exit 0
fi
PYTHONPATH="$(pwd)/python" exec "$PY" tests/test_python.py
