#!/bin/sh
# The installed library as an embedding program sees it: `make install PREFIX=T/prefix`,
# examples/embed.c (gcc) and examples/embed.cpp (g++, libpng) compiled with only the
# installed include folder and pkg-config, run on a small demo model; their results agree
# with `uflow predict` (the C example's output files are byte-identical to the command's).
# Prints PASS/FAIL lines and "RESULT passed failed" (tests/run_all.sh).
cd "$(dirname "$0")/.." || exit 1
T=$(mktemp -d /tmp/uflow-embed.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
finish() { echo "RESULT $pass $fail"; exit 0; }

if ! command -v pkg-config >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
    echo "SKIP: pkg-config or g++ missing (sh tools/install_deps.sh test installs them)"; ko "tools present"; finish
fi
build/uflow demo -o "$T/demo" --epochs 2 --size 64 --threads 1 >"$T/demo.log" 2>&1 || { cat "$T/demo.log"; ko "demo model"; finish; }
make --no-print-directory install PREFIX="$T/prefix" >"$T/install.log" 2>&1 || { tail "$T/install.log"; ko "make install"; finish; }
P="$T/prefix"
for f in include/uflow.h lib/libuflow.so lib/pkgconfig/uflow.pc bin/uflow share/uflow/resnet18-in1k-l3-bnfolded.safetensors; do
    [ -e "$P/$f" ] || { ko "installed $f"; finish; }
done
soname=$(objdump -p "$P/lib/libuflow.so" | awk '/SONAME/ {print $2}')
case "$soname" in libuflow.so.[0-9]*) [ -e "$P/lib/$soname" ] && ok "soname $soname installed" || ko "soname file";;
    *) ko "soname '$soname'";; esac
bad=$(nm -D --defined-only "$P/lib/libuflow.so" | awk '$2 == "T" && $3 !~ /^uflow_/' | head -3)
[ -z "$bad" ] && ok "only uflow_* functions exported" || ko "exported: $bad"

export PKG_CONFIG_PATH="$P/lib/pkgconfig"
cflags=$(echo $(pkg-config --cflags uflow)) libs=$(pkg-config --libs uflow)
[ "$cflags" = "-I$P/include" ] && ok "pkg-config --cflags is the installed include folder only" || ko "cflags '$cflags'"
# The header alone, strict C and C++, so nothing internal leaks into it.
gcc -std=c11 -Wall -Wextra -Wpedantic -Werror examples/embed.c $cflags $libs -Wl,-rpath,"$P/lib" -o "$T/embed" 2>"$T/cc.log" \
    && ok "embed.c compiles (gcc -std=c11 -Wpedantic -Werror)" || { cat "$T/cc.log"; ko "embed.c compiles"; finish; }
g++ -std=c++11 -Wall -Wextra -Wpedantic -Werror examples/embed.cpp $cflags $(pkg-config --cflags --libs libpng) $libs \
    -Wl,-rpath,"$P/lib" -o "$T/embed_cpp" 2>"$T/cxx.log" \
    && ok "embed.cpp compiles (g++ -std=c++11 -Wpedantic -Werror)" || { cat "$T/cxx.log"; ko "embed.cpp compiles"; finish; }
ldd "$T/embed" | grep -q "$P/lib/libuflow.so" && ok "embed runs on the installed libuflow.so" || ko "ldd: $(ldd "$T/embed" | grep uflow)"

# Moved away from the checkout: the installed library finds its shipped weights itself.
M="$T/model.safetensors"
cp "$T/demo/model.safetensors" "$M"
(cd "$T" && "$P/bin/uflow" predict --model "$M" -o "$T/cli" --threads 1 "$T/demo/data/test" >"$T/cli.log" 2>&1) \
    || { cat "$T/cli.log"; ko "uflow predict"; finish; }
(cd "$T" && OMP_NUM_THREADS=1 "$T/embed" "$M" "$T/c" "$T/demo/data/test" >"$T/c.csv" 2>"$T/c.err") \
    && ok "embed runs" || { cat "$T/c.err"; ko "embed runs"; finish; }
# CLI rows: image,score,anomalous,detected_pixels,max_nfa,width,height,outputs,error
tail -n +2 "$T/cli/results.csv" | awk -F, '{gsub(/"/, ""); print $1","$2","$3","$4","$6","$7","$8}' >"$T/cli.rows"
n=$(wc -l <"$T/cli.rows")
if [ "$n" -gt 10 ] && cmp -s "$T/cli.rows" "$T/c.csv"; then ok "embed.c agrees with uflow predict on $n images"
else ko "embed.c rows differ from uflow predict:"; diff "$T/cli.rows" "$T/c.csv" | head -5; fi
nf=0 nd=0
for f in $(cd "$T/cli" && find . -name '*.png'); do
    nf=$((nf + 1)); cmp -s "$T/cli/$f" "$T/c/$f" || nd=$((nd + 1))
done
[ "$nf" -ge $((3 * n)) ] && [ "$nd" -eq 0 ] && ok "embed.c wrote the same $nf files as uflow predict" \
    || ko "$nd of $nf output files differ or are missing"

# C++: pixels decoded by libpng; one image at a time (batch 1), so the score may differ
# from the batch of 8 of uflow predict in the last digits (oneDNN's summation order).
checked=0 cxx_bad=0
for img in $(head -n 6 "$T/cli.rows" | cut -d, -f1); do
    line=$(OMP_NUM_THREADS=1 "$T/embed_cpp" "$M" "$img" 2>&1 | head -n 1)
    ref=$(grep "^$img," "$T/cli.rows")
    checked=$((checked + 1))
    echo "$line" "$ref" | awk -F'[, ]' '{ d = $2 - $8; if (d < 0) d = -d;
        exit !(d <= 2e-6 && $3 == $9 && $4 == $10 && $5 == $11 && $6 == $12) }' || { cxx_bad=$((cxx_bad + 1)); echo "  $line | $ref"; }
done
[ "$checked" -eq 6 ] && [ "$cxx_bad" -eq 0 ] && ok "embed.cpp agrees with uflow predict on $checked images" || ko "embed.cpp: $cxx_bad of $checked differ"
out=$("$T/embed_cpp" "$M" "$T/missing.png" 2>&1); rc=$?
[ $rc -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && ok "embed.cpp: a missing file is one error line" || ko "missing file: rc $rc '$out'"
finish
