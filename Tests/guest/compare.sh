#!/usr/bin/env bash
# tcptop-exporter next to Debian's own tcptop tools (libbpf-tools, bcc) in
# the Debian 12 guest on its own 6.1 kernel, on the same traffic: byte
# exactness and BPF cost per event (see in/compare.py). Not part of `make
# test`: its image carries LLVM for bcc, and bcc compiles for minutes under
# emulation.
set -euo pipefail
export GUEST_EXTRA_PACKAGES="bpfcc-tools libbpf-tools linux-headers-cloud-amd64"
export GUEST_CHECK=compare.py
export GUEST_TIMEOUT=${GUEST_TIMEOUT:-2400}
exec "$(dirname "$0")/run.sh" 6.1
