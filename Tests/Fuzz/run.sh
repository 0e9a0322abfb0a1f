#!/bin/bash
# Builds the libFuzzer targets (coverage-guided, with AddressSanitizer) and
# runs each for a bounded time. A crash, a trap, a failed precondition, an
# ASan report or a timeout fails the run; libFuzzer writes the input that
# did it to .build-fuzz/artifacts/ (replay: .build-fuzz/fuzz-<target> FILE).
#
#   Tests/Fuzz/run.sh                    every target, FUZZ_SECONDS each (default 20)
#   Tests/Fuzz/run.sh http-request       one target
#   FUZZ_SECONDS=600 Tests/Fuzz/run.sh   longer
#
# Targets (one file each in Tests/Fuzz/):
#   http-request  HTTPRequestParser.parse, compiled with the three HTTP files
#                 it needs from TCPTopHTTP.
#   http-reply    the client reading replies (HTTPClientConnection.readReply),
#                 compiled with the client's files from TCPTopHTTP.
#   config        ExporterConfig.parse(yaml:), linked against TCPTopCore, Yams
#                 and libyaml as SwiftPM builds them (instrumented too) in
#                 .build-fuzz, a scratch path of its own.
# Seeds are Tests/Fuzz/corpus/<target>/ (committed); what the fuzzer finds
# goes to .build-fuzz/corpus/<target>/, so a run never writes into the tree.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-20}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(http-request http-reply config)
scratch=.build-fuzz
sanitize=-sanitize=fuzzer,address
mkdir -p "$scratch/artifacts"
# A failed precondition is reported by libFuzzer and ASan; the Swift
# backtracer on top of them only adds noise (and trips ASan itself).
export SWIFT_BACKTRACE=enable=no

# HTTPContentCoding and HTTPGunzip import CTCPTop (for zlib): a module map
# of our own for the same header, and shim.c with the libraries it links.
build_ctcptop_module() {
    mkdir -p "$scratch/ctcptop"
    printf 'module CTCPTop {\n    header "%s/Sources/CTCPTop/include/CTCPTop.h"\n    export *\n}\n' "$PWD" \
        >"$scratch/ctcptop/module.modulemap"
    set -e
    clang -c -O1 -fsanitize=address -I Sources/CTCPTop/include Sources/CTCPTop/shim.c -o "$scratch/ctcptop/shim.o"
}

build_http_request() {
    build_ctcptop_module
    swiftc $sanitize -parse-as-library -g -O -module-name FuzzHTTPRequest \
        -Xcc -fmodule-map-file="$scratch/ctcptop/module.modulemap" \
        Tests/Fuzz/HTTPRequestFuzz.swift Sources/TCPTopHTTP/HTTPRequestParser.swift \
        Sources/TCPTopHTTP/HTTPMessage.swift Sources/TCPTopHTTP/HTTPContentCoding.swift \
        "$scratch/ctcptop/shim.o" -lbpf -lelf -lz -lsystemd -lssl -lcrypto -o "$scratch/fuzz-http-request"
}

build_http_reply() {
    build_ctcptop_module
    swiftc $sanitize -parse-as-library -g -O -module-name FuzzHTTPReply \
        -Xcc -fmodule-map-file="$scratch/ctcptop/module.modulemap" \
        Tests/Fuzz/HTTPReplyFuzz.swift Sources/TCPTopHTTP/HTTPClient.swift Sources/TCPTopHTTP/HTTPClientConnection.swift \
        Sources/TCPTopHTTP/HTTPClientSocket.swift Sources/TCPTopHTTP/HTTPReplyParser.swift Sources/TCPTopHTTP/HTTPGunzip.swift \
        Sources/TCPTopHTTP/HTTPURL.swift Sources/TCPTopHTTP/HTTPMessage.swift Sources/TCPTopHTTP/HTTPContentCoding.swift \
        Sources/TCPTopHTTP/HTTPTransport.swift Sources/TCPTopHTTP/TLSSession.swift Sources/TCPTopHTTP/TLSContext.swift \
        Sources/TCPTopHTTP/HTTPSecuritySettings.swift \
        "$scratch/ctcptop/shim.o" -lbpf -lelf -lz -lsystemd -lssl -lcrypto -o "$scratch/fuzz-http-reply"
}

# The objects of a target's current sources (a scratch path kept across
# checkouts also holds those of files since removed).
objects() {
    local source
    for source in Sources/"$1"/*.swift; do printf '%s ' "$scratch/debug/$1.build/$(basename "$source").o"; done
}

build_config() {
    set -e
    swift build --scratch-path "$scratch" --target TCPTopCore -Xswiftc "$sanitize" -Xcc -fsanitize=fuzzer-no-link,address
    local debug="$scratch/debug"
    # TCPTopCore imports TCPTopHTTP (listen addresses, the web config's
    # settings, bcrypt), which imports CTCPTop: its module map, objects and libraries too.
    swiftc $sanitize -parse-as-library -g -module-name FuzzConfig -I "$debug/Modules" \
        -Xcc -fmodule-map-file="$debug/CTCPTop.build/module.modulemap" \
        Tests/Fuzz/ConfigFuzz.swift $(objects TCPTopCore) "$debug"/Yams.build/*.swift.o \
        "$debug"/CYaml.build/src/*.o $(objects TCPTopHTTP) "$debug"/Logging.build/*.swift.o \
        "$debug"/CTCPTop.build/shim.c.o -lbpf -lelf -lz -lsystemd -lcrypt -lssl -lcrypto -o "$scratch/fuzz-config"
}

status=0
for target in "${targets[@]}"; do
    case $target in
        http-request) max_len=10000 ;;  # past the 8 KiB head limit
        http-reply) max_len=10000 ;;  # past the fuzz target's 1 KiB head and 4 KiB body limits
        config) max_len=8192 ;;
        *) echo "fuzz: unknown target $target (http-request, http-reply, config)" >&2; exit 2 ;;
    esac
    # (ld.gold warns about every ASan symbol it cannot export: the build's output goes to a log.)
    "build_${target//-/_}" >"$scratch/build-$target.log" 2>&1 ||
        { grep -v 'Cannot export local symbol' "$scratch/build-$target.log" >&2; echo "fuzz: building $target failed" >&2; exit 1; }
    mkdir -p "$scratch/corpus/$target"
    echo "fuzz: $target for $seconds s"
    # -timeout: one input taking 5 s is a hang and fails the run. The outer
    # timeout bounds the whole run should libFuzzer itself not stop.
    if timeout --kill-after=10 $((seconds + 60)) "$scratch/fuzz-$target" \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$scratch/artifacts/$target-" \
        "$scratch/corpus/$target" "Tests/Fuzz/corpus/$target" >"$scratch/$target.log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)' \
            "$scratch/$target.log" | sed "s/^/fuzz: $target /"
    else
        status=1
        echo "fuzz: $target FAILED (log: $scratch/$target.log)" >&2
        grep -E 'ERROR|Fatal error|Precondition failed|SUMMARY|artifact|Test unit written' "$scratch/$target.log" | head -20 >&2
    fi
done
exit $status
