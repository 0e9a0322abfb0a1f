#!/bin/sh
# Installed in the guest image as /usr/local/sbin/tcptop-guest-run: mounts
# the in/out disk, runs its run.sh with output to out/, powers off. The test
# itself lives on that disk, so changing it does not rebuild the image.
mkdir -p /mnt/io
# By label; else the whole NVMe disk that is not the root (names follow probe order).
mount -L tcptopio /mnt/io 2>/dev/null || mount /dev/nvme0n1 /mnt/io 2>/dev/null || mount /dev/nvme1n1 /mnt/io \
	|| { echo "tcptop-guest: no io disk"; systemctl poweroff; exit 1; }
mkdir -p /mnt/io/out
echo "booted $(cut -d' ' -f1 /proc/uptime)" > /mnt/io/out/boot-time
/bin/sh /mnt/io/in/run.sh > /mnt/io/out/log 2>&1
echo $? > /mnt/io/out/status
journalctl -b --no-pager > /mnt/io/out/journal 2>&1
sync
umount /mnt/io
systemctl poweroff
