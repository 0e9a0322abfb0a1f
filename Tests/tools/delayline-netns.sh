#!/bin/bash
# The two network namespaces a delay line (Tests/tools/delayline.c) joins:
#
#   Tests/tools/delayline-netns.sh up NAME     makes NAME-a and NAME-b, loopback up
#   Tests/tools/delayline-netns.sh down NAME   deletes both (what exists of them)
#
# Then, for example (root):
#   delayline --ns-a NAME-a --ns-b NAME-b --delay-ms 40 --drop-percent 3 \
#             --drop-match data --drop-side a --seconds 60
# gives 10.77.0.1 in NAME-a and 10.77.0.2 in NAME-b, 40 ms apart each way.
# Every ip call is bounded (timeout 10 s); a failed `up` removes what it made.
set -uo pipefail

usage() { echo "usage: $0 up|down NAME" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1 name=$2
[[ $name =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || { echo "$0: bad namespace name: $name" >&2; exit 2; }

down() {
    local side
    for side in a b; do
        if [ -e "/run/netns/$name-$side" ]; then
            timeout 10 ip netns delete "$name-$side" || echo "$0: could not delete $name-$side" >&2
        fi
    done
}

case $action in
    up)
        for side in a b; do
            if ! timeout 10 ip netns add "$name-$side" || ! timeout 10 ip -n "$name-$side" link set lo up; then
                echo "$0: could not make namespace $name-$side" >&2
                down
                exit 1
            fi
        done
        ;;
    down) down ;;
    *) usage ;;
esac
