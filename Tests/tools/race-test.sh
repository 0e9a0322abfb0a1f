#!/bin/bash
# The daemon built with ThreadSanitizer, under reloads racing scrapes: every
# 100 ms a SIGHUP swaps the web section (a second listener, another
# telemetry path), the poll interval and the log format, while four clients
# scrape without pause, over TLS with basic auth (the web config file), while
# the certificate is replaced on disk every 300 ms (a new TLS context for
# the next connections). Any data race ThreadSanitizer sees fails the run.
#
#   Tests/tools/race-test.sh            (root: the daemon loads BPF)
#   RACE_SECONDS=60 Tests/tools/race-test.sh
#
# Builds into .build-tsan/ (its own scratch path). Every wait is bounded.
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${RACE_SECONDS:-15}
scratch=.build-tsan
work=$(mktemp -d)
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill -KILL "$daemon_pid" 2>/dev/null
    jobs -p | xargs -r kill 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

timeout 1800 swift build --sanitize=thread --scratch-path "$scratch" --product tcptop-exporter >"$work/build.txt" 2>&1 ||
    { tail -20 "$work/build.txt"; echo "not ok - ThreadSanitizer build failed"; exit 1; }
binary=$(swift build --sanitize=thread --scratch-path "$scratch" --show-bin-path)/tcptop-exporter

port=$((20000 + RANDOM % 20000))
# A CA, a server certificate it signs (made again to rotate it), basic auth.
key_options="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
openssl req -x509 $key_options -subj /CN=race-ca -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
make_certificate() { # make_certificate SERIAL: server.crt and server.key, replaced by rename
    openssl req -x509 $key_options -subj /CN=localhost -CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "$1" \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$work/server.key.new" -out "$work/server.crt.new" 2>/dev/null &&
        mv "$work/server.key.new" "$work/server.key" && mv "$work/server.crt.new" "$work/server.crt"
}
make_certificate 1
printf 'tls_server_config: {cert_file: server.crt, key_file: server.key}\nbasic_auth_users:\n  race: %s\n' \
    "$(htpasswd -nbBC 4 race race-pw | cut -d: -f2)" >"$work/web.yml"
tls=(--cacert "$work/ca.crt" -u race:race-pw)
write_config() { # write_config VARIANT
    if [ "$1" = a ]; then
        printf 'web:\n  listen_addresses: ["127.0.0.1:%d"]\n  config_file: %s\nconnections:\n  poll_interval: 100ms\nlog:\n  format: logfmt\n' "$port" "$work/web.yml"
    else
        printf 'web:\n  listen_addresses: ["127.0.0.1:%d", "127.0.0.1:%d"]\n  config_file: %s\n  telemetry_path: /other\n  max_requests: 7\nconnections:\n  poll_interval: 150ms\nlog:\n  format: json\n' "$port" $((port + 1)) "$work/web.yml"
    fi >"$work/config.new" && mv "$work/config.new" "$work/config.yml"
}
write_config a
# halt_on_error: the first race ends the daemon with a report; exitcode 66 says it was TSan.
TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" \
    "$binary" --config.file="$work/config.yml" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 300); do
    curl -s -o /dev/null -m 1 "${tls[@]}" "https://127.0.0.1:$port/metrics" && break
    sleep 0.1
done

scraper() {
    local end=$((SECONDS + seconds))
    while [ $SECONDS -lt $end ]; do
        curl -s -m 5 "${tls[@]}" --compressed -o /dev/null "https://127.0.0.1:$port/metrics" -o /dev/null "https://127.0.0.1:$port/other"
        curl -s -o /dev/null -m 5 "${tls[@]}" -I "https://127.0.0.1:$port/metrics"
    done
}
rotator() {
    local end=$((SECONDS + seconds)) serial=2
    while [ $SECONDS -lt $end ]; do
        make_certificate $serial
        serial=$((serial + 1))
        sleep 0.3
    done
}
for _ in 1 2 3 4; do scraper & done
rotator &
reloads=0
end=$((SECONDS + seconds))
while [ $SECONDS -lt $end ] && kill -0 "$daemon_pid" 2>/dev/null; do
    if [ $((reloads % 2)) = 0 ]; then write_config b; else write_config a; fi
    kill -HUP "$daemon_pid"
    reloads=$((reloads + 1))
    sleep 0.1
done
wait $(jobs -p | grep -v "^$daemon_pid$") 2>/dev/null
# The scrapes were served over TLS all along, with the last certificate.
served=$(curl -s -m 5 -o /dev/null -w "%{http_code}" "${tls[@]}" "https://127.0.0.1:$port/")  # / in both variants
kill -TERM "$daemon_pid" 2>/dev/null
status=""
for _ in $(seq 100); do
    kill -0 "$daemon_pid" 2>/dev/null || { wait "$daemon_pid"; status=$?; break; }
    sleep 0.1
done
[ -z "$status" ] && { kill -KILL "$daemon_pid"; status=killed; }
daemon_pid=""
reloaded=$(grep -c 'configuration reloaded' "$work/daemon.log")
rotated=$(grep -c 'TLS certificate reloaded' "$work/daemon.log")
races=$(grep -c 'WARNING: ThreadSanitizer' "$work/daemon.log")
echo "# figure: $reloads reloads sent, $reloaded logged, $rotated certificate rotations served, in ${seconds} s with 4 TLS scrapers; last scrape $served; exit $status"
if [ "$status" = 0 ] && [ "$races" = 0 ] && [ "$reloaded" -gt $((reloads / 2)) ] && [ "$rotated" -gt 0 ] && [ "$served" = 200 ]; then
    echo "ok - no data race under ThreadSanitizer: reloads racing scrapes, clean exit"
else
    grep -A30 'WARNING: ThreadSanitizer' "$work/daemon.log" | head -60
    tail -5 "$work/daemon.log"
    echo "not ok - reloads racing scrapes under ThreadSanitizer: exit $status, $races races, $reloaded of $reloads reloads logged, $rotated rotations, last scrape $served"
    exit 1
fi
