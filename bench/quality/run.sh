#!/bin/bash
# make bench-quality: U-Flow's quality with the product defaults on each data set, and a kNN
# diagnostic row on the same backbone features (bench/quality/README.md).
#
#   bench/quality/run.sh [DATA_DIR | demo]...
#
# Each argument is an MVTec-layout category folder (anything `uflow train/test --data` takes);
# "demo" is uflow demo's generated data set, written to $OUT/demo/data. Without arguments:
# ../shared/data/mtd and ../shared/data/bsd where they exist, then demo.
# Environment:
#   EPOCHS   epoch cap (default 10; set and empty: the product default)
#   THREADS  --threads of every step (default empty: all cores)
#   OUT      output folder (default bench-quality-out)
#   KNN_FEATURES  the kNN diagnostic's bank size (default 10000: BSD's 5000 test tiles against a
#            50000-vector bank would take about 45 minutes on 2 cores; 10000 about 9)
#   UFLOW, DEMO_DATA  the programs (default build/uflow, build/bench/quality_demo_data; make passes them)
set -euo pipefail
cd "$(dirname "$0")/../.."

EPOCHS=${EPOCHS-10}
KNN_FEATURES=${KNN_FEATURES:-10000}
THREADS=${THREADS-}
OUT=${OUT:-bench-quality-out}
UFLOW=${UFLOW:-build/uflow}
DEMO_DATA=${DEMO_DATA:-build/bench/quality_demo_data}

die() {
    echo "bench-quality: error: $*" >&2
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

[ -x "$UFLOW" ] || die "$UFLOW not found: run 'make bench-quality' (it builds first)"
command -v python3 >/dev/null || die "python3 is needed to read the JSON results (apt-get install python3)"
case "$EPOCHS" in '' | *[!0-9]* | 0) [ -z "$EPOCHS" ] || die "EPOCHS must be a positive integer or empty, not '$EPOCHS'" ;; esac
case "$THREADS" in *[!0-9]*) die "THREADS must be a number or empty, not '$THREADS'" ;; esac

sets=("$@")
if [ ${#sets[@]} -eq 0 ]; then
    for d in ../shared/data/mtd ../shared/data/bsd; do
        [ -d "$d" ] && sets+=("$d")
    done
    sets+=(demo)
fi

threads_opt=()
[ -n "$THREADS" ] && threads_opt=(--threads "$THREADS")
epochs_opt=()
[ -n "$EPOCHS" ] && epochs_opt=(--epochs "$EPOCHS")

# "<step> on <set>": the command, its output into LOG as well; a failure stops the run.
step() {
    local what=$1 log=$2
    shift 2
    echo "== $what: $*"
    if ! "$@" 2>&1 | tee "$log"; then
        die "$what failed (exit status ${PIPESTATUS[0]}): $* (log: $log)"
    fi
}

mkdir -p "$OUT"
names=()
for d in "${sets[@]}"; do
    if [ "$d" = demo ]; then
        name=demo
    else
        [ -d "$d" ] || die "'$d' is not a folder (give MVTec-layout category folders, or 'demo')"
        name=$(basename "$(cd "$d" && pwd)")
        case "$name" in '' | / | . | ..) die "'$d': cannot name its results after it" ;; esac
    fi
    base=$name
    i=2
    while [[ " ${names[*]-} " == *" $name "* ]]; do
        name=$base-$i
        i=$((i + 1))
    done
    names+=("$name")
    dir=$OUT/$name
    mkdir -p "$dir"
    rm -f "$dir/run.json" "$dir/knn.json" "$dir/eval/metrics.json" # no stale results in the table
    if [ "$d" = demo ]; then
        [ -x "$DEMO_DATA" ] || die "$DEMO_DATA not found: run 'make bench-quality' (it builds first)"
        d=$dir/data
        step "writing the demo data set" "$dir/data.log" "$DEMO_DATA" "$d"
    fi
    model=$dir/model.safetensors

    t0=$(now)
    step "train on $name" "$dir/train.log" "$UFLOW" train --data "$d" -o "$model" ${epochs_opt[@]+"${epochs_opt[@]}"} \
        ${threads_opt[@]+"${threads_opt[@]}"}
    t1=$(now)
    step "test on $name" "$dir/test.log" "$UFLOW" test --model "$model" --data "$d" -o "$dir/eval" \
        ${threads_opt[@]+"${threads_opt[@]}"}
    t2=$(now)
    step "kNN diagnostic on $name" "$dir/knn.log" "$UFLOW" bench knn --model "$model" --data "$d" \
        --json "$dir/knn.json" --max-train-features "$KNN_FEATURES" ${threads_opt[@]+"${threads_opt[@]}"}
    [ -f "$dir/eval/metrics.json" ] || die "uflow test wrote no $dir/eval/metrics.json"
    python3 -c 'import json, sys; json.dump({"data": sys.argv[1], "train_seconds": float(sys.argv[2]),
                "test_seconds": float(sys.argv[3])}, open(sys.argv[4], "w"), indent=1)' \
        "$d" "$(elapsed "$t0" "$t1")" "$(elapsed "$t1" "$t2")" "$dir/run.json"
done

cpu=$(lscpu 2>/dev/null | grep -m1 '^Model name:' | sed 's/^Model name:[[:space:]]*//' || true)
[ -n "$cpu" ] || cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^model name[[:space:]]*:[[:space:]]*//' || true)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (with uncommitted changes)"
table=$(python3 bench/quality/table.py "$OUT" "${names[@]}") || die "could not build the table"
{
    echo "CPU: ${cpu:-unknown} ($(nproc) cores)"
    echo "Commit: $commit"
    echo "Settings: product defaults, epochs ${EPOCHS:-default (100, early stopping)}, threads ${THREADS:-all}; $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "Training: wall seconds of uflow train; test ms/image: wall time of uflow test (which also scores the"
    echo "training images for its score threshold) / test images. kNN: uflow bench knn on the same backbone features."
    echo
    echo "$table"
} >"$OUT/quality.md"
echo
cat "$OUT/quality.md"
echo
echo "written to $OUT/quality.md"
