#!/usr/bin/env bash
# The guest tests: tcptop-exporter on other kernels than this host's, each in
# a QEMU guest under software emulation, with Debian 12's userland (the
# daemon links its libbpf 1.1) and one of three Debian cloud kernels:
#   6.1   Debian 12's own (no sock_*_length tracepoints: the fallback hooks)
#   6.12  Debian 13's (trixie): the tracepoints, the fast path
#   5.10  Debian 11's (bullseye): the oldest we meet
# For each kernel: builds (or reuses) its cached image (image.sh), boots the
# guest with the test on a second disk, and prints the guest's `ok`/`not ok`
# lines and that guest's `N passed, N failed` line; the guests run one after
# the other. in/guest_check.py holds what each kernel is expected to do. Exit
# 0 only if every check of every guest passed.
#   Tests/guest/run.sh                 all three (what `make test` runs)
#   Tests/guest/run.sh 6.12            one, or GUEST_KERNEL=6.12 Tests/guest/run.sh
# (as root; packages: qemu-system-x86 qemu-utils mmdebstrap e2fsprogs)
# Environment: GUEST_KERNEL (the kernels when no argument is given),
# GUEST_TIMEOUT (seconds per guest, default 900), GUEST_SCRATCH (SwiftPM
# scratch path, default .build-static), GUEST_BINARY (a statically linked
# tcptop-exporter to use instead of building one), GUEST_CHECK (the script in
# in/ the guest runs, default guest_check.py; compare.sh sets it),
# GUEST_FILES (more files for the guest's in/, space-separated, e.g. a
# GUEST_CHECK script from elsewhere and what it needs),
# GUEST_EXTRA_PACKAGES (more Debian packages in the image).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
guest_timeout=${GUEST_TIMEOUT:-900}
scratch=${GUEST_SCRATCH:-.build-static}
if [ $# -gt 0 ]; then kernels=("$@"); else read -r -a kernels <<<"${GUEST_KERNEL:-6.1 6.12 5.10}"; fi
fail() { echo "not ok - $*"; echo "0 passed, 1 failed"; exit 1; }
# A guest runs as a job in its own process group: on a signal here, the
# whole group (image build, QEMU) is stopped and cleans up before we exit.
child=
on_signal() {
	if [ -n "$child" ]; then kill -TERM -- "-$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
	exit 130
}
trap on_signal INT TERM HUP

for kernel in "${kernels[@]}"; do
	case "$kernel" in 6.1|6.12|5.10) ;; *) fail "unknown guest kernel '$kernel' (6.1, 6.12 or 5.10)" ;; esac
done
for tool in qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 debugfs strip clang; do
	command -v $tool >/dev/null || fail "guest test needs $tool (Debian packages qemu-system-x86 qemu-utils mmdebstrap e2fsprogs binutils clang)"
done

t0=$(date +%s)
if [ -n "${GUEST_BINARY:-}" ]; then
	binary=$GUEST_BINARY
	[ -x "$binary" ] || fail "GUEST_BINARY $binary is not an executable"
else
	set -m
	timeout 3600 swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product tcptop-exporter >&2 &
	child=$!
	set +m
	wait "$child" || fail "static build of tcptop-exporter"
	child=
	binary="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)/tcptop-exporter"
fi
echo "# static build $(( $(date +%s) - t0 )) s" >&2

# One guest: prints its lines and its count line; returns 0 if all passed.
# Runs in a subshell, so that its trap cleans up after it alone.
guest() {
	local kernel=$1
	# work and qemu_pid are not local: the EXIT trap runs after the function returned.
	local t0 t_image t_boot t_end image qemu_status passed failed last
	t0=$(date +%s)
	fail() { echo "not ok - $kernel guest: $*"; echo "0 passed, 1 failed"; exit 1; }
	echo "# --- guest: kernel $kernel" >&2
	image=$(GUEST_KERNEL=$kernel "$here/image.sh") || fail "building the guest image"
	t_image=$(date +%s)

	work=$(mktemp -d "${TMPDIR:-/tmp}/tcptop-guest.XXXXXX")
	qemu_pid=
	cleanup() {
		if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
			kill "$qemu_pid" 2>/dev/null || true
			wait "$qemu_pid" 2>/dev/null || true
		fi
		rm -rf "$work"
	}
	trap cleanup EXIT
	trap 'exit 130' INT TERM HUP

	mkdir -p "$work/io/in" "$work/io/out"
	strip -o "$work/io/in/tcptop-exporter" "$binary"
	# The delay line for guest_health.py, static: the guest has no compiler.
	timeout 120 clang -O2 -static -Wall -Wextra -Werror -o "$work/io/in/delayline" "$root/Tests/tools/delayline.c" \
		|| fail "building the static delay line (clang -static, Tests/tools/delayline.c)"
	cp "$here/in/run.sh" "$here/in/guest_check.py" "$here/in/guest_health.py" "$here/in/compare.py" \
		"$root/Tests/traffic_peer.py" "$root/Tests/tools/delayline-netns.sh" \
		"$root/systemd/tcptop-exporter.service" "$root/Config/tcptop-exporter.yml" "$work/io/in/"
	[ -z "${GUEST_FILES:-}" ] || cp $GUEST_FILES "$work/io/in/"
	echo "${GUEST_CHECK:-guest_check.py}" > "$work/io/in/check"
	echo $((guest_timeout - 60)) > "$work/io/in/timeout"
	# Which guest this is: guest_check.py's expectations are keyed by it.
	echo "$kernel" > "$work/io/in/kernel"
	mkfs.ext4 -q -L tcptopio -d "$work/io" "$work/io.img" 256M >/dev/null || fail "making the io disk"
	qemu-img create -q -f qcow2 -b "$image/root.img" -F raw "$work/root.qcow2" || fail "making the overlay"

	echo "# booting Debian 12 with kernel $(cat "$image/kernel") under QEMU (tcg), timeout ${guest_timeout} s" >&2
	t_boot=$(date +%s)
	set +e
	timeout --kill-after=10 "$guest_timeout" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 \
		-nographic -no-reboot -nic none \
		-kernel "$image/vmlinuz" \
		-append "root=$(cat "$image/root-device") rw console=ttyS0 panic=-1 quiet tcptop.guest_test" \
		-drive file="$work/root.qcow2",if=none,id=root,format=qcow2 -device nvme,drive=root,serial=root \
		-drive file="$work/io.img",if=none,id=io,format=raw -device nvme,drive=io,serial=io \
		</dev/null >"$work/console.log" 2>&1 &
	qemu_pid=$!
	wait "$qemu_pid"
	qemu_status=$?
	qemu_pid=
	set -e
	t_end=$(date +%s)

	for file in results log boot-time; do
		debugfs -R "dump /out/$file $work/$file" "$work/io.img" >/dev/null 2>&1 || true
	done
	# The last run's guest journal, log and console stay for a look afterwards.
	last="$root/.cache/guest-last/$kernel"
	rm -rf "$last" && mkdir -p "$last"
	debugfs -R "dump /out/journal $last/journal" "$work/io.img" >/dev/null 2>&1 || true
	cp "$work/console.log" "$last/console.log"
	if [ -f "$work/log" ]; then cp "$work/log" "$last/log"; fi
	if [ ! -s "$work/results" ]; then
		# The guest did not get to write its disk: take its lines from the console.
		sed -n 's/^.*TCPTOP-GUEST: //p' "$work/console.log" | tr -d '\r' > "$work/results"
	fi
	cp "$work/results" "$last/results"
	grep -v '^[0-9]* passed, [0-9]* failed$' "$work/results" || true
	passed=$(grep -c '^ok - ' "$work/results" || true)
	failed=$(grep -c '^not ok - ' "$work/results" || true)
	if [ "$qemu_status" != 0 ]; then
		echo "not ok - $kernel guest: the guest powered off by itself (qemu exit $qemu_status$([ "$qemu_status" = 124 ] && echo ', timed out'))"
		failed=$((failed + 1))
	fi
	if ! grep -q '^[0-9]* passed, [0-9]* failed$' "$work/results"; then
		echo "not ok - $kernel guest: the guest finished its checks"
		failed=$((failed + 1))
	fi
	if [ "$failed" != 0 ] || [ "$passed" = 0 ]; then
		# What the check printed besides its result lines (a traceback, say).
		echo "# --- $kernel guest log, other lines ---"
		grep -v -E '^(ok - |not ok - |# |[0-9]+ passed, [0-9]+ failed$)' "$work/log" 2>/dev/null | tail -40 || true
		echo "# --- $kernel console (last 60 lines) ---"; tail -60 "$work/console.log" | tr -d '\r'
		echo "# the guest's journal: $last/journal"
	fi
	echo "# $kernel guest timings: image $((t_image - t0)) s, guest $((t_end - t_boot)) s" \
		"(runner started at uptime $(cut -d' ' -f2 "$work/boot-time" 2>/dev/null || echo '?') s), total $((t_end - t0)) s"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
}

summary=()
status=0
for kernel in "${kernels[@]}"; do
	# Not `if (guest ...)`: that would switch off set -e inside.
	set -m
	(set -e; guest "$kernel") &
	child=$!
	set +m +e
	wait "$child"
	rc=$?
	child=
	set -e
	if [ "$rc" = 0 ]; then summary+=("$kernel ok"); else summary+=("$kernel FAILED"); status=1; fi
done
[ ${#kernels[@]} -gt 1 ] && echo "# guests: ${summary[*]} ($(( $(date +%s) - t0 )) s)"
exit $status
