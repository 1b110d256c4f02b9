#!/bin/sh
# Runs each libFuzzer target for a while: fuzz/run.sh BUILD_DIR SECONDS TARGET...
# (make fuzz). Each target starts from a scratch copy of fuzz/corpus/<target>
# in BUILD_DIR/corpus/<target> (the committed seeds never grow) and runs alone,
# single-threaded, with 2 GB RSS and malloc limits and a 10 s per-input
# timeout. A crash, leak, UBSan report, out-of-memory or timeout fails the
# target; its input is kept as BUILD_DIR/artifacts/<target>/crash-... (or
# leak-, oom-, timeout-). Ends with "N targets passed, N failed".
dir=$1
secs=$2
shift 2
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
passed=0
failed=0
for t in "$@"; do
    corpus="$dir/corpus/$t"
    art="$dir/artifacts/$t"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$art"
    cp fuzz/corpus/"$t"/* "$corpus"/
    dict=""
    [ -f fuzz/"$t".dict ] && dict="-dict=fuzz/$t.dict"
    [ "$t" = dataset ] && dict="-max_len=256" # programs of up to 64 ops (the seeds are shorter)
    echo "fuzz: $t for ${secs}s (log: $dir/$t.log)"
    "$dir/fuzz_$t" "$corpus" $dict -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -timeout=10 -close_fd_mask=3 -print_final_stats=1 \
        -artifact_prefix="$art/" >"$dir/$t.log" 2>&1
    rc=$?
    tail -n 1 "$dir/$t.log" | sed "s/^/fuzz: $t: /"
    grep -E '^#[0-9]+.*(DONE|INITED)' "$dir/$t.log" | tail -n 1 | sed "s/^/fuzz: $t: /"
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "fuzz: $t FAILED (status $rc); the input is in $art/, the report in $dir/$t.log:"
        grep -E 'ERROR: |runtime error|SUMMARY|fuzz invariant|internal error' "$dir/$t.log" | head -n 5
    fi
done
echo "$passed targets passed, $failed failed"
[ "$failed" -eq 0 ]
