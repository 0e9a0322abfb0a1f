#!/bin/bash
# The Debian package under a REAL systemd: builds it (`make deb`), runs
# lintian on it, boots a minimal Debian 12 container with systemd-nspawn,
# installs it there with `apt install ./tcptop-exporter_…deb` (apt fetching
# its Depends from the Debian mirror this machine uses), and checks, inside:
# the service enabled and started by postinst, `systemctl start` returning
# after READY=1, `status`, exact bytes in /metrics for traffic made in the
# container, `reload`, `stop`, then `apt purge` leaving nothing behind (the
# container's file list before install and after purge, apt's own caches,
# lists and logs aside).
#
#   sudo Tests/system/package-test.sh        (root; Debian 12 host, kernel >= 6.3)
#
# The root filesystem (systemd, curl, python3; no libbpf, so apt must fetch
# it) is built once with mmdebstrap and cached under .cache/package-test/;
# each run boots it with a throwaway tmpfs overlay. The container has no
# network but its loopback: Tests/system/mirror-bridge.py carries apt's
# connections to the mirror. Prints "ok - ..." / "not ok - ...: why", the
# figures as "# figure: ...", and last "N passed, N failed". Logs of the last
# run: .cache/package-test/logs/.
#
# Every wait is bounded: the package build (its swift builds, 30 min each),
# apt on the host (5 + 10 min) and inside (5 min each call), the root
# filesystem (15 min), the boot (60 s), each command inside (60 s), and the
# whole run (TCPTOP_PACKAGE_TEST_TIMEOUT, seconds, default 1800). The
# container and the bridge are ended on any exit.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${_TCPTOP_PACKAGE_TEST_TIMED:-}" ]; then
    export _TCPTOP_PACKAGE_TEST_TIMED=1
    exec timeout -k 30 "${TCPTOP_PACKAGE_TEST_TIMEOUT:-1800}" "$0" "$@"
fi

. "$here/lib.sh"

suite=bookworm
rootfs_packages=(systemd systemd-sysv dbus curl python3)
host_packages=(systemd-container mmdebstrap lintian dpkg-dev help2man binutils python3 util-linux bpftool)
package=tcptop-exporter
unit=tcptop-exporter.service
cache="$root/.cache/package-test"
logs="$cache/logs"
machine="tcptop-pkg-$$"
stage=""
bridge_pid=""

finish() {
    local status=$?
    [ -n "$bridge_pid" ] && kill "$bridge_pid" 2>/dev/null
    end_run $status
}
trap finish EXIT
trap 'not_ok "the whole run" "interrupted or past the global timeout"; exit 1' INT TERM

if [ "$(id -u)" -ne 0 ]; then
    not_ok "setup" "needs root (BPF, systemd-nspawn)"
    exit 1
fi
mkdir -p "$logs" && rm -f "$logs"/*
run_started=$(now_ns)

if ! ensure_host_packages "${host_packages[@]}"; then
    not_ok "host packages installed" "apt-get failed for ${host_packages[*]}"
    exit 1
fi

# --- the package: built, linted, its contents ---------------------------------

started=$(now_ns)
deb=$("$root/packaging/debian/build-deb.sh" 2>"$logs/build-deb.txt")
if [ -n "$deb" ] && [ -f "$root/$deb" ]; then
    deb="$root/$deb"
    figure "make deb: $(basename "$deb"), $(stat -c %s "$deb") bytes ($(du -m "$deb" | cut -f1) MiB)," \
        "installed size $(dpkg-deb -f "$deb" Installed-Size) KiB; built in $(seconds_since "$started") s"
    ok "make deb built $(basename "$deb")"
else
    not_ok "make deb built the package" "$(tail -5 "$logs/build-deb.txt" | paste -sd'|' -)"
    exit 1
fi

# Every tag, pedantic and overridden ones (O:) included, goes to the output;
# an error (E:, not overridden) fails. (--show-overrides alone makes lintian
# exit 2 for an overridden error: the E: lines decide, not its status.)
lintian --display-info --pedantic --show-overrides --fail-on none "$deb" >"$logs/lintian.txt" 2>"$logs/lintian-stderr.txt"
lintian_rc=$?
# One line per tag (how often, and its first context); every line in the log.
awk '/^[EWIPXO]: / { tag = $1 " " $3; if (!(tag in n)) { order[++k] = tag; first[tag] = $0 } n[tag]++ }
    END { for (i = 1; i <= k; i++) { t = order[i]; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", first[t]); printf "# lintian: %s x%d (%s)\n", t, n[t], first[t] } }' "$logs/lintian.txt"
counts=$(awk '/^[EWIPXO]: /{ n[substr($0, 1, 1)]++ } END { printf "E %d, W %d, I %d, P %d, overridden %d", n["E"], n["W"], n["I"], n["P"], n["O"] }' "$logs/lintian.txt")
if [ "$lintian_rc" -eq 0 ] && ! grep -q '^E: ' "$logs/lintian.txt"; then
    ok "lintian accepts the package without errors ($counts)"
else
    not_ok "lintian accepts the package without errors" "rc $lintian_rc; $counts; $(grep '^E: ' "$logs/lintian.txt" | paste -sd'|' -) $(head -3 "$logs/lintian-stderr.txt")"
fi

# Contents, the conffile, the unit's paths, and Depends naming the package of
# every library the binaries need (as this host's dpkg knows them).
dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|' >"$logs/contents.txt"
missing_files=""
for path in /usr/bin/tcptop-exporter /usr/bin/tcptop /usr/lib/systemd/system/$unit \
    /etc/tcptop-exporter/tcptop-exporter.yml /usr/share/man/man1/tcptop-exporter.1.gz /usr/share/man/man1/tcptop.1.gz \
    /usr/share/doc/$package/copyright /usr/share/doc/$package/changelog.Debian.gz; do
    grep -Fxq "$path" "$logs/contents.txt" || missing_files="$missing_files $path"
done
shopt -s nullglob
for file in "$root"/monitoring/rules/*.yml; do
    grep -Fxq "/usr/share/$package/prometheus/$(basename "$file")" "$logs/contents.txt" || missing_files="$missing_files $file"
done
for file in "$root"/monitoring/grafana/*.json; do
    grep -Fxq "/usr/share/$package/grafana/$(basename "$file")" "$logs/contents.txt" || missing_files="$missing_files $file"
done
shopt -u nullglob
monitoring=$(grep -c "^/usr/share/$package/.*\.\(yml\|json\)$" "$logs/contents.txt")
unpacked="$cache/unpacked"
rm -rf "$unpacked" && dpkg-deb -R "$deb" "$unpacked"
depends=$(dpkg-deb -f "$deb" Depends)
undeclared=""
for lib in $(objdump -p "$unpacked/usr/bin/tcptop-exporter" "$unpacked/usr/bin/tcptop" | awk '$1 == "NEEDED" { print $2 }' | sort -u); do
    owner=$(dpkg -S "*/$lib" 2>/dev/null | head -1 | cut -d: -f1)
    [[ ", $depends," == *", $owner "* || ", $depends," == *", $owner,"* ]] || undeclared="$undeclared $lib($owner)"
done
exec_start=$(sed -n 's/^ExecStart=//p' "$unpacked/usr/lib/systemd/system/$unit")
if [ -z "$missing_files" ] && [ -z "$undeclared" ] &&
    [ "$(cat "$unpacked/DEBIAN/conffiles")" = /etc/tcptop-exporter/tcptop-exporter.yml ] &&
    [[ "$exec_start" == "/usr/bin/tcptop-exporter "* ]] &&
    ! grep -q /usr/local "$unpacked/usr/lib/systemd/system/$unit"; then
    ok "contents: both binaries, unit (ExecStart=$exec_start), conffile, 2 man pages, copyright, changelog, $monitoring monitoring files; Depends covers every NEEDED library"
else
    not_ok "package contents" "missing:${missing_files:- none}; libraries without a Depends:${undeclared:- none}; ExecStart=$exec_start"
fi

# --- the container ------------------------------------------------------------

if ensure_rootfs "$cache" "$suite" "${rootfs_packages[@]}"; then
    [ "$ROOTFS_BUILT_NOW" = yes ] && figure "root filesystem build: $ROOTFS_BUILD_SECONDS s, $(du -sm "$ROOTFS" | cut -f1) MB"
    if [ ! -e "$ROOTFS/var/lib/dpkg/info/libbpf1:amd64.list" ] && [ ! -e "$ROOTFS/var/lib/dpkg/info/libbpf1.list" ]; then
        ok "minimal Debian $suite root filesystem ready, without libbpf1 (apt must fetch it)"
    else
        not_ok "minimal root filesystem without libbpf1" "libbpf1 is installed in $ROOTFS"
    fi
else
    not_ok "Debian $suite root filesystem ready" "mmdebstrap failed (see $cache/mmdebstrap.log)"
    exit 1
fi

# The mirror the root filesystem's apt names: http(s)://HOST[:PORT]/...
mirror=$(cat "$ROOTFS"/etc/apt/sources.list "$ROOTFS"/etc/apt/sources.list.d/* 2>/dev/null |
    grep -o -m1 'https\?://[^/ ]*' | head -1)
scheme=${mirror%%://*}
mirror_host=${mirror#*://}
mirror_port=$([ "$scheme" = https ] && echo 443 || echo 80)
if [[ "$mirror_host" == *:* ]]; then
    mirror_port=${mirror_host##*:}
    mirror_host=${mirror_host%:*}
fi
if [ -z "$mirror_host" ] || [[ "$mirror_host" =~ ^[0-9.]+$ ]]; then
    not_ok "the container's apt mirror" "'$mirror' in $ROOTFS/etc/apt: needs a host name (an address cannot be pointed at the bridge)"
    exit 1
fi

stage=$(mktemp -d /tmp/tcptop-package-test.XXXXXX)
cp "$deb" "$stage/"
install -m 0644 "$here/traffic-in-container.sh" "$root/Tests/traffic_peer.py" "$stage/"
chmod 0755 "$stage"
chmod 0644 "$stage/$(basename "$deb")"

started=$(now_ns)
if ! boot_container "$ROOTFS" "$machine" "$stage" "$logs/nspawn.txt"; then
    not_ok "container boots systemd" "no systemd manager in time: $(tail -5 "$logs/nspawn.txt")"
    exit 1
fi
state=$(inside systemctl is-system-running --wait 2>&1)
figure "container boot to '$state': $(seconds_since "$started") s"
if [ "$state" = running ]; then
    ok "container boots systemd to 'running'"
else
    not_ok "container boots systemd to 'running'" "state '$state': $(inside systemctl --failed --no-legend 2>&1 | paste -sd' ' -)"
fi

python3 "$here/mirror-bridge.py" "$CONTAINER_PID" "$mirror_host" "$mirror_port" 900 >"$logs/bridge.txt" 2>&1 &
bridge_pid=$!
for _ in $(seq 50); do
    grep -q READY "$logs/bridge.txt" 2>/dev/null && break
    kill -0 "$bridge_pid" 2>/dev/null || break
    sleep 0.1
done
inside_sh "echo '127.0.0.1 $mirror_host' >>/etc/hosts"

# The container's files before the install: type, mode, owner, path. /run,
# /tmp, /proc, /sys and /dev are other mounts (-xdev); /run is checked below.
# Left out: what apt, dpkg and ldconfig keep for themselves (package lists,
# caches, logs, the status database's backups; ldconfig's aux-cache, made by
# libc-bin's trigger when a library comes) and the journal.
file_list() {
    inside find / -xdev -printf '%y %m %u:%g %p\n' 2>/dev/null |
        grep -Ev ' /(var/lib/apt|var/cache/apt|var/cache/debconf|var/cache/ldconfig|var/log)(/|$)| /var/lib/dpkg/(status-old|available|available-old|lock.*|triggers/.*)$' |
        sort
}
file_list >"$logs/files-before.txt"

# --- apt install ./tcptop-exporter_…deb ---------------------------------------

deb_inside="/opt/tcptop-stage/$(basename "$deb")"
started=$(now_ns)
INSIDE_TIMEOUT=330 inside timeout 300 apt-get -o DPkg::Lock::Timeout=60 update >"$logs/apt-update.txt" 2>&1
update_rc=$?
INSIDE_TIMEOUT=330 inside env DEBIAN_FRONTEND=noninteractive timeout 300 apt install -y "$deb_inside" >"$logs/apt-install.txt" 2>&1
install_rc=$?
figure "apt update + apt install ./$(basename "$deb") inside: $(seconds_since "$started") s"
# "Get:1 http://MIRROR bookworm/main amd64 libbpf1 ...": what came from the mirror.
fetched=$(awk '/^Get:/ && $2 ~ /^https?:/ { print $5 }' "$logs/apt-install.txt" | sort | paste -sd' ' -)
# $$: systemd-run would expand ${...} itself.
dpkg_state=$(inside dpkg-query -W -f '$${Status} $${Version}' "$package" 2>&1)
not_found=$(inside ldd /usr/bin/tcptop-exporter /usr/bin/tcptop 2>&1 | grep 'not found')
if [ "$update_rc" -eq 0 ] && [ "$install_rc" -eq 0 ] && [[ " $fetched " == *" libbpf1 "* ]] &&
    [ "$dpkg_state" = "install ok installed $(dpkg-deb -f "$deb" Version)" ] && [ -z "$not_found" ]; then
    ok "apt install ./$(basename "$deb"): installed, Depends fetched from $mirror ($fetched), every library found"
else
    not_ok "apt install ./$(basename "$deb")" "update rc $update_rc, install rc $install_rc, fetched '$fetched', state '$dpkg_state' $not_found; $(tail -5 "$logs/apt-install.txt" | paste -sd'|' -)"
    exit 1
fi


# postinst enabled and started it (the way Debian's exporters are set up).
enabled=$(inside systemctl is-enabled "$unit" 2>&1)
if [ "$enabled" = enabled ] && [ "$(show ActiveState)/$(show SubState)" = active/running ] &&
    [ -L "/proc/$CONTAINER_PID/root/etc/systemd/system/multi-user.target.wants/$unit" ] &&
    # Shipped in /usr/lib; with merged /usr, systemd finds it through /lib first.
    [[ "$(show FragmentPath)" =~ ^(/usr)?/lib/systemd/system/$unit$ ]]; then
    ok "postinst enabled the unit (multi-user.target.wants) and started it: active/running from $(show FragmentPath)"
else
    not_ok "postinst enabled and started the unit" "is-enabled '$enabled', $(show ActiveState)/$(show SubState), from '$(show FragmentPath)'"
fi

# What the install added, as the purge check below will see it: the
# package's files, its Depends' files, the enablement symlink and
# deb-systemd-helper's record of it.
file_list >"$logs/files-installed.txt"
comm -13 "$logs/files-before.txt" "$logs/files-installed.txt" | awk '{ print $NF }' >"$logs/files-added.txt"
added_of_package=0
for path in $(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $NF }' | sed 's|^\./|/|'); do
    grep -Fxq "$path" "$logs/files-added.txt" && added_of_package=$((added_of_package + 1))
done
files_in_package=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/' | wc -l)
if [ "$added_of_package" -eq "$files_in_package" ] &&
    grep -Fxq "/etc/systemd/system/multi-user.target.wants/$unit" "$logs/files-added.txt" &&
    grep -q "^/var/lib/systemd/deb-systemd-helper-enabled/.*$unit" "$logs/files-added.txt"; then
    ok "the install added $(wc -l <"$logs/files-added.txt") entries to the file list: all $files_in_package files of the package, the enablement symlink, deb-systemd-helper's record"
else
    not_ok "the file list sees the install" "$added_of_package of $files_in_package files of the package; added: $(head -20 "$logs/files-added.txt" | paste -sd' ' -)"
fi

# The binaries run where no Swift runtime was ever installed.
version_out=$(inside /usr/bin/tcptop-exporter --version 2>&1)
help_out=$(inside /usr/bin/tcptop -h 2>&1)
if [ "$version_out" = "$(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')" ] && [[ "$help_out" == "usage: tcptop "* ]]; then
    ok "the packaged binaries run without a Swift runtime: tcptop-exporter --version says $version_out, tcptop -h its usage"
else
    not_ok "the packaged binaries run without a Swift runtime" "--version: '$version_out'; tcptop -h: '$(head -2 <<<"$help_out" | paste -sd'|' -)'"
fi

# --- systemctl start / status --------------------------------------------------

inside systemctl stop "$unit"
start_out=$(inside_sh '
    t0=$(date +%s%N)
    systemctl start tcptop-exporter
    rc=$?
    t1=$(date +%s%N)
    code=$(curl -s -m 5 -o /dev/null -w "%{http_code}" http://localhost:9435/metrics)
    echo "rc=$rc ms=$(( (t1 - t0) / 1000000 )) http=$code"' 2>&1)
figure "systemctl start of the packaged unit returned after $(sed -n 's/.*ms=\([0-9]*\).*/\1/p' <<<"$start_out") ms"
if [[ "$start_out" == "rc=0 "*"http=200" ]] && [ "$(show Type)" = notify ]; then
    ok "systemctl start returns once READY=1 arrived (Type=notify; /metrics answers 200 right after)"
else
    not_ok "systemctl start returns once READY=1 arrived" "$start_out; $(journal | tail -5 | paste -sd'|' -)"
fi

status=$(inside systemctl status --no-pager "$unit" 2>&1)
status_text=$(show StatusText)
echo "$status" >"$logs/status.txt"
if grep -q 'Active: active (running)' <<<"$status" && [ -n "$status_text" ] &&
    grep -Fq "Status: \"$status_text\"" <<<"$status" &&
    grep -Fq "/usr/bin/tcptop-exporter --config.file=/etc/tcptop-exporter/tcptop-exporter.yml" <<<"$status"; then
    ok "systemctl status: 'active (running)', /usr/bin/tcptop-exporter, the daemon's STATUS= text: \"$status_text\""
else
    not_ok "systemctl status shows 'active (running)' and the STATUS= text" "$(head -8 <<<"$status" | paste -sd'|' -)"
fi

# --- exact bytes for traffic made inside the container ------------------------

start_traffic "$logs/traffic.txt"
inside curl -s -m 10 localhost:9435/metrics >"$logs/metrics-open.txt" 2>&1
compare_metrics "connections open" "$logs/metrics-open.txt"
release_traffic
traffic_status=$?
inside curl -s -m 10 localhost:9435/metrics >"$logs/metrics-closed.txt" 2>&1
if [ "$traffic_status" -eq 0 ]; then
    compare_metrics "connections closed" "$logs/metrics-closed.txt"
else
    not_ok "traffic inside the container" "exit $traffic_status: $(tail -5 "$logs/traffic.txt" | paste -sd'|' -)"
fi

# --- reload: the conffile read again, same process -----------------------------

check_reload_to_json /etc/tcptop-exporter/tcptop-exporter.yml /etc/tcptop-exporter/tcptop-exporter.yml

# --- stop: clean exit, no BPF programs left ------------------------------------

programs=$(program_ids_of "$(host_pid_of "$(show MainPID)")" | paste -sd' ' -)
inside systemctl stop "$unit"
left=""
for _ in $(seq 50); do
    left=""
    for id in $programs; do
        bpftool prog show id "$id" >/dev/null 2>&1 && left="$left $id"
    done
    [ -z "$left" ] && break
    sleep 0.1
done
stop_state="$(show ActiveState)/$(show Result)"
if [ "$(wc -w <<<"$programs")" -ge 3 ] && [ -z "$left" ] && [ "$stop_state" = inactive/success ]; then
    ok "systemctl stop: $stop_state, its $(wc -w <<<"$programs") BPF programs are gone"
else
    not_ok "systemctl stop: clean exit, no BPF programs left" "state $stop_state, programs ($programs), still loaded:$left"
fi

# --- apt purge: nothing left --------------------------------------------------

# Purged while running (prerm stops it), with its Depends (autoremove), so
# that the file list can match the one before the install.
inside systemctl start "$unit"
running_pid=$(host_pid_of "$(show MainPID)")
INSIDE_TIMEOUT=330 inside env DEBIAN_FRONTEND=noninteractive timeout 300 apt purge -y --autoremove "$package" >"$logs/apt-purge.txt" 2>&1
purge_rc=$?
file_list >"$logs/files-after.txt"
diff "$logs/files-before.txt" "$logs/files-after.txt" >"$logs/files-diff.txt"
changed=$(grep -c '^[<>]' "$logs/files-diff.txt")
dpkg_state=$(inside dpkg-query -W -f '$${db:Status-Abbrev}' "$package" 2>/dev/null)
run_left=$(inside find /run -name '*tcptop-exporter*' 2>/dev/null | paste -sd' ' -)
unit_known=$(inside systemctl list-unit-files --no-legend "$unit" 2>/dev/null)
etc=/proc/$CONTAINER_PID/root/etc
if [ "$purge_rc" -eq 0 ] && [ -z "$dpkg_state" ] && [ "$changed" -eq 0 ] && [ -z "$run_left" ] && [ -z "$unit_known" ] &&
    [ ! -e "$etc/tcptop-exporter" ] && [ ! -L "$etc/systemd/system/multi-user.target.wants/$unit" ] &&
    [ -n "$running_pid" ] && [ ! -e "/proc/$running_pid" ]; then
    ok "apt purge --autoremove of the running service: the daemon is gone, the package unknown to dpkg and systemd, no /etc/tcptop-exporter, no enablement symlink, nothing in /run; the file list equals the one before install ($(wc -l <"$logs/files-before.txt") entries)"
else
    not_ok "apt purge leaves nothing behind" "rc $purge_rc; dpkg '$dpkg_state'; daemon (host pid '$running_pid') $([ -e "/proc/$running_pid" ] && echo still running || echo gone); $changed entries differ: $(grep '^[<>]' "$logs/files-diff.txt" | head -10 | paste -sd'|' -); /run: '$run_left'; unit files: '$unit_known'"
fi

figure "package test: $((PASSED + FAILED)) checks in $(seconds_since "$run_started") s"
