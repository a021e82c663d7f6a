#!/usr/bin/env bash
# Fetches the Debian cloud kernel without installing it: resolves the concrete
# package behind linux-image-cloud-amd64, apt-get downloads exactly that, dpkg -x.
# Outputs: $WORK/kernel/{vmlinuz,version,root/} . Also fetches systemd-boot-efi the
# same way (the UEFI boot loader of the "installed system"): $WORK/kernel/sdboot/.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

K=$WORK/kernel
if [ -f "$K/vmlinuz" ] && [ -f "$K/version" ] && [ -d "$K/root/lib/modules" ] &&
    [ -f "$K/sdboot/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ]; then
    exit 0
fi
mkdir -p "$K" && cd "$K"
resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1; }
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
    # A machine whose package lists were never fetched (or were cleaned).
    log "package lists do not know linux-image-cloud-amd64: apt-get update"
    apt-get update -qq >&2
    pkg=$(resolve || true)
fi
[ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 even after apt-get update"
log "kernel package: $pkg"
rm -f ./*.deb
apt-get download "$pkg" systemd-boot-efi >&2 2>/dev/null || apt-get download "$pkg" systemd-boot-efi >&2
rm -rf root sdboot
dpkg -x "$pkg"_*.deb root
dpkg -x systemd-boot-efi_*.deb sdboot
ver=${pkg#linux-image-}
cp "root/boot/vmlinuz-$ver" vmlinuz
echo "$ver" >version
rm -f ./*.deb
