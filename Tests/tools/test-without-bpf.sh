#!/bin/bash
# The test suite with bpf(2) refused: `swift test` runs under a seccomp filter
# (Tests/tools/no-bpf.c) that makes every bpf() call of it and of everything
# it starts fail with EPERM, as a kernel or a sandbox that forbids BPF would.
# No tracer can load, so the BPF tests FAIL; what this checks is how: each
# with a readable message, quickly, and the run ENDS (no test hangs waiting
# for a tracer that never started).
#
#   make test-without-bpf                           (root; not part of make test)
#   Tests/tools/test-without-bpf.sh [swift test arguments, e.g. --filter DaemonTests]
#
# Prints the run, then a summary: how long it took, how many tests failed.
# Exits 0 when the suite failed and ended within the bound (the expected
# outcome), 1 when it passed (bpf() not refused?), 2 when it did not end
# within TCPTOP_NO_BPF_TIMEOUT seconds (default 600): then every process it
# started is killed and the tests still running are named.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bound=${TCPTOP_NO_BPF_TIMEOUT:-600}
tool="$root/.build/tools/no-bpf"
log="$root/.build/test-without-bpf.log"

mkdir -p "$root/.build/tools"
gcc -O2 -Wall -Wextra -Werror -o "$tool" "$here/no-bpf.c" || exit 1
# The filter works: bpftool cannot list programs under it.
if command -v bpftool >/dev/null && "$tool" bpftool prog show >/dev/null 2>&1; then
    echo "test-without-bpf: bpf() still works under the filter" >&2
    exit 1
fi

# Every descendant of PID (children first found, deepest last).
descendants() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

cd "$root" || exit 1
started=$(date +%s%N)
"$tool" swift test "$@" > >(tee "$log") 2>&1 &
runner=$!
timed_out=no
deadline=$(( $(date +%s) + bound ))
while kill -0 "$runner" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        timed_out=yes
        # swift test starts the test bundle in a process group of its own:
        # signal each process of this run by id, not the group.
        pids="$runner $(descendants "$runner")"
        kill -KILL $pids 2>/dev/null
        break
    fi
    sleep 1
done
wait "$runner"
status=$?
sleep 0.2  # let tee write the last lines
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
seconds=$(printf '%d.%01d' $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100)))

failed=$(grep -E '^✘ Test .* failed after' "$log" | grep -vc '^✘ Test run with ')
echo
echo "== test-without-bpf: bpf() refused (EPERM) for swift test and its children"
grep -E '^[✔✘] Test run with ' "$log" | sed 's/^/== /'
echo "== $failed test functions failed; swift test exited $status after $seconds s (bound $bound s); log: $log"
if [ "$timed_out" = yes ]; then
    echo "== NOT ENDED within $bound s: killed. Started but never finished:"
    grep -E '^◇ Test .* started\.$' "$log" | sed -E 's/^◇ Test (.*) started\.$/\1/' | sort -u >"$log.started"
    grep -E '^[✔✘] Test .* (passed|failed) after' "$log" |
        sed -E 's/^[✔✘] Test (.*) (with [0-9]+ test cases? )?(passed|failed) after.*/\1/' | sort -u >"$log.ended"
    comm -23 "$log.started" "$log.ended" | grep -v '^case passing' | sed 's/^/==   /'
    exit 2
fi
if [ "$status" -eq 0 ]; then
    echo "== the suite PASSED with bpf() refused: the filter did not take effect?"
    exit 1
fi
echo "== as expected: the suite failed, with the messages above, and ended"
exit 0
