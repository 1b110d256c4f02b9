#!/bin/sh
# Installs the Debian packages uflow needs to build and run, when missing.
# Needs root (or sudo). Safe to run again: installs nothing already present.
#   sh tools/install_deps.sh          build and run
#   sh tools/install_deps.sh test     also what the tests need: valgrind (make valgrind), Debian's
#                                     PyTorch and numpy (tests/test_convert runs tools/convert_checkpoint.py),
#                                     g++ and pkg-config (tests/test_embed.sh: the examples against an
#                                     installed copy), Pillow, pandas, distributed (Dask) and scikit-learn
#                                     (tests/test_python.sh: the Python package), Chromium and ChromeDriver
#                                     (tests/test_serve_page.sh: uflow serve's page)
#   sh tools/install_deps.sh fuzz     also clang, libFuzzer and libomp (make fuzz)
#   sh tools/install_deps.sh bench    also PyTorch, numpy and Pillow (make bench-compare)
#   sh tools/install_deps.sh report   also Chromium, ChromeDriver and Pillow (make check-report:
#                                     tools/check_report.sh, tools/check_serve_page.sh)
set -e
PKGS="gcc make libc6-dev libopenblas0-openmp libstb-dev libcjson-dev libpng-dev libtiff-dev nettle-dev libdnnl-dev libturbojpeg0-dev libisal-dev zlib1g-dev libmicrohttpd-dev"
[ "${1:-}" = test ] && PKGS="$PKGS valgrind python3 python3-numpy python3-torch g++ pkg-config python3-pil python3-pandas python3-distributed python3-sklearn chromium chromium-driver"
[ "${1:-}" = fuzz ] && PKGS="$PKGS clang libclang-rt-14-dev libomp-dev"
[ "${1:-}" = report ] && PKGS="$PKGS chromium chromium-driver python3 python3-pil"
[ "${1:-}" = bench ] && PKGS="$PKGS python3 python3-numpy python3-torch python3-pil"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "uflow: installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $missing
