#!/bin/bash
# Runs INSIDE the test container (started by container-test.sh through
# systemd-run). Makes two TCP exchanges with Tests/traffic_peer.py, one over
# IPv4 and one over IPv6 loopback, with chosen process names and known byte
# counts, and keeps all four sockets open until the host says "release", so
# that the host can map the peers' pids (container pid namespace) to the pids
# the kernel, and so the exporter, knows them by.
#
#   traffic-in-container.sh PEER_SCRIPT STATE_DIR
#
# STATE_DIR/peers   written once every peer has moved its bytes and holds its
#                   socket, one line per exchange:
#                   TAG FAMILY SERVER_PID SERVER_PORT CLIENT_PID CLIENT_PORT CLIENT_SENDS SERVER_SENDS
# STATE_DIR/release created by the host: the peers close and exit.
# STATE_DIR/done    written once every peer printed DONE.
#
# Every wait is bounded: 20 s for each line a peer should print, 60 s for the
# release, and the peers bound their own waits (traffic_peer.py --timeout,
# --deadline). On any exit, peers still running are ended.
set -euo pipefail

peer=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir"

# The peers' pids ($! of each pipeline is its python) and the release_line
# subshells (jobs -p): ended on exit, by pid.
peer_pids=()
end_peers() {
    local left
    left="${peer_pids[*]} $(jobs -p | paste -sd' ' -)"
    [ -n "${left// /}" ] && { kill $left 2>/dev/null || true; }
    return 0
}
trap end_peers EXIT

# Prints a line on stdout once $dir/release exists (bounded), for --hold.
release_line() {
    for _ in $(seq 600); do
        [ -e "$dir/release" ] && break
        sleep 0.1
    done
    echo release
}

# wait_for FILE PATTERN: until a line of FILE matches PATTERN (bounded, 20 s).
wait_for() {
    for _ in $(seq 200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2 || true
    exit 1
}

# exchange TAG FAMILY CLIENT_SENDS SERVER_SENDS
exchange() {
    local tag=$1 family=$2 client_sends=$3 server_sends=$4 server_port
    release_line | python3 "$peer" serve --family "$family" --name "tt-$tag-srv" \
        --receive "$client_sends" --send "$server_sends" --hold >"$dir/$tag.server" 2>&1 &
    peer_pids+=("$!")
    wait_for "$dir/$tag.server" '^READY '
    server_port=$(sed -n 's/^READY pid=[0-9]* port=\([0-9]*\)$/\1/p' "$dir/$tag.server")
    release_line | python3 "$peer" connect --family "$family" --name "tt-$tag-cli" --port "$server_port" \
        --send "$client_sends" --receive "$server_sends" --seed 7 --hold >"$dir/$tag.client" 2>&1 &
    peer_pids+=("$!")
    wait_for "$dir/$tag.client" '^HOLDING'
    wait_for "$dir/$tag.server" '^HOLDING'
    echo "$tag $family" \
        "$(sed -n 's/^READY pid=\([0-9]*\) port=\([0-9]*\)$/\1 \2/p' "$dir/$tag.server")" \
        "$(sed -n 's/^READY pid=\([0-9]*\) port=\([0-9]*\)$/\1 \2/p' "$dir/$tag.client")" \
        "$client_sends $server_sends" >>"$dir/peers.part"
}

exchange v4 4 1000003 123457
exchange v6 6 1 654321
mv "$dir/peers.part" "$dir/peers"
cat "$dir/peers"

for tag in v4 v6; do
    for side in server client; do
        wait_for "$dir/$tag.$side" '^DONE'
    done
done
# Every peer printed DONE, so each is exiting; each release_line ends within
# 0.1 s of the release.
wait
peer_pids=()
touch "$dir/done"
echo DONE
