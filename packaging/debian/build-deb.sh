#!/bin/bash
# Builds the Debian package with plain dpkg-deb (what `make deb` runs):
#   .build/deb/tcptop-exporter_<version>_amd64.deb
# <version> is the top entry of packaging/debian/changelog, whose upstream
# part must be Sources/TCPTopCore/Version.swift's. Prints the path last.
#
# The binaries are built with the Swift runtime linked statically (as for the
# container and guest tests, in .build-static/): the target needs no Swift.
# Depends: dpkg-shlibdeps on both binaries. Man pages: tcptop-exporter's
# from its ArgumentParser definitions (generate-manual, the tool behind
# swift-argument-parser's GenerateManual plugin, run on the static binary:
# the plugin would build the whole package once more, not statically);
# tcptop has its own option parser, so its page is help2man's of `tcptop -h`.
# Prometheus rules and Grafana dashboards: whatever monitoring/rules/*.yml and
# monitoring/grafana/*.json hold at build time.
# Needs dpkg-dev and help2man (`make deps`). Bounded: each swift build 30 min.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
src=packaging/debian
out=.build/deb
package=tcptop-exporter

fail() {
    echo "make deb: $*" >&2
    exit 1
}

for tool in dpkg-deb dpkg-shlibdeps dpkg-parsechangelog help2man; do
    command -v "$tool" >/dev/null || fail "$tool not found (make deps installs it)"
done

version=$(dpkg-parsechangelog -l "$src/changelog" -S Version)
upstream=$(sed -n 's/^public let tcptopVersion = "\(.*\)"$/\1/p' Sources/TCPTopCore/Version.swift)
[ -n "$upstream" ] || fail "no version in Sources/TCPTopCore/Version.swift"
[ "${version%-*}" = "$upstream" ] ||
    fail "$src/changelog's top entry is $version but Version.swift says $upstream: add a changelog entry"
maintainer=$(dpkg-parsechangelog -l "$src/changelog" -S Maintainer)
# Every date in the package is the changelog entry's (reproducible builds).
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$src/changelog" -S Timestamp)
export SOURCE_DATE_EPOCH
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

for product in tcptop-exporter tcptop generate-manual; do
    timeout -k 30 1800 swift build -c release --static-swift-stdlib --scratch-path .build-static \
        --product "$product" >&2 || fail "swift build --product $product failed"
done
bin=.build-static/release

rm -rf "$out"
stage="$out/root"
mkdir -p "$stage/DEBIAN"

install -D -m 0755 "$bin/tcptop-exporter" "$stage/usr/bin/tcptop-exporter"
install -D -m 0755 "$bin/tcptop" "$stage/usr/bin/tcptop"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/tcptop-exporter" "$stage/usr/bin/tcptop"

# The one unit of systemd/, with the package's paths instead of make install's.
install -d "$stage/usr/lib/systemd/system"
sed 's|/usr/local/|/usr/|g' systemd/tcptop-exporter.service >"$stage/usr/lib/systemd/system/tcptop-exporter.service"
grep -q '^ExecStart=/usr/bin/tcptop-exporter ' "$stage/usr/lib/systemd/system/tcptop-exporter.service" ||
    fail "systemd/tcptop-exporter.service: ExecStart does not name /usr/local/bin/tcptop-exporter"

install -D -m 0644 Config/tcptop-exporter.yml "$stage/etc/tcptop-exporter/tcptop-exporter.yml"
echo /etc/tcptop-exporter/tcptop-exporter.yml >"$stage/DEBIAN/conffiles"

man="$stage/usr/share/man/man1"
install -d "$man"
"$bin/generate-manual" "$bin/tcptop-exporter" --date "$date" --section 1 --output-directory "$man" >&2 ||
    fail "generate-manual failed for tcptop-exporter"
help2man --no-info --section=1 --version-string="$upstream" --help-option=-h \
    --name="summarize TCP send/recv throughput by host" --output="$man/tcptop.1" "$bin/tcptop" ||
    fail "help2man failed for tcptop"
gzip -9n "$man/tcptop-exporter.1" "$man/tcptop.1"

doc="$stage/usr/share/doc/$package"
install -d "$doc"
sed "s|@MAINTAINER@|$maintainer|" "$src/copyright" >"$doc/copyright"
gzip -9nc "$src/changelog" >"$doc/changelog.Debian.gz"
install -m 0644 README.md Config/web-config.yml "$doc/"

# Whatever of monitoring/ exists now.
shopt -s nullglob
rules=(monitoring/rules/*.yml)
dashboards=(monitoring/grafana/*.json)
shopt -u nullglob
[ "${#rules[@]}" -gt 0 ] && install -D -m 0644 -t "$stage/usr/share/$package/prometheus" "${rules[@]}"
[ "${#dashboards[@]}" -gt 0 ] && install -D -m 0644 -t "$stage/usr/share/$package/grafana" "${dashboards[@]}"

install -D -m 0644 "$src/lintian-overrides" "$stage/usr/share/lintian/overrides/$package"
install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$stage/DEBIAN/"

# Depends from the libraries the binaries need, as Debian's own packages
# compute them (dpkg-shlibdeps reads a debian/control it does not use).
shlib_dir=$(mktemp -d)
trap 'rm -rf "$shlib_dir"' EXIT
mkdir "$shlib_dir/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: amd64\n' "$package" "$package" >"$shlib_dir/debian/control"
depends=$(cd "$shlib_dir" && dpkg-shlibdeps -O "$root/$stage/usr/bin/tcptop-exporter" "$root/$stage/usr/bin/tcptop") ||
    fail "dpkg-shlibdeps failed"
depends=${depends#shlibs:Depends=}
[ -n "$depends" ] || fail "dpkg-shlibdeps found no Depends"

size_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@MAINTAINER@|$maintainer|" -e "s|@INSTALLED_SIZE@|$size_kib|" \
    -e "s|@DEPENDS@|$depends|" "$src/control" >"$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb="$out/${package}_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
