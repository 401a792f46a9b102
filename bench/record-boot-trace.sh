#!/usr/bin/env bash
# Records, once, the NBD reads a real boot makes: the Debian 12 test image boots under qemu (TCG)
# with the ramboot kit's kernel and initramfs, its root served by nbdkit with the log filter, and
# every read the server received is written as a boot trace for `npm run bench -- --only boot-storm`.
# Not part of the suite (a TCG boot takes minutes of CPU): run by hand after the image or the kit
# changes, then commit the trace.
#
# Usage: bench/record-boot-trace.sh [KIT_DIR [IMAGE [TRACE]]]
#   KIT_DIR  default: the output of ramboot/cached-build (vmlinux, initrd.img)
#   IMAGE    default: debian-12.img in the output of ramboot/cached-debian-image
#   TRACE    default: bench/traces/debian12-boot.trace.gz
#
# Trace format (text, gzip): '#' lines are comments ('# image-size BYTES' is required); every
# other line is one read, in the order the server received it: "OFFSET LENGTH GAP_US", offset
# and length in bytes (hex), then microseconds since the previous read (the think time, which
# the replay leaves out).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
kit=${1:-$("$repo/ramboot/cached-build")}
image=${2:-$("$repo/ramboot/cached-debian-image")/debian-12.img}
trace=${3:-$repo/bench/traces/debian12-boot.trace.gz}
boot_timeout_seconds=900

work=$(mktemp -d)
nbdkit_pid=
cleanup() {
	if [ -n "$nbdkit_pid" ]; then kill "$nbdkit_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

# A sparse copy: the guest writes nothing to its root (an overlay takes writes), but a bug that
# did must never reach the cached image.
cp --sparse=always "$image" "$work/disk.img"
nbdkit --foreground --unix "$work/nbd.sock" --filter=log file "$work/disk.img" logfile="$work/nbd.log" &
nbdkit_pid=$!
for _ in $(seq 100); do [ -S "$work/nbd.sock" ] && break; sleep 0.1; done
[ -S "$work/nbd.sock" ] || { echo "record-boot-trace: nbdkit did not start" >&2; exit 1; }

echo "record-boot-trace: booting $image under qemu (TCG), serial log in $work/serial.log" >&2
# As test/helpers/qemu.ts boots it: PVH kernel, user networking cut off from everything but one
# forward to the NBD server, the NIC in PCI slot 2 (the image configures ens2); the image's
# boot check powers the machine off from inside once systemd is up.
nice -n 10 timeout -s KILL "$boot_timeout_seconds" qemu-system-x86_64 \
	-accel "${NBDMUX_QEMU_ACCEL:-tcg}" -m 1024 -nodefaults -no-reboot -display none \
	-serial "file:$work/serial.log" \
	-kernel "$kit/vmlinux" -initrd "$kit/initrd.img" \
	-append "console=ttyS0 panic=-1 nbdroot=10.0.2.100:10809/debian" \
	-netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:10809-cmd:socat - UNIX-CONNECT:$work/nbd.sock" \
	-device virtio-net-pci,netdev=n0,addr=2,romfile= ||
	{ tail -n 40 "$work/serial.log" >&2; echo "record-boot-trace: qemu did not power off by itself" >&2; exit 1; }
grep -q 'nbdmux-boot-check: poweroff' "$work/serial.log" ||
	{ tail -n 40 "$work/serial.log" >&2; echo "record-boot-trace: the boot did not reach its check" >&2; exit 1; }
kill "$nbdkit_pid"
wait "$nbdkit_pid" || true
nbdkit_pid=

mkdir -p "$(dirname "$trace")"
{
	echo "# nbdmux boot trace v1: OFFSET LENGTH (hex bytes) GAP_US (think time before this read)"
	echo "# image-size $(stat -c %s "$image")"
	echo "# recorded $(date -u +%Y-%m-%d) by bench/record-boot-trace.sh: $(basename "$image") ($(grep -h '^KERNEL_VERSION=' "$(dirname "$image")/debian-image.env" 2>/dev/null || echo 'kernel unknown')), kit $(basename "$kit"), qemu TCG, $(grep -c 'connection=.* Connect ' "$work/nbd.log") NBD connection(s)"
	# "2026-11-30 07:01:02.123456 connection=1 Read id=7 offset=0x0 count=0x200 ..."
	awk '$4 == "Read" {
		split($2, t, ":"); now = (t[1] * 3600 + t[2] * 60 + t[3]) * 1e6
		sub("offset=0x", "", $6); sub("count=0x", "", $7)
		printf "%s %s %d\n", $6, $7, (n++ ? now - last : 0); last = now
	}' "$work/nbd.log"
} | gzip -9n > "$trace"
echo "record-boot-trace: $(zcat "$trace" | grep -vc '^#') reads written to $trace" >&2
