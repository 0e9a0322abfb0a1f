#!/usr/bin/env bash
# `swift test`, its whole output kept in .build/swift-test.log. On failure
# the output ends with what failed: the failed expectations and a crash's
# first lines and frames (CI shows only the end of a long output, and a
# crash's register and image dump would otherwise be all of it).
set -uo pipefail
cd "$(dirname "$0")/../.."
log=.build/swift-test.log
mkdir -p .build
${SWIFT:-swift} test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" != 0 ]; then
	echo "=== swift test failed (exit $status); the whole output: $log"
	grep -n "✘" "$log" | head -40
	grep -n -m1 -A60 -E "Program crashed|Fatal error|crashed:" "$log" | grep -v -E "^[0-9]+-(r[a-z0-9]+|rip|rflags|cs) " | head -70
fi
exit "$status"
