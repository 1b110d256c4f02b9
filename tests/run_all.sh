#!/bin/sh
# Runs each test binary given as argument and adds up their "RESULT p f"
# lines. A binary that crashes or prints no RESULT line counts as one failure.
# Ends with the line "N passed, N failed" and a non-zero status on failure.
passed=0
failed=0
for bin in "$@"; do
    name=$(basename "$bin")
    out=$("$bin" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -v '^RESULT ' | sed "s/^/[$name] /"
    res=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$res" ]; then
        echo "[$name] FAIL: exited with status $rc before finishing"
        failed=$((failed + 1))
        continue
    fi
    p=$(echo "$res" | cut -d' ' -f2)
    f=$(echo "$res" | cut -d' ' -f3)
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] FAIL: exited with status $rc"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
