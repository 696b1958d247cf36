#!/usr/bin/env bash
# Long coverage-guided fuzzing runs with atheris (see docs/reliability.md).
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [-m] [TARGET ...]
#
#   -t SECONDS  time per target (default 600)
#   -j JOBS     targets fuzzed at once (default: number of CPUs)
#   -m          merge the inputs that add coverage into tests/robustness/corpus/<target>/
#               (minimised with libFuzzer's -merge=1) for committing
#   TARGET      ikev2_decoder ikev1_decoder ikev2_engine ikev1_engine esp control config
#               (default: all)
#
# Each target runs from its committed corpus plus a work corpus kept in
# ${RBIPSEC_FUZZ_DIR:-/tmp/rbipsec-fuzz}/<target>/ (so runs resume), crashes are written
# there as crash-*, and a table of runs, seconds, executions/s and crashes is printed.
# Known findings (tests/robustness/fuzz_targets.py KNOWN) are passed over; set
# RBIPSEC_FUZZ_KNOWN=1 to stop at them too.  Exit status 1 when any target crashed.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=600
jobs=$(nproc)
merge=0
while getopts "t:j:m" option; do
    case $option in
        t) seconds=$OPTARG ;;
        j) jobs=$OPTARG ;;
        m) merge=1 ;;
        *) sed -n 2,20p "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ikev2_decoder ikev1_decoder ikev2_engine ikev1_engine esp control config)
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in .venv/bin/python python3; do
        if [ -x "$candidate" ] || command -v "$candidate" >/dev/null; then
            python=$candidate
            break
        fi
    done
fi
if ! "$python" -c "import atheris" 2>/dev/null; then
    echo "atheris is not installed for $python (pip install atheris)" >&2
    exit 2
fi

work=${RBIPSEC_FUZZ_DIR:-/tmp/rbipsec-fuzz}
corpus=tests/robustness/corpus

run_one() {
    local target=$1
    mkdir -p "$work/$target"
    "$python" -m tests.robustness.fuzz_main "$target" -max_total_time="$seconds" \
        -artifact_prefix="$work/$target/" -print_final_stats=1 \
        "$work/$target" "$corpus/$target" >"$work/$target.log" 2>&1
    echo $? >"$work/$target.rc"
}

mkdir -p "$work"
running=0
for target in "${targets[@]}"; do
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

status=0
printf "%-14s %10s %8s %8s %7s %s\n" target runs seconds exec/s crashes "coverage (edges)"
for target in "${targets[@]}"; do
    log=$work/$target.log
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    crashes=$(find "$work/$target" -maxdepth 1 -name 'crash-*' | wc -l)
    rc=$(cat "$work/$target.rc")
    if [ "$rc" != 0 ]; then
        status=1
        crashes="$crashes (rc $rc, see $log)"
    fi
    rate=0
    if [ -n "$secs" ] && [ "$secs" -gt 0 ]; then
        rate=$((runs / secs))
    fi
    printf "%-14s %10s %8s %8s %7s %s\n" "$target" "${runs:-?}" "${secs:-?}" "$rate" \
        "$crashes" "${cov:-?}"
    if [ "$merge" = 1 ]; then
        "$python" -m tests.robustness.fuzz_main "$target" -merge=1 "$corpus/$target" \
            "$work/$target" >"$work/$target.merge.log" 2>&1 || status=1
    fi
done
exit $status
