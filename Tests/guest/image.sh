#!/usr/bin/env bash
# Builds a guest image once and caches it under
# .cache/guest/<flavour>-<kernel>-<key>/ (key: the package list, the kernel's
# suite and the files that go into the image). The userland is always Debian
# 12 (bookworm: the daemon links its libbpf 1.1); only the kernel differs:
#   GUEST_KERNEL=6.1   Debian 12's cloud kernel (linux-image-cloud-amd64, installed by apt)
#   GUEST_KERNEL=6.12  Debian 13's (trixie) cloud kernel
#   GUEST_KERNEL=5.10  Debian 11's (bullseye) cloud kernel
# For 6.12 and 5.10 only the kernel's .deb is fetched, from the same mirror as
# the rest (its suite's main, the point release), and unpacked into the image:
# vmlinuz, config and modules (no initramfs; the cloud kernels boot without).
# A minimal system (minbase: no procps, no udev), so that the shipped unit is
# shown to need nothing more than these packages. No login on the serial
# console: without udev, 5.10's boot waited 90 s for dev-ttyS0.device.
# Prints the cache directory, which holds root.img (a disk with one ext4
# partition), root-device (its root= for the kernel command line), vmlinuz
# and kernel (package and version).
#   GUEST_KERNEL=6.12 Tests/guest/image.sh
#   GUEST_EXTRA_PACKAGES="bpfcc-tools libbpf-tools" Tests/guest/image.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

kernel=${GUEST_KERNEL:-6.1}
case "$kernel" in
	6.1) kernel_suite=bookworm kernel_package=linux-image-cloud-amd64 ;;
	6.12) kernel_suite=trixie kernel_package= ;;
	5.10) kernel_suite=bullseye kernel_package= ;;
	*) echo "image.sh: unknown GUEST_KERNEL '$kernel' (6.1, 6.12 or 5.10)" >&2; exit 1 ;;
esac
# kmod: modprobe/depmod (linux-image-* brings it where apt installs the kernel).
packages="systemd systemd-sysv dbus libbpf1 libelf1 libsystemd0 zlib1g libssl3 python3 iproute2 bpftool curl kmod
$kernel_package ${GUEST_EXTRA_PACKAGES:-}"
packages=$(echo $packages | tr ' ' '\n' | sort -u | tr '\n' ',' | sed 's/,$//')

# The Debian mirror(s) this machine's apt uses: never a host name written here.
mirrors() {
	local file=/etc/apt/sources.list.d/debian.sources
	if [ -r "$file" ]; then
		awk 'BEGIN { RS = ""; FS = "\n" }
		{
			uris = ""; suites = ""; comps = ""; types = ""
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^URIs:/) uris = substr($i, 6)
				if ($i ~ /^Suites:/) suites = substr($i, 8)
				if ($i ~ /^Components:/) comps = substr($i, 12)
				if ($i ~ /^Types:/) types = substr($i, 7)
			}
			if (types !~ /(^| )deb( |$)/) next
			n = split(uris, u, " "); m = split(suites, s, " ")
			for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) printf "deb %s %s %s\n", u[a], s[b], comps
		}' "$file" | sed 's/  */ /g'
	else
		grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	fi
}
mapfile -t sources < <(mirrors | grep -E ' bookworm(-updates|-security)? ' || true)
[ ${#sources[@]} -gt 0 ] || { echo "image.sh: no bookworm entries in this machine's apt sources" >&2; exit 1; }

key=$( { echo "$packages $kernel_suite"; cat "$here/image.sh" "$here/guest-runner.service" "$here/guest-runner.sh"; } | sha256sum | cut -c1-16)
# One cached image per flavour (base, or with extra packages): a new key
# replaces the flavour's old image.
flavour=$( [ -n "${GUEST_EXTRA_PACKAGES:-}" ] && echo extra || echo base )
dir="$root/.cache/guest/$flavour-$kernel-$key"
if [ -s "$dir/root.img" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/kernel" ] && [ -s "$dir/root-device" ]; then
	echo "$dir"
	exit 0
fi
for tool in mmdebstrap mkfs.ext4 apt-get dpkg-deb; do
	command -v $tool >/dev/null || { echo "image.sh: $tool missing (Debian packages mmdebstrap e2fsprogs)" >&2; exit 1; }
done
mkdir -p "$root/.cache/guest"
work=$(mktemp -d "$root/.cache/guest-build.XXXXXX")
# The long steps run as `timeout` jobs that we wait for: a signal to this
# script then stops them at once (a foreground command would first run to
# its end), and `timeout` passes the signal on.
job=
bounded() {
	local seconds=$1 status=0
	shift
	timeout --kill-after=30 "$seconds" "$@" &
	job=$!
	wait "$job" || status=$?
	job=
	return $status
}
# Never into a mount that a stopped mmdebstrap might have left behind.
cleanup() {
	if [ -n "$job" ]; then kill -TERM "$job" 2>/dev/null || true; wait "$job" 2>/dev/null || true; fi
	findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r mount; do umount -l "$mount" || true; done || true
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
start=$(date +%s)

# Another suite's kernel: fetch just its .deb with a private apt state (this
# machine's apt configuration and lists stay untouched).
if [ -z "$kernel_package" ]; then
	mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/deb"
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	for line in "${sources[@]}"; do
		read -r _ uri suite components <<<"$line"
		[ "$suite" = bookworm ] || continue
		echo "deb [signed-by=$keyring] $uri $kernel_suite main"
	done > "$work/apt/sources.list"
	[ -s "$work/apt/sources.list" ] || { echo "image.sh: no plain bookworm entry to take the mirror from" >&2; exit 1; }
	apt_opts=(-o Dir::Etc::sourcelist="$work/apt/sources.list" -o Dir::Etc::sourceparts=-
		-o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" -o Dir::Etc::preferences=/dev/null
		-o Dir::Etc::preferencesparts=- -o APT::Sandbox::User=root -o Acquire::Retries=2)
	echo "image.sh: fetching the $kernel_suite cloud kernel" >&2
	bounded 600 apt-get "${apt_opts[@]}" -qq update >&2 || { echo "image.sh: apt-get update for $kernel_suite failed" >&2; exit 1; }
	# linux-image-cloud-amd64 is a metapackage: its one dependency is the kernel.
	image_package=$(apt-cache "${apt_opts[@]}" show linux-image-cloud-amd64 2>/dev/null \
		| sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -1)
	[ -n "$image_package" ] || { echo "image.sh: no linux-image-cloud-amd64 in $kernel_suite" >&2; exit 1; }
	(cd "$work/deb" && bounded 600 apt-get "${apt_opts[@]}" -qq download "$image_package" >&2) \
		|| { echo "image.sh: downloading $image_package failed" >&2; exit 1; }
	deb=$(ls -1 "$work"/deb/*.deb | head -1)
fi

echo "image.sh: building the guest image, kernel $kernel ($packages)" >&2
bounded 900 mmdebstrap --variant=minbase --include="$packages" \
	--customize-hook='rm -f "$1"/etc/fstab; touch "$1"/etc/fstab' \
	--customize-hook='echo tcptop-guest > "$1"/etc/hostname' \
	--customize-hook="install -D -m 0755 '$here/guest-runner.sh' \"\$1\"/usr/local/sbin/tcptop-guest-run" \
	--customize-hook="install -D -m 0644 '$here/guest-runner.service' \"\$1\"/etc/systemd/system/tcptop-guest-run.service" \
	--customize-hook='ln -sf /etc/systemd/system/tcptop-guest-run.service "$1"/etc/systemd/system/multi-user.target.wants/tcptop-guest-run.service' \
	--customize-hook='for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service; do ln -sf /dev/null "$1"/etc/systemd/system/$u; done' \
	--customize-hook='ln -sf /dev/null "$1"/etc/systemd/system/serial-getty@ttyS0.service' \
	--customize-hook='passwd --root "$1" -d root' \
	bookworm "$work/root" "${sources[@]}" >&2
if [ -n "$kernel_package" ]; then
	version=$(chroot "$work/root" dpkg-query -W -f '${Package} ${Version}\n' 'linux-image-[0-9]*' | head -1)
else
	# Where the package would put them: /boot, and modules under /lib/modules
	# (bullseye) or /usr/lib/modules (trixie); this image's /lib is /usr/lib.
	dpkg-deb -x "$deb" "$work/unpacked"
	cp -a "$work"/unpacked/boot/. "$work/root/boot/"
	mkdir -p "$work/root/lib/modules"
	for modules in "$work"/unpacked/lib/modules "$work"/unpacked/usr/lib/modules; do
		if [ -d "$modules" ]; then cp -a "$modules"/. "$work/root/lib/modules/"; fi
	done
	for release in $(ls "$work/root/lib/modules"); do chroot "$work/root" depmod -a "$release"; done
	version="$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) (from $kernel_suite)"
	rm -rf "$work/unpacked" "$work/deb" "$work/apt"
fi
echo "$version" > "$work/kernel"
cp "$(ls -1 "$work"/root/boot/vmlinuz-* | sort -V | tail -1)" "$work/vmlinuz"
rm -f "$work"/root/boot/initrd.img-*
# One partition (MBR) at 1 MiB, so that the kernel finds its root by
# PARTUUID: the NVMe disks' names (nvme0n1, nvme1n1) follow probe order, and
# 6.12 probes the two controllers in either order.
mkfs.ext4 -q -L tcptoproot -E offset=1048576 -d "$work/root" "$work/root.img" 3G >&2
python3 - "$work/root.img" <<'MBR'
import struct, sys
start = 2048  # sectors: the file system's offset
with open(sys.argv[1], "r+b") as disk:
    sectors = disk.seek(0, 2) // 512 - start
    mbr = bytearray(512)
    mbr[440:444] = struct.pack("<I", 0x7c7c0001)  # disk signature: PARTUUID 7c7c0001-01
    mbr[446:462] = struct.pack("<B3sB3sII", 0, bytes(3), 0x83, bytes(3), start, sectors)
    mbr[510:512] = b"\x55\xaa"
    disk.seek(0)
    disk.write(mbr)
MBR
echo "PARTUUID=7c7c0001-01" > "$work/root-device"
rm -rf "$root/.cache/guest/$flavour-$kernel-"*
mkdir -p "$dir"
mv "$work/vmlinuz" "$work/root.img" "$work/kernel" "$work/root-device" "$dir/"
echo "image.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$dir"
