#!/bin/sh
# Runs inside the guest (started by tcptop-guest-run from the io disk).
cd "$(dirname "$0")"
exec timeout "$(cat timeout)" python3 "$(cat check)" --out /mnt/io/out/results
