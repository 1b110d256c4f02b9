#!/bin/sh
# valgrind memcheck on a short `uflow train` + `uflow predict` (one bad image
# among the inputs, so the error path runs too): no invalid access, no use of
# uninitialised values, no definite or indirect leak; then an MS-CaiT `uflow train`
# on the tiny CaiT pair of tests/data/cait (feature cache included). "Still reachable" blocks
# (OpenBLAS's and libgomp's thread pools) are allowed.
# Usage: tests/valgrind.sh [UFLOW]   (default build/valgrind/uflow, made by `make valgrind`:
# no -march=native, as valgrind 3.19 cannot run AVX-512 code; OpenBLAS runs its Haswell kernels.)
set -eu
UFLOW=${1:-build/valgrind/uflow}
command -v valgrind >/dev/null || { echo "valgrind: not installed (sh tools/install_deps.sh test)"; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/train" "$T/in"
cp tests/data/image/resize_down_rgb.png tests/data/image/resize_mixed_rgb.png tests/data/image/gray.png \
   tests/data/image/pal.png "$T/train/"
cp tests/data/image/resize_down2_rgb.png tests/data/image/la.png "$T/in/"
printf 'not an image' > "$T/in/broken.png"
# OMP_WAIT_POLICY set: `uflow predict` would otherwise re-execute itself to set it (src/cli/main.c),
# leaving valgrind.
export OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
VG="valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect"
status=0
$VG "$UFLOW" train --data "$T/train" -o "$T/m.safetensors" --size 64 --epochs 2 --batch 2 --steps 1 \
    --threads 1 >"$T/train.out" 2>"$T/train.err" || status=$?
if [ "$status" -ne 0 ]; then
    cat "$T/train.err"; echo "FAIL valgrind train (status $status)"; echo "0 passed, 4 failed"; exit 1
fi
echo "PASS valgrind train"
status=0
$VG "$UFLOW" predict --model "$T/m.safetensors" -o "$T/pred" --threads 1 "$T/in" >"$T/pred.out" \
    2>"$T/pred.err" || status=$?
# predict exits 1 for the bad image; 99 would be valgrind's own verdict.
if [ "$status" -ne 1 ] || grep -q '^==' "$T/pred.err" ||
   ! grep -q '1 of 3 images could not be processed' "$T/pred.err" || [ ! -s "$T/pred/la_map.png" ]; then
    cat "$T/pred.err"; echo "FAIL valgrind predict (status $status)"; echo "1 passed, 3 failed"; exit 1
fi
echo "PASS valgrind predict"
status=0
$VG "$UFLOW" train --backbone mcait --weights tests/data/cait/tiny_m.safetensors,tests/data/cait/tiny_s.safetensors \
    --data "$T/train" -o "$T/c.safetensors" --epochs 1 --batch 2 --steps 1 --threads 1 >"$T/cait.out" \
    2>"$T/cait.err" || status=$?
if [ "$status" -ne 0 ] || [ "$(ls "$T/c.safetensors.features" | wc -l)" -ne 4 ]; then
    cat "$T/cait.err"; echo "FAIL valgrind train mcait (status $status)"; echo "2 passed, 2 failed"; exit 1
fi
echo "PASS valgrind train mcait"
# a tiled model (32x32 tiles at the images' own resolution) with a calibrated NFA (--val: 4 images
# repeated to reach the 5 calibration needs), trained and predicting
mkdir "$T/val"
for i in 1 2; do for f in "$T"/train/*.png; do cp "$f" "$T/val/$i$(basename "$f")"; done; done
status=0
$VG "$UFLOW" train --data "$T/train" --val "$T/val" -o "$T/t.safetensors" --size 32 --tile on --epochs 1 --batch 2 \
    --steps 1 --threads 1 >"$T/tile.out" 2>"$T/tile.err" || status=$?
if [ "$status" -eq 0 ]; then
    $VG "$UFLOW" predict --model "$T/t.safetensors" -o "$T/tpred" --threads 1 "$T/in" >>"$T/tile.out" \
        2>>"$T/tile.err" || status=$?
fi
# predict exits 1 for the bad image
if [ "$status" -ne 1 ] || grep -q '^==' "$T/tile.err" || ! grep -q 'NFA calibrated on 8' "$T/tile.out" ||
   [ ! -s "$T/tpred/la_map.png" ]; then
    cat "$T/tile.err"; echo "FAIL valgrind tiled train + predict (status $status)"; echo "3 passed, 1 failed"; exit 1
fi
echo "PASS valgrind tiled train + predict"
echo "4 passed, 0 failed"
