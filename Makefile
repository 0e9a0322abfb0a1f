# tcptop-exporter — the commands a new user runs (as root, on Debian 12).
#   make run    install what is missing, build, run the daemon in the foreground
#   make test   install what is missing, build, run the whole test suite
#   make bench  the benchmark (prints a table of figures)
#   make install  install binary, config and systemd unit
#   make deb    the Debian package: .build/deb/tcptop-exporter_<version>_amd64.deb

PREFIX ?= /usr/local
SWIFT ?= swift
# Debian packages the build and the tests need (clang comes with the Swift toolchain).
DEBIAN_PACKAGES = libbpf-dev libelf-dev libsystemd-dev zlib1g-dev libcrypt-dev libssl-dev bpftool prometheus python3 curl util-linux \
	apache2-utils python3-bcrypt python3-yaml prometheus-node-exporter openssl \
	systemd-container mmdebstrap binutils e2fsprogs qemu-system-x86 qemu-utils \
	dpkg-dev help2man lintian

.PHONY: deps build release run test fuzz test-without-bpf guest-compare bench install deb clean

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: release
	.build/release/tcptop-exporter --config.file=Config/tcptop-exporter.yml

# The end-to-end tests start the built executables: build them first.
# Then the shipped unit under a real systemd (systemd-nspawn container), the
# Debian package (lintian, then installed with apt, run and purged in another
# container: Tests/system/package-test.sh), and
# QEMU guests with Debian 12's userland on three kernels, one after the other:
# Debian 12's 6.1 (the fallback hooks), Debian 13's 6.12 (the tracepoints),
# Debian 11's 5.10 (the oldest). One guest alone: Tests/guest/run.sh 6.12
# Between them, the daemon under ThreadSanitizer with reloads racing scrapes
# (Tests/tools/race-test.sh), and the fuzzers, FUZZ_SECONDS each (`make fuzz`).
# Then monitoring/ (Tests/monitoring/monitoring-test.py): promtool on the rules,
# their tests and the dashboard's queries, and the fleet guide with the daemon
# and three real Prometheus servers (about 15 s).
test: build
	SWIFT=$(SWIFT) Tests/tools/swift-test.sh
	Tests/tools/race-test.sh
	$(MAKE) fuzz
	Tests/monitoring/monitoring-test.py
	Tests/system/container-test.sh
	Tests/system/package-test.sh
	Tests/guest/run.sh

# libFuzzer (with AddressSanitizer) on the HTTP request parser and the config
# reader, FUZZ_SECONDS each (about a minute in all with the build); a crash
# fails it and leaves the input in .build-fuzz/artifacts/. Seeds:
# Tests/Fuzz/corpus/. Longer: make fuzz FUZZ_SECONDS=600
FUZZ_SECONDS ?= 20
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) Tests/Fuzz/run.sh

# The suite with bpf() refused (a seccomp filter, Tests/tools/no-bpf.c): the BPF
# tests must fail, each with a readable message, and the run must end (about
# 15 s here). Exits 0 when it did just that. Not in `make test`: it fails tests.
#   make test-without-bpf
test-without-bpf: build
	Tests/tools/test-without-bpf.sh

# Stock bcc/libbpf-tools tcptop next to ours in the 6.1 guest (not in CI: its image carries LLVM).
guest-compare: deps
	Tests/guest/compare.sh

bench: release
	.build/release/tcptop-bench

install: release
	install -D -m 0755 .build/release/tcptop-exporter $(DESTDIR)$(PREFIX)/bin/tcptop-exporter
	install -D -m 0755 .build/release/tcptop $(DESTDIR)$(PREFIX)/bin/tcptop
	install -D -m 0644 Config/tcptop-exporter.yml $(DESTDIR)/etc/tcptop-exporter/tcptop-exporter.yml
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/|$(PREFIX)/|g' systemd/tcptop-exporter.service >$(DESTDIR)/etc/systemd/system/tcptop-exporter.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/tcptop-exporter/README.md
	install -D -m 0644 Config/web-config.yml $(DESTDIR)$(PREFIX)/share/doc/tcptop-exporter/web-config.yml

# The Debian package, built with dpkg-deb into .build/deb/ (the file's path is
# printed last): tcptop-exporter and tcptop with the Swift runtime linked
# statically, the unit, the config as a conffile, man pages, the monitoring/
# rules and dashboards. Version: packaging/debian/changelog. See README
# ("Debian package"); packaging/debian/build-deb.sh says how.
deb: deps
	packaging/debian/build-deb.sh

clean:
	rm -rf .build .build-fuzz
