#!/usr/bin/env bash
# Builds the Debian 12 guest image once and caches it under .cache/guest/<key>/
# (key: the package list and the files that go into the image). A minimal
# system (minbase: no procps, no udev), so that the shipped unit is shown to
# need nothing more than these packages. Prints the cache directory, which
# holds root.img (raw ext4) and vmlinuz (the Debian cloud kernel, booted
# without an initramfs).
#   GUEST_EXTRA_PACKAGES="bpfcc-tools libbpf-tools" Tests/guest/image.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

packages="systemd systemd-sysv dbus libbpf1 libelf1 libsystemd0 zlib1g python3 iproute2 bpftool curl
linux-image-cloud-amd64 ${GUEST_EXTRA_PACKAGES:-}"
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

key=$( { echo "$packages"; cat "$here/image.sh" "$here/guest-runner.service" "$here/guest-runner.sh"; } | sha256sum | cut -c1-16)
# One cached image per flavour (base, or with extra packages): a new key
# replaces the flavour's old image.
flavour=$( [ -n "${GUEST_EXTRA_PACKAGES:-}" ] && echo extra || echo base )
dir="$root/.cache/guest/$flavour-$key"
if [ -s "$dir/root.img" ] && [ -s "$dir/vmlinuz" ]; then
	echo "$dir"
	exit 0
fi
for tool in mmdebstrap mkfs.ext4; do
	command -v $tool >/dev/null || { echo "image.sh: $tool missing (Debian packages mmdebstrap e2fsprogs)" >&2; exit 1; }
done
work=$(mktemp -d "$root/.cache/guest-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "image.sh: building the guest image ($packages)" >&2
start=$(date +%s)
timeout 900 mmdebstrap --variant=minbase --include="$packages" \
	--customize-hook='rm -f "$1"/etc/fstab; touch "$1"/etc/fstab' \
	--customize-hook='echo tcptop-guest > "$1"/etc/hostname' \
	--customize-hook="install -D -m 0755 '$here/guest-runner.sh' \"\$1\"/usr/local/sbin/tcptop-guest-run" \
	--customize-hook="install -D -m 0644 '$here/guest-runner.service' \"\$1\"/etc/systemd/system/tcptop-guest-run.service" \
	--customize-hook='ln -sf /etc/systemd/system/tcptop-guest-run.service "$1"/etc/systemd/system/multi-user.target.wants/tcptop-guest-run.service' \
	--customize-hook='for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service; do ln -sf /dev/null "$1"/etc/systemd/system/$u; done' \
	--customize-hook='passwd --root "$1" -d root' \
	bookworm "$work/root" "${sources[@]}" >&2
cp "$(ls -1 "$work"/root/boot/vmlinuz-* | sort -V | tail -1)" "$work/vmlinuz"
rm -f "$work"/root/boot/initrd.img-*
mkfs.ext4 -q -L tcptoproot -d "$work/root" "$work/root.img" 3G >&2
rm -rf "$root/.cache/guest/$flavour-"*
mkdir -p "$dir"
mv "$work/vmlinuz" "$work/root.img" "$dir/"
echo "image.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$dir"
