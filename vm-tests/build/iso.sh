#!/usr/bin/env bash
# Builds the fake Proxmox VE ISO: a real ISO 9660 image (xorriso) laid out like the real
# one where the daemon and /pxe-init can see it: /.pve-cd-id.txt, /boot/linux26 (the
# kernel), /boot/initrd.img (the stand-in installer initrd, zstd like the real one),
# plus the stand-in's payload /standin/disk-{bios,efi}.img.gz. It is NOT prepared:
# /auto-installer-mode.toml is added by `provisioning iso prepare` (vm-tests/lib/iso.sh).
# Output: $WORK/iso/proxmox-ve-standin.iso
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

need xorriso xorriso
out=$WORK/iso
hash=$(inputs_hash "$0" "$WORK/kernel/vmlinuz" "$WORK/installer/initrd.img.zst" \
    "$WORK/installed/disk-bios.img.gz" "$WORK/installed/disk-efi.img.gz")
stamp_ok iso "$hash" "$out/proxmox-ve-standin.iso" && exit 0
log "building the fake Proxmox VE ISO"
rm -rf "$out" && mkdir -p "$out/root/boot" "$out/root/standin"
echo "standin-pve-9.1-1 $(date -u +%Y-%m-%d)" >"$out/root/.pve-cd-id.txt"
cp "$WORK/kernel/vmlinuz" "$out/root/boot/linux26"
cp "$WORK/installer/initrd.img.zst" "$out/root/boot/initrd.img"
cp "$WORK/installed/disk-bios.img.gz" "$WORK/installed/disk-efi.img.gz" "$out/root/standin/"
# El Torito (an EFI boot image, empty FAT) like the real hybrid ISO: this is also what
# makes `xorriso -report_system_area cmd` print the `-volume_date uuid` line that
# prepare-iso reads.
truncate -s 1M "$out/root/boot/efiboot.img"
mkfs.vfat "$out/root/boot/efiboot.img" >/dev/null
# A fixed volume UUID, as every real ISO has one (prepare-iso keeps it).
xorriso -report_about WARNING -outdev "$out/proxmox-ve-standin.iso" -volid PVE \
    -volume_date uuid 2026112500000000 -map "$out/root" / \
    -boot_image any efi_path=/boot/efiboot.img -boot_image any platform_id=0xef >&2
rm -rf "$out/root"
stamp_set iso "$hash"
log "fake ISO: $(du -h "$out/proxmox-ve-standin.iso" | cut -f1)"
