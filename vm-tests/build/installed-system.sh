#!/usr/bin/env bash
# Builds the stand-in "installed Proxmox system": an initrd (busybox, dropbear + libs,
# the stand-in pvecm, /init =
# vm-tests/standin/installed-init) and the two disk images the stand-in installer writes:
# disk-bios.img.gz (MBR, FAT16, syslinux) and disk-efi.img.gz (GPT, ESP, systemd-boot),
# each with the Debian kernel, that initrd and extras.img (bash, curl + libraries for
# the first-boot hook; a cpio unpacked by /init). Both images are $DISK_MIB MiB: the
# harness gives every machine a disk of exactly that size.
# Also creates the harness's observer SSH key ($WORK/keys/observer), baked in as an
# operator key so the tests can look at the machine after the daemon is done with it.
# Outputs: $WORK/installed/{initrd.img,disk-bios.img.gz,disk-efi.img.gz}, $WORK/keys/
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/initrd.sh
. "$VM_TESTS_DIR/lib/initrd.sh"

DISK_MIB=64
out=$WORK/installed
mkdir -p "$WORK/keys"
[ -f "$WORK/keys/observer" ] || ssh-keygen -q -t ed25519 -N '' -C standin-observer -f "$WORK/keys/observer"
[ -f "$WORK/keys/cluster-node" ] || ssh-keygen -q -t ed25519 -N '' -C root@pve-existing -f "$WORK/keys/cluster-node"
hash=$(inputs_hash "$0" "$VM_TESTS_DIR/lib/initrd.sh" "$VM_TESTS_DIR/standin/installed-init" \
    "$VM_TESTS_DIR/standin/pvecm" "$VM_TESTS_DIR/standin/join.conf" "$VM_TESTS_DIR/standin/udhcpc.script" \
    "$WORK/keys/observer.pub" "$WORK/kernel/version")
stamp_ok installed "$hash" "$out/initrd.img" "$out/disk-bios.img.gz" "$out/disk-efi.img.gz" && exit 0
log "building the stand-in installed system"
for c in dropbear:dropbear-bin curl:curl bash:bash sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools \
    syslinux:syslinux mmd:mtools; do need "${c%%:*}" "${c#*:}"; done
need_file /usr/lib/syslinux/mbr/mbr.bin syslinux-common
sdboot=$WORK/kernel/sdboot/usr/lib/systemd/boot/efi/systemd-bootx64.efi
need_file "$sdboot" "systemd-boot-efi (fetched by build/kernel.sh)"

root=$out/root extras=$out/extras
rm -rf "$out" && mkdir -p "$root" "$extras"
copy_with_libs "$root" "$(command -v dropbear)" "$(command -v dropbearkey)"
busybox_root "$root"
# bash and curl (for the first-boot hook) with their libraries go into an "extras"
# archive on the FAT partition, unpacked by /init: firmware disk I/O under TCG is slow,
# so the initrd the boot loader reads stays small.
copy_with_libs "$extras" "$(command -v bash)" "$(command -v curl)"
[ -e "$extras/bin/bash" ] || { mkdir -p "$extras/bin"; ln -s "$(command -v bash)" "$extras/bin/bash"; }
(cd "$extras" && find . -type f) | while read -r f; do [ ! -e "$root/$f" ] || rm -f "$extras/$f"; done
rm -f "$root/bin/bash" "$root/usr/bin/bash"
pack_newc "$extras" "$out/extras.cpio.gz"
rm -rf "$extras"
add_modules "$root" "${STANDIN_MODULES[@]}"
cp "$VM_TESTS_DIR/standin/installed-init" "$root/init"
install -m 755 "$VM_TESTS_DIR/standin/pvecm" "$root/usr/bin/pvecm"
mkdir -p "$root/etc/standin" "$root/etc/ssl/certs"
cp "$VM_TESTS_DIR/standin/join.conf" "$root/etc/standin/join.conf"
echo "EXISTING_NODE_KEY='$(cat "$WORK/keys/cluster-node.pub")'" >>"$root/etc/standin/join.conf"
cp "$WORK/keys/observer.pub" "$root/etc/standin/observer.pub"
echo 'root:x:0:0:root:/root:/bin/bash' >"$root/etc/passwd"
echo 'root::19000:0:99999:7:::' >"$root/etc/shadow"
echo 'root:x:0:' >"$root/etc/group"
printf '/bin/sh\n/bin/bash\n' >"$root/etc/shells"
chmod 755 "$root/init"
chmod 700 "$root/root"
pack_newc "$root" "$out/initrd.img"
rm -rf "$root"

export MTOOLS_SKIP_CHECK=1
# verify_image IMG: the files the installed system boots from read back byte-identical
# (a damaged extras.img only shows much later, as a failed join).
verify_image() {
    local f
    for f in vmlinuz:"$vmlinuz" initrd.img:"$out/initrd.img" extras.img:"$out/extras.cpio.gz"; do
        mtype -i "$1@@1M" "::${f%%:*}" | cmp -s - "${f#*:}" || die "$1: ${f%%:*} does not read back intact"
    done
}
vmlinuz=$WORK/kernel/vmlinuz
part_kib=$(( (DISK_MIB - 1) * 1024 - 64 ))   # from 1 MiB to the end, minus room for GPT's backup
# BIOS: MBR, one bootable FAT16 partition, syslinux
img=$out/disk-bios.img
truncate -s ${DISK_MIB}M "$img"
printf 'label: dos\nstart=2048, size=%s, type=6, bootable\n' $((part_kib * 2)) | sfdisk -q "$img"
mkfs.vfat -F 16 -h 2048 --offset 2048 -n STANDIN "$img" $part_kib >/dev/null 2>&1
cat >"$out/syslinux.cfg" <<CFG
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT standin
LABEL standin
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0 no_timer_check panic=-1
CFG
mcopy -i "$img@@1M" "$vmlinuz" ::vmlinuz
mcopy -i "$img@@1M" "$out/initrd.img" ::initrd.img
mcopy -i "$img@@1M" "$out/extras.cpio.gz" ::extras.img
mcopy -i "$img@@1M" "$out/syslinux.cfg" ::syslinux.cfg
mmd -i "$img@@1M" ::standin
syslinux --offset 1048576 --install "$img"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$img" bs=440 count=1 conv=notrunc status=none
verify_image "$img"
gzip -9n "$img"
# UEFI: GPT, one ESP (FAT32), systemd-boot as the removable-media loader
img=$out/disk-efi.img
truncate -s ${DISK_MIB}M "$img"
printf 'label: gpt\nstart=2048, size=%s, type=U\n' $((part_kib * 2)) | sfdisk -q "$img"
mkfs.vfat -F 32 -s 1 -h 2048 --offset 2048 -n STANDIN "$img" $part_kib >/dev/null 2>&1
printf 'timeout 0\ndefault standin.conf\n' >"$out/loader.conf"
printf 'title standin installed system\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0 no_timer_check panic=-1\n' >"$out/standin.conf"
mmd -i "$img@@1M" ::EFI ::EFI/BOOT ::loader ::loader/entries ::standin
mcopy -i "$img@@1M" "$sdboot" ::EFI/BOOT/BOOTX64.EFI
mcopy -i "$img@@1M" "$out/loader.conf" ::loader/loader.conf
mcopy -i "$img@@1M" "$out/standin.conf" ::loader/entries/standin.conf
mcopy -i "$img@@1M" "$vmlinuz" ::vmlinuz
mcopy -i "$img@@1M" "$out/initrd.img" ::initrd.img
mcopy -i "$img@@1M" "$out/extras.cpio.gz" ::extras.img
verify_image "$img"
gzip -9n "$img"
rm -f "$out/syslinux.cfg" "$out/loader.conf" "$out/standin.conf"
echo $DISK_MIB >"$out/disk-mib"
stamp_set installed "$hash"
log "installed system: initrd $(du -h "$out/initrd.img" | cut -f1), disk images ${DISK_MIB} MiB"
