#!/usr/bin/env bash
# One QEMU machine of the end-to-end tests, run in the foreground (the caller puts it in
# the background and kills it by pid). TCG only: /dev/kvm here is a paravirtual KVM that
# stock firmware does not survive (LAB.md). Network first, then the disk:
#   bios: SeaBIOS, -machine pc, NIC bootindex 1, disk bootindex 2;
#   efi:  OVMF (CODE read-only + a per-machine VARS copy), -machine q35, same boot
#         indices, and OVMF's own IPv4/IPv6 PXE/HTTP boot options turned off so that an
#         `exit 1` from iPXE reaches the disk at once instead of after minutes.
# No -no-reboot: the installer reboots into the installed system inside the same QEMU.
# The serial console goes to <dir>/<name>.serial (or $QEMU_SERIAL). The disk is created (raw, zeroed,
# <disk-mib> MiB) when missing.
#
# usage: qemu.sh <netns> <name> <bios|efi> <mac> <tap> <disk.raw> <disk-mib> <dir> <uuid> [extra qemu args...]
set -euo pipefail
die() { echo "qemu.sh: error: $*" >&2; exit 1; }
[ $# -ge 9 ] || die "usage: qemu.sh <netns> <name> <bios|efi> <mac> <tap> <disk.raw> <disk-mib> <dir> <uuid> [qemu args...]"
ns=$1 name=$2 mode=$3 mac=$4 tap=$5 disk=$6 disk_mib=$7 dir=$8 uuid=$9
shift 9
command -v qemu-system-x86_64 >/dev/null || die "missing qemu-system-x86_64 (Debian package: qemu-system-x86)"
[ -f /usr/share/qemu/pxe-virtio.rom ] || [ -f /usr/lib/ipxe/qemu/efi-virtio.rom ] ||
    die "missing QEMU's iPXE NIC ROMs (Debian package: ipxe-qemu)"
mkdir -p "$dir"
[ -f "$disk" ] || truncate -s "${disk_mib}M" "$disk"

args=(-name "$name" -accel tcg -m 768 -smp 1 -display none -vga none -monitor none
    -serial "file:${QEMU_SERIAL:-$dir/$name.serial}"
    -smbios "type=1,manufacturer=QEMU,product=Standard PC,serial=standin-$name,uuid=$uuid"
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no"
    -device "virtio-net-pci,netdev=n0,mac=$mac,bootindex=1"
    -drive "file=$disk,format=raw,if=none,id=d0,cache=unsafe"
    -device "virtio-blk-pci,drive=d0,bootindex=2")
case "$mode" in
bios)
    args+=(-machine pc)
    ;;
efi)
    code=/usr/share/OVMF/OVMF_CODE_4M.fd vars=/usr/share/OVMF/OVMF_VARS_4M.fd
    if [ ! -f "$code" ] || [ ! -f "$vars" ]; then die "missing $code / $vars (Debian package: ovmf)"; fi
    [ -f "$dir/$name.vars.fd" ] || cp "$vars" "$dir/$name.vars.fd"
    # shellcheck disable=SC2054 # commas are QEMU's
    args+=(-machine q35
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
        -drive "if=pflash,format=raw,unit=1,file=$dir/$name.vars.fd"
        -fw_cfg name=opt/org.tianocore/IPv4Support,string=no
        -fw_cfg name=opt/org.tianocore/IPv6Support,string=no)
    ;;
*) die "mode must be bios or efi, not '$mode'" ;;
esac
exec ip netns exec "$ns" qemu-system-x86_64 "${args[@]}" "$@"
