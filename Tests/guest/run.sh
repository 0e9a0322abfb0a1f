#!/usr/bin/env bash
# The guest test: tcptop-exporter on Debian 12's own kernel (6.1: no
# sock_*_length tracepoints, so the fexit fallback; then a second pass with
# --bpf.attach-mode=kprobe) in a QEMU guest under software emulation. Builds
# (or reuses) the cached image, builds the daemon with a static Swift
# runtime, boots the guest with the test on a second disk, and prints the
# guest's `ok`/`not ok` lines and a final `N passed, N failed` line. Exit 0
# only if every check passed.
#   Tests/guest/run.sh            (as root; packages: qemu-system-x86 qemu-utils mmdebstrap e2fsprogs)
# Environment: GUEST_TIMEOUT (seconds for the guest, default 900),
# GUEST_SCRATCH (SwiftPM scratch path, default .build-static), GUEST_CHECK
# (the script in in/ the guest runs, default guest_check.py; compare.sh
# sets it), GUEST_EXTRA_PACKAGES (more Debian packages in the image).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
guest_timeout=${GUEST_TIMEOUT:-900}
scratch=${GUEST_SCRATCH:-.build-static}
t0=$(date +%s)
fail() { echo "not ok - $*"; echo "0 passed, 1 failed"; exit 1; }

for tool in qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 debugfs; do
	command -v $tool >/dev/null || fail "guest test needs $tool (Debian packages qemu-system-x86 qemu-utils mmdebstrap e2fsprogs)"
done

image=$("$here/image.sh") || fail "building the guest image"
t_image=$(date +%s)

swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product tcptop-exporter >&2 \
	|| fail "static build of tcptop-exporter"
binary="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)/tcptop-exporter"
t_build=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/tcptop-guest.XXXXXX")
qemu_pid=
cleanup() {
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then kill "$qemu_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/io/in" "$work/io/out"
strip -o "$work/io/in/tcptop-exporter" "$binary"
cp "$here/in/run.sh" "$here/in/guest_check.py" "$here/in/compare.py" "$root/Tests/traffic_peer.py" \
	"$root/systemd/tcptop-exporter.service" "$root/Config/tcptop-exporter.yml" "$work/io/in/"
echo "${GUEST_CHECK:-guest_check.py}" > "$work/io/in/check"
echo $((guest_timeout - 60)) > "$work/io/in/timeout"
mkfs.ext4 -q -L tcptopio -d "$work/io" "$work/io.img" 256M >/dev/null || fail "making the io disk"
qemu-img create -q -f qcow2 -b "$image/root.img" -F raw "$work/root.qcow2" || fail "making the overlay"

echo "# booting Debian 12 ($(basename "$image")) under QEMU (tcg), timeout ${guest_timeout} s" >&2
t_boot=$(date +%s)
set +e
timeout --kill-after=10 "$guest_timeout" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 \
	-nographic -no-reboot -nic none \
	-kernel "$image/vmlinuz" \
	-append "root=/dev/nvme0n1 rw console=ttyS0 panic=-1 quiet tcptop.guest_test" \
	-drive file="$work/root.qcow2",if=none,id=root,format=qcow2 -device nvme,drive=root,serial=root \
	-drive file="$work/io.img",if=none,id=io,format=raw -device nvme,drive=io,serial=io \
	</dev/null >"$work/console.log" 2>&1 &
qemu_pid=$!
wait "$qemu_pid"
qemu_status=$?
qemu_pid=
set -e
t_end=$(date +%s)

debugfs -R "dump /out/results $work/results" "$work/io.img" >/dev/null 2>&1 || true
debugfs -R "dump /out/log $work/log" "$work/io.img" >/dev/null 2>&1 || true
debugfs -R "dump /out/boot-time $work/boot-time" "$work/io.img" >/dev/null 2>&1 || true
# The last run's guest journal, log and console stay for a look afterwards.
last="$root/.cache/guest-last"
rm -rf "$last" && mkdir -p "$last"
debugfs -R "dump /out/journal $last/journal" "$work/io.img" >/dev/null 2>&1 || true
cp "$work/console.log" "$last/console.log"
[ -f "$work/log" ] && cp "$work/log" "$last/log"
if [ ! -s "$work/results" ]; then
	# The guest did not get to write its disk: take its lines from the console.
	sed -n 's/^.*TCPTOP-GUEST: //p' "$work/console.log" | tr -d '\r' > "$work/results"
fi
grep -v '^[0-9]* passed, [0-9]* failed$' "$work/results" || true
passed=$(grep -c '^ok - ' "$work/results" || true)
failed=$(grep -c '^not ok - ' "$work/results" || true)
if [ "$qemu_status" != 0 ]; then
	echo "not ok - the guest powered off by itself (qemu exit $qemu_status$([ "$qemu_status" = 124 ] && echo ', timed out'))"
	failed=$((failed + 1))
fi
if ! grep -q '^[0-9]* passed, [0-9]* failed$' "$work/results"; then
	echo "not ok - the guest finished its checks"
	failed=$((failed + 1))
fi
if [ "$failed" != 0 ] || [ "$passed" = 0 ]; then
	echo "# --- guest log ---"; cat "$work/log" 2>/dev/null | tail -40 || true
	echo "# --- console (last 60 lines) ---"; tail -60 "$work/console.log" | tr -d '\r'
	echo "# the guest's journal: $last/journal"
fi
echo "# timings: image $((t_image - t0)) s, static build $((t_build - t_image)) s," \
	"guest $((t_end - t_boot)) s ($(cat "$work/boot-time" 2>/dev/null || echo 'boot time unknown')), total $((t_end - t0)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
