#!/usr/bin/env bash
# Prepares everything the end-to-end tests boot, idempotently (each step is cached in
# $WORK, default vm-tests/work/, and rebuilt only when its inputs change):
#   Debian packages (installed when missing), the Debian cloud kernel + systemd-boot
#   (downloaded, not installed), the static helper binaries, the stand-in installer
#   initrd, the stand-in installed system + its disk images, the fake Proxmox ISO.
# Prints the artefact paths as KEY=VALUE lines on stdout (the Rust tests read them).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

mkdir -p "$WORK"
# One build at a time per work directory: two overlapping runs (a test run and a
# hand-started smoke.sh, say) would otherwise interleave `rm -rf` and writes in the same
# output directories and leave disk images with half-written files in them.
exec 9>"$WORK/.prepare.lock"
if ! flock -n 9; then
    log "another prepare.sh is building in $WORK; waiting for it"
    flock 9
fi
b=$VM_TESTS_DIR/build
bash "$b/packages.sh"
bash "$b/kernel.sh"
bash "$b/helper.sh"
bash "$b/installer.sh"
bash "$b/installed-system.sh"
bash "$b/iso.sh"

cat <<OUT
WORK=$WORK
KERNEL=$WORK/kernel/vmlinuz
INSTALLER_INITRD=$WORK/installer/initrd.img
ISO=$WORK/iso/proxmox-ve-standin.iso
DISK_MIB=$(cat "$WORK/installed/disk-mib")
STANDIN=$WORK/bin/standin
MOCK_INFRA=$WORK/bin/mock-infra
OBSERVER_KEY=$WORK/keys/observer
JOIN_CONF=$VM_TESTS_DIR/standin/join.conf
OUT
