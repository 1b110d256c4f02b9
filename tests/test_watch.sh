#!/bin/sh
# `uflow watch`: tests/test_watch.py with Debian's python3 (standard library only).
cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if [ -z "$PY" ]; then echo "SKIP: no python3 (sh tools/install_deps.sh test installs it)"; echo "RESULT 0 0"; exit 0; fi
exec "$PY" tests/test_watch.py
