# Sourced by container-test.sh: the unit attribution under a real systemd.
# check_unit_attribution runs a transient unit (systemd-run
# --unit=tcptop-probe, as User=nobody) whose two traffic peers move known
# bytes over loopback, and checks that the daemon, running under the
# shipped unit with a view that keeps the attribution labels, shows them on
# series with those bytes: unit="tcptop-probe.service", its cgroup path as
# the container sees it, uid and user, both roles, the server port and
# "ephemeral" for the client's, remote_network="loopback".
#
# The daemon's config is swapped for one with that view for the check
# (views take effect at a restart) and put back after. The probe stays
# alive until the scrape: a cgroup that is gone cannot be named any more.
# Needs lib.sh's inside/ok/not_ok and container-test.sh's $unit and $logs.

# series_value FILE NAME 'label="value"'...: the value of the first NAME
# sample that has every one of these labels (values without commas).
series_value() {
    local file=$1 name=$2
    shift 2
    awk -v name="$name" '
        BEGIN { n = ARGC - 2; for (i = 1; i <= n; i++) pairs[i] = ARGV[i + 1]; ARGC = 2 }
        index($0, name "{") == 1 {
            labels = "," substr($0, length(name) + 2, length($0) - length(name) - length($NF) - 3) ","
            for (i = 1; i <= n; i++) if (!index(labels, "," pairs[i] ",")) next
            print $NF; exit
        }' "$file" "$@"
}

# exchange_script NAME CLIENT_SENDS SERVER_SENDS DONE_FILE: the shell text
# a unit runs (its RuntimeDirectory /run/NAME-with-tcptop-): a server and a
# client, both its own, move the bytes; then "port=P" goes to DONE_FILE.
exchange_script() {
    local name=$1 client_sends=$2 server_sends=$3 done_file=$4
    echo "peer=/opt/tcptop-stage/traffic_peer.py dir=/run/${name/tt-/tcptop-}
        python3 \$peer serve --name $name-srv --receive $client_sends --send $server_sends >\$dir/server 2>&1 &
        for _ in \$(seq 200); do grep -q '^READY' \$dir/server && break; sleep 0.05; done
        port=\$(sed -n 's/^READY pid=[0-9]* port=\([0-9]*\)\$/\1/p' \$dir/server)
        python3 \$peer connect --name $name-cli --port \"\$port\" --send $client_sends --receive $server_sends \
            >\$dir/client 2>&1 && wait && echo \"port=\$port\" >$done_file"
}

check_unit_attribution() {
    local config saved probe=tcptop-probe.service client_sends=1000003 server_sends=54321
    config=$(show ExecStart | sed -n 's/.*--config\.file[= ]\([^ ;]*\).*/\1/p')
    saved="$config.before-attribution"
    if [ -z "$config" ] || ! inside cp "$config" "$saved"; then
        not_ok "unit attribution" "no --config.file in ExecStart: $(show ExecStart)"
        return
    fi
    inside_sh "cat >'$config' <<'EOF'
networks:
  loopback: [\"127.0.0.0/8\", \"::1/128\"]
views:
  - {prefix: tcptop}
  - {prefix: tcptop_unit, labels: [unit, cgroup, container, uid, user, role, remote_network, lport, rport], ephemeral_client_port: true}
EOF"
    inside systemctl restart "$unit"
    # Server and client in the probe's cgroup; the unit then waits (bounded)
    # for the host to stop it.
    inside systemd-run --unit=tcptop-probe --quiet -p User=nobody -p RuntimeDirectory=tcptop-probe \
        -p RuntimeMaxSec=120 -- /bin/sh -c "$(exchange_script tt-probe $client_sends $server_sends /run/tcptop-probe/done)
            exec sleep 100"
    local done_file="/proc/$CONTAINER_PID/root/run/tcptop-probe/done" port=""
    for _ in $(seq 300); do
        [ -s "$done_file" ] && { port=$(sed -n 's/^port=//p' "$done_file"); break; }
        sleep 0.1
    done
    local cgroup
    cgroup=$(inside sh -c "cat /proc/\$(systemctl show -P MainPID $probe)/cgroup" | sed -n 's/^0:://p')
    local common=("unit=\"$probe\"" "cgroup=\"$cgroup\"" 'container=""' 'uid="65534"' 'user="nobody"' 'remote_network="loopback"')
    local client=("${common[@]}" 'role="client"' 'lport="ephemeral"' "rport=\"$port\"")
    local server=("${common[@]}" 'role="server"' "lport=\"$port\"" 'rport="ephemeral"')
    local file="$logs/metrics-attribution.txt" got=()
    # One poll (1 s) takes the probe's last counts.
    for _ in $(seq 30); do
        inside curl -s -m 10 http://localhost:9435/metrics >"$file"
        got=("$(series_value "$file" tcptop_unit_sent_bytes_total "${client[@]}")"
            "$(series_value "$file" tcptop_unit_received_bytes_total "${client[@]}")"
            "$(series_value "$file" tcptop_unit_sent_bytes_total "${server[@]}")"
            "$(series_value "$file" tcptop_unit_received_bytes_total "${server[@]}")")
        [ "${got[*]}" = "$client_sends $server_sends $server_sends $client_sends" ] && break
        sleep 0.2
    done
    note "the probe's series: $(grep -F "unit=\"$probe\"" "$file" | grep '^tcptop_unit_[a-z]*_bytes_total' | paste -sd'|' -)"
    if [ -n "$port" ] && [ "$cgroup" = "/system.slice/$probe" ] &&
        [ "${got[*]}" = "$client_sends $server_sends $server_sends $client_sends" ]; then
        ok "systemd-run --unit=tcptop-probe as nobody: unit=\"$probe\", cgroup=\"$cgroup\", uid 65534, both roles, exact bytes ($client_sends / $server_sends)"
    else
        not_ok "systemd-run --unit=tcptop-probe shows unit=\"$probe\" with exact bytes" \
            "port '$port', cgroup '$cgroup', sent/received client ${got[0]:-}/${got[1]:-} server ${got[2]:-}/${got[3]:-}; probe: $(inside journalctl --no-pager -o cat -u $probe | tail -3 | paste -sd'|' -)"
    fi
    inside systemctl stop "$probe" 2>/dev/null
    check_short_job_attribution
    inside mv "$saved" "$config"
    inside systemctl restart "$unit"
}

# A job whose unit is gone before the daemon's next read (--wait: its
# exchange takes well under the 1 s poll): the tree no longer has its
# cgroup, so the unit comes from the name the kernel side noted at its
# first byte; its cgroup path is unknown ("").
check_short_job_attribution() {
    local job=tcptop-job.service client_sends=3333 server_sends=4444 out=/tmp/tcptop-job-port
    inside rm -f "$out"
    inside systemd-run --unit=tcptop-job --quiet --wait -p User=nobody -p RuntimeDirectory=tcptop-job \
        -p RuntimeMaxSec=30 -- /bin/sh -c "$(exchange_script tt-job $client_sends $server_sends $out)"
    local port gone file="$logs/metrics-short-job.txt" got=""
    port=$(inside sed -n 's/^port=//p' "$out" 2>/dev/null)
    gone=$(inside systemctl show -P ActiveState "$job")
    local client=("unit=\"$job\"" 'cgroup=""' 'user="nobody"' 'role="client"' 'lport="ephemeral"' "rport=\"$port\"")
    for _ in $(seq 30); do
        inside curl -s -m 10 http://localhost:9435/metrics >"$file"
        got="$(series_value "$file" tcptop_unit_sent_bytes_total "${client[@]}") $(series_value "$file" tcptop_unit_received_bytes_total "${client[@]}")"
        [ "$got" = "$client_sends $server_sends" ] && break
        sleep 0.2
    done
    note "the job's series: $(grep -F "unit=\"$job\"" "$file" | grep '^tcptop_unit_[a-z]*_bytes_total' | paste -sd'|' -)"
    if [ -n "$port" ] && [ "$got" = "$client_sends $server_sends" ]; then
        ok "a job gone before the next read (systemd-run --wait, unit $gone by then): unit=\"$job\", cgroup=\"\", exact bytes ($client_sends / $server_sends)"
    else
        not_ok "a short job shows unit=\"$job\" with exact bytes" "port '$port', unit state '$gone', client sent/received '$got'"
    fi
}
