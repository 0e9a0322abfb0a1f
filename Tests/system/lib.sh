# Helpers for container-test.sh (sourced, not run): reporting, host
# packages, the Debian root filesystem cache, and the systemd-nspawn
# container with a real systemd as PID 1.

PASSED=0
FAILED=0

ok() {
    echo "ok - $1"
    PASSED=$((PASSED + 1))
}

not_ok() {
    echo "not ok - $1: $2"
    FAILED=$((FAILED + 1))
}

figure() {
    echo "# figure: $*"
}

note() {
    echo "# $*"
}

now_ns() {
    date +%s%N
}

# seconds_since START_NS -> "12.345"
seconds_since() {
    local elapsed=$(($(now_ns) - $1))
    printf '%d.%03d' $((elapsed / 1000000000)) $((elapsed / 1000000 % 1000))
}

# Installs the Debian packages this test needs on the host, if missing
# (bounded: 5 min for the index, 10 for the install, 2 for dpkg's lock).
ensure_host_packages() {
    local missing="" package
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
    done
    [ -z "$missing" ] && return 0
    note "installing on the host:$missing"
    timeout 300 apt-get -o DPkg::Lock::Timeout=120 update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=120 \
            install -y -qq --no-install-recommends $missing >/dev/null
}

# The Debian mirror this machine's apt uses, read from its configuration at
# run time (no mirror is written in this repository): the first "deb" source
# of a main suite (one without a "-security"/"-updates" part), deb822 first.
debian_mirror() {
    local file uri
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -r "$file" ] || continue
        uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/) types = $i
                    if ($i ~ /^URIs:/) uris = $i
                    if ($i ~ /^Suites:/) suites = $i
                    if ($i ~ /^Enabled:[ \t]*no/) enabled = "no"
                }
                if (enabled == "yes" && types ~ /[ \t]deb([ \t]|$)/ && suites ~ /[ \t][a-z]+([ \t]|$)/) {
                    sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$file")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$file" ] || continue
        uri=$(awk '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) ~ /^[a-z]+$/) { print $i; exit }
            }' "$file")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    return 1
}

# ensure_rootfs CACHE_DIR SUITE PACKAGES...: sets ROOTFS to a Debian root
# filesystem with these packages, built once (mmdebstrap) into
# CACHE_DIR/rootfs-<key>, where the key hashes everything that shapes it.
# Sets ROOTFS_BUILT_NOW (yes/no) and ROOTFS_BUILD_SECONDS (of the build that
# made it, now or earlier). Bounded: 15 min for another run's build (the lock),
# 15 min for mmdebstrap.
ROOTFS_RECIPE_VERSION=1
ensure_rootfs() {
    local cache=$1 suite=$2
    shift 2
    local packages key
    packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
    key=$(printf 'recipe=%s suite=%s variant=minbase packages=%s\n' "$ROOTFS_RECIPE_VERSION" "$suite" "$packages" |
        sha256sum | cut -c1-16)
    ROOTFS="$cache/rootfs-$key"
    ROOTFS_BUILT_NOW=yes
    [ -x "$ROOTFS/usr/lib/systemd/systemd" ] && ROOTFS_BUILT_NOW=no
    mkdir -p "$cache"
    (
        flock -w 900 9 || {
            echo "another run has held $cache/.lock for 15 min" >&2
            exit 1
        }
        [ -x "$ROOTFS/usr/lib/systemd/systemd" ] && exit 0
        mirror=${TCPTOP_DEBIAN_MIRROR:-$(debian_mirror)} || {
            echo "no Debian mirror found in this machine's apt configuration" >&2
            exit 1
        }
        partial="$cache/partial-$key"
        rm -rf "$partial"
        started=$(now_ns)
        note "building the $suite root filesystem from $mirror (once; cached in $ROOTFS)"
        # An empty /etc/fstab: with a root entry the container comes up "degraded".
        if ! timeout -k 30 900 mmdebstrap --variant=minbase --include="$packages" \
            --customize-hook=': > "$1/etc/fstab"' \
            "$suite" "$partial" "$mirror" >"$cache/mmdebstrap.log" 2>&1; then
            tail -20 "$cache/mmdebstrap.log" >&2
            rm -rf "$partial"
            exit 1
        fi
        seconds_since "$started" >"$partial/.tcptop-build-seconds"
        # Trees of older recipes are not used any more.
        rm -rf "$cache"/rootfs-*
        mv "$partial" "$ROOTFS"
    ) 9>"$cache/.lock" || return 1
    ROOTFS_BUILD_SECONDS=$(cat "$ROOTFS/.tcptop-build-seconds" 2>/dev/null || echo "?")
}

# --- the container ------------------------------------------------------------

NSPAWN_PID=""
CONTAINER_PID=""
CONTAINER_CGROUPS=()

# boot_container ROOTFS MACHINE STAGE LOGFILE: boots ROOTFS with systemd as
# PID 1 (writes go to a tmpfs overlay, the cached tree stays clean), with its
# own network namespace, STAGE bound read-only at /opt/tcptop-stage. Fails
# when its manager does not answer within 60 s.
boot_container() {
    local rootfs=$1 machine=$2 stage=$3 log=$4 mount
    # With --keep-unit nspawn puts the container in payload/ under its own
    # cgroup: nspawn starts in one of its own per machine, in the cgroup v2
    # and name=systemd hierarchies, or two containers at once (another run)
    # would share their units' cgroups, and one's systemd stop the other's services.
    CONTAINER_CGROUPS=()
    for mount in $(awk '{ for (i = 7; i < NF; i++) if ($i == "-") break
            if ($(i + 1) == "cgroup2" || ($(i + 1) == "cgroup" && $(i + 3) ~ /(^|,)name=systemd(,|$)/)) print $5 }' \
            /proc/self/mountinfo); do
        mkdir -p "$mount/tcptop-nspawn-$machine" && CONTAINER_CGROUPS+=("$mount/tcptop-nspawn-$machine")
    done
    # --register=no --keep-unit: there is no systemd/machined on the host.
    # --system-call-filter: without it bpf() and perf_event_open() are EPERM.
    (
        for mount in "${CONTAINER_CGROUPS[@]}"; do echo "$BASHPID" >"$mount/cgroup.procs"; done
        exec systemd-nspawn -b -D "$rootfs" --machine="$machine" --register=no --keep-unit \
            --volatile=overlay --capability=all --system-call-filter='bpf perf_event_open' \
            --private-network --console=read-only \
            --bind-ro="$stage:/opt/tcptop-stage" </dev/null >"$log" 2>&1
    ) &
    NSPAWN_PID=$!
    local child deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$NSPAWN_PID" 2>/dev/null || return 1
        # The container's PID 1 (nspawn's other children are short-lived helpers).
        CONTAINER_PID=""
        for child in $(cat "/proc/$NSPAWN_PID/task/$NSPAWN_PID/children" 2>/dev/null); do
            awk '$1 == "NSpid:" && $NF == 1 { found = 1 } END { exit !found }' "/proc/$child/status" 2>/dev/null &&
                CONTAINER_PID=$child
        done
        # Its manager answers on its private socket.
        if [ -n "$CONTAINER_PID" ] && [ -S "/proc/$CONTAINER_PID/root/run/systemd/private" ] &&
            timeout -k 2 5 nsenter -t "$CONTAINER_PID" -a -- systemd-run --wait --quiet --collect -- /bin/true \
                </dev/null >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Stops the container: SIGTERM makes nspawn shut it down in order; SIGKILL
# after 15 s. Only the nspawn process this script started is signalled.
show() { # show PROPERTY: one property of the unit ($unit) inside
    inside systemctl show -P "$1" "$unit"
}

journal() { # the unit's journal, message text only
    inside journalctl --no-pager -o cat -u "$unit"
}

# check_reload_to_json CONFIG WHAT: switch CONFIG's log format to json and
# `systemctl reload`: the journal line that confirms the reload must be
# json (the config was read again), the unit active, its MainPID the same.
check_reload_to_json() {
    local config=$1 what=$2 pid_before reload_out reload_rc reloaded=""
    pid_before=$(show MainPID)
    inside sed -i 's/^  format: logfmt$/  format: json/' "$config"
    reload_out=$(inside systemctl reload "$unit" 2>&1)
    reload_rc=$?
    for _ in $(seq 50); do
        reloaded=$(journal | grep -F 'configuration reloaded')
        [ -n "$reloaded" ] && break
        sleep 0.1
    done
    if [ "$reload_rc" -eq 0 ] && [[ "$reloaded" == "{"* ]] && [ "$(show ActiveState)" = active ] &&
        [ "$(show MainPID)" = "$pid_before" ]; then
        ok "systemctl reload re-reads $what (log format now json: $reloaded), same MainPID, active"
    else
        not_ok "systemctl reload re-reads $what" "rc=$reload_rc $reload_out; reloaded='$reloaded' state=$(show ActiveState) pid $pid_before -> $(show MainPID)"
    fi
}

# The container's whole journal, into the run's logs ($logs).
save_journal() {
    if [ -n "$NSPAWN_PID" ] && [ -n "$CONTAINER_PID" ]; then
        inside journalctl --no-pager -o short-monotonic >"$logs/journal.txt" 2>&1
    fi
}

# The end of a run, from its EXIT trap (end_run $?): the journal saved, the
# container stopped, whatever the script still runs in the background (a
# traffic job, an interrupted `inside`) killed, the stage ($stage) removed;
# then the counts, and exit 0 only if nothing failed.
end_run() {
    local status=$1 jobs_left
    trap - EXIT INT TERM
    save_journal
    stop_container
    jobs_left=$(jobs -p)
    [ -n "$jobs_left" ] && kill $jobs_left 2>/dev/null
    [ -n "$stage" ] && rm -rf "$stage"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && [ "$status" -eq 0 ] && exit 0
    exit 1
}

stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    kill -TERM "$NSPAWN_PID" 2>/dev/null
    local _
    for _ in $(seq 150); do
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$NSPAWN_PID" 2>/dev/null
    wait "$NSPAWN_PID" 2>/dev/null
    NSPAWN_PID=""
    # The container's cgroups, deepest first (empty once nspawn is gone).
    local cgroup
    for cgroup in "${CONTAINER_CGROUPS[@]}"; do
        find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    CONTAINER_CGROUPS=()
}

# inside CMD...: runs CMD in the container as a transient unit of its
# systemd, stdout/stderr passed through, exit status kept; 60 s at most
# (INSIDE_TIMEOUT to change). Runs in the background and is waited for so
# that a signal to this script is handled at once.
inside() {
    timeout -k 5 "${INSIDE_TIMEOUT:-60}" nsenter -t "$CONTAINER_PID" -a -- \
        systemd-run --wait --pipe --quiet --collect -- "$@" </dev/null &
    wait $!
}

# inside_sh SCRIPT: a shell script inside the container.
inside_sh() {
    inside /bin/sh -c "$1"
}

# The host pid of the process that is CONTAINER_CHILD_PID in the container's
# pid namespace (from NSpid in /proc/*/status).
host_pid_of() {
    local want=$1 namespace status
    namespace=$(readlink "/proc/$CONTAINER_PID/ns/pid")
    for status in /proc/[0-9]*/status; do
        local pids
        pids=$(awk '$1 == "NSpid:" { print $2, $NF; exit }' "$status" 2>/dev/null) || continue
        set -- $pids
        [ $# -eq 2 ] && [ "$2" = "$want" ] && [ "$1" != "$want" ] || continue
        [ "$(readlink "/proc/$1/ns/pid" 2>/dev/null)" = "$namespace" ] && { echo "$1"; return 0; }
    done
    return 1
}

# --- BPF programs -------------------------------------------------------------

# Ids of the loaded BPF programs named tcptop_*.
tcptop_program_ids() {
    bpftool prog show 2>/dev/null | awk '/^[0-9]+: .* name tcptop_/ { sub(":", "", $1); print $1 }' | sort
}

# Ids of the BPF programs the process HOST_PID holds (program and link fds).
program_ids_of() {
    grep -hs '^prog_id:' /proc/"$1"/fdinfo/* | awk '{ print $2 }' | sort -nu
}

# Ids of BPF programs that any process holds, as "id pid" lines.
program_holders() {
    grep -Hs '^prog_id:' /proc/[0-9]*/fdinfo/* |
        awk -F'[/:\t ]+' '{ print $(NF), $3 }' | sort -u
}

# --- traffic with known bytes inside the container ------------------------------

# start_traffic STAGE_DIR LOG: runs traffic-in-container.sh (from the stage
# bound at /opt/tcptop-stage) in the background as TRAFFIC_JOB, waits (30 s at
# most) until its peers hold their sockets, then sets EXPECTED to the exact
# /metrics lines of their 4 connection ends (the shipped per-connection view),
# their pids mapped to the host's, the pids BPF sees. Notes each exchange.
TRAFFIC_DIR=/run/tcptop-traffic
start_traffic() {
    INSIDE_TIMEOUT=90 inside /bin/bash /opt/tcptop-stage/traffic-in-container.sh \
        /opt/tcptop-stage/traffic_peer.py "$TRAFFIC_DIR" >"$1" 2>&1 &
    TRAFFIC_JOB=$!
    local peers="/proc/$CONTAINER_PID/root$TRAFFIC_DIR/peers" _
    for _ in $(seq 300); do
        [ -s "$peers" ] && break
        kill -0 "$TRAFFIC_JOB" 2>/dev/null || break
        sleep 0.1
    done
    EXPECTED=()
    [ -s "$peers" ] || return 1
    local tag family server_pid server_port client_pid client_port client_sends server_sends
    local host_server host_client fam addr client server
    while read -r tag family server_pid server_port client_pid client_port client_sends server_sends; do
        host_server=$(host_pid_of "$server_pid")
        host_client=$(host_pid_of "$client_pid")
        if [ "$family" = 4 ]; then fam=ipv4 addr=127.0.0.1; else fam=ipv6 addr=::1; fi
        client="comm=\"tt-$tag-cli\",family=\"$fam\",laddr=\"$addr\",lport=\"$client_port\",raddr=\"$addr\",rport=\"$server_port\"}"
        server="comm=\"tt-$tag-srv\",family=\"$fam\",laddr=\"$addr\",lport=\"$server_port\",raddr=\"$addr\",rport=\"$client_port\"}"
        EXPECTED+=(
            "tcptop_sent_bytes_total{pid=\"$host_client\",$client $client_sends"
            "tcptop_received_bytes_total{pid=\"$host_client\",$client $server_sends"
            "tcptop_sent_bytes_total{pid=\"$host_server\",$server $server_sends"
            "tcptop_received_bytes_total{pid=\"$host_server\",$server $client_sends"
        )
        note "exchange $tag: client pid $client_pid (host $host_client) sent $client_sends," \
            "server pid $server_pid (host $host_server) sent $server_sends"
    done <"$peers"
}

# release_traffic: the peers close and exit; returns the traffic job's status.
release_traffic() {
    touch "/proc/$CONTAINER_PID/root$TRAFFIC_DIR/release" 2>/dev/null
    wait "$TRAFFIC_JOB"
}

# compare_metrics WHAT FILE: every EXPECTED line, exactly, in FILE (a scrape).
compare_metrics() {
    local what=$1 file=$2 line missing=()
    for line in "${EXPECTED[@]}"; do
        grep -Fxq "$line" "$file" || missing+=("$line")
    done
    if [ "${#EXPECTED[@]}" -eq 8 ] && [ "${#missing[@]}" -eq 0 ]; then
        ok "curl localhost:9435/metrics inside: exact bytes of 4 connection ends, IPv4 and IPv6 ($what)"
    else
        not_ok "curl localhost:9435/metrics inside: exact bytes ($what)" \
            "${#EXPECTED[@]} expected lines, missing: ${missing[*]:-}; served: $(grep '^tcptop_[a-z_]*bytes_total{.*comm="tt-' "$file" | paste -sd'|' -)"
    fi
}
