#!/usr/bin/env bash
# Builds the stand-in Proxmox installer initrd: busybox, the virtio/blk/fat/iso9660/loop
# modules, the `standin` helper, dropbearkey (host key generation) and
# vm-tests/standin/installer-init as /init.
# Outputs: $WORK/installer/initrd.img (gzip: what the daemon serves to iPXE) and
#          $WORK/installer/initrd.img.zst (zstd: /boot/initrd.img inside the fake ISO).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/initrd.sh
. "$VM_TESTS_DIR/lib/initrd.sh"

out=$WORK/installer
hash=$(inputs_hash "$0" "$VM_TESTS_DIR/lib/initrd.sh" "$VM_TESTS_DIR/standin/installer-init" \
    "$VM_TESTS_DIR/standin/udhcpc.script" "$WORK/bin/standin" "$WORK/kernel/version")
stamp_ok installer "$hash" "$out/initrd.img" "$out/initrd.img.zst" && exit 0
log "building the stand-in installer initrd"
need dropbearkey dropbear-bin
need zstd zstd
need cpio cpio
root=$out/root
rm -rf "$out" && mkdir -p "$root"
busybox_root "$root"
add_modules "$root" "${STANDIN_MODULES[@]}"
copy_with_libs "$root" "$(command -v dropbearkey)"
cp "$WORK/bin/standin" "$root/usr/bin/standin"
cp "$VM_TESTS_DIR/standin/installer-init" "$root/init"
chmod 755 "$root/init"
pack_newc "$root" "$out/initrd.img" "$out/initrd.img.zst"
rm -rf "$root"
stamp_set installer "$hash"
log "installer initrd: $(du -h "$out/initrd.img" | cut -f1) gzip, $(du -h "$out/initrd.img.zst" | cut -f1) zstd"
